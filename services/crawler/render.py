"""JavaScript rendering with headless Chromium (Playwright): one browser, a bounded
pool of contexts, every browser request routed through the crawler's guards."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Error, async_playwright

from facepipe.config import CrawlConfig

from .fetch import REDIRECT_STATUSES, FetchError, RenderedResponse
from .urls import normalize_url

log = logging.getLogger("facepipe.crawler.render")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    # WebRTC could otherwise reach addresses the route guard never sees.
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
]
# Not needed to find images, and heavy.
BLOCKED_RESOURCES = frozenset({"font", "media"})
# Scrolls one viewport; true once the bottom is reached.
_SCROLL_STEP = """() => {
  window.scrollBy(0, window.innerHeight);
  const doc = document.scrollingElement || document.documentElement;
  return window.innerHeight + window.scrollY >= doc.scrollHeight - 2;
}"""
_SCROLL_PAUSE_MS = 120

# Sends one of the page's requests (method, URL, headers, body) through the crawler's
# pinned client, redirects not followed; raises to refuse it (private address, no DNS).
RenderRequest = Callable[[str, str, dict[str, str], bytes | None], Awaitable[RenderedResponse]]


class RenderUnavailable(Exception):
    """Chromium could not be started."""


@dataclass
class RenderResult:
    url: str
    html: str
    # Image URLs the page asked for; aborted, never downloaded.
    requested_images: list[str] = field(default_factory=list)


class Renderer:
    def __init__(self, config: CrawlConfig, request: RenderRequest) -> None:
        self.config = config
        self.request = request
        self._playwright: Any = None
        self._browser: Any = None
        self._contexts: asyncio.Queue[Any] = asyncio.Queue()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._failed: RenderUnavailable | None = None

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            if self._failed is not None:
                raise self._failed
            try:
                self._playwright = await async_playwright().start()
                self._browser = await self._playwright.chromium.launch(
                    executable_path=self.config.chromium_path, headless=True, args=CHROMIUM_ARGS
                )
                for _ in range(self.config.render_contexts):
                    context = await self._browser.new_context(
                        user_agent=self.config.user_agent,
                        service_workers="block",
                        accept_downloads=False,
                        viewport={"width": 1280, "height": 900},
                    )
                    await context.route_web_socket(re.compile(".*"), lambda ws: ws.close())
                    self._contexts.put_nowait(context)
            except Error as exc:
                await self.aclose()
                self._failed = RenderUnavailable(
                    f"cannot start Chromium at {self.config.chromium_path}: {exc}"
                )
                raise self._failed from exc
            self._started = True

    async def aclose(self) -> None:
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.close()
            self._browser = None
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                await self._playwright.stop()
            self._playwright = None
        self._started = False

    async def render(self, url: str) -> RenderResult:
        """Loads ``url``, scrolls to the bottom to trigger lazy loading, waits for
        scripts to settle and returns the resulting DOM."""
        await self.start()
        context = await self._contexts.get()
        page = None
        images: list[str] = []
        try:
            page = await context.new_page()
            await page.route("**/*", lambda route: self._handle(route, images))
            async with asyncio.timeout(self.config.render_timeout):
                await page.goto(url, wait_until="load", timeout=self.config.render_timeout * 1000)
                for _ in range(self.config.render_max_scrolls):
                    at_bottom = await page.evaluate(_SCROLL_STEP)
                    await page.wait_for_timeout(_SCROLL_PAUSE_MS)
                    if at_bottom:
                        break
                await page.wait_for_timeout(self.config.render_settle * 1000)
                html = await page.content()
            return RenderResult(url=url, html=html, requested_images=list(dict.fromkeys(images)))
        finally:
            if page is not None:
                with contextlib.suppress(Exception):
                    await page.close()
            with contextlib.suppress(Exception):
                await context.clear_cookies()
            self._contexts.put_nowait(context)

    async def _handle(self, route: Any, images: list[str]) -> None:
        request = route.request
        try:
            if request.resource_type == "image":
                images.append(request.url)
                await route.abort("blockedbyclient")
            elif request.resource_type in BLOCKED_RESOURCES:
                await route.abort("blockedbyclient")
            else:
                response = await self._fetch_guarded(route)
                if response is None:
                    await route.abort("blockedbyclient")
                else:
                    await route.fulfill(status=response.status, headers=response.headers, body=response.body)
        except Exception as exc:  # the page may be closing; never leave a route hanging
            log.debug("render route %s failed: %s", request.url, exc)
            with contextlib.suppress(Exception):
                await route.abort("failed")

    async def _fetch_guarded(self, route: Any) -> RenderedResponse | None:
        """Fetches the routed request through the crawler's pinned client, following
        redirects by hand so every hop is checked: Chromium itself never connects or
        resolves a name (it would follow redirects, and DNS answers, unseen)."""
        url = route.request.url
        method = route.request.method
        headers = dict(route.request.headers)
        body = route.request.post_data_buffer
        for _ in range(self.config.max_redirects + 1):
            try:
                async with asyncio.timeout(self.config.render_timeout):
                    response = await self.request(method, url, headers, body)
            except FetchError as exc:
                log.info("render blocked %s: %s", url, exc)
                return None
            location = response.headers.get("location") or response.headers.get("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                return response
            target = normalize_url(location, url)
            if target is None:
                return None
            url = target
            if response.status == 303:
                method, body = "GET", None
        return None
