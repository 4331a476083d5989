"""Crawler throughput on a generated local site: static pages with in-process
state, the same pages with the service's NATS KV state and IngestRequest
publishing, and pages whose images only script inserts (Chromium); plus the
candidate-mining time per page."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from facepipe import bus
from facepipe.natsd import NatsServer
from facepipe.v1 import crawler_pb2
from facepipe_services.crawler import CrawlConfig, CrawlReport, MemoryCrawlState, crawl
from facepipe_services.crawler.models import Candidate
from facepipe_services.crawler.stage import ingest_request
from facepipe_services.crawler.state import NatsCrawlState

IMAGES_PER_PAGE = 12


class BenchSite:
    """``/static/`` and ``/js/`` sections of ``pages`` pages each, IMAGES_PER_PAGE photos a page."""

    def __init__(self, pages: int, js_pages: int) -> None:
        self.pages, self.js_pages = pages, js_pages
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.page(urlsplit(self.path).path)
                data = (body or "not found").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def page(self, path: str) -> str | None:
        for section, count in (("static", self.pages), ("js", self.js_pages)):
            if path == f"/{section}/":
                links = "".join(f"<li><a href='/{section}/{i}.html'>page {i}</a></li>" for i in range(count))
                return f"<html><body><nav><ul>{links}</ul></nav></body></html>"
            if path.startswith(f"/{section}/") and path.endswith(".html"):
                i = int(path.rsplit("/", 1)[1][:-5])
                return self.static_page(i, count) if section == "static" else self.script_page(i)
        return None

    @staticmethod
    def static_page(i: int, count: int) -> str:
        """Markup as galleries write it: srcset, lazy data-src, picture, inline backgrounds."""
        figures = []
        for j in range(IMAGES_PER_PAGE):
            name = f"/photos/{i}-{j}"
            kind = j % 4
            if kind == 0:
                figures.append(
                    f"<img src='{name}-400.jpg' srcset='{name}-400.jpg 400w, {name}-1200.jpg 1200w'>"
                )
            elif kind == 1:
                figures.append(f"<img src='/img/placeholder.gif' data-src='{name}.jpg' alt='photo {j}'>")
            elif kind == 2:
                figures.append(f"<picture><source srcset='{name}.webp'><img src='{name}.jpg'></picture>")
            else:
                figures.append(f"<div style='background-image: url({name}.jpg)'></div>")
        text = "<p>" + "Lorem ipsum dolor sit amet. " * 40 + "</p>"
        nav = "".join(f"<a href='/static/{k}.html'>{k}</a>" for k in range(max(0, i - 5), min(count, i + 5)))
        return f"<html><head><title>{i}</title></head><body>{nav}{text}{''.join(figures)}{text}</body></html>"

    @staticmethod
    def script_page(i: int) -> str:
        script = (
            "window.addEventListener('load', () => {"
            f"  for (let j = 0; j < {IMAGES_PER_PAGE}; j++) {{"
            "    const img = document.createElement('img');"
            f"    img.src = '/' + 'photos/js-{i}-' + j + '.jpg';"
            "    document.body.appendChild(img);"
            "  }"
            "});"
        )
        return f"<html><body><h1>{i}</h1><script>{script}</script></body></html>"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _config(**overrides: object) -> CrawlConfig:
    values: dict[str, object] = dict(
        max_pages=10_000,
        max_depth=2,
        per_domain_concurrency=4,
        per_domain_delay=0.0,
        allow_private_networks=True,
        sitemaps=False,
        retries=0,
    )
    values.update(overrides)
    return CrawlConfig.from_env(**values)


async def _ignore(candidate: Candidate) -> None:
    pass


async def _crawl_memory(seed: str, config: CrawlConfig) -> CrawlReport:
    return await crawl([seed], config, _ignore, MemoryCrawlState())


async def _crawl_nats(seed: str, config: CrawlConfig) -> CrawlReport:
    """The service's path: state in NATS KV, one IngestRequest published per image."""
    with tempfile.TemporaryDirectory(prefix="fp-bench-crawl-") as tmp:
        server = NatsServer(port=_free_port(), http_port=_free_port(), store_dir=Path(tmp)).start()
        try:
            nc = await bus.connect(server.url, "bench")
            js = nc.jetstream()
            await bus.ensure_topology(js)
            job = crawler_pb2.CrawlJob(job_id="bench", tenant_id="bench")

            async def publish(candidate: Candidate) -> None:
                request = ingest_request(job, candidate)
                await bus.publish(
                    js, bus.SUBJECT_INGEST, request.SerializeToString(), msg_id=request.message_id
                )

            state = await NatsCrawlState.open(js, bus.CRAWL_KV)
            report = await crawl([seed], config, publish, state, job_id="bench")
            await nc.close()
            return report
        finally:
            server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _row(report: CrawlReport) -> dict:
    pages = max(1, report.pages_crawled)
    return {
        "pages": report.pages_crawled,
        "rendered": report.pages_rendered,
        "images": len(report.candidates),
        "pages_s": report.pages_crawled / report.timings["total"],
        "fetch_ms": 1000 * report.timings.get("fetch", 0.0) / pages,
        "mine_ms": 1000 * report.timings.get("mine", 0.0) / pages,
        "render_ms": 1000 * report.timings.get("render", 0.0) / max(1, report.pages_rendered),
        "errors": len(report.errors),
    }


