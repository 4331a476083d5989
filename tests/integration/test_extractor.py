"""The extractor stage against a real nats-server, a real HTTP server on
127.0.0.1 and a local object store: fetching, decoding, hashing, storing,
exact dedup per tenant, dead letters with reasons, and retries."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import imagehash
import numpy as np
import pytest
from conftest import free_port
from PIL import Image

from facepipe import bus
from facepipe.bus import PermanentError
from facepipe.config import Settings
from facepipe.pipeline import StageService
from facepipe.storage import RAW_IMAGES_BUCKET, LocalObjectStore
from facepipe.v1 import common_pb2, pipeline_pb2
from facepipe_services.extractor.fetch import ImageFetcher, TransientFetchError, describe_content, sniff_image
from facepipe_services.extractor.main import build
from facepipe_services.extractor.stage import ExtractorDeps, missing_fields, parse_ingest


def make_image(fmt: str, seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], axis=2)
    rgb = np.clip(rgb + rng.integers(0, 40, rgb.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


PNG = make_image("PNG", 1)
JPEG = make_image("JPEG", 2, (80, 120))
HTML = b"<!DOCTYPE html><html><head><title>not an image</title></head><body>hello</body></html>"
CORRUPT_PNG = PNG[:60]


class Site:
    """A real HTTP server with the routes the tests need; counts requests per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                site.hits[self.path] += 1
                site.route(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path
        if path == "/face.png":
            return self.send(h, 200, PNG, "image/png")
        if path == "/face.jpg":
            return self.send(h, 200, JPEG, "image/jpeg")
        if path == "/page.jpg":  # the header lies; the bytes tell
            return self.send(h, 200, HTML, "image/jpeg")
        if path == "/corrupt.png":
            return self.send(h, 200, CORRUPT_PNG, "image/png")
        if path == "/flaky.jpg":
            if self.hits[path] == 1:
                return self.send(h, 500, b"try again", "text/plain")
            return self.send(h, 200, JPEG, "image/jpeg")
        if path == "/loop/a":
            return self.redirect(h, "/loop/b")
        if path == "/loop/b":
            return self.redirect(h, self.url("/loop/a"))
        if path.startswith("/hop/"):
            n = int(path.rsplit("/", 1)[1])
            return self.redirect(h, f"/hop/{n - 1}") if n > 0 else self.send(h, 200, PNG, "image/png")
        if path == "/to-file":
            return self.redirect(h, "file:///etc/passwd")
        if path == "/big-declared":
            return self.send(h, 200, PNG + b"\x00" * 30000, "image/png")
        if path == "/big-streamed":  # no Content-Length: the body ends when the connection closes
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(PNG[:100])
            for _ in range(50):
                h.wfile.write(b"\x00" * 1000)
            return None
        if path == "/slow.png":
            time.sleep(2)
            return self.send(h, 200, PNG, "image/png")
        if path == "/busy":
            return self.send(h, 429, b"slow down", "text/plain")
        if path == "/gone":
            return self.send(h, 410, b"gone", "text/plain")
        return self.send(h, 404, b"not found", "text/plain")

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    @staticmethod
    def redirect(h: BaseHTTPRequestHandler, location: str) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    s.thread.start()
    yield s
    s.server.shutdown()
    s.server.server_close()


@pytest.fixture
def objects(tmp_path, monkeypatch) -> LocalObjectStore:
    monkeypatch.setenv("FACEPIPE_OBJECT_STORE", "local")
    monkeypatch.setenv("FACEPIPE_OBJECT_DIR", str(tmp_path / "objects"))
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
async def extractor(nats_server, objects, monkeypatch) -> AsyncIterator[StageService[ExtractorDeps]]:
    monkeypatch.setenv("FACEPIPE_ALLOW_PRIVATE_NETWORKS", "1")
    settings = Settings.from_env("extractor", nats_url=nats_server.url, max_inflight=8)
    service = build(settings)
    await service.start(None)
    yield service
    await service.drain()
    await service.stop()


class Observer:
    """Reads what the extractor emits: stored records, done events, dead letters."""

    def __init__(self, nc, js) -> None:
        self.nc, self.js = nc, js

    @classmethod
    async def connect(cls, url: str) -> Observer:
        nc = await bus.connect(url, "test-observer")
        js = nc.jetstream()
        await bus.ensure_topology(js)
        self = cls(nc, js)
        # The detector's durable consumer is where stored records wait (work-queue stream).
        self.stored = await js.pull_subscribe_bind(durable="detector", stream=bus.STREAM)
        self.done = await js.subscribe(
            f"{bus.SUBJECT_DONE}.>", stream=bus.EVENTS_STREAM, ordered_consumer=True
        )
        self.dlq = await js.subscribe(
            f"{bus.SUBJECT_DLQ}.extractor", stream=bus.DLQ_STREAM, ordered_consumer=True
        )
        return self

    async def ingest(self, request: pipeline_pb2.IngestRequest) -> None:
        await bus.publish(self.js, bus.SUBJECT_INGEST, request.SerializeToString())

    async def records(self, n: int, wait_s: float = 10.0) -> list[pipeline_pb2.ImageRecord]:
        out: list[pipeline_pb2.ImageRecord] = []
        deadline = time.monotonic() + wait_s
        while len(out) < n and time.monotonic() < deadline:
            try:
                msgs = await self.stored.fetch(n - len(out), timeout=0.5)
            except TimeoutError:
                continue
            for m in msgs:
                out.append(pipeline_pb2.ImageRecord.FromString(m.data))
                await m.ack()
        assert len(out) == n, f"expected {n} stored records, got {len(out)}"
        return out

    async def no_more_records(self, wait: float = 1.0) -> None:
        with pytest.raises(TimeoutError):
            await self.stored.fetch(1, timeout=wait)

    async def done_events(self, n: int, wait_s: float = 10.0) -> list[tuple[str, pipeline_pb2.ImageDone]]:
        msgs = [await self.done.next_msg(timeout=wait_s) for _ in range(n)]
        return [(m.subject, pipeline_pb2.ImageDone.FromString(m.data)) for m in msgs]

    async def dead_letters(self, n: int, wait_s: float = 10.0) -> list:
        return [await self.dlq.next_msg(timeout=wait_s) for _ in range(n)]

    async def close(self) -> None:
        await self.nc.close()


@pytest.fixture
async def observer(extractor, nats_server) -> AsyncIterator[Observer]:
    obs = await Observer.connect(nats_server.url)
    yield obs
    await obs.close()


def expected_phash(data: bytes) -> str:
    """The 64-bit DCT pHash as imagehash computes it, of the image as decoded (these test
    images carry no EXIF orientation, so decoded is upright)."""
    return str(imagehash.phash(Image.open(io.BytesIO(data)).convert("RGB"), hash_size=8))


# -- unit level: parsing and sniffing ------------------------------------------
def test_parse_ingest_accepts_protobuf_and_both_json_spellings() -> None:
    request = pipeline_pb2.IngestRequest(tenant_id="t1", url="https://example.org/a.jpg", batch_id="b")
    assert parse_ingest(request.SerializeToString()) == request

    seed = {
        "image_sha256": "",
        "bucket": "",
        "key": "",
        "tenant_id": "t1",
        "site": "example.org",
        "url": "https://example.org/a.jpg",
        "image_phash": "",
        "face_hints": [{"box": {"x1": 1, "y1": 2, "x2": 30, "y2": 40}, "score": 0.9}],
        "crawler_extra": {"depth": 2},  # unknown fields are ignored
    }
    parsed = parse_ingest(b"  " + json.dumps(seed).encode())
    assert (parsed.tenant_id, parsed.site, parsed.url) == ("t1", "example.org", seed["url"])
    assert parsed.face_hints[0].box.x2 == 30 and parsed.face_hints[0].score == pytest.approx(0.9)
    camel = parse_ingest(b'{"tenantId": "t2", "imageSha256": "ab", "batchId": "b1"}')
    assert (camel.tenant_id, camel.image_sha256, camel.batch_id) == ("t2", "ab", "b1")

    for bad in (b'{"tenant_id": ', b'{"tenant_id": 5}', b"\xff\xfe garbage \x00", b"", b"   "):
        with pytest.raises(PermanentError) as info:
            parse_ingest(bad)
        assert info.value.reason == "malformed"


def test_missing_fields_are_listed() -> None:
    req = pipeline_pb2.IngestRequest
    assert missing_fields(req(site="x")) == ["tenant_id", "url (or bucket and key)"]
    assert missing_fields(req(tenant_id="t", bucket="raw-images")) == ["key"]
    assert missing_fields(req(tenant_id="t", url="file:///tmp/a.jpg")) == [
        "bucket and key (file:// URLs are not fetched)"
    ]
    assert missing_fields(req(tenant_id="t", url="file:///a.jpg", bucket="raw-images", key="t/a.jpg")) == []
    assert missing_fields(req(tenant_id="t", url="https://example.org/a.jpg")) == []


def test_sniffing_reads_the_bytes() -> None:
    assert sniff_image(PNG) == "image/png"
    assert sniff_image(JPEG) == "image/jpeg"
    assert sniff_image(make_image("WEBP", 3)) == "image/webp"
    assert sniff_image(make_image("GIF", 4)) == "image/gif"
    assert sniff_image(HTML) is None
    assert describe_content(HTML) == "an HTML page"
    assert describe_content(b'{"error": "nope"}') == "JSON"
    assert describe_content(b"<svg xmlns='http://www.w3.org/2000/svg'/>").startswith("SVG")
    assert describe_content(b"plain words here") == "text"


# -- the fetcher against a real HTTP server -----------------------------------
async def test_fetcher_limits_and_classification(site) -> None:
    fetcher = ImageFetcher(max_bytes=20000, allow_private=True, read_timeout=0.5)
    try:
        got = await fetcher.fetch(site.url("/hop/5"))  # exactly the redirect limit
        assert got.data == PNG and got.content_type == "image/png" and got.url.endswith("/hop/0")

        async def permanent(path: str) -> PermanentError:
            with pytest.raises(PermanentError) as info:
                await fetcher.fetch(site.url(path))
            return info.value

        assert (await permanent("/hop/6")).reason == "too_many_redirects"
        loop = await permanent("/loop/a")
        assert loop.reason == "redirect_loop" and "/loop/a -> " in str(loop) and str(loop).endswith("/loop/a")
        # Every hop goes through the guard, even with private networks allowed.
        assert (await permanent("/to-file")).reason == "blocked_target"
        assert (await permanent("/big-declared")).reason == "too_large"
        assert site.hits["/big-declared"] == 1
        streamed = await permanent("/big-streamed")
        assert streamed.reason == "too_large" and "FACEPIPE_MAX_IMAGE_BYTES" in str(streamed)
        html = await permanent("/page.jpg")
        assert html.reason == "not_an_image" and "HTML page" in str(html) and "image/jpeg" in str(html)
        assert (await permanent("/gone")).reason == "fetch_failed"
        assert "404" in str(await permanent("/missing"))

        for url in (site.url("/busy"), site.url("/slow.png"), f"http://127.0.0.1:{free_port()}/x.png"):
            with pytest.raises(TransientFetchError):
                await fetcher.fetch(url)
    finally:
        await fetcher.aclose()

    guarded = ImageFetcher(max_bytes=2000, allow_private=False)
    try:
        with pytest.raises(PermanentError) as info:
            await guarded.fetch(site.url("/face.png"))
        assert info.value.reason == "blocked_target" and "loopback" in str(info.value)
        assert site.hits["/face.png"] == 0  # refused before any request
    finally:
        await guarded.aclose()


# -- the stage ---------------------------------------------------------------
async def test_ingest_stores_and_dedups_per_tenant(extractor, observer, objects, site) -> None:
    await observer.ingest(
        pipeline_pb2.IngestRequest(
            tenant_id="t1",
            site="example.org",
            url=site.url("/face.png"),
            page_url=site.url("/gallery.html"),
            alt_text="a face",
            batch_id="b1",
            message_id="m1",
            face_hints=[pipeline_pb2.FaceHint(box=common_pb2.BoundingBox(x1=1, y1=2, x2=30, y2=40))],
        )
    )
    (rec,) = await observer.records(1)
    sha = hashlib.sha256(PNG).hexdigest()
    assert (rec.tenant_id, rec.image_sha256, rec.message_id, rec.batch_id) == ("t1", sha, "m1", "b1")
    assert (rec.width, rec.height, rec.size_bytes, rec.content_type) == (96, 64, len(PNG), "image/png")
    assert rec.phash == expected_phash(PNG) and len(rec.phash) == 16
    assert (rec.site, rec.url, rec.alt_text) == ("example.org", site.url("/face.png"), "a face")
    assert rec.page_url == site.url("/gallery.html") and rec.face_hints[0].box.y2 == 40
    assert (rec.raw.bucket, rec.raw.key) == (RAW_IMAGES_BUCKET, f"t1/{sha}.png")
    assert objects.get(RAW_IMAGES_BUCKET, rec.raw.key) == PNG
    assert abs(rec.ingested_at_ms - time.time() * 1000) < 60_000

    # The crawler's JSON schema over a plain core publish, as `nats pub` sends it.
    seed = {
        "image_sha256": "",
        "bucket": "",
        "key": "",
        "tenant_id": "t1",
        "site": "example.org",
        "url": site.url("/face.jpg"),
        "image_phash": "",
        "face_hints": [],
        "batch_id": "b1",
    }
    await observer.nc.publish(bus.SUBJECT_INGEST, json.dumps(seed).encode())
    (rec,) = await observer.records(1)
    assert rec.image_sha256 == hashlib.sha256(JPEG).hexdigest()
    assert (rec.width, rec.height, rec.content_type) == (80, 120, "image/jpeg")
    assert rec.raw.key.endswith(".jpg") and rec.message_id.startswith("ingest-")

    # The same image again for t1 is a duplicate; for t2 it is new.
    await observer.ingest(
        pipeline_pb2.IngestRequest(tenant_id="t1", url=site.url("/face.png"), batch_id="b1", message_id="m3")
    )
    ((subject, done),) = await observer.done_events(1)
    assert subject == f"{bus.SUBJECT_DONE}.b1"
    assert (done.status, done.message_id, done.image_sha256) == (
        pipeline_pb2.IMAGE_STATUS_DUPLICATE,
        "m3",
        sha,
    )
    assert done.stage == "extractor"
    await observer.nc.publish(
        bus.SUBJECT_INGEST, json.dumps({"tenantId": "t2", "url": site.url("/face.png")}).encode()
    )
    (rec,) = await observer.records(1)
    assert (rec.tenant_id, rec.image_sha256, rec.raw.key) == ("t2", sha, f"t2/{sha}.png")

    # Already stored by the CLI under its final key: read, not rewritten.
    key = f"t3/{hashlib.sha256(JPEG).hexdigest()}.jpg"
    objects.put(RAW_IMAGES_BUCKET, key, JPEG, "image/jpeg")
    before = (Path(objects.root) / RAW_IMAGES_BUCKET / key).stat().st_mtime_ns
    await observer.ingest(
        pipeline_pb2.IngestRequest(
            tenant_id="t3",
            bucket=RAW_IMAGES_BUCKET,
            key=key,
            url="file:///photos/face.jpg",
            image_sha256=hashlib.sha256(JPEG).hexdigest(),
            message_id="cli-1",
        )
    )
    (rec,) = await observer.records(1)
    assert (rec.raw.key, rec.url, rec.phash) == (key, "file:///photos/face.jpg", expected_phash(JPEG))
    assert (Path(objects.root) / RAW_IMAGES_BUCKET / key).stat().st_mtime_ns == before
    await observer.no_more_records(wait=0.5)
    assert extractor.worker.stats.counters["msgs_acked"] == 5


async def test_failures_are_dead_lettered_with_reasons(extractor, observer, objects, site) -> None:
    objects.put(RAW_IMAGES_BUCKET, "t1/upload.png", PNG, "image/png")
    failures = {
        "f-missing": (
            b'{"site": "example.org", "batch_id": "b2", "message_id": "f-missing"}',
            "missing_fields",
        ),
        "f-tenant": (dict(tenant_id="no such tenant!", url=site.url("/face.png")), "invalid_tenant"),
        "f-404": (dict(tenant_id="t1", url=site.url("/missing")), "fetch_failed"),
        "f-html": (dict(tenant_id="t1", url=site.url("/page.jpg")), "not_an_image"),
        "f-loop": (dict(tenant_id="t1", url=site.url("/loop/a")), "redirect_loop"),
        "f-corrupt": (dict(tenant_id="t1", url=site.url("/corrupt.png")), "undecodable"),
        "f-nokey": (dict(tenant_id="t1", bucket=RAW_IMAGES_BUCKET, key="t1/nope.png"), "not_found"),
        "f-sha": (
            dict(tenant_id="t1", bucket=RAW_IMAGES_BUCKET, key="t1/upload.png", image_sha256="ab" * 32),
            "sha_mismatch",
        ),
    }
    for message_id, (body, _) in failures.items():
        if isinstance(body, bytes):
            await observer.nc.publish(bus.SUBJECT_INGEST, body)
        else:
            await observer.ingest(pipeline_pb2.IngestRequest(**body, batch_id="b2", message_id=message_id))
    garbage = b"\x08\x96\x01\xff\xff\xff garbage"
    await observer.nc.publish(bus.SUBJECT_INGEST, garbage)
    # A 500 that recovers: retried, then stored.
    await observer.ingest(
        pipeline_pb2.IngestRequest(
            tenant_id="t1", url=site.url("/flaky.jpg"), batch_id="b2", message_id="flaky"
        )
    )

    dead = await observer.dead_letters(len(failures) + 1)
    by_reason = {m.headers[bus.HDR_REASON]: m for m in dead}
    assert set(by_reason) == {reason for _, reason in failures.values()} | {"malformed"}
    missing = by_reason["missing_fields"].headers[bus.HDR_ERROR]
    assert "tenant_id" in missing and "url (or bucket and key)" in missing
    assert by_reason["malformed"].data == garbage
    assert "redirect loop" in by_reason["redirect_loop"].headers[bus.HDR_ERROR]
    assert "HTML page" in by_reason["not_an_image"].headers[bus.HDR_ERROR]
    assert "404" in by_reason["fetch_failed"].headers[bus.HDR_ERROR]
    for m in dead:
        assert m.headers[bus.HDR_STAGE] == "extractor" and m.headers[bus.HDR_DELIVERIES] == "1"

    events = await observer.done_events(len(failures) + 1)
    failed = {done.message_id: (subject, done) for subject, done in events}
    assert all(d.status == pipeline_pb2.IMAGE_STATUS_FAILED and d.error for _, d in failed.values())
    for message_id in failures:
        subject, done = failed.pop(message_id)
        assert subject == f"{bus.SUBJECT_DONE}.b2", message_id
    ((subject, done),) = failed.values()  # the garbage message, with no batch to report to
    assert subject == f"{bus.SUBJECT_DONE}.none" and done.message_id.startswith("ingest-")

    (rec,) = await observer.records(1)
    assert rec.message_id == "flaky" and rec.image_sha256 == hashlib.sha256(JPEG).hexdigest()
    assert site.hits["/flaky.jpg"] == 2
    assert extractor.worker.stats.counters["msgs_retried"] == 1


async def test_dead_letter_releases_the_claim(extractor, observer, objects, site) -> None:
    """An image that fails after its claim can be ingested again by a later message."""
    sha = hashlib.sha256(PNG).hexdigest()
    # Occupy the raw key with a folder so storing fails on every delivery.
    objects.put(RAW_IMAGES_BUCKET, f"t1/{sha}.png/blocker", b"x")
    extractor.worker.stage = bus.StageSpec("extractor", bus.SUBJECT_INGEST, max_deliver=2)
    await observer.ingest(
        pipeline_pb2.IngestRequest(tenant_id="t1", url=site.url("/face.png"), batch_id="b3", message_id="x1")
    )
    (dead,) = await observer.dead_letters(1, wait_s=15)
    assert dead.headers[bus.HDR_REASON] == "max_deliver" and dead.headers[bus.HDR_DELIVERIES] == "2"
    ((_, done),) = await observer.done_events(1)
    assert (done.status, done.message_id, done.image_sha256) == (pipeline_pb2.IMAGE_STATUS_FAILED, "x1", sha)
    states = extractor.loaded.value.states
    assert (await states.get("t1", sha)).state == "failed"

    objects.delete(RAW_IMAGES_BUCKET, f"t1/{sha}.png/blocker")
    await observer.ingest(
        pipeline_pb2.IngestRequest(tenant_id="t1", url=site.url("/face.png"), batch_id="b3", message_id="x2")
    )
    (rec,) = await observer.records(1)
    assert (rec.message_id, rec.image_sha256) == ("x2", sha)
    assert (await states.get("t1", sha)).message_id == "x2"


async def test_served_extractor_guards_private_targets(
    start_service, nats_server, objects, site, monkeypatch, tmp_path
) -> None:
    """``facepipe serve extractor`` with the default guard refuses loopback URLs."""
    monkeypatch.delenv("FACEPIPE_ALLOW_PRIVATE_NETWORKS", raising=False)
    proc = start_service(
        "extractor", env={"FACEPIPE_NATS_URL": nats_server.url, "FACEPIPE_OBJECT_DIR": str(objects.root)}
    )
    async with httpx.AsyncClient() as client:
        ready = (await client.get(f"http://127.0.0.1:{proc.http_port}/readyz", timeout=5)).json()
    assert ready["ready"] and ready["checks"]["object_store"] == "ok" and ready["checks"]["nats"] == "ok"

    obs = await Observer.connect(nats_server.url)
    try:
        await obs.ingest(
            pipeline_pb2.IngestRequest(
                tenant_id="t1", url=site.url("/face.png"), batch_id="b4", message_id="g1"
            )
        )
        (dead,) = await obs.dead_letters(1)
        assert dead.headers[bus.HDR_REASON] == "blocked_target"
        assert "loopback" in dead.headers[bus.HDR_ERROR]
        ((subject, done),) = await obs.done_events(1)
        assert subject.endswith(".b4") and done.status == pipeline_pb2.IMAGE_STATUS_FAILED
        assert site.hits["/face.png"] == 0
    finally:
        await obs.close()
    assert proc.stop() == 0


async def test_undecodable_does_not_block_the_stage(extractor, observer, site) -> None:
    """Bad messages interleaved with good ones: the good ones all come through."""
    for i in range(6):
        path = "/face.png" if i % 2 == 0 else "/corrupt.png"
        await observer.ingest(
            pipeline_pb2.IngestRequest(tenant_id=f"t{i}", url=site.url(path), message_id=f"mix-{i}")
        )
    records = await observer.records(3)
    assert sorted(r.tenant_id for r in records) == ["t0", "t2", "t4"]
    dead = await observer.dead_letters(3)
    assert {m.headers[bus.HDR_REASON] for m in dead} == {"undecodable"}


async def test_grpc_ingest_validates_and_queues(start_service, nats_server, objects, site) -> None:
    """facepipe.v1.Extractor/Ingest: the gRPC front door to the same stage."""
    import grpc

    from facepipe.v1 import extractor_pb2_grpc

    proc = start_service(
        "extractor",
        env={
            "FACEPIPE_NATS_URL": nats_server.url,
            "FACEPIPE_OBJECT_DIR": str(objects.root),
            "FACEPIPE_ALLOW_PRIVATE_NETWORKS": "1",
        },
    )
    obs = await Observer.connect(nats_server.url)
    try:
        async with grpc.aio.insecure_channel(proc.addr) as channel:
            stub = extractor_pb2_grpc.ExtractorStub(channel)
            resp = await stub.Ingest(pipeline_pb2.IngestRequest(tenant_id="t1", url=site.url("/face.png")))
            assert resp.batch_id and resp.message_id
            (record,) = await obs.records(1)
            assert (record.message_id, record.batch_id, record.tenant_id) == (
                resp.message_id,
                resp.batch_id,
                "t1",
            )
            assert objects.exists(record.raw.bucket, record.raw.key)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Ingest(pipeline_pb2.IngestRequest(url=site.url("/face.png")))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "tenant_id" in err.value.details()
    finally:
        await obs.close()
    assert proc.stop() == 0
