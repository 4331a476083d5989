"""Crawler engine against a real test site served on 127.0.0.1 (plus a second host,
127.0.0.2, that must never be reached), with real Chromium for script-made images."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from facepipe.crawl import parse_sites_file
from facepipe.netguard import BlockedTargetError, address_problem, check_public_target
from facepipe_services.crawler import (
    Candidate,
    CrawlConfig,
    CrawlError,
    CrawlReport,
    MemoryCrawlState,
    SinkError,
    crawl,
)
from facepipe_services.crawler.fetch import decode_html, parse_retry_after
from facepipe_services.crawler.mining import largest_in_srcset, mine_html
from facepipe_services.crawler.robots import parse_robots
from facepipe_services.crawler.sitemap import parse_sitemap
from facepipe_services.crawler.urls import normalize_url, not_a_photo, site_key

SITE_DIR = Path(__file__).parent / "crawler_site"
CHROMIUM = Path("/usr/bin/chromium")
CONTENT_TYPES = {
    ".html": "text/html",
    ".txt": "text/plain",
    ".xml": "application/xml",
    ".js": "text/javascript",
    ".css": "text/css",
}
SLOW_SECONDS = 4.0
POLITE_PAGE_SECONDS = 0.8
# A generous deadline for what takes milliseconds, so a loaded machine cannot fail a test.
DEADLINE_S = 60.0
HOLD_LIMIT_S = 2 * DEADLINE_S  # a held page is answered at last, so no server thread is left behind


@dataclass
class Hit:
    start: float
    end: float
    path: str
    status: int


class SiteServer:
    """Serves tests/crawler_site plus a few dynamic pages, logging every request."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.hits: list[Hit] = []
        self.other_origin = ""
        self.robots_broken = False
        self.since = 0.0
        # While holding, the slow politeness pages wait for release instead of sleeping.
        self.holding = False
        self.slow_page_started = threading.Event()
        self.release_slow_pages = threading.Event()
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                start = time.monotonic()
                status = 0  # logged when the crawler hung up first (slow or big pages)
                try:
                    status = server.respond(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        # Requests left over from an earlier test (slow pages) are not logged.
                        if start >= server.since:
                            server.hits.append(Hit(start, time.monotonic(), self.path, status))

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def reset(self) -> None:
        with self._lock:
            self.since = time.monotonic()
            self.hits.clear()
            self._counts.clear()
        self.holding = False
        self.slow_page_started.clear()
        self.release_slow_pages.clear()

    def hold_slow_pages(self) -> None:
        """Slow politeness pages are answered only after ``release_slow_pages`` is set."""
        self.holding = True

    def paths(self) -> list[str]:
        with self._lock:
            return [h.path for h in self.hits]

    def wait_for_hits(self, n: int, timeout: float = DEADLINE_S) -> list[str]:
        """A hit is logged after its response is sent, so the crawler can finish first."""
        deadline = time.monotonic() + timeout
        while len(self.paths()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.paths()

    def _count(self, path: str) -> int:
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1
            return self._counts[path]

    def respond(self, req: BaseHTTPRequestHandler) -> int:
        path = urlsplit(req.path).path
        if path == "/robots.txt" and self.robots_broken:
            return _send(req, 503, body=b"down")
        if path.startswith("/redirect/"):
            step = int(path.rsplit("/", 1)[1])
            return _send(req, 302, location="/landing.html" if step >= 3 else f"/redirect/{step + 1}")
        if path.startswith("/loop/"):
            return _send(req, 302, location=f"/loop/{int(path.rsplit('/', 1)[1]) + 1}")
        if path == "/go-offsite":
            return _send(req, 302, location=f"{self.other_origin}/landing.html")
        if path == "/broken.html":
            return _send(req, 500, body=b"always broken")
        if path == "/slow.html":
            time.sleep(SLOW_SECONDS)
            return _send(req, 200, body=b"<img src='/img/slow.jpg'>", ctype="text/html")
        if path.startswith("/polite/slow-"):
            self.slow_page_started.set()
            if self.holding:
                self.release_slow_pages.wait(HOLD_LIMIT_S)
            else:
                time.sleep(POLITE_PAGE_SECONDS)
            return _send(req, 200, body=b"<p>slow</p>", ctype="text/html")
        if path == "/rate-limited.html" and self._count(path) == 1:
            return _send(req, 429, body=b"slow down", retry_after="1")
        if path == "/big.html":
            # No Content-Length: the crawler must stop reading on its own.
            req.send_response(200)
            req.send_header("Content-Type", "text/html; charset=utf-8")
            req.end_headers()
            req.wfile.write(b"<html><body><img src='/img/big-page.jpg'>")
            for _ in range(300):
                req.wfile.write(b"<p>" + b"x" * 1024 + b"</p>")
            return 200
        return self._static(req, path)

    def _static(self, req: BaseHTTPRequestHandler, path: str) -> int:
        if path.endswith("/"):
            path += "index.html"
        file = (SITE_DIR / path.lstrip("/")).resolve()
        if SITE_DIR.resolve() not in file.parents or not file.is_file():
            return _send(req, 404, body=b"not found")
        body = file.read_bytes()
        body = body.replace(b"{{ORIGIN}}", self.origin.encode()).replace(
            b"{{OTHER}}", self.other_origin.encode()
        )
        return _send(req, 200, body=body, ctype=CONTENT_TYPES.get(file.suffix, "application/octet-stream"))


def _send(
    req: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    ctype: str = "text/plain",
    location: str | None = None,
    retry_after: str | None = None,
) -> int:
    req.send_response(status)
    req.send_header("Content-Type", ctype)
    req.send_header("Content-Length", str(len(body)))
    if location:
        req.send_header("Location", location)
    if retry_after:
        req.send_header("Retry-After", retry_after)
    req.end_headers()
    req.wfile.write(body)
    return status


@pytest.fixture(scope="module")
def servers():
    site, other = SiteServer("127.0.0.1"), SiteServer("127.0.0.2")
    site.other_origin, other.other_origin = other.origin, site.origin
    site.thread.start()
    other.thread.start()
    yield site, other
    for server in (site, other):
        server.httpd.shutdown()
        server.httpd.server_close()


def _config(**overrides: object) -> CrawlConfig:
    values: dict[str, object] = dict(
        max_pages=100,
        max_depth=3,
        per_domain_concurrency=2,
        per_domain_delay=0.05,
        connect_timeout=2.0,
        read_timeout=3.0,
        request_timeout=1.5,
        retries=2,
        backoff_base=0.1,
        max_html_bytes=100_000,
        allow_private_networks=True,
        render_mode="auto",
        render_settle=0.3,
        render_timeout=20.0,
    )
    values.update(overrides)
    return CrawlConfig(**values)  # type: ignore[arg-type]


def _run(
    seeds: list[str], config: CrawlConfig, state: MemoryCrawlState | None = None, **kwargs: object
) -> tuple[CrawlReport, list[Candidate]]:
    found: list[Candidate] = []

    async def sink(candidate: Candidate) -> None:
        found.append(candidate)

    report = asyncio.run(crawl(seeds, config, sink, state or MemoryCrawlState(), **kwargs))  # type: ignore[arg-type]
    return report, found


# Everything the full crawl must find; paths are on the test site unless absolute.
EXPECTED_IMAGES = {
    "/img/index-hero.jpg",
    "{OTHER}/img/offsite.jpg",
    "/img/plain.jpg",
    "/img/sw-1200.jpg",
    "/img/sx-3x.jpg",
    "/img/lazy-data-src.jpg",
    "/img/lazy-ds-1800.jpg",
    "/img/lazy-lazy-src.jpg",
    "/img/pic-1600.webp",
    "/img/pic-fallback.jpg",
    "/img/og.jpg",
    "/img/twitter.jpg",
    "/img/bg-inline.jpg",
    "/img/bg-shorthand.jpg",
    "/img/bg-style.jpg",
    "/img/linked-full.jpg",
    "/img/linked.PNG?size=large",
    "/gallery/based.jpg",
    "/img/gallery-inner.jpg",
    "/img/ok-sized.jpg",
    "/img/percent.jpg",
    "/img/caf%C3%A9-photo.jpg",
    "/img/js-1.jpg",
    "/img/js-2.jpg",
    "/img/js-lazy.jpg",
    "/img/js-preload.jpg",
    "/img/css-external.jpg",
    "/img/after-redirect.jpg",
    "/img/after-429.jpg",
    "/img/from-sitemap.jpg",
    "/img/deep-1.jpg",
    "/img/deep-2.jpg",
    "/img/deep-3.jpg",
}


@pytest.fixture(scope="module")
def full_crawl(servers):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; run scripts/system-deps.sh")
    site, other = servers
    site.reset()
    other.reset()
    state = MemoryCrawlState()
    report, found = _run([f"{site.origin}/index.html"], _config(), state)
    return report, found, list(site.hits), other.paths(), state


def _expected(site: SiteServer, other: SiteServer) -> set[str]:
    return {
        u.replace("{OTHER}", other.origin) if u.startswith("{OTHER}") else site.origin + u
        for u in EXPECTED_IMAGES
    }


# Unit-level checks of the building blocks.


def test_parse_sites_file():
    text = """
    # seeds
    https://Example.com/gallery   # main
    example.org
    https://example.com/page#section
    https://Example.com/gallery
    """
    assert parse_sites_file(text) == [
        "https://Example.com/gallery",
        "https://example.org",
        "https://example.com/page#section",
    ]
    with pytest.raises(ValueError, match=r"line 2: 'ftp://x.org' .*\n.*line 3"):
        parse_sites_file("https://ok.org\nftp://x.org\nhttp://exa mple.org\n")


def test_normalize_url():
    assert (
        normalize_url("HTTP://WWW.Example.COM:80/a/./b/../c?q=B&a=1#frag")
        == "http://www.example.com/a/c?q=B&a=1"
    )
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("https://example.com:8443/x/") == "https://example.com:8443/x/"
    assert normalize_url("../up/../img.jpg", "http://h/a/b/page.html") == "http://h/a/img.jpg"
    assert normalize_url("/my photo.jpg", "http://h/") == "http://h/my%20photo.jpg"
    assert normalize_url("http://h/a//b/./c.jpg") == "http://h/a//b/c.jpg"
    assert normalize_url("mailto:x@y") is None
    assert normalize_url("javascript:void(0)", "http://h/") is None
    assert site_key("https://www.example.com/x") == site_key("http://example.com/") == "example.com"
    assert site_key("http://127.0.0.1:8000/") != site_key("http://127.0.0.2:8000/")


def test_srcset_and_filters():
    assert largest_in_srcset("a.jpg 400w, b.jpg 1200w, c.jpg 800w") == "b.jpg"
    assert largest_in_srcset("a.jpg, b.jpg 3x, c.jpg 2x") == "b.jpg"
    assert largest_in_srcset("a,1.jpg 1x, b,2.jpg 2x") == "b,2.jpg"
    for url in (
        "http://h/favicon.ico",
        "http://h/img/site-logo.png",
        "http://h/icons/a.png",
        "http://h/x.svg",
        "data:image/png;base64,AAAA",
        "http://h/pixel.gif",
    ):
        assert not_a_photo(url), url
    assert not_a_photo("http://h/img/silicone-valley.jpg") is None


def test_mining_honours_min_side_and_base():
    html = (
        "<base href='http://cdn.example.com/p/'><img src='a.jpg' width='63'><img src='b.jpg' height=64>"
        "<a href='next.html'>n</a><a href='/big.JPEG'>big</a>"
    )
    mine = mine_html(html, "http://example.com/page", "example.com", min_side=64)
    assert [c.url for c in mine.candidates] == [
        "http://cdn.example.com/p/b.jpg",
        "http://cdn.example.com/big.JPEG",
    ]
    assert [c.source for c in mine.candidates] == ["img-src", "a-href"]
    assert mine.links == ["http://cdn.example.com/p/next.html"]


def test_retry_after_and_charset():
    assert parse_retry_after("7") == 7.0
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    latin = "<meta charset=iso-8859-1><p>Café</p>".encode("latin-1")
    assert "Café" in decode_html(latin)
    assert "Café" in decode_html("<p>Café</p>".encode("cp1252"), "windows-1252")
    assert "Café" in decode_html("<p>Café</p>".encode())
    assert "Café" in decode_html("<p>Café</p>".encode("cp1252"))


def test_sitemap_and_robots_parsing():
    index = b"<sitemapindex xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'><sitemap><loc> http://h/s1.xml </loc></sitemap></sitemapindex>"
    assert parse_sitemap(index).sitemaps == ["http://h/s1.xml"]
    urlset = b"<urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'><url><loc>http://h/a</loc></url></urlset>"
    assert parse_sitemap(gzip.compress(urlset)).pages == ["http://h/a"]
    with pytest.raises(ValueError, match="neither"):
        parse_sitemap(b"<html></html>")
    rules = parse_robots(
        "User-agent: *\nDisallow: /private/\nCrawl-delay: 2\nSitemap: http://h/sm.xml\n",
        "facepipe-crawler/0.1",
    )
    assert not rules.allowed("http://h/private/x.html") and rules.allowed("http://h/public.html")
    assert rules.crawl_delay == 2 and rules.sitemaps == ["http://h/sm.xml"]


async def test_check_public_target():
    for url, problem in (
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:192.168.0.1]/", "private"),
        ("http://224.0.0.1/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://100.64.0.1/", "non-global"),
        ("http://localhost/", "loopback"),
    ):
        with pytest.raises(BlockedTargetError, match=problem):
            await check_public_target(url, allow_private=False)
    await check_public_target("http://8.8.8.8/", allow_private=False)
    await check_public_target("http://127.0.0.1/", allow_private=True)
    assert address_problem(ipaddress.ip_address("1.1.1.1")) is None


# The crawl against the test site.


def test_full_crawl_finds_exactly_the_real_images(servers, full_crawl):
    site, other = servers
    report, found, hits, other_paths, _ = full_crawl
    expected = _expected(site, other)
    assert set(report.candidates) == expected, (
        f"missing {sorted(expected - set(report.candidates))}, extra {sorted(set(report.candidates) - expected)}"
    )
    # Each image handed to the sink once, with where and how it was found.
    assert len(found) == len(report.candidates) == len(expected)
    by_url = {c.url: c for c in found}
    assert by_url[f"{site.origin}/img/caf%C3%A9-photo.jpg"].alt == "Café crème"
    assert by_url[f"{site.origin}/img/sw-1200.jpg"].source == "img-srcset"
    assert by_url[f"{site.origin}/img/og.jpg"].source == "og:image"
    assert by_url[f"{site.origin}/img/css-external.jpg"].source == "network"
    assert by_url[f"{site.origin}/img/js-1.jpg"].page_url == f"{site.origin}/js-gallery.html"
    assert {c.site for c in found} == {site_key(site.origin)}
    assert not report.cancelled
    # The script gallery taught the state that this site needs rendering.
    state = full_crawl[4]
    assert asyncio.run(state.get_strategy(site_key(site.origin))) == "render"
    assert report.pages_rendered >= 1
    counters = asyncio.run(state.counters(report.job_id))
    assert counters["pages"] == report.pages_crawled and counters["candidates"] == len(expected)
    assert counters["errors"] == len(report.errors) and counters["rendered"] == report.pages_rendered


def test_full_crawl_stays_on_site_and_obeys_robots(servers, full_crawl):
    site, _ = servers
    report, _, hits, other_paths, _ = full_crawl
    paths = [h.path for h in hits]
    assert other_paths == []  # the other host was never contacted, not even by the browser
    assert not [p for p in paths if p.startswith("/private/")]
    assert not [
        p for p in paths if p.startswith("/img/") or p.startswith("/files/")
    ]  # images are not downloaded
    assert "/deep/level4.html" not in paths  # depth 4 > max_depth 3
    assert paths.count("/robots.txt") == 1
    assert {"/sitemap_index.xml", "/sitemap-pages.xml", "/hidden.html"} <= set(paths)
    assert {
        f"{site.origin}/private/secret.html",
        f"{site.origin}/private/from-sitemap.html",
        f"{site.origin}/private/img/disallowed-image.jpg",
    } == set(report.skipped_robots)


def test_full_crawl_records_each_failure(servers, full_crawl):
    site, _ = servers
    report, _, hits, _, _ = full_crawl
    errors = {(e.url.removeprefix(site.origin), e.kind) for e in report.errors}
    assert errors == {
        ("/missing.html", "http"),
        ("/broken.html", "server"),
        ("/slow.html", "timeout"),
        ("/big.html", "too_large"),
        ("/loop/1", "redirects"),
        ("/go-offsite", "offsite"),
    }
    paths = [h.path for h in hits]
    assert [p for p in paths if p.startswith("/redirect/")] == ["/redirect/1", "/redirect/2", "/redirect/3"]
    assert len([p for p in paths if p.startswith("/loop/")]) == 6  # max_redirects 5 + the first


def test_retries_back_off_and_honour_retry_after(full_crawl):
    _, _, hits, _, _ = full_crawl
    broken = [h for h in hits if h.path == "/broken.html"]
    assert len(broken) == 3  # retries=2, then recorded as an error
    gaps = [b.start - a.end for a, b in zip(broken, broken[1:], strict=False)]
    assert gaps[0] >= 0.1 * 0.9 and gaps[1] >= 0.2 * 0.9  # backoff_base * 2**attempt
    limited = [h for h in hits if h.path == "/rate-limited.html"]
    assert [h.status for h in limited[:2]] == [429, 200]
    assert limited[1].start - limited[0].end >= 1.0  # Retry-After: 1


def test_politeness_delay_and_concurrency(servers):
    site, _ = servers
    site.reset()
    delay = 0.2
    seen_progress: list[int] = []
    report, _ = _run(
        [f"{site.origin}/polite/index.html"],
        _config(per_domain_delay=delay, per_domain_concurrency=2, render_mode="never", sitemaps=False),
        progress=lambda r: seen_progress.append(r.pages_crawled),
    )
    hits = sorted(site.hits, key=lambda h: h.start)
    assert report.pages_crawled == 7 and not report.errors
    assert len(seen_progress) == 7 and max(seen_progress) == 7
    starts = [h.start for h in hits]
    # Loose by a few ms of server-side jitter; without the delay the gaps are ~0.
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= delay * 0.8
    # Pages take 4x the delay, so without the limit 4 would be in flight. The
    # server notes a request's end just after the client has its last byte: 10 ms slack.
    in_flight = max(sum(1 for h in hits if h.start <= t < h.end - 0.01) for t in starts)
    assert in_flight == 2


def test_page_and_depth_limits(servers):
    site, other = servers
    site.reset()
    report, found = _run(
        [f"{site.origin}/index.html"], _config(max_pages=3, render_mode="never", sitemaps=False)
    )
    pages = [p for p in site.wait_for_hits(4) if p != "/robots.txt"]
    assert sorted(pages) == ["/img.html", "/index.html", "/meta.html"]
    assert report.pages_crawled == 3
    assert f"{site.origin}/img/og.jpg" in report.candidates
    assert f"{site.origin}/img/bg-inline.jpg" not in report.candidates

    site.reset()
    report, _ = _run(
        [f"{site.origin}/deep/level1.html"], _config(max_depth=1, render_mode="never", sitemaps=False)
    )
    hits = site.wait_for_hits(3)
    assert [p for p in hits if p != "/robots.txt"] == ["/deep/level1.html", "/deep/level2.html"]
    assert set(report.candidates) == {f"{site.origin}/img/deep-1.jpg", f"{site.origin}/img/deep-2.jpg"}


def test_private_networks_are_refused_by_default(servers, monkeypatch):
    site, _ = servers
    site.reset()
    monkeypatch.delenv("FACEPIPE_ALLOW_PRIVATE_NETWORKS", raising=False)
    config = _config()
    config.allow_private_networks = CrawlConfig.from_env().allow_private_networks
    report, found = _run([f"{site.origin}/index.html"], config)
    assert report.errors == [
        CrawlError(
            url=f"{site.origin}/index.html",
            kind="blocked",
            message="target 127.0.0.1 is a loopback address; set FACEPIPE_ALLOW_PRIVATE_NETWORKS=1 to allow it",
        )
    ]
    assert found == [] and report.pages_crawled == 0
    assert site.paths() == []
    monkeypatch.setenv("FACEPIPE_ALLOW_PRIVATE_NETWORKS", "1")
    assert CrawlConfig.from_env().allow_private_networks


async def _slow_page_requested(site: SiteServer) -> None:
    assert await asyncio.to_thread(site.slow_page_started.wait, DEADLINE_S), "no slow page was requested"


def test_cancel_event_stops_the_crawl(servers):
    site, _ = servers
    site.reset()
    site.hold_slow_pages()

    async def main() -> CrawlReport:
        cancel = asyncio.Event()
        crawling = asyncio.create_task(
            crawl(
                [f"{site.origin}/polite/index.html"],
                _config(per_domain_delay=0.3, render_mode="never"),
                _ignore,
                MemoryCrawlState(),
                cancel=cancel,
            )
        )
        await _slow_page_requested(site)
        cancel.set()
        return await asyncio.wait_for(crawling, DEADLINE_S)

    try:
        report = asyncio.run(main())
        # The crawl ended while its slow pages were still unanswered: it did not wait for them.
        assert not site.release_slow_pages.is_set()
    finally:
        site.release_slow_pages.set()
    assert report.cancelled
    assert report.pages_crawled < 7


def test_missing_browser_falls_back_to_static(servers):
    site, _ = servers
    config = _config(max_depth=0, chromium_path="/nonexistent/chromium")
    report, found = _run([f"{site.origin}/js-gallery.html", f"{site.origin}/img.html"], config)
    assert [e.kind for e in report.errors] == ["render"]
    assert "cannot start Chromium" in report.errors[0].message
    assert report.pages_crawled == 2 and report.pages_rendered == 0
    assert f"{site.origin}/img/plain.jpg" in report.candidates


def test_unreadable_robots_disallows_the_site(servers):
    site, _ = servers
    site.reset()
    site.robots_broken = True
    try:
        report, found = _run([f"{site.origin}/index.html"], _config(render_mode="never"))
    finally:
        site.robots_broken = False
    assert site.wait_for_hits(3) == ["/robots.txt"] * 3  # retried, then given up
    assert [(e.kind, e.url) for e in report.errors] == [("robots", f"{site.origin}/robots.txt")]
    assert "HTTP 503" in report.errors[0].message
    assert report.skipped_robots == [f"{site.origin}/index.html"]
    assert found == [] and report.pages_crawled == 0


def test_task_cancel_stops_the_crawl(servers):
    site, _ = servers
    site.reset()
    site.hold_slow_pages()

    async def main() -> None:
        task = asyncio.create_task(
            crawl(
                [f"{site.origin}/polite/index.html"],
                _config(render_mode="never"),
                _ignore,
                MemoryCrawlState(),
            )
        )
        await _slow_page_requested(site)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
        assert task in done, "the crawl went on after its task was cancelled"
        # Stopped while its slow pages were still unanswered: it did not wait for them.
        assert not site.release_slow_pages.is_set()
        await task

    try:
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(main())
    finally:
        site.release_slow_pages.set()


def test_failing_sink_stops_the_crawl(servers):
    site, _ = servers
    state = MemoryCrawlState()

    async def sink(candidate: Candidate) -> None:
        raise ConnectionError("bus down")

    with pytest.raises(SinkError, match="bus down"):
        asyncio.run(
            crawl([f"{site.origin}/deep/level1.html"], _config(render_mode="never"), sink, state, job_id="j1")
        )
    # The failed candidate is not marked seen, so a retry of the job hands it out again.
    assert asyncio.run(state.add_seen("j1", "image", f"{site.origin}/img/deep-1.jpg"))


async def _ignore(candidate: Candidate) -> None:
    pass
