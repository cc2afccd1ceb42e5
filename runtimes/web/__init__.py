"""The web runtime: the system Chromium through Playwright, a bounded pool of isolated
contexts, typed browser actions, a URL allowlist, and MiniWoB++ episodes."""

from runtimes.web.actions import BrowserArgs, parse_browser_action
from runtimes.web.pool import BrowserPool
from runtimes.web.session import BrowserSession

__all__ = ["BrowserArgs", "BrowserPool", "BrowserSession", "parse_browser_action"]
