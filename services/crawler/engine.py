"""The crawl loop: walks each site politely and hands every image candidate to a sink."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any

from facepipe.config import CrawlConfig
from facepipe.echo import echo
from facepipe.runtime import metrics

from .fetch import HTML_TYPES, Fetcher, FetchError, decode_html
from .mining import PageMine, mine_html
from .models import Candidate, CrawlError, CrawlReport
from .politeness import HostScheduler
from .render import Renderer, RenderUnavailable
from .robots import RobotsCache, RobotsRules
from .sitemap import MAX_SITEMAP_BYTES, parse_sitemap
from .state import CrawlState
from .urls import is_image_url, is_page_url, normalize_url, not_a_photo, origin, site_key

log = logging.getLogger("facepipe.crawler")

_CANDIDATE_FIELDS = tuple(f.name for f in fields(Candidate))
# Alt text kept with a taken image in the crawl state (the ingest message caps it too).
MAX_ALT_CHARS = 1000
# Images taken and handed out together: their state writes and sends share round trips.
HAND_OUT_BATCH = 256

Sink = Callable[[Candidate], Awaitable[None]]
Progress = Callable[[CrawlReport], Awaitable[None] | None]


class SinkError(Exception):
    """The candidate sink failed; the crawl stops rather than drop candidates."""


@dataclass
class _Site:
    key: str
    seeds: list[str]
    queue: asyncio.Queue[tuple[str, int]] = field(default_factory=asyncio.Queue)
    pages_started: int = 0
    # Pages a previous run of the job queued but never finished.
    resumed: list[tuple[str, int]] = field(default_factory=list)


class _Crawl:
    def __init__(
        self,
        config: CrawlConfig,
        sink: Sink,
        state: CrawlState,
        progress: Progress | None,
        job_id: str,
        service: str,
    ) -> None:
        self.config = config
        self.sink = sink
        self.state = state
        self.progress = progress
        self.job_id = job_id
        self.service = service
        self.report = CrawlReport(job_id=job_id)
        self.scheduler = HostScheduler(config.per_domain_concurrency, config.per_domain_delay)
        self.fetcher = Fetcher(config, self.scheduler)
        self.robots = RobotsCache(self.fetcher, config.user_agent)
        self.renderer: Renderer | None = None
        self.render_disabled = config.render_mode == "never"
        self._emitted: set[str] = set()
        self._skipped: set[str] = set()

    async def aclose(self) -> None:
        self.robots.close()
        if self.renderer is not None:
            await self.renderer.aclose()
        await self.fetcher.aclose()

    # Bookkeeping.

    async def _error(self, url: str, kind: str, message: str) -> None:
        self.report.errors.append(CrawlError(url=url, kind=kind, message=message))
        metrics.CRAWL_ERRORS.labels(self.service, kind).inc()
        log.info("crawl error", extra={"url": url, "kind": kind, "error": message, "job_id": self.job_id})
        await self.state.incr(self.job_id, "errors")

    async def _skip_robots(self, url: str) -> None:
        if url not in self._skipped:
            self._skipped.add(url)
            self.report.skipped_robots.append(url)
            metrics.CRAWL_ROBOTS_SKIPPED.labels(self.service).inc()
            await self.state.incr(self.job_id, "skipped_robots")

    async def _progress(self) -> None:
        if self.progress is not None:
            result = self.progress(self.report)
            if inspect.isawaitable(result):
                await result

    # Sites.

    async def run(self, seeds: list[str]) -> None:
        sites: dict[str, _Site] = {}
        for seed in seeds:
            url = normalize_url(seed)
            if url is None:
                await self._error(seed, "seed", f"seed {echo(seed)} is not an http(s) URL")
                continue
            sites.setdefault(site_key(url), _Site(key=site_key(url), seeds=[])).seeds.append(url)
        if sites:
            await self._resume(sites)
        limit = asyncio.Semaphore(self.config.max_parallel_sites)

        async def one(site: _Site) -> None:
            async with limit:
                await self._crawl_site(site)

        await _run_all([one(site) for site in sites.values()])

    async def _resume(self, sites: dict[str, _Site]) -> None:
        """Picks up where an earlier run of the job stopped: its finished pages count
        against the page limit, its unfinished pages are queued again, and images it
        took but never handed out are handed out now."""
        first = next(iter(sites.values()))
        for entry in await self.state.entries(self.job_id, "page"):
            site = sites.get(str(entry.record.get("site", ""))) or sites.get(site_key(entry.url)) or first
            if entry.done:
                site.pages_started += 1
            else:
                site.resumed.append((entry.url, int(entry.record.get("depth", 0))))
        unfinished: list[Candidate] = []
        for entry in await self.state.entries(self.job_id, "image"):
            if not entry.done:
                record = {k: str(entry.record.get(k, "")) for k in _CANDIDATE_FIELDS}
                candidate = Candidate(**{**record, "url": entry.url})
                self._emitted.add(candidate.url)
                unfinished.append(candidate)
        for i in range(0, len(unfinished), HAND_OUT_BATCH):
            await self._hand_out(unfinished[i : i + HAND_OUT_BATCH])
        resumed = sum(len(s.resumed) for s in sites.values())
        if resumed or any(s.pages_started for s in sites.values()):
            log.info("resuming crawl", extra={"job_id": self.job_id, "pages_queued": resumed})

    async def _crawl_site(self, site: _Site) -> None:
        try:
            rules = await self.robots.rules(site.seeds[0])
        except FetchError as exc:
            await self._error(site.seeds[0], exc.kind, exc.message)
            return
        if rules.problem:
            await self._error(f"{origin(site.seeds[0])}/robots.txt", "robots", rules.problem)
        if rules.crawl_delay:
            self.scheduler.set_delay(site.key, min(rules.crawl_delay, self.config.max_crawl_delay))
        await self._enqueue(site, site.seeds, 0)
        for url, depth in site.resumed:
            await self._admit(site, url, depth)

        async def drain() -> None:
            if self.config.sitemaps:
                await self._discover_sitemaps(site, rules)
            await site.queue.join()

        tasks = [asyncio.create_task(self._worker(site)) for _ in range(self.config.per_domain_concurrency)]
        tasks.append(asyncio.create_task(drain()))
        try:
            # Workers only end by raising; drain ends when the frontier is empty.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await _cancel_all(tasks)

    async def _worker(self, site: _Site) -> None:
        while True:
            url, depth = await site.queue.get()
            try:
                done = [url]
                # Images the page handed out, marked done below in one go with the page.
                handed: list[Candidate] = []
                try:
                    landed = await self._crawl_page(site, url, depth, handed)
                    if landed:
                        done.append(landed)
                except SinkError:
                    await _await_all(self._handed_out(handed))
                    raise
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("page failed", extra={"url": url})
                    await self._error(url, "internal", f"{type(exc).__name__}: {exc}")
                await _await_all(
                    [self.state.mark_done_many(self.job_id, "page", done), *self._handed_out(handed)]
                )
            finally:
                site.queue.task_done()

    async def _enqueue(self, site: _Site, urls: list[str], depth: int) -> None:
        """Takes the pages among ``urls`` that are in scope and new to the job, in order."""
        config = self.config
        if depth > config.max_depth or site.pages_started >= config.max_pages:
            return
        wanted = [
            url for url in urls if is_page_url(url) and not (config.same_site and site_key(url) != site.key)
        ]
        record = {"depth": depth, "site": site.key}
        taken = await self.state.add_seen_many(self.job_id, "page", [(url, record) for url in wanted])
        for url, new in zip(wanted, taken, strict=True):
            if new:
                await self._admit(site, url, depth)

    async def _admit(self, site: _Site, url: str, depth: int) -> None:
        """Queues a page this run took, unless robots.txt (or the guard) refuses it."""
        try:
            rules = await self.robots.rules(url)
        except FetchError as exc:
            await self._error(url, exc.kind, exc.message)
            await self.state.mark_done(self.job_id, "page", url)
            return
        if not rules.allowed(url):
            await self._skip_robots(url)
            await self.state.mark_done(self.job_id, "page", url)
            return
        site.queue.put_nowait((url, depth))

    async def _discover_sitemaps(self, site: _Site, rules: RobotsRules) -> None:
        declared = bool(rules.sitemaps)
        pending = [u for u in (normalize_url(s) for s in rules.sitemaps) if u]
        if not declared:
            default = f"{origin(site.seeds[0])}/sitemap.xml"
            pending = [default] if rules.allowed(default) else []
        done: set[str] = set()
        while pending and len(done) < self.config.max_sitemap_documents:
            url = pending.pop(0)
            if url in done or (self.config.same_site and site_key(url) != site.key):
                continue
            done.add(url)
            try:
                result = await self.fetcher.fetch(url, max_bytes=MAX_SITEMAP_BYTES, want=None)
                if not 200 <= result.status < 300 or result.body is None:
                    raise FetchError(url, "http", f"HTTP {result.status}")
                found = parse_sitemap(result.body)
            except (FetchError, ValueError) as exc:
                # A missing default /sitemap.xml is normal; a declared one that fails is not.
                if declared or isinstance(exc, FetchError) and exc.kind in ("blocked", "dns"):
                    await self._error(url, "sitemap", str(exc))
                continue
            pending.extend(u for u in (normalize_url(s, url) for s in found.sitemaps) if u)
            await self._enqueue(site, [u for u in (normalize_url(page, url) for page in found.pages) if u], 1)

    # Pages.

    async def _check_hop(self, site: _Site, url: str) -> None:
        if self.config.same_site and site_key(url) != site.key:
            raise FetchError(url, "offsite", f"redirect to {url} leaves the site {site.key}")
        if not (await self.robots.rules(url)).allowed(url):
            await self._skip_robots(url)
            raise FetchError(url, "robots", f"redirect to {url} is disallowed by robots.txt")

    async def _crawl_page(self, site: _Site, url: str, depth: int, handed: list[Candidate]) -> str | None:
        """Fetches, mines and follows one page; returns the page a redirect landed on
        when this call took it over (it is done along with ``url``). The images it
        hands out are added to ``handed`` for the caller to mark done."""
        config = self.config
        if site.pages_started >= config.max_pages:
            return None
        site.pages_started += 1
        started = time.monotonic()
        try:
            result = await self.fetcher.fetch(
                url,
                max_bytes=config.max_html_bytes,
                want=HTML_TYPES,
                hop_check=partial(self._check_hop, site),
            )
        except FetchError as exc:
            metrics.CRAWL_PAGES.labels(self.service, "static", exc.kind).inc()
            await self._error(url, exc.kind, exc.message)
            return None
        finally:
            elapsed = time.monotonic() - started
            self.report.add_time("fetch", elapsed)
            metrics.CRAWL_FETCH_LATENCY.labels(self.service, "static").observe(elapsed)
        # A redirect may land on a page that is already queued or done.
        landed = None
        if result.url != url:
            record = {"depth": depth, "site": site.key}
            if not await self.state.add_seen(self.job_id, "page", result.url, record):
                return None
            landed = result.url
        if not 200 <= result.status < 300:
            metrics.CRAWL_PAGES.labels(self.service, "static", "http").inc()
            await self._error(result.url, "http", f"HTTP {result.status}")
            return landed
        if result.body is None:
            metrics.CRAWL_PAGES.labels(self.service, "static", "not_html").inc()
            log.debug("not html", extra={"url": result.url, "content_type": result.content_type})
            return landed
        metrics.CRAWL_PAGES.labels(self.service, "static", "ok").inc()

        started = time.monotonic()
        mine = mine_html(
            decode_html(result.body, result.charset), result.url, site.key, config.min_image_side
        )
        self.report.add_time("mine", time.monotonic() - started)
        self.report.pages_crawled += 1
        if await self._wants_render(site, mine):
            rendered = await self._render(site, result.url)
            if rendered is not None:
                mine = await self._merge(site, mine, rendered)
        # The count, the images and the links are independent: their state writes overlap.
        await _await_all(
            [
                self.state.incr(self.job_id, "pages"),
                self._emit(site, mine.candidates, handed),
                self._enqueue(site, mine.links, depth + 1),
            ]
        )
        await self._progress()
        return landed

    async def _wants_render(self, site: _Site, mine: PageMine) -> bool:
        if self.render_disabled:
            return False
        if self.config.render_mode == "always" or not mine.candidates:
            return True
        return await self.state.get_strategy(site.key) == "render"

    async def _render(self, site: _Site, url: str) -> PageMine | None:
        if self.renderer is None:
            self.renderer = Renderer(self.config, self.fetcher.render_request)
        started = time.monotonic()
        try:
            # A render counts as one request to the site for politeness.
            async with self.scheduler.slot(site.key):
                result = await self.renderer.render(url)
        except RenderUnavailable as exc:
            metrics.CRAWL_PAGES.labels(self.service, "render", "unavailable").inc()
            if not self.render_disabled:
                self.render_disabled = True
                await self._error(url, "render", f"{exc}; continuing without JavaScript rendering")
            return None
        except Exception as exc:  # Playwright errors and timeouts: keep the static result
            metrics.CRAWL_PAGES.labels(self.service, "render", "error").inc()
            await self._error(url, "render", f"{type(exc).__name__}: {exc}".strip())
            return None
        finally:
            elapsed = time.monotonic() - started
            self.report.add_time("render", elapsed)
            metrics.CRAWL_FETCH_LATENCY.labels(self.service, "render").observe(elapsed)
        metrics.CRAWL_PAGES.labels(self.service, "render", "ok").inc()
        self.report.pages_rendered += 1
        await self.state.incr(self.job_id, "rendered")
        mine = mine_html(result.html, url, site.key, self.config.min_image_side)
        # Images requested but not in the markup: external CSS, images made by script.
        known = {c.url for c in mine.candidates}
        for requested in result.requested_images:
            image = normalize_url(requested)
            if (
                image
                and image not in mine.image_refs
                and image not in known
                and is_image_url(image)
                and not_a_photo(image) is None
            ):
                known.add(image)
                mine.candidates.append(
                    Candidate(url=image, page_url=url, alt="", source="network", site=site.key)
                )
        return mine

    async def _merge(self, site: _Site, static: PageMine, rendered: PageMine) -> PageMine:
        static_urls = {c.url for c in static.candidates}
        added = [c for c in rendered.candidates if c.url not in static_urls]
        if self.config.render_mode == "auto":
            strategy = await self.state.get_strategy(site.key)
            if added and strategy != "render":
                # Script-made images here: render this site's pages from now on.
                await self.state.set_strategy(site.key, "render")
            elif strategy is None:
                await self.state.set_strategy(site.key, "static")
        return PageMine(
            candidates=static.candidates + added,
            links=list(dict.fromkeys(static.links + rendered.links)),
            image_refs=static.image_refs | rendered.image_refs,
        )

    async def _emit(self, site: _Site, candidates: list[Candidate], handed: list[Candidate]) -> None:
        """Takes a page's new images and hands them out, a batch at a time; those
        handed out are added to ``handed``, not yet marked done."""
        wanted: list[Candidate] = []
        for candidate in candidates:
            if candidate.url in self._emitted:
                continue
            self._emitted.add(candidate.url)
            if site_key(candidate.url) == site.key:
                with contextlib.suppress(FetchError):
                    if not (await self.robots.rules(candidate.url)).allowed(candidate.url):
                        await self._skip_robots(candidate.url)
                        continue
            wanted.append(candidate)
        for i in range(0, len(wanted), HAND_OUT_BATCH):
            batch = wanted[i : i + HAND_OUT_BATCH]
            items = [(c.url, {**asdict(c), "alt": c.alt[:MAX_ALT_CHARS]}) for c in batch]
            taken = await self.state.add_seen_many(self.job_id, "image", items)
            await self._hand_out([c for c, new in zip(batch, taken, strict=True) if new], handed)

    async def _hand_out(self, candidates: list[Candidate], handed: list[Candidate] | None = None) -> None:
        """Sinks images this run took, all at once (their sends overlap). Each one is
        marked done only after its sink returned: here, or by the caller that gave
        ``handed``. A failure releases the images that failed, so a retry hands them
        out, and stops the crawl."""
        if not candidates:
            return
        results = await asyncio.gather(*(self.sink(c) for c in candidates), return_exceptions=True)
        sunk = [c for c, r in zip(candidates, results, strict=True) if not isinstance(r, BaseException)]
        failed = [(c, r) for c, r in zip(candidates, results, strict=True) if isinstance(r, BaseException)]
        if handed is None or failed:
            await _await_all(self._handed_out(sunk))
        else:
            handed.extend(sunk)
        if failed:
            for _, exc in failed:
                if isinstance(exc, asyncio.CancelledError):
                    raise exc
            await self.state.forget_seen_many(self.job_id, "image", [c.url for c, _ in failed])
            candidate, exc = failed[0]
            raise SinkError(f"sink failed for {candidate.url}: {type(exc).__name__}: {exc}") from exc

    def _handed_out(self, sunk: list[Candidate]) -> list[Awaitable[Any]]:
        """Counts images the sink took and returns the state writes that mark them done."""
        if not sunk:
            return []
        for candidate in sunk:
            metrics.CRAWL_CANDIDATES.labels(self.service, candidate.source).inc()
            self.report.candidates.append(candidate.url)
        urls = [c.url for c in sunk]
        return [
            self.state.mark_done_many(self.job_id, "image", urls),
            self.state.incr(self.job_id, "candidates", len(urls)),
        ]


async def _await_all(aws: list[Awaitable[Any]]) -> None:
    """Awaits everything together; all of it ends before the first failure is raised."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run_all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Runs coroutines concurrently; the first failure cancels the rest and is raised."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        await _cancel_all(tasks)


