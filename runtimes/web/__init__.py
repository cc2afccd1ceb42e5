"""The web runtime: the system Chromium through Playwright, a bounded pool of isolated
contexts, a per-task egress proxy enforcing the URL allowlist, and the
sites adp serves itself (its example shop and MiniWoB++ episodes)."""

from runtimes.web._egress import EgressProxy
from runtimes.web._pool import CHROMIUM_ARGS, BrowserConfig, BrowserPool
from runtimes.web._session import ActionOutcome, BrowserSession, task_allowlist
from runtimes.web._sites import SITE_HOSTS, content_type, local_file, miniwob_url

__all__ = [
    "CHROMIUM_ARGS",
    "SITE_HOSTS",
    "ActionOutcome",
    "BrowserConfig",
    "BrowserPool",
    "BrowserSession",
    "EgressProxy",
    "content_type",
    "local_file",
    "miniwob_url",
    "task_allowlist",
]