def run(pages: int = 200, js_pages: int = 12, rounds: int = 5) -> dict:
    """The in-process and the NATS rows alternate in ``rounds`` rounds (A, B, A, B, ...), so
    a noisy neighbour slows both sides alike; each row is its median round."""
    site = BenchSite(pages, js_pages)
    try:
        static = f"{site.origin}/static/"
        asyncio.run(_crawl_memory(static, _config(render_mode="never", max_pages=5)))  # warm-up
        memory: list[dict] = []
        nats: list[dict] = []
        for _ in range(rounds):
            memory.append(_row(asyncio.run(_crawl_memory(static, _config(render_mode="never")))))
            nats.append(_row(asyncio.run(_crawl_nats(static, _config(render_mode="never")))))
        ratios = [b["pages_s"] / a["pages_s"] for a, b in zip(memory, nats, strict=True)]
        rows = {"static, memory state": _median_row(memory), "static, NATS KV + publish": _median_row(nats)}
        chromium = _config().chromium_path
        if os.path.exists(chromium):
            report = asyncio.run(_crawl_memory(f"{site.origin}/js/", _config(render_mode="auto")))
            rows["script images, Chromium"] = _row(report)
        return {
            "rows": rows,
            "kv_ratios": ratios,
            "rounds": rounds,
            "images_per_page": IMAGES_PER_PAGE,
            "chromium": os.path.exists(chromium),
        }
    finally:
        site.close()


def _median_row(rows: list[dict]) -> dict:
    """The round with the median pages/s."""
    return sorted(rows, key=lambda row: row["pages_s"])[len(rows) // 2]


def report(r: dict) -> str:
    lines = [
        f"== crawler on a local site (127.0.0.1), {IMAGES_PER_PAGE} photos a page, 4 requests in flight, "
        f"no politeness delay; static rows: median of {r['rounds']} interleaved rounds ==",
        f"{'':28}{'pages':>6}{'pages/s':>9}{'fetch ms':>10}{'mine ms':>9}{'render ms':>11}{'images':>8}",
    ]
    for name, row in r["rows"].items():
        render = f"{row['render_ms']:11.1f}" if row["rendered"] else f"{'-':>11}"
        lines.append(
            f"{name:28}{row['pages']:6d}{row['pages_s']:9.1f}{row['fetch_ms']:10.2f}{row['mine_ms']:9.2f}"
            f"{render}{row['images']:8d}"
        )
    rows = r["rows"]
    ratios = r["kv_ratios"]
    lines.append(
        f"NATS KV state + publishing vs in-process: {statistics.median(ratios):.2f}x pages/s "
        f"(median of {len(ratios)} rounds, range {min(ratios):.2f}-{max(ratios):.2f})"
    )
    if "script images, Chromium" in rows:
        js = rows["script images, Chromium"]
        static = rows["static, memory state"]
        lines.append(f"rendered vs static pages: {js['pages_s'] / static['pages_s']:.3f}x pages/s")
    else:
        lines.append("no Chromium: script-page row skipped")
    lines.append("fetch, mine and render are per page, summed over concurrent tasks")
    return "\n".join(lines)