async def crawl(
    seeds: list[str],
    config: CrawlConfig,
    sink: Sink,
    state: CrawlState,
    progress: Progress | None = None,
    *,
    job_id: str | None = None,
    cancel: asyncio.Event | None = None,
    service: str = "crawler",
) -> CrawlReport:
    """Crawls ``seeds`` (one site each) and awaits ``sink(candidate)`` once per new image.

    Setting ``cancel`` stops the crawl and returns the partial report with
    ``cancelled`` set; cancelling the calling task stops it too and raises
    CancelledError. A failing sink stops the crawl with :class:`SinkError`.
    Crawling a ``job_id`` that ``state`` already has resumes it: finished pages
    are not fetched again and no image is handed out twice. ``service``
    labels the facepipe_crawler_* metrics.
    """
    job = _Crawl(config, sink, state, progress, job_id or uuid.uuid4().hex, service)
    started = time.monotonic()
    main = asyncio.create_task(job.run(seeds))
    waiter = asyncio.create_task(cancel.wait()) if cancel is not None else None
    try:
        await asyncio.wait([t for t in (main, waiter) if t is not None], return_when=asyncio.FIRST_COMPLETED)
        if not main.done():
            job.report.cancelled = True
            await _cancel_all([main])
        else:
            main.result()
    except asyncio.CancelledError:
        job.report.cancelled = True
        raise
    finally:
        await _cancel_all([t for t in (main, waiter) if t is not None])
        await job.aclose()
        job.report.timings["total"] = time.monotonic() - started
    return job.report
