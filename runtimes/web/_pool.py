"""One Chromium per process, a bounded pool of isolated contexts over it.

Debian's Chromium is driven through Playwright (``executable_path``; never ``playwright
install``). Every task gets a fresh context (its own cookies, storage, cache); at most
``max_contexts`` exist at once. The browser is relaunched when it has crashed, and, between
tasks, when its memory (PSS of all its processes) passes ``memory_limit_mb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from pydantic import BaseModel

from runtimes.core import BrowserError, ScreenshotMode

_MEMORY_SAMPLE_SECONDS = 1.0

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    # Debian's Chromium opens two omnibox-popup WebUI pages in every new context: about half
    # the CPU of a simple web task, for a popup a headless browser never shows.
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup",
    # WebRTC may not send UDP past the context's proxy (STUN would bypass the allowlist).
    "--force-webrtc-ip-handling-policy",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
]


class BrowserConfig(BaseModel):
    """The browser of a process (MAX_CONCURRENT, ADP_CHROMIUM_PATH, ADP_BROWSER_*, ADP_SCREENSHOT*)."""

    max_contexts: int = 4
    chromium_path: Path = Path("/usr/bin/chromium")
    action_timeout: float = 10.0
    memory_limit_mb: int = 2048
    screenshots: ScreenshotMode = "every"
    screenshot_max_bytes: int = 150_000
    screenshot_scale: float = 0.5

    def build(self) -> BrowserPool:
        """The one browser factory: local runs and `adp worker` build their pools here."""
        return BrowserPool(
            self.max_contexts,
            chromium_path=self.chromium_path,
            action_timeout=self.action_timeout,
            memory_limit_mb=self.memory_limit_mb,
            screenshots=self.screenshots,
            screenshot_max_bytes=self.screenshot_max_bytes,
            screenshot_scale=self.screenshot_scale,
        )


class BrowserPool:
    """Args:
    max_contexts: contexts (so browser tasks) at once (MAX_CONCURRENT).
    chromium_path: the system Chromium.
    action_timeout: seconds for any single Playwright call.
    memory_limit_mb: relaunch the idle browser above this much memory.
    screenshots: when the tasks run on it take a JPEG of the page (every browser action, the
        last one, or never); read by the agent loop.
    screenshot_max_bytes: the most one screenshot may take.
    screenshot_scale: a screenshot's size relative to the viewport's (the page is drawn at that
        scale: text stays sharp, and a quarter of the pixels cost about a third of the CPU).
    """

    def __init__(
        self,
        max_contexts: int = 4,
        *,
        chromium_path: Path = Path("/usr/bin/chromium"),
        action_timeout: float = 10.0,
        memory_limit_mb: int = 2048,
        screenshots: ScreenshotMode = "every",
        screenshot_max_bytes: int = 150_000,
        screenshot_scale: float = 0.5,
    ) -> None:
        self.max_contexts = max_contexts
        self.action_timeout = action_timeout
        self.screenshots: ScreenshotMode = screenshots
        self.screenshot_max_bytes = screenshot_max_bytes
        self.screenshot_scale = screenshot_scale
        self._chromium_path = chromium_path
        self._memory_limit_mb = memory_limit_mb
        self._slots = asyncio.Semaphore(max_contexts)
        self._lock = asyncio.Lock()
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._active = 0
        self.launches = 0
        self.peak_memory_mb = 0.0
        self._sampled_at = -_MEMORY_SAMPLE_SECONDS

    async def __aenter__(self) -> BrowserPool:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def context(self, proxy: str | None = None) -> AsyncIterator[BrowserContext]:
        """A fresh, isolated browser context, closed afterwards.

        Args:
            proxy: the URL of the proxy every request of the context goes through (loopback
                included); service workers are blocked, so none escapes routing.

        Raises:
            BrowserError: Chromium cannot be started.
        """
        async with self._slots:
            browser = await self._ready_browser()
            try:
                context = await asyncio.wait_for(
                    browser.new_context(
                        proxy={"server": proxy, "bypass": "<-loopback>"} if proxy else None, service_workers="block"
                    ),
                    timeout=self.action_timeout * 3,
                )
            except (PlaywrightError, TimeoutError) as exc:
                raise BrowserError(f"cannot open a browser context: {exc}") from exc
            context.set_default_timeout(self.action_timeout * 1000)
            context.set_default_navigation_timeout(self.action_timeout * 3000)
            self._active += 1
            try:
                yield context
            finally:
                self._active -= 1
                # Reading every Chromium process's smaps costs ~10 ms of CPU: off the event loop,
                # and at most once a second (the peak is a sample; the relaunch check reads afresh).
                if time.monotonic() - self._sampled_at >= _MEMORY_SAMPLE_SECONDS:
                    self._sampled_at = time.monotonic()
                    self.peak_memory_mb = max(self.peak_memory_mb, await asyncio.to_thread(self.memory_mb))
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(context.close(), timeout=self.action_timeout)

    def memory_mb(self) -> float:
        """Proportional set size of every Chromium process this process started, in MiB."""
        total_kb = 0
        for pid in self.browser_pids():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
        return total_kb / 1024

    def browser_pids(self) -> list[int]:
        """Chromium processes descended from this process.

        Walks down from this process through ``/proc/<pid>/task/<tid>/children``: a handful of
        small reads, where scanning every process of the machine took ~50 ms per task.
        """
        found: list[int] = []
        pending, seen = [os.getpid()], set()
        while pending:
            pid = pending.pop()
            if pid in seen:
                continue
            seen.add(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        pending += [int(child) for child in (task / "children").read_text().split()]
            if pid != os.getpid():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().startswith("chrom"):
                        found.append(pid)
        return found

    def kill_browser(self) -> None:
        """SIGKILL every Chromium process (what a crash looks like); the pool relaunches on next use."""
        for pid in self.browser_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def aclose(self) -> None:
        async with self._lock:
            if self._browser is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._browser.close(), timeout=10)
                self._browser = None
            if self._playwright is not None:
                with contextlib.suppress(Exception):
                    await self._playwright.stop()
                self._playwright = None

    async def start(self) -> None:
        """Launch the browser now: a worker that cannot run one fails as it starts, not on each task.

        Raises:
            BrowserError: Chromium or Playwright's driver cannot start.
        """
        await self._ready_browser()

    async def _ready_browser(self) -> Browser:
        async with self._lock:
            idle = self._browser is not None and self._browser.is_connected() and self._active == 0
            if idle and self._browser is not None and await asyncio.to_thread(self.memory_mb) > self._memory_limit_mb:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._browser.close(), timeout=10)
                self._browser = None
            # A killed Chromium can still read as connected until Playwright's driver notices;
            # a context asked of it would wait out its timeout, so no Chromium process is dead.
            if self._browser is None or not self._browser.is_connected() or not self.browser_pids():
                self._browser = await self._launch()
            return self._browser

    async def _launch(self) -> Browser:
        if not self._chromium_path.exists():
            raise BrowserError(
                f"{self._chromium_path} not found: install Debian's chromium (`make setup` as root) "
                "or set ADP_CHROMIUM_PATH"
            )
        try:
            if self._playwright is None:
                self._playwright = await async_playwright().start()
            browser = await self._playwright.chromium.launch(
                executable_path=str(self._chromium_path), args=CHROMIUM_ARGS, headless=True, timeout=60_000
            )
        except Exception as exc:
            raise BrowserError(f"cannot start Chromium ({self._chromium_path}) through Playwright: {exc}") from exc
        self.launches += 1
        return browser
