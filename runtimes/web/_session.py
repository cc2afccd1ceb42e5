"""One task's browser: its page, its URL allowlist, its actions, and what verifiers read."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, CDPSession, Page, Route, WebSocketRoute
from playwright.async_api import Error as PlaywrightError

from runtimes import core
from runtimes.core import Allowlist, BrowserAction, BrowserError, ErrorType, StartPageError, TaskSpec
from runtimes.web._sites import SITE_HOSTS, content_type, local_file, miniwob_url

OBSERVATION_CHARS = 6000
_ALIVE_SECONDS = 2.0
# JPEG qualities a screenshot is taken at, in turn, until one fits the size cap: 70 keeps text
# legible (~15-40 KB for a 1280x720 page); busy photographic pages need the lower ones.
_JPEG_QUALITIES = (70, 40, 15)
# The viewport's rectangle in the document (CDP Page.getLayoutMetrics), as a capture's clip.
_CLIP = {"x": "pageX", "y": "pageY", "width": "clientWidth", "height": "clientHeight"}
# WebRTC would reach STUN/TURN servers over UDP, past every allowlist: the page cannot open it.
_NO_WEBRTC_JS = """
(() => {
  const refuse = (name) => function () {
    try { window.__adpBlocked('webrtc:' + name); } catch (e) {}
    throw new DOMException('WebRTC is disabled in adp browsers', 'NotAllowedError');
  };
  for (const name of ['RTCPeerConnection', 'webkitRTCPeerConnection']) {
    try { Object.defineProperty(window, name, {value: refuse(name), writable: false, configurable: false}); }
    catch (e) {}
  }
})();
"""
_SNAPSHOT_JS = """
() => {
  const lines = [];
  let next = 1;
  const shown = (el) => {
    const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
  };
  const label = (el) => (el.innerText || el.value || el.placeholder || el.getAttribute('aria-label') || '')
    .replace(/\\s+/g, ' ').trim().slice(0, 80);
  const act = 'a,button,input,select,textarea,[onclick],[role=button],[role=link],[role=checkbox],[role=tab]';
  for (const el of document.body.querySelectorAll('*')) {
    if (!shown(el)) continue;
    const tag = el.tagName.toLowerCase();
    if (el.matches(act)) {
      if (!el.dataset.adpId) el.dataset.adpId = String(next++);
      let kind = tag;
      if (tag === 'input') kind = 'input[' + (el.type || 'text') + ']' + (el.checked ? ' checked' : '');
      if (tag === 'select') kind = 'select{' + [...el.options].map(o => o.text).join('|') + '}';
      lines.push(`[data-adp-id="${el.dataset.adpId}"] ${kind} "${label(el)}"`);
    } else if (/^h[1-6]$/.test(tag) || tag === 'tr' || tag === 'label' || tag === 'li' || el.id === 'query') {
      const text = tag === 'tr' ? [...el.cells].map(c => c.innerText.trim()).join(' | ') : label(el);
      if (text) lines.push(`${tag} "${text}"`);
    } else if (tag === 'p' || tag === 'span' || tag === 'div') {
      const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join(' ')
        .replace(/\\s+/g, ' ').trim();
      if (own) lines.push(`text "${own.slice(0, 120)}"`);
    }
    if (lines.length >= 300) break;
  }
  return lines.join('\\n');
}
"""


@dataclass(frozen=True)
class ActionOutcome:
    observation: str
    success: bool = True
    error_type: ErrorType | None = None
    error_message: str | None = None


@dataclass
class BrowserSession:
    """The browser side of one task run; create with :meth:`open`."""

    context: BrowserContext
    page: Page
    task: TaskSpec
    allowlist: Allowlist
    utterance: str | None = None
    _devtools: CDPSession | None = field(default=None, init=False, repr=False)

    @property
    def blocked(self) -> list[str]:
        """Every URL the task was refused, in order."""
        return self.allowlist.blocked

    @classmethod
    async def open(cls, context: BrowserContext, task: TaskSpec, allowlist: Allowlist) -> BrowserSession:
        """Route the context through the allowlist and adp's own sites, open the start page,
        and for MiniWoB tasks start the seeded episode. The context should also send its
        traffic through an :class:`~runtimes.web.EgressProxy` of ``allowlist``: routing
        does not see redirect hops.

        Raises:
            StartPageError: the browser works but the task's ``start_url`` did not load (the
                task's data: not a system failure).
            BrowserError: the browser died, or adp's own pages (MiniWoB) could not be opened.
        """
        constraints = task.constraints
        try:
            await context.expose_binding("__adpBlocked", lambda _source, what: allowlist.blocked.append(str(what)))
            await context.add_init_script(_NO_WEBRTC_JS)
            session = cls(context=context, page=await context.new_page(), task=task, allowlist=allowlist)
            await context.route("**/*", session._route)
            await context.route_web_socket("**/*", session._route_web_socket)
            if constraints.miniwob is not None:
                await session.page.goto(miniwob_url(constraints.miniwob.task), wait_until="load")
                session.utterance = await session.page.evaluate(
                    """(args) => {
                        Math.seedrandom(String(args.seed));
                        core.EPISODE_MAX_TIME = args.ms;
                        core.startEpisodeReal();
                        return core.getUtterance();
                    }""",
                    {"seed": constraints.miniwob.seed, "ms": task.timeout * 1000},
                )
        except PlaywrightError as exc:
            raise BrowserError(f"cannot open the start page: {_first_line(exc)}") from exc
        if constraints.miniwob is None and constraints.start_url:
            await session._open_start_url(constraints.start_url)
        return session

    async def _open_start_url(self, url: str) -> None:
        try:
            await self.page.goto(url, wait_until="load")
        except PlaywrightError as exc:
            # A browser that still answers loaded nothing because of the page (net::ERR_*, a
            # name that does not resolve, the navigation timeout): the task's data. One that
            # does not answer died under it: adp's machinery, retried on a relaunched browser.
            if not await self._alive():
                raise BrowserError(f"the browser died opening the start page: {_first_line(exc)}") from exc
            raise StartPageError(f"the task's start page did not load: {_first_line(exc)}") from exc

    async def act(self, action: BrowserAction) -> ActionOutcome:
        """Perform one action. A failed action is an outcome for the model to read; a dead
        browser raises.

        Raises:
            BrowserError: the browser or page is gone.
        """
        page = self.page
        try:
            match action:
                case core.Goto(url=url):
                    if not self.allowlist.check(url):
                        message = f"blocked: {url} is not in this task's allowed URLs"
                        return ActionOutcome(message, False, ErrorType.NETWORK_ERROR, message)
                    await page.goto(url, wait_until="load")
                    return ActionOutcome(f"opened {page.url} (title: {await page.title()!r})")
                case core.Click(selector=selector):
                    await page.click(selector)
                    return ActionOutcome(f"clicked {selector}; now at {page.url}")
                case core.Fill(selector=selector, text=text):
                    await page.fill(selector, text)
                    return ActionOutcome(f"filled {selector}")
                case core.Select(selector=selector, value=value):
                    try:
                        await page.select_option(selector, value=value, timeout=2000)
                    except PlaywrightError:
                        await page.select_option(selector, label=value)
                    return ActionOutcome(f"selected {value!r} in {selector}")
                case core.Press(key=key, selector=selector):
                    if selector:
                        await page.press(selector, key)
                    else:
                        await page.keyboard.press(key)
                    return ActionOutcome(f"pressed {key}")
                case core.Scroll(value=direction, selector=selector):
                    if selector:
                        await page.locator(selector).first.scroll_into_view_if_needed()
                    else:
                        await page.mouse.wheel(0, 600 if direction == "down" else -600)
                    return ActionOutcome(f"scrolled {selector or direction}")
                case core.ExtractText(selector=selector):
                    text = await page.locator(selector or "body").first.inner_text()
                    return ActionOutcome(_truncate(text))
                case core.Snapshot():
                    title = await page.title()
                    outline = await page.evaluate(_SNAPSHOT_JS)
                    return ActionOutcome(_truncate(f"url: {page.url}\ntitle: {title}\n{outline}"))
        except PlaywrightError as exc:
            if not await self._alive():
                raise BrowserError(f"the browser died: {_first_line(exc)}") from exc
            message = f"{action.action} failed: {_first_line(exc)}"
            return ActionOutcome(message, False, ErrorType.BROWSER_ERROR, message)
        raise AssertionError(f"unhandled action {action!r}")

    async def screenshot(self, max_bytes: int, timeout: float, scale: float = 1.0) -> bytes | None:
        """A JPEG of the page's viewport, ``scale`` times its size, of at most ``max_bytes``; or
        None when none fits, the page cannot be captured (a dead browser included: the next action
        says so) or it takes over ``timeout`` seconds. Never raises but for cancellation: a
        screenshot never fails a task.
        """
        try:
            async with asyncio.timeout(timeout):  # a browser killed mid-call may never answer
                # Chromium's own capture, not Playwright's page.screenshot (which waits for fonts
                # and restyles the caret in the page). The viewport as the compositor has it, not
                # as the page's script says (a page may redefine scrollX).
                if self._devtools is None:
                    self._devtools = await self.context.new_cdp_session(self.page)
                viewport = (await self._devtools.send("Page.getLayoutMetrics"))["cssVisualViewport"]
                clip = {name: float(viewport[key]) for name, key in _CLIP.items()} | {"scale": scale}
                for quality in _JPEG_QUALITIES:
                    shot = await self._devtools.send(
                        "Page.captureScreenshot", {"format": "jpeg", "quality": quality, "clip": clip}
                    )
                    jpeg = base64.b64decode(shot["data"], validate=True)
                    if len(jpeg) <= max_bytes:
                        return jpeg
        except (PlaywrightError, TimeoutError, KeyError, TypeError, ValueError, binascii.Error):
            return None
        return None

    def browser_connected(self) -> bool:
        browser = self.context.browser
        return browser is not None and browser.is_connected()

    async def _alive(self) -> bool:
        """Whether the page still answers within 2 s (the disconnect event may not have arrived yet).

        Asked again until then: a navigation that just failed is replacing the page with its
        error page, and the first question can meet the old document's destroyed context.
        """
        deadline = time.monotonic() + _ALIVE_SECONDS
        while self.browser_connected() and not self.page.is_closed():
            try:
                await asyncio.wait_for(self.page.evaluate("1"), timeout=max(0.1, deadline - time.monotonic()))
                return True
            except (PlaywrightError, TimeoutError):
                if time.monotonic() >= deadline:
                    return False
            await asyncio.sleep(0.05)
        return False

    async def page_text(self) -> str:
        """The page's visible text.

        Raises:
            BrowserError: the browser or page is gone.
        """
        try:
            return await self.page.locator("body").inner_text()
        except PlaywrightError as exc:
            if not await self._alive():
                raise BrowserError(f"the browser died: {_first_line(exc)}") from exc
            return ""

    async def miniwob_result(self) -> dict[str, Any]:
        """``{"done", "reward", "raw_reward"}`` of the MiniWoB episode.

        Raises:
            BrowserError: the browser or page is gone.
        """
        try:
            episode: dict[str, Any] = await self.page.evaluate(
                "() => ({done: WOB_DONE_GLOBAL, reward: WOB_REWARD_GLOBAL, raw_reward: WOB_RAW_REWARD_GLOBAL})"
            )
            return episode
        except PlaywrightError as exc:
            raise BrowserError(f"cannot read the MiniWoB episode: {_first_line(exc)}") from exc

    async def _route(self, route: Route) -> None:
        url = route.request.url
        if not self.allowlist.check(url):
            await route.abort("blockedbyclient")
            return
        if (path := local_file(url)) is not None:
            await route.fulfill(path=path, content_type=content_type(path))
        elif urlsplit(url).hostname in SITE_HOSTS:
            await route.fulfill(status=404, body="not found")
        else:
            await route.continue_()

    async def _route_web_socket(self, socket: WebSocketRoute) -> None:
        if self.allowlist.check(socket.url):
            socket.connect_to_server()
        else:
            await socket.close(code=1008, reason="not in this task's allowed URLs")


def task_allowlist(task: TaskSpec) -> Allowlist:
    """The task's ``allowed_urls``, its ``start_url``'s origin, its MiniWoB site and adp's own sites."""
    constraints = task.constraints
    urls = list(constraints.allowed_urls or [])
    urls += [f"http://{host}/" for host in SITE_HOSTS]
    if constraints.start_url:
        parts = urlsplit(constraints.start_url)
        urls.append(f"{parts.scheme}://{parts.netloc}/" if parts.netloc else constraints.start_url)
    return Allowlist.from_urls(urls)


def _truncate(text: str) -> str:
    if len(text) <= OBSERVATION_CHARS:
        return text
    return text[:OBSERVATION_CHARS] + f"\n[... truncated: {len(text)} characters in all]"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
