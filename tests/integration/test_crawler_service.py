"""The crawler service against a real nats-server and a real site on 127.0.0.1:
jobs through gRPC, IngestRequests on facepipe.ingest, cancel, the address guard,
resuming after SIGKILL without duplicates, and ``facepipe crawl``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from conftest import VENV_BIN, free_port
from prometheus_client import REGISTRY

from facepipe import bus
from facepipe.config import CrawlConfig, CrawlerSettings, Settings
from facepipe.pipeline import StageService
from facepipe.runtime.server import ServiceRuntime
from facepipe.v1 import crawler_pb2, crawler_pb2_grpc, pipeline_pb2
from facepipe_services.crawler.main import build
from facepipe_services.crawler.stage import CrawlerDeps, ingest_message_id
from facepipe_services.crawler.urls import site_key

FINISHED = {
    crawler_pb2.CRAWL_STATUS_DONE,
    crawler_pb2.CRAWL_STATUS_CANCELLED,
    crawler_pb2.CRAWL_STATUS_FAILED,
}
# Fast crawls: no politeness delay or retry backoff against the local test site.
FAST_ENV = {
    "FACEPIPE_ALLOW_PRIVATE_NETWORKS": "1",
    "FACEPIPE_CRAWL_PER_DOMAIN_DELAY": "0",
    "FACEPIPE_CRAWL_RETRIES": "0",
    "FACEPIPE_CRAWL_SITEMAPS": "0",
    "FACEPIPE_CRAWL_PROGRESS_INTERVAL": "0.2",
    # The crawler's own behaviour; access control has its own tests.
    "FACEPIPE_AUTH": "off",
}


# A generous deadline for what takes seconds, so a loaded machine cannot fail a test.
DEADLINE_S = 60.0


class PhotoSite:
    """An index linking to ``pages`` gallery pages with two photos each, a page
    robots.txt disallows and a missing page. Pages can be slow, or held: after the
    first ``hold_after`` page requests, pages are answered only once ``release`` is
    set. Hits are logged."""

    def __init__(self, pages: int = 4, page_delay: float = 0.0, hold_after: int | None = None) -> None:
        self.pages = pages
        self.page_delay = page_delay
        self.hold_after = hold_after
        self.release = threading.Event()
        self.hits: list[str] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with site._lock:
                    site.hits.append(self.path)
                site.respond(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def respond(self, req: BaseHTTPRequestHandler) -> None:
        path = urlsplit(req.path).path
        if path == "/robots.txt":
            return _send(req, 200, "User-agent: *\nDisallow: /private/\n", "text/plain")
        if path == "/":
            links = "".join(f"<a href='/p/{i}.html'>page {i}</a>" for i in range(self.pages))
            body = f"<h1>Photos</h1><img src='/img/cover.jpg' alt='Cover'>{links}"
            body += "<a href='/private/secret.html'>secret</a><a href='/missing.html'>gone</a>"
            return _send(req, 200, body)
        if path.startswith("/p/") and path.endswith(".html"):
            if self.hold_after is not None and sum(self.page_hits().values()) > self.hold_after:
                self.release.wait(2 * DEADLINE_S)  # answered at last, so no thread is left behind
            else:
                time.sleep(self.page_delay)
            i = path[3:-5]
            return _send(req, 200, f"<img src='/img/{i}-a.jpg' alt='Photo {i}a'><img src='/img/{i}-b.jpg'>")
        return _send(req, 404, "not found", "text/plain")

    def page_hits(self) -> Counter[str]:
        with self._lock:
            return Counter(h for h in self.hits if h.startswith("/p/"))

    def expected_images(self) -> set[str]:
        return {f"{self.origin}/img/cover.jpg"} | {
            f"{self.origin}/img/{i}-{s}.jpg" for i in range(self.pages) for s in "ab"
        }

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(req: BaseHTTPRequestHandler, status: int, body: str, ctype: str = "text/html") -> None:
    data = body.encode()
    req.send_response(status)
    req.send_header("Content-Type", f"{ctype}; charset=utf-8")
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    req.wfile.write(data)


@pytest.fixture
def site() -> Iterator[PhotoSite]:
    s = PhotoSite()
    yield s
    s.close()


class Crawler:
    """An in-process crawler service (gRPC and stage) and a client of it."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.service: StageService[CrawlerDeps] = runtime.service  # type: ignore[assignment]
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{runtime.grpc_port}")
        self.stub = crawler_pb2_grpc.CrawlerStub(self.channel)

    async def start_crawl(self, seeds: list[str], tenant: str = "t1", **kw) -> str:
        request = crawler_pb2.StartCrawlRequest(seeds=seeds, tenant_id=tenant, **kw)
        return (await self.stub.StartCrawl(request)).job_id

    async def get(self, job_id: str, **kw) -> crawler_pb2.GetCrawlResponse:
        return await self.stub.GetCrawl(crawler_pb2.GetCrawlRequest(job_id=job_id, **kw))

    async def wait(self, job_id: str, wait_s: float = DEADLINE_S) -> crawler_pb2.GetCrawlResponse:
        return await wait_for_job(self.stub, job_id, wait_s)


