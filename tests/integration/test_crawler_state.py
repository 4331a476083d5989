"""The crawler's NATS KV state against a real nats-server: the batched calls keep the
one-take-per-URL and resume guarantees, and a crawl whose sink fails part of a batch
resumes handing out exactly the images it had not handed out."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nats.js import JetStreamContext

from facepipe import bus
from facepipe_services.crawler import Candidate, CrawlConfig, NatsCrawlState, SinkError, crawl

PAGES = 6
IMAGES_PER_PAGE = 5


@pytest.fixture
async def js(nats_server) -> AsyncIterator[JetStreamContext]:
    nc = await bus.connect(nats_server.url, "test")
    context = nc.jetstream()
    await bus.ensure_topology(context)
    yield context
    await nc.close()


async def test_batched_calls_take_each_url_once_and_survive_a_new_replica(js) -> None:
    state = await NatsCrawlState.open(js, bus.CRAWL_KV)
    urls = [f"http://site.test/img/{i}.jpg" for i in range(6)]
    taken = await state.add_seen_many("j1", "image", [(u, {"page_url": "p"}) for u in [*urls, urls[0]]])
    assert taken == [True] * 6 + [False]

    replica = await NatsCrawlState.open(js, bus.CRAWL_KV)
    assert await replica.add_seen_many(
        "j1", "image", [(urls[1], None), ("http://site.test/new.jpg", None)]
    ) == [
        False,
        True,
    ]
    await state.mark_done_many("j1", "image", urls[:3])
    await state.mark_done_many("j1", "image", [urls[3]])
    await state.forget_seen_many("j1", "image", [urls[5]])

    entries = {e.url: e for e in await (await NatsCrawlState.open(js, bus.CRAWL_KV)).entries("j1", "image")}
    assert set(entries) == {*urls[:5], "http://site.test/new.jpg"}
    assert {u for u, e in entries.items() if e.done} == set(urls[:4])
    assert entries[urls[4]].record == {"page_url": "p"}
    # A forgotten URL can be taken again.
    assert await replica.add_seen_many("j1", "image", [(urls[5], None)]) == [True]

    # Concurrent increments from two replicas all count.
    await asyncio.gather(
        *(state.incr("j1", "pages") for _ in range(40)), *(replica.incr("j1", "pages", 2) for _ in range(10))
    )
    assert (await state.counters("j1"))["pages"] == 60

    await state.purge_job("j1")
    fresh = await NatsCrawlState.open(js, bus.CRAWL_KV)
    assert await fresh.entries("j1", "image") == []
    assert await fresh.counters("j1") == {}


@pytest.fixture
def gallery() -> Iterator[str]:
    """An index linking PAGES pages of IMAGES_PER_PAGE photos each; yields the index URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/":
                body = "".join(f"<a href='/p{i}.html'>{i}</a>" for i in range(PAGES))
            else:
                i = self.path.strip("/").removesuffix(".html").removeprefix("p")
                body = "".join(f"<img src='/img/{i}-{j}.jpg'>" for j in range(IMAGES_PER_PAGE))
            data = f"<html><body>{body}</body></html>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


async def test_failed_sinks_in_a_batch_are_handed_out_again_on_resume(js, gallery) -> None:
    # One page at a time: no other page is cut off between its sends and its done marks.
    config = CrawlConfig.from_env(
        allow_private_networks=True,
        per_domain_concurrency=1,
        per_domain_delay=0.0,
        retries=0,
        sitemaps=False,
        render_mode="never",
    )
    handed_out: Counter[str] = Counter()

    async def flaky(candidate: Candidate) -> None:
        # Every image of page 2 but one fails: a batch that partly succeeds.
        if "/img/2-" in candidate.url and not candidate.url.endswith("-0.jpg"):
            raise ConnectionError("bus down")
        handed_out[candidate.url] += 1

    with pytest.raises(SinkError, match="bus down"):
        await crawl([gallery], config, flaky, await NatsCrawlState.open(js, bus.CRAWL_KV), job_id="j2")

    async def sink(candidate: Candidate) -> None:
        handed_out[candidate.url] += 1

    # Another replica resumes from KV alone.
    report = await crawl([gallery], config, sink, await NatsCrawlState.open(js, bus.CRAWL_KV), job_id="j2")
    expected = {f"{gallery}img/{i}-{j}.jpg" for i in range(PAGES) for j in range(IMAGES_PER_PAGE)}
    assert set(handed_out) == expected
    assert [url for url, n in handed_out.items() if n > 1] == []
    assert not report.errors
    state = await NatsCrawlState.open(js, bus.CRAWL_KV)
    assert {e.url for e in await state.entries("j2", "image") if e.done} == expected
    assert (await state.counters("j2"))["candidates"] == len(expected)
