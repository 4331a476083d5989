"""Crawl to search, end to end with real processes: `facepipe up` (nats-server and
every service, the crawler included), a local photo site with a page whose images
only JavaScript inserts, `facepipe crawl`, indexing, then `facepipe search`."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from conftest import SHARED_FACES, run_facepipe, stack_nats_url

from facepipe import bus
from facepipe.v1 import pipeline_pb2

pytestmark = pytest.mark.slow

# Identities shown only on the script-made page: found only if it is rendered.
SCRIPT_ONLY = ("joe_biden", "rose_leslie")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


class FacesSite:
    """../shared/faces as a small website: one page per person, an index linking
    them, and a gallery page whose images are created by script after load.
    The first photo of each person is held out and never served."""

    def __init__(self) -> None:
        self.photos: dict[str, list[Path]] = {}
        self.held_out: dict[str, Path] = {}
        for person in sorted(p for p in SHARED_FACES.iterdir() if p.is_dir()):
            photos = sorted(p for p in person.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
            self.held_out[person.name] = photos[0]
            self.photos[person.name] = photos[1:]
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.respond(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def photo_url(self, person: str, photo: Path) -> str:
        return f"{self.origin}/photos/{person}/{photo.name}"

    def expected_images(self) -> set[str]:
        return {self.photo_url(person, p) for person, photos in self.photos.items() for p in photos}

    def respond(self, req: BaseHTTPRequestHandler) -> None:
        path = unquote(urlsplit(req.path).path)
        static_people = [p for p in self.photos if p not in SCRIPT_ONLY]
        if path == "/":
            links = "".join(f"<li><a href='/people/{p}.html'>{p}</a></li>" for p in static_people)
            return _send(req, f"<h1>People</h1><ul>{links}</ul><a href='/gallery.html'>gallery</a>")
        if path.startswith("/people/") and path.endswith(".html"):
            person = path[len("/people/") : -len(".html")]
            if person in static_people:
                imgs = "".join(
                    f"<img src='/photos/{person}/{p.name}' alt='{person}'>" for p in self.photos[person]
                )
                return _send(req, f"<h1>{person}</h1>{imgs}<a href='/'>home</a>")
        if path == "/gallery.html":
            # Paths are assembled in script, so no image URL is in the static HTML.
            names = {p: [f.name for f in self.photos[p]] for p in SCRIPT_ONLY}
            script = (
                "window.addEventListener('load', () => setTimeout(() => {"
                f"  const names = {json.dumps(names)};"
                "  for (const [who, files] of Object.entries(names)) for (const f of files) {"
                "    const img = document.createElement('img');"
                "    img.src = '/' + 'photos/' + who + '/' + f; img.alt = who;"
                "    document.getElementById('g').appendChild(img);"
                "  }"
                "}, 100));"
            )
            return _send(req, f"<h1>Gallery</h1><div id='g'></div><script>{script}</script>")
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "photos" and parts[1] in self.photos:
            photo = next((p for p in self.photos[parts[1]] if p.name == parts[2]), None)
            if photo is not None:
                ctype = mimetypes.guess_type(photo.name)[0] or "application/octet-stream"
                return _send(req, photo.read_bytes(), ctype)
        return _send(req, b"not found", "text/plain", status=404)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(
    req: BaseHTTPRequestHandler, body: str | bytes, ctype: str = "text/html", status: int = 200
) -> None:
    data = body.encode() if isinstance(body, str) else body
    req.send_response(status)
    req.send_header("Content-Type", ctype)
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    req.wfile.write(data)


@pytest.fixture(scope="module")
def site() -> Iterator[FacesSite]:
    if not SHARED_FACES.is_dir():
        pytest.skip("../shared/faces is not present")
    s = FacesSite()
    yield s
    s.close()


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


def run_cli(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check)


async def _await_done(nats_url: str, batch_id: str, expected: int, wait_s: float) -> dict[str, int]:
    """One ImageDone per crawled image, by message id: its status."""
    nc = await bus.connect(nats_url, "test-e2e-crawl")
    try:
        sub = await nc.jetstream().subscribe(
            f"{bus.SUBJECT_DONE}.{batch_id}", stream=bus.EVENTS_STREAM, ordered_consumer=True
        )
        statuses: dict[str, int] = {}
        deadline = time.monotonic() + wait_s
        while len(statuses) < expected and time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=2)
            except TimeoutError:
                continue
            done = pipeline_pb2.ImageDone.FromString(msg.data)
            statuses[done.message_id] = done.status
        return statuses
    finally:
        await nc.close()


def test_crawl_index_and_search_by_face(stack, site) -> None:
    out = run_cli(stack, "crawl", f"{site.origin}/", "--tenant", "web", "--wait", "--json")
    job = json.loads(out.stdout)
    assert job["status"] == "done", job
    assert set(job["candidates"]) == site.expected_images(), (
        f"missing {site.expected_images() - set(job['candidates'])}"
    )
    assert job["candidates_count"] == len(site.expected_images())
    assert job["pages_crawled"] == 2 + len(site.photos) - len(SCRIPT_ONLY) and job["errors"] == []
    assert job["pages_rendered"] >= 1
    assert "candidates" in out.stderr  # live progress

    statuses = asyncio.run(
        _await_done(stack_nats_url(stack), job["job_id"], job["candidates_count"], wait_s=180)
    )
    assert len(statuses) == job["candidates_count"], "not every crawled image finished the pipeline"
    assert set(statuses.values()) == {pipeline_pb2.IMAGE_STATUS_INDEXED}, statuses

    for person, photo in site.held_out.items():
        matches = json.loads(run_cli(stack, "search", str(photo), "--tenant", "web", "--json").stdout)[
            "matches"
        ]
        assert matches, f"no match for {photo}"
        best = matches[0]
        assert best["url"].startswith(f"{site.origin}/photos/{person}/"), (person, matches[:3])
        assert best["url"] in job["candidates"] and best["tenant_id"] == "web"
        assert best["site"] == site.origin.removeprefix("http://")
        assert best["page_url"].startswith(site.origin)

    crawler_http = stack["state"]["components"]["crawler"]["http_port"]
    stats = httpx.get(f"http://127.0.0.1:{crawler_http}/stats", timeout=10).json()
    assert stats["jobs"]["done"] >= 1
    metrics = httpx.get(f"http://127.0.0.1:{crawler_http}/metrics", timeout=10).text
    assert 'facepipe_crawler_pages_total{mode="render",outcome="ok",service="crawler"}' in metrics