async def wait_for_job(
    stub, job_id: str, wait_s: float = DEADLINE_S, until=None
) -> crawler_pb2.GetCrawlResponse:
    """Polls GetCrawl until ``until(job)``; a job published straight to NATS may not exist yet."""
    until = until or (lambda j: j.status in FINISHED)
    deadline = time.monotonic() + wait_s
    job = None
    while True:
        try:
            job = await stub.GetCrawl(crawler_pb2.GetCrawlRequest(job_id=job_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if job is not None and until(job):
            return job
        assert time.monotonic() < deadline, f"job not there after {wait_s}s: {job}"
        await asyncio.sleep(0.1)


async def eventually(condition, wait_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def start_crawler(nats_server, monkeypatch) -> AsyncIterator:
    """Starts in-process crawlers with the given settings; stops them after the test."""
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    started: list[Crawler] = []

    async def start(crawl: CrawlerSettings | None = None, **defaults) -> Crawler:
        settings = Settings.from_env(
            "crawler",
            nats_url=nats_server.url,
            grpc_host="127.0.0.1",
            grpc_port=free_port(),
            http_port=free_port(),
            drain_seconds=5.0,
        )
        service = build(settings, crawl or CrawlerSettings.from_env(), CrawlConfig.from_env(**defaults))
        runtime = ServiceRuntime(service, settings)
        await runtime.start()
        started.append(Crawler(runtime))
        return started[-1]

    yield start
    for crawler in started:
        await crawler.channel.close()
        await crawler.runtime.stop()


class Ingest:
    """Reads facepipe.ingest where the extractor would: its durable work-queue consumer."""

    def __init__(self, nc, sub) -> None:
        self.nc, self.sub = nc, sub

    @classmethod
    async def connect(cls, url: str) -> Ingest:
        nc = await bus.connect(url, "test-ingest")
        await bus.ensure_topology(nc.jetstream())
        return cls(nc, await nc.jetstream().pull_subscribe_bind(durable="extractor", stream=bus.STREAM))

    async def drain(self, quiet_s: float = 1.0) -> list[pipeline_pb2.IngestRequest]:
        """Every request published so far (waits until none arrive for ``quiet_s``)."""
        out = []
        while True:
            try:
                msgs = await self.sub.fetch(100, timeout=quiet_s)
            except TimeoutError:
                return out
            for m in msgs:
                out.append(pipeline_pb2.IngestRequest.FromString(m.data))
                await m.ack()

    async def close(self) -> None:
        await self.nc.close()


@pytest.fixture
async def ingest(nats_server) -> AsyncIterator[Ingest]:
    reader = await Ingest.connect(nats_server.url)
    yield reader
    await reader.close()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_job_crawls_and_publishes_ingest_requests(start_crawler, ingest, site) -> None:
    crawler = await start_crawler()
    pages_before = metric("facepipe_crawler_pages_total", service="crawler", mode="static", outcome="ok")
    job_id = await crawler.start_crawl(
        [f"{site.origin}/"], tenant="acme", render_mode=crawler_pb2.RENDER_MODE_NEVER
    )
    job = await crawler.wait(job_id)

    assert job.status == crawler_pb2.CRAWL_STATUS_DONE, job
    assert (job.tenant_id, list(job.seeds)) == ("acme", [f"{site.origin}/"])
    assert job.pages_crawled == 1 + site.pages
    assert set(job.candidates) == site.expected_images() and job.candidates_count == len(job.candidates)
    assert job.skipped_robots == 1 and list(job.skipped_robots_urls) == [f"{site.origin}/private/secret.html"]
    assert [(e.url, e.kind, e.message) for e in job.errors] == [
        (f"{site.origin}/missing.html", "http", "HTTP 404")
    ]
    assert job.errors_count == 1 and job.attempts == 1 and not job.error
    assert job.started_at_ms >= job.created_at_ms and job.finished_at_ms >= job.started_at_ms
    assert len((await crawler.get(job_id, max_candidates=2)).candidates) == 2
    assert "/private/secret.html" not in site.hits

    requests = await ingest.drain()
    assert sorted(r.url for r in requests) == sorted(site.expected_images())
    by_url = {r.url: r for r in requests}
    photo = by_url[f"{site.origin}/img/1-a.jpg"]
    assert (photo.tenant_id, photo.site, photo.batch_id) == ("acme", site_key(site.origin), job_id)
    assert (photo.page_url, photo.alt_text) == (f"{site.origin}/p/1.html", "Photo 1a")
    assert by_url[f"{site.origin}/img/cover.jpg"].page_url == f"{site.origin}/"
    for r in requests:
        assert r.message_id == hashlib.sha256(f"{job_id}\n{r.url}".encode()).hexdigest()
        assert r.message_id == ingest_message_id(job_id, r.url)
        assert not r.bucket and not r.key

    after = metric("facepipe_crawler_pages_total", service="crawler", mode="static", outcome="ok")
    assert after - pages_before == job.pages_crawled
    assert metric("facepipe_crawler_candidates_total", service="crawler", source="img-src") >= len(requests)
    port = crawler.runtime.http_port
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"http://127.0.0.1:{port}/stats")).json()
        ready = (await http.get(f"http://127.0.0.1:{port}/readyz")).json()
    assert stats["service"] == "crawler" and stats["jobs"] == {"started": 1, "done": 1}
    assert stats["msgs_acked"] == 1 and stats["jobs_running"] == {}
    assert ready == {"ready": True, "checks": {"started": "ok", "nats": "ok"}}


async def test_start_crawl_rejects_bad_requests(start_crawler) -> None:
    crawler = await start_crawler()
    bad = [
        ({"seeds": ["http://example.org/"], "tenant_id": "bad tenant"}, "invalid tenant_id"),
        ({"seeds": [], "tenant_id": "t1"}, "no seeds"),
        (
            {"seeds": ["ftp://example.org/", "http://"], "tenant_id": "t1"},
            "'ftp://example.org/' is not an http(s) URL",
        ),
        ({"seeds": ["http://example.org/"], "tenant_id": "t1", "max_pages": -1}, "max_pages"),
        ({"seeds": ["http://example.org/"], "tenant_id": "t1", "max_depth": 999}, "max_depth"),
    ]
    for fields, message in bad:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await crawler.stub.StartCrawl(crawler_pb2.StartCrawlRequest(**fields))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert message in info.value.details(), info.value.details()
    for call, request in (
        (crawler.stub.GetCrawl, crawler_pb2.GetCrawlRequest(job_id="0" * 32)),
        (crawler.stub.CancelCrawl, crawler_pb2.CancelCrawlRequest(job_id="0" * 32)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await crawler.get("job.with.dots")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_stops_a_slow_crawl_and_a_queued_one(start_crawler, ingest) -> None:
    slow = PhotoSite(pages=30, hold_after=2)
    try:
        crawler = await start_crawler(CrawlerSettings.from_env(max_jobs=1))
        running = await crawler.start_crawl([f"{slow.origin}/"], render_mode=crawler_pb2.RENDER_MODE_NEVER)
        queued = await crawler.start_crawl([f"{slow.origin}/"], render_mode=crawler_pb2.RENDER_MODE_NEVER)
        await wait_for_job(crawler.stub, running, until=lambda j: j.pages_crawled >= 2)
        assert (await crawler.get(queued)).status == crawler_pb2.CRAWL_STATUS_QUEUED

        cancelled = await crawler.stub.CancelCrawl(crawler_pb2.CancelCrawlRequest(job_id=queued))
        assert cancelled.status == crawler_pb2.CRAWL_STATUS_CANCELLED  # never started
        answer = await crawler.stub.CancelCrawl(crawler_pb2.CancelCrawlRequest(job_id=running))
        assert answer.status == crawler_pb2.CRAWL_STATUS_RUNNING
        job = await crawler.wait(running)
        # It ended while its remaining pages were held: it did not wait for them.
        assert not slow.release.is_set()
        assert job.status == crawler_pb2.CRAWL_STATUS_CANCELLED and job.cancel_requested
        assert 2 <= job.pages_crawled < 1 + slow.pages
        assert job.candidates_count == len(job.candidates) == len(await ingest.drain())
        # Cancelling a finished job changes nothing.
        again = await crawler.stub.CancelCrawl(crawler_pb2.CancelCrawlRequest(job_id=running))
        assert again.status == crawler_pb2.CRAWL_STATUS_CANCELLED

        # The queued job's message is taken and dropped without crawling.
        await wait_for_job(crawler.stub, queued, until=lambda j: True)
        await eventually(lambda: crawler.service.worker.stats.counters["msgs_acked"] == 2)
        job = await crawler.get(queued)
        assert (
            job.status == crawler_pb2.CRAWL_STATUS_CANCELLED and job.attempts == 0 and job.pages_crawled == 0
        )
    finally:
        slow.close()


async def test_guarded_crawler_refuses_private_targets(start_crawler, ingest, site, monkeypatch) -> None:
    monkeypatch.delenv("FACEPIPE_ALLOW_PRIVATE_NETWORKS")
    crawler = await start_crawler()
    job = await crawler.wait(await crawler.start_crawl([f"{site.origin}/"]))
    assert job.status == crawler_pb2.CRAWL_STATUS_FAILED
    assert [(e.url, e.kind) for e in job.errors] == [(f"{site.origin}/", "blocked")]
    assert "127.0.0.1 is a loopback address; set FACEPIPE_ALLOW_PRIVATE_NETWORKS=1" in job.errors[0].message
    assert job.error.startswith(f"no page could be crawled: {site.origin}/: target 127.0.0.1 is a loopback")
    assert site.hits == [] and job.pages_crawled == 0
    assert await ingest.drain(quiet_s=0.3) == []


async def test_jobs_published_directly_and_bad_job_messages(start_crawler, ingest, site, nats_server) -> None:
    crawler = await start_crawler()
    nc = await bus.connect(nats_server.url, "test-publisher")
    js = nc.jetstream()
    dlq = await js.subscribe(f"{bus.SUBJECT_DLQ}.crawler", stream=bus.DLQ_STREAM, ordered_consumer=True)
    try:
        # A CrawlJob put on the subject by hand runs too; its record is created on the way.
        job = crawler_pb2.CrawlJob(
            job_id="by-hand",
            tenant_id="t2",
            seeds=[f"{site.origin}/p/0.html"],
            max_pages=5,
            max_depth=0,
            render_mode=crawler_pb2.RENDER_MODE_NEVER,
            same_site=True,
        )
        await bus.publish(js, bus.SUBJECT_CRAWL_JOBS, job.SerializeToString())
        done = await crawler.wait("by-hand")
        assert done.status == crawler_pb2.CRAWL_STATUS_DONE and done.pages_crawled == 1
        assert sorted(r.url for r in await ingest.drain()) == [
            f"{site.origin}/img/0-a.jpg",
            f"{site.origin}/img/0-b.jpg",
        ]

        await bus.publish(
            js, bus.SUBJECT_CRAWL_JOBS, crawler_pb2.CrawlJob(job_id="x", tenant_id="t").SerializeToString()
        )
        await bus.publish(js, bus.SUBJECT_CRAWL_JOBS, b"\xff\x00 not a job")
        dead = [await dlq.next_msg(timeout=10) for _ in range(2)]
        reasons = sorted(m.headers[bus.HDR_REASON] for m in dead)
        assert reasons == ["invalid_job", "malformed"]
        assert (
            "missing seeds"
            in next(m for m in dead if m.headers[bus.HDR_REASON] == "invalid_job").headers[bus.HDR_ERROR]
        )
    finally:
        await nc.close()


def _served_env(nats_server, **extra: str) -> dict[str, str]:
    return {"FACEPIPE_NATS_URL": nats_server.url, **FAST_ENV, **extra}


async def test_sigkill_mid_crawl_resumes_on_another_replica_without_duplicates(
    start_service, nats_server, ingest
) -> None:
    slow = PhotoSite(pages=16, page_delay=0.25)
    try:
        env = _served_env(nats_server, FACEPIPE_CRAWL_ACK_WAIT="3")
        # The first replica dies before it ever writes progress: all it did must come from KV.
        first = start_service("crawler", env={**env, "FACEPIPE_CRAWL_PROGRESS_INTERVAL": "60"})
        with grpc.insecure_channel(first.addr) as channel:
            job_id = (
                crawler_pb2_grpc.CrawlerStub(channel)
                .StartCrawl(
                    crawler_pb2.StartCrawlRequest(
                        seeds=[f"{slow.origin}/"], tenant_id="t1", render_mode=crawler_pb2.RENDER_MODE_NEVER
                    )
                )
                .job_id
            )
        await eventually(lambda: sum(slow.page_hits().values()) >= 6, wait_s=15)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(5)
        hits_at_kill = slow.page_hits()
        assert sum(hits_at_kill.values()) < slow.pages

        second = start_service("crawler", env=env)
        async with grpc.aio.insecure_channel(second.addr) as channel:
            job = await wait_for_job(crawler_pb2_grpc.CrawlerStub(channel), job_id, wait_s=30)
        assert job.status == crawler_pb2.CRAWL_STATUS_DONE, (job, second.log())
        assert job.attempts == 2
        assert set(job.candidates) == slow.expected_images()
        assert job.candidates_count == len(slow.expected_images())

        requests = await ingest.drain()
        ids = Counter(r.message_id for r in requests)
        assert [m for m, n in ids.items() if n > 1] == []
        assert sorted(r.url for r in requests) == sorted(slow.expected_images())
        # Pages finished before the kill were not fetched again; only those in flight were.
        hits = slow.page_hits()
        assert set(hits) == {f"/p/{i}.html" for i in range(slow.pages)}
        refetched = sum(n - 1 for n in hits.values())
        assert refetched <= 2, hits
        assert "resuming crawl" in second.log()
    finally:
        slow.close()


def _facepipe(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "facepipe"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_crawl_wait_json(start_service, nats_server, site, tmp_path) -> None:
    served = start_service("crawler", env=_served_env(nats_server))
    env = served.env
    out = _facepipe(
        "crawl", f"{site.origin}/", "--tenant", "web", "--wait", "--json", "--addr", served.addr, env=env
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {"job_id", "status", "pages_crawled", "candidates", "skipped_robots", "errors"} <= set(doc)
    assert doc["status"] == "done" and doc["pages_crawled"] == 1 + site.pages
    assert set(doc["candidates"]) == site.expected_images()
    assert doc["skipped_robots"] == 1 and doc["batch_id"] == doc["job_id"]
    assert doc["errors"] == [{"url": f"{site.origin}/missing.html", "kind": "http", "message": "HTTP 404"}]
    assert f"crawl {doc['job_id'][:8]}: done" in out.stderr and "candidates 9" in out.stderr

    # A sites file with an unreachable site: the job fails with the reason, as JSON too.
    dead = f"http://127.0.0.1:{free_port()}/"
    sites = tmp_path / "sites.txt"
    sites.write_text(f"# one dead site\n{dead}\n")
    out = _facepipe("crawl", "--sites-file", str(sites), "--wait", "--json", "--addr", served.addr, env=env)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["status"] == "failed" and doc["pages_crawled"] == 0 and doc["candidates"] == []
    assert doc["errors"][0]["url"] == f"{dead}robots.txt" and doc["errors"][0]["kind"] == "robots"
    assert "ConnectError" in doc["errors"][0]["message"]
    assert "error: crawl failed: no page could be crawled" in out.stderr

    out = _facepipe("crawl", "ftp://example.org/", "--addr", served.addr, env=env)
    assert out.returncode == 2 and "'ftp://example.org/' is not an http(s) URL" in out.stderr
    out = _facepipe("crawl", "http://example.org/", "--addr", f"127.0.0.1:{free_port()}", env=env)
    assert out.returncode == 1 and "cannot reach the crawler at 127.0.0.1:" in out.stderr
    out = _facepipe("crawl", f"{site.origin}/p/0.html", "--addr", served.addr, env=env)
    assert out.returncode == 0 and len(out.stdout.strip()) == 32  # the job id, without --wait
