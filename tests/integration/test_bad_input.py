"""A corpus of bad input, each kind its own test: broken and hostile images, bad URLs,
malformed NATS messages, out-of-range gRPC fields and wrong CLI flags.

Real parts throughout: one nats-server and real ``facepipe serve`` processes
(extractor on NATS, detector and indexer over gRPC) for the whole module, and the
real CLI. Each kind must end in a clear answer: a status code and a message that
names the problem, a per-image error code, or a dead letter with a reason after
one delivery (never retried as if temporary). After every kind each service is
still the same process, SERVING, and no traceback appeared in any output or log.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
import numpy as np
import pytest
from conftest import ROOT, SHARED_FACES, VENV_BIN, ServiceProcess, free_port, wait_serving
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from facepipe import bus
from facepipe.natsd import NatsServer
from facepipe.storage import RAW_IMAGES_BUCKET, LocalObjectStore
from facepipe.v1 import (
    common_pb2,
    detector_pb2,
    detector_pb2_grpc,
    extractor_pb2_grpc,
    indexer_pb2,
    indexer_pb2_grpc,
    persons_pb2,
    persons_pb2_grpc,
    pipeline_pb2,
    recognizer_pb2,
    recognizer_pb2_grpc,
)

CASE_HEADER = "Facepipe-Test-Case"
LONG = "t" * 10_000
# An echoed value is cut to about 100 characters; a message stays well under this.
MAX_MESSAGE = 400


# -- the images ------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (8-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + (_png_chunk(b"IDAT", idat) if idat else b"")
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def noise(width: int = 64, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


JPEG = encoded(noise(), "JPEG")
PNG = encoded(noise(), "PNG")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def exif_bomb() -> bytes:
    """A JPEG whose EXIF holds a 60 kB description and an orientation no camera writes."""
    exif = Image.Exif()
    exif[0x0112] = 9999
    exif[0x010E] = "x" * 60_000
    return encoded(noise(), "JPEG", exif=exif.tobytes())


def bad_crc_png() -> bytes:
    data = bytearray(PNG)
    data[40] ^= 0xFF
    return bytes(data)


# (kind, bytes, the per-image error code or None for an image that is read, message or size)
IMAGES: list[tuple[str, bytes, str | None, object]] = [
    ("truncated_jpeg", JPEG[: len(JPEG) // 2], "UNDECODABLE", "corrupt or truncated image"),
    ("zero_bytes", b"", "EMPTY", "image is empty (0 bytes)"),
    (
        "huge_dimensions_header",
        png_with_header(100_000, 100_000),
        "TOO_LARGE",
        "image is 100000x100000 = 10000000000 pixels, over the 50000000-pixel limit",
    ),
    (
        "pixel_bomb_png",  # 400 MP of zeros compressed into a few kB
        png_with_header(20_000, 20_000, zlib.compress(b"\0" * 60_001 * 200, 9)),
        "TOO_LARGE",
        "over the 50000000-pixel limit",
    ),
    ("wrong_magic", b"\x13\x37" + bytes(range(256)) * 4, "UNDECODABLE", "not a recognised image format"),
    (
        "svg",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "UNDECODABLE",
        "not a recognised image format",
    ),
    ("html", b"<!DOCTYPE html><html><body>hi</body></html>", "UNDECODABLE", "not a recognised image format"),
    ("json", b'{"image": "nope"}', "UNDECODABLE", "not a recognised image format"),
    ("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\n", "UNDECODABLE", "not a recognised image format"),
    ("gzip_bomb", gzip.compress(b"\0" * 1_000_000), "UNDECODABLE", "not a recognised image format"),
    ("jpeg_magic_only", b"\xff\xd8\xff\xe0" + b"\0" * 100, "UNDECODABLE", "not a recognised image format"),
    ("png_bad_crc", bad_crc_png(), "UNDECODABLE", "not a recognised image format"),
    # Odd but valid: read, with their true size.
    ("exif_bomb", exif_bomb(), None, (64, 48)),
    ("animated_gif", animated_gif(), None, (40, 30)),
    ("cmyk_jpeg", encoded(noise().convert("CMYK"), "JPEG"), None, (64, 48)),
    (
        "png_16_bit",
        encoded(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20), "PNG"),
        None,
        (64, 48),
    ),
    ("one_pixel", encoded(Image.new("RGB", (1, 1)), "PNG"), None, (1, 1)),
]


# -- the services ----------------------------------------------------------------------------
@dataclass
class Bench:
    nats: NatsServer
    objects: LocalObjectStore
    env: dict
    services: dict[str, ServiceProcess]
    pids: dict[str, int]


def launch(name: str, env: dict, logs: Path) -> ServiceProcess:
    grpc_port, http_port = free_port(), free_port()
    log_path = logs / f"{name}.log"
    proc = subprocess.Popen(
        [str(VENV_BIN / "facepipe"), "serve", name, "--port", str(grpc_port), "--http-port", str(http_port)],
        env=env,
        stdout=open(log_path, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    service = ServiceProcess(name, grpc_port, http_port, proc, log_path, env)
    try:
        wait_serving(service.addr, proc=proc)
    except Exception:
        service.stop()
        raise RuntimeError(f"{name} failed to start:\n{service.log()}") from None
    return service


@pytest.fixture(scope="module")
def bench(tmp_path_factory, facepipe_home) -> Iterator[Bench]:
    root = tmp_path_factory.mktemp("bad-input")
    server = NatsServer(port=free_port(), http_port=free_port(), store_dir=root / "nats")
    server.start(log_path=root / "nats.log")
    env = {
        **os.environ,
        "FACEPIPE_HOME": str(facepipe_home),
        "FACEPIPE_GRPC_HOST": "127.0.0.1",
        "FACEPIPE_DRAIN_SECONDS": "5",
        "FACEPIPE_OBJECT_STORE": "local",
        "FACEPIPE_OBJECT_DIR": str(root / "objects"),
        "FACEPIPE_VECTOR_DIR": str(root / "vectors"),
        # The guard as deployed: private addresses are refused.
        "FACEPIPE_ALLOW_PRIVATE_NETWORKS": "0",
        # Input checks, not keys, are tested here (tests/integration/test_auth.py has those):
        # these standalone loopback services run without them.
        "FACEPIPE_AUTH": "off",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("FACEPIPE_NATS_URL", None)
    services: dict[str, ServiceProcess] = {}
    try:
        services["extractor"] = launch("extractor", {**env, "FACEPIPE_NATS_URL": server.url}, root)
        # Its spans show that an aborted stream still ends its span cleanly.
        services["detector"] = launch(
            "detector", {**env, "FACEPIPE_TRACE_FILE": str(root / "spans.jsonl")}, root
        )
        services["indexer"] = launch("indexer", env, root)
        services["persons"] = launch(
            "persons",
            {
                **env,
                "FACEPIPE_NATS_URL": server.url,
                "FACEPIPE_PERSONS_INDEXER_ADDR": services["indexer"].addr,
            },
            root,
        )
        services["recognizer"] = launch("recognizer", env, root)
        yield Bench(
            server,
            LocalObjectStore(root / "objects"),
            env,
            services,
            {name: s.proc.pid for name, s in services.items()},
        )
    finally:
        for service in services.values():
            service.stop()
        server.stop()


@pytest.fixture(autouse=True)
def services_survive(bench: Bench) -> Iterator[None]:
    """Every kind leaves each service the same process, SERVING, with no traceback logged."""
    before = {name: s.log_path.stat().st_size for name, s in bench.services.items()}
    yield
    for name, service in bench.services.items():
        assert service.proc.poll() is None, f"{name} exited:\n{service.log()[-3000:]}"
        assert service.proc.pid == bench.pids[name]
        with grpc.insecure_channel(service.addr) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING, name
        with open(service.log_path, "rb") as log:
            log.seek(before[name])
            new = log.read().decode(errors="replace")
        assert "Traceback" not in new, f"{name} logged a traceback:\n{new[-3000:]}"


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=60, **kwargs)
    return info.value


def assert_refused(error: grpc.RpcError, code: grpc.StatusCode, message: str) -> None:
    assert error.code() == code, (error.code(), error.details())
    details = error.details() or ""
    assert message in details, details
    assert len(details) < MAX_MESSAGE and "Traceback" not in details


# -- images through the detector -------------------------------------------------------------
@pytest.mark.parametrize(("data", "code", "expected"), [c[1:] for c in IMAGES], ids=[c[0] for c in IMAGES])
def test_image_kind_gets_its_own_answer(bench, data: bytes, code: str | None, expected) -> None:
    request = detector_pb2.DetectBatchRequest(
        images=[common_pb2.ImageInput(id="bad", data=data), common_pb2.ImageInput(id="good", data=JPEG)]
    )
    with grpc.insecure_channel(bench.services["detector"].addr) as channel:
        response = detector_pb2_grpc.DetectorStub(channel).DetectBatch(request, timeout=60)
    bad, good = response.results
    assert not good.HasField("error"), "one bad image never fails its batch"
    if code is None:
        assert not bad.HasField("error") and (bad.width, bad.height) == expected
    else:
        assert common_pb2.ErrorCode.Name(bad.error.code) == f"ERROR_CODE_{code}"
        assert expected in bad.error.message


# -- NATS messages into the extractor --------------------------------------------------------
def ingest(**fields) -> bytes:
    return pipeline_pb2.IngestRequest(**fields).SerializeToString()


def stored(bench: Bench, data: bytes, tenant: str = "t1") -> dict:
    """Puts ``data`` in the object store under a fresh key of ``tenant``: the fields naming it."""
    key = f"{tenant}/corpus-{uuid.uuid4().hex}.bin"
    bench.objects.put(RAW_IMAGES_BUCKET, key, data, "application/octet-stream")
    return {"bucket": RAW_IMAGES_BUCKET, "key": key}


# (kind, the message body from the bench, the reason, a part of the error)
MESSAGES = [
    ("garbage_bytes", lambda b: b"\xff\xfe garbage \x00\x01", "malformed", "malformed IngestRequest"),
    ("empty_message", lambda b: b"", "malformed", "empty ingest message"),
    ("whitespace_message", lambda b: b" \n\t ", "malformed", "empty ingest message"),
    (
        "wrong_protobuf",  # a BoundingBox: floats where an IngestRequest has strings
        lambda b: common_pb2.BoundingBox(x1=1, y1=2, x2=3, y2=4).SerializeToString(),
        "malformed",
        "malformed IngestRequest",
    ),
    ("broken_json", lambda b: b'{"tenant_id": ', "malformed", "malformed IngestRequest JSON"),
    ("json_wrong_type", lambda b: b'{"tenant_id": 5}', "malformed", "malformed IngestRequest JSON"),
    (
        "json_missing_fields",
        lambda b: b'{"site": "example.org"}',
        "missing_fields",
        "missing required fields: tenant_id, url (or bucket and key)",
    ),
    (
        "json_missing_key",
        lambda b: b'{"tenant_id": "t1", "bucket": "raw-images"}',
        "missing_fields",
        "missing required fields: key",
    ),
    (
        "huge_tenant",
        lambda b: ingest(tenant_id=LONG, url="https://example.org/a.jpg"),
        "invalid_tenant",
        "invalid tenant_id 'tttt",
    ),
    (
        "tenant_with_slash",
        lambda b: ingest(tenant_id="victim/../x", url="https://example.org/a.jpg"),
        "invalid_tenant",
        "invalid tenant_id 'victim/../x'",
    ),
    (
        "overlong_batch_id",
        lambda b: ingest(tenant_id="t1", batch_id="b" * 300, url="https://example.org/a.jpg"),
        "invalid_batch_id",
        "at most 256 letters",
    ),
    (
        "batch_id_with_space",
        lambda b: ingest(tenant_id="t1", batch_id="a b", url="https://example.org/a.jpg"),
        "invalid_batch_id",
        "invalid batch_id 'a b'",
    ),
    (
        "malformed_url_ipv6",
        lambda b: ingest(tenant_id="t1", url="http://[::1"),
        "invalid_url",
        "is not a valid URL: Invalid IPv6 URL",
    ),
    (
        "malformed_url_host",
        lambda b: ingest(tenant_id="t1", url="http://exa mple.com/a.jpg"),
        "invalid_url",
        "bad host name 'exa mple.com'",
    ),
    (
        "overlong_url",
        lambda b: ingest(tenant_id="t1", url="https://example.org/" + "a" * 9000),
        "invalid_url",
        "over the 8192-character URL limit",
    ),
    (
        "unsupported_scheme",
        lambda b: ingest(tenant_id="t1", url="ftp://example.org/a.jpg"),
        "blocked_target",
        "is not an http(s) URL",
    ),
    (
        "file_url",
        lambda b: ingest(tenant_id="t1", url="file:///etc/passwd"),
        "missing_fields",
        "file:// URLs are not fetched",
    ),
    (
        "loopback_url",
        lambda b: ingest(tenant_id="t1", url="http://127.0.0.1:9/a.jpg"),
        "blocked_target",
        "target 127.0.0.1 is a loopback address",
    ),
    (
        "metadata_endpoint_url",
        lambda b: ingest(tenant_id="t1", url="http://169.254.169.254/latest/meta-data/"),
        "blocked_target",
        "is a link-local address",
    ),
    (
        "6to4_loopback_url",
        lambda b: ingest(tenant_id="t1", url="http://[2002:7f00:1::]/a.jpg"),
        "blocked_target",
        "a 6to4 form of a loopback address",
    ),
    (
        "missing_object",
        lambda b: ingest(tenant_id="t1", bucket=RAW_IMAGES_BUCKET, key="t1/nothing-here.jpg"),
        "not_found",
        "nothing-here.jpg",
    ),
    (
        "bad_bucket_name",
        lambda b: ingest(tenant_id="t1", bucket="NO", key="t1/a.jpg"),
        "invalid_object_ref",
        "invalid bucket name 'NO'",
    ),
    (
        "key_with_dot_dot",
        lambda b: ingest(tenant_id="t1", bucket=RAW_IMAGES_BUCKET, key="t1/../../etc/passwd"),
        "invalid_object_ref",
        "no empty, '.' or '..' path segments",
    ),
    (
        "sha_mismatch",
        lambda b: ingest(tenant_id="t1", image_sha256="0" * 64, **stored(b, JPEG)),
        "sha_mismatch",
        "does not match",
    ),
    (
        "stored_truncated_jpeg",
        lambda b: ingest(tenant_id="t1", **stored(b, JPEG[:300])),
        "undecodable",
        "corrupt or truncated image",
    ),
    ("stored_zero_bytes", lambda b: ingest(tenant_id="t1", **stored(b, b"")), "empty", "image is empty"),
    (
        "stored_html",
        lambda b: ingest(tenant_id="t1", **stored(b, b"<html><body>x</body></html>")),
        "undecodable",
        "not a recognised image format",
    ),
    (
        "stored_huge_dimensions",
        lambda b: ingest(tenant_id="t1", **stored(b, png_with_header(100_000, 100_000))),
        "too_large",
        "over the 50000000-pixel limit",
    ),
]


async def dead_letter(js, case: str, wait_s: float = 20.0):
    """The extractor's dead letter carrying ``case`` in its headers."""
    sub = await js.subscribe(f"{bus.SUBJECT_DLQ}.extractor", stream=bus.DLQ_STREAM, ordered_consumer=True)
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if (msg.headers or {}).get(CASE_HEADER) == case:
                return msg
    finally:
        await sub.unsubscribe()
    raise AssertionError(f"no dead letter for {case} within {wait_s:g}s")


@pytest.mark.parametrize(("body", "reason", "error"), [m[1:] for m in MESSAGES], ids=[m[0] for m in MESSAGES])
async def test_message_kind_is_dead_lettered_at_once_with_a_reason(
    bench, request, body, reason: str, error: str
) -> None:
    case = request.node.callspec.id
    nc = await nats.connect(bench.nats.url)
    try:
        js = nc.jetstream()
        await js.publish(bus.SUBJECT_INGEST, body(bench), headers={CASE_HEADER: case})
        letter = await dead_letter(js, case)
    finally:
        await nc.close()
    headers = letter.headers
    assert headers[bus.HDR_REASON] == reason, headers
    assert error in headers[bus.HDR_ERROR], headers[bus.HDR_ERROR]
    assert len(headers[bus.HDR_ERROR]) < MAX_MESSAGE
    assert headers[bus.HDR_DELIVERIES] == "1", "a permanent error is not retried"


async def test_an_overlong_message_id_is_replaced_by_a_bounded_one(bench) -> None:
    tenant = f"mid{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(bench.nats.url)
    try:
        js = nc.jetstream()
        done = await js.subscribe(f"{bus.SUBJECT_DONE}.>", stream=bus.EVENTS_STREAM, ordered_consumer=True)
        await js.publish(
            bus.SUBJECT_INGEST, ingest(tenant_id=tenant, message_id="m" * 10_000, url="http://127.0.0.1/")
        )
        deadline = time.monotonic() + 20
        event = None
        while event is None and time.monotonic() < deadline:
            got = pipeline_pb2.ImageDone.FromString((await done.next_msg(timeout=20)).data)
            event = got if got.tenant_id == tenant else None
    finally:
        await nc.close()
    assert event is not None
    assert event.status == pipeline_pb2.IMAGE_STATUS_FAILED and event.reason == "blocked_target"
    assert event.message_id.startswith("ingest-") and len(event.message_id) <= 256


# -- gRPC fields -----------------------------------------------------------------------------
def images(n: int) -> list[common_pb2.ImageInput]:
    return [common_pb2.ImageInput(id=str(i), data=b"x") for i in range(n)]


RANGE = "160 to 1280 pixels, a multiple of 32"
DETECT_OPTIONS = [
    ("input_size_negative", {"input_size": -640}, f"input_size -640 is not allowed: {RANGE}"),
    ("input_size_4096", {"input_size": 4096}, f"input_size 4096 is not allowed: {RANGE}"),
    ("input_size_100000", {"input_size": 100_000}, "input_size 100000 is not allowed"),
    ("input_size_too_small", {"input_size": 32}, "input_size 32 is not allowed"),
    ("input_size_not_multiple_of_32", {"input_size": 650}, "input_size 650 is not allowed"),
    ("score_threshold_nan", {"score_threshold": math.nan}, "score_threshold nan is not allowed: 0 to 1"),
    ("score_threshold_negative", {"score_threshold": -1.0}, "score_threshold -1.0 is not allowed"),
    ("max_faces_negative", {"max_faces": -3}, "max_faces -3 is not allowed: 0 or more"),
]


@pytest.mark.parametrize(
    ("options", "message"), [o[1:] for o in DETECT_OPTIONS], ids=[o[0] for o in DETECT_OPTIONS]
)
def test_detect_option_out_of_range_is_invalid_argument(bench, options: dict, message: str) -> None:
    request = detector_pb2.DetectBatchRequest(
        images=[common_pb2.ImageInput(data=JPEG)], options=detector_pb2.DetectOptions(**options)
    )
    with grpc.insecure_channel(bench.services["detector"].addr) as channel:
        stub = detector_pb2_grpc.DetectorStub(channel)
        assert_refused(rpc_error(stub.DetectBatch, request), grpc.StatusCode.INVALID_ARGUMENT, message)
        # The stream checks each message the same way.
        stream_error = rpc_error(lambda r, **kw: list(stub.DetectStream(iter([r]), **kw)), request)
        assert_refused(stream_error, grpc.StatusCode.INVALID_ARGUMENT, message)


def test_detect_batch_with_too_many_images(bench) -> None:
    with grpc.insecure_channel(bench.services["detector"].addr) as channel:
        stub = detector_pb2_grpc.DetectorStub(channel)
        error = rpc_error(stub.DetectBatch, detector_pb2.DetectBatchRequest(images=images(257)))
    assert_refused(error, grpc.StatusCode.INVALID_ARGUMENT, "at most 256 images per batch, got 257")


def test_detect_stream_message_with_too_many_images(bench) -> None:
    fine = detector_pb2.DetectBatchRequest(images=[common_pb2.ImageInput(data=JPEG)])
    too_many = detector_pb2.DetectBatchRequest(images=images(300))
    with grpc.insecure_channel(bench.services["detector"].addr) as channel:
        stub = detector_pb2_grpc.DetectorStub(channel)
        error = rpc_error(lambda r, **kw: list(stub.DetectStream(iter(r), **kw)), [fine, too_many])
    assert_refused(error, grpc.StatusCode.INVALID_ARGUMENT, "at most 256 images per batch, got 300")
    spans_file = bench.services["detector"].env["FACEPIPE_TRACE_FILE"]
    deadline = time.monotonic() + 10
    while True:
        lines = Path(spans_file).read_text().splitlines() if Path(spans_file).exists() else []
        spans = [json.loads(line) for line in lines]
        streams = [s for s in spans if s["name"] == "/facepipe.v1.Detector/DetectStream"]
        if streams or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert streams and all(s["end"] for s in streams), "the aborted stream's span was ended and exported"


def test_detect_empty_batch_is_an_empty_answer(bench) -> None:
    with grpc.insecure_channel(bench.services["detector"].addr) as channel:
        response = detector_pb2_grpc.DetectorStub(channel).DetectBatch(
            detector_pb2.DetectBatchRequest(), timeout=60
        )
    assert list(response.results) == [] and response.model


def test_detect_ref_to_a_missing_object(bench) -> None:
    ref = common_pb2.ObjectRef(bucket=RAW_IMAGES_BUCKET, key="nobody/missing.jpg")
    request = detector_pb2.DetectBatchRequest(images=[common_pb2.ImageInput(id="r", ref=ref)])
    with grpc.insecure_channel(bench.services["detector"].addr) as channel:
        (result,) = detector_pb2_grpc.DetectorStub(channel).DetectBatch(request, timeout=60).results
    assert result.error.code == common_pb2.ERROR_CODE_NOT_FOUND and "missing.jpg" in result.error.message


SEARCHES = [
    ("search_top_k_negative", {"tenant_id": "t1", "top_k": -1}, "top_k must be between 1 and"),
    ("search_top_k_huge", {"tenant_id": "t1", "top_k": 10_000_000}, "top_k must be between 1 and"),
    (
        "search_min_score_nan",
        {"tenant_id": "t1", "min_score": math.nan},
        "min_score must be a cosine similarity in [-1, 1], got nan",
    ),
    ("search_min_score_above_one", {"tenant_id": "t1", "min_score": 2.0}, "got 2.0"),
    ("search_overlong_tenant", {"tenant_id": LONG}, "tenant_id 'tttt"),
    ("search_no_tenant", {}, "tenant_id '' is required"),
    ("search_no_query", {"tenant_id": "t1"}, "give a query: image (encoded bytes) or vector"),
    (
        "search_empty_taken_window",
        {"tenant_id": "t1", "filter": indexer_pb2.SearchFilter(taken_after_ms=2000, taken_before_ms=1000)},
        "taken_after_ms (2000) must be before taken_before_ms (1000)",
    ),
    (
        "search_folder_not_printable",
        {"tenant_id": "t1", "filter": indexer_pb2.SearchFilter(folder="/photos\n2021")},
        "invalid folder filter: folder must be at most 1024 printable characters",
    ),
]


@pytest.mark.parametrize(("fields", "message"), [s[1:] for s in SEARCHES], ids=[s[0] for s in SEARCHES])
def test_search_field_out_of_range_is_invalid_argument(bench, fields: dict, message: str) -> None:
    with grpc.insecure_channel(bench.services["indexer"].addr) as channel:
        stub = indexer_pb2_grpc.IndexerStub(channel)
        error = rpc_error(stub.Search, indexer_pb2.SearchRequest(**fields))
    assert_refused(error, grpc.StatusCode.INVALID_ARGUMENT, message)


REINDEXES = [
    ("reindex_no_tenant", {}, "tenant_id '' is required"),
    ("reindex_overlong_tenant", {"tenant_id": LONG}, "tenant_id 'tttt"),
    (
        "reindex_bad_collection",
        {"tenant_id": "t1", "from_collection": "../faces"},
        "is not a collection name",
    ),
    (
        "reindex_unknown_collection",
        {"tenant_id": "t1", "from_collection": "faces_0000000000000000_128d"},
        "no face collection faces_0000000000000000_128d; the others are: none",
    ),
]


@pytest.mark.parametrize(("fields", "message"), [r[1:] for r in REINDEXES], ids=[r[0] for r in REINDEXES])
def test_reindex_field_is_invalid_argument(bench, fields: dict, message: str) -> None:
    with grpc.insecure_channel(bench.services["indexer"].addr) as channel:
        stub = indexer_pb2_grpc.IndexerStub(channel)
        error = rpc_error(stub.Reindex, indexer_pb2.ReindexRequest(**fields))
    assert_refused(error, grpc.StatusCode.INVALID_ARGUMENT, message)


PERSON = "0" * 32
FACE = str(uuid.UUID(int=1))
PERSONS_CALLS = [
    ("persons_list_no_tenant", "ListPersons", {}, "tenant_id '' is required"),
    ("persons_list_page_size", "ListPersons", {"tenant_id": "t1", "page_size": 5000}, "between 1 and 1000"),
    (
        "persons_list_page_token",
        "ListPersons",
        {"tenant_id": "t1", "page_token": "x"},
        "not one this service",
    ),
    ("persons_list_min_faces", "ListPersons", {"tenant_id": "t1", "min_faces": -1}, "min_faces must be 0"),
    ("persons_get_bad_id", "GetPerson", {"tenant_id": "t1", "person_id": "x"}, "is not a person id"),
    ("persons_get_no_tenant", "GetPerson", {"person_id": PERSON}, "tenant_id '' is required"),
    (
        "persons_rename_long_name",
        "RenamePerson",
        {"tenant_id": "t1", "person_id": PERSON, "name": "n" * 201},
        "at most 200",
    ),
    (
        "persons_rename_control_character",
        "RenamePerson",
        {"tenant_id": "t1", "person_id": PERSON, "name": "a\nb"},
        "control characters",
    ),
    (
        "persons_merge_nothing",
        "MergePersons",
        {"tenant_id": "t1", "into_person_id": PERSON},
        "give person_ids",
    ),
    (
        "persons_merge_into_itself",
        "MergePersons",
        {"tenant_id": "t1", "into_person_id": PERSON, "person_ids": [PERSON]},
        "at least one person other than into_person_id",
    ),
    (
        "persons_merge_bad_id",
        "MergePersons",
        {"tenant_id": "t1", "into_person_id": PERSON, "person_ids": ["x" * 500]},
        "person_ids 'xxxx",
    ),
    ("persons_split_no_faces", "SplitPerson", {"tenant_id": "t1", "person_id": PERSON}, "give point_ids"),
    (
        "persons_split_bad_face",
        "SplitPerson",
        {"tenant_id": "t1", "person_id": PERSON, "point_ids": ["nope"]},
        "is not a face's point id",
    ),
    (
        "persons_split_to_itself",
        "SplitPerson",
        {"tenant_id": "t1", "person_id": PERSON, "point_ids": [FACE], "to_person_id": PERSON},
        "to_person_id is the person the faces are split from",
    ),
    ("persons_hide_bad_id", "HidePerson", {"tenant_id": "t1", "person_id": ""}, "is not a person id"),
    ("persons_unassign_bad_face", "UnassignFace", {"tenant_id": "t1", "point_id": "1"}, "is not a face's"),
    ("persons_recluster_no_tenant", "Recluster", {}, "tenant_id '' is required"),
    ("persons_recluster_status_no_tenant", "Recluster", {"status_only": True}, "tenant_id '' is required"),
]


@pytest.mark.parametrize(
    ("method", "fields", "message"), [c[1:] for c in PERSONS_CALLS], ids=[c[0] for c in PERSONS_CALLS]
)
def test_persons_field_is_invalid_argument(bench, method: str, fields: dict, message: str) -> None:
    with grpc.insecure_channel(bench.services["persons"].addr) as channel:
        stub = persons_pb2_grpc.PersonsStub(channel)
        request_type = getattr(persons_pb2, stub_request_name(method))
        error = rpc_error(getattr(stub, method), request_type(**fields))
    assert_refused(error, grpc.StatusCode.INVALID_ARGUMENT, message)


def stub_request_name(method: str) -> str:
    return {"UnassignFace": "UnassignFaceRequest"}.get(method, f"{method}Request")


def test_persons_of_an_unknown_person_are_not_found(bench) -> None:
    with grpc.insecure_channel(bench.services["persons"].addr) as channel:
        stub = persons_pb2_grpc.PersonsStub(channel)
        error = rpc_error(stub.GetPerson, persons_pb2.GetPersonRequest(tenant_id="t1", person_id=PERSON))
        assert_refused(error, grpc.StatusCode.NOT_FOUND, f"tenant t1 has no person {PERSON}")
        error = rpc_error(stub.UnassignFace, persons_pb2.UnassignFaceRequest(tenant_id="t1", point_id=FACE))
        assert_refused(error, grpc.StatusCode.NOT_FOUND, f"tenant t1 has no face {FACE}")


FACE_CALLS = [
    ("neighbours_no_faces", "FaceNeighbors", {"tenant_id": "t1"}, "give 1 to 1000 point_ids"),
    (
        "neighbours_bad_face",
        "FaceNeighbors",
        {"tenant_id": "t1", "point_ids": ["x"]},
        "point id 'x' is not a",
    ),
    (
        "neighbours_k",
        "FaceNeighbors",
        {"tenant_id": "t1", "point_ids": [FACE], "k": 5000},
        "k must be between",
    ),
    (
        "set_persons_bad_person",
        "SetFacePersons",
        {"tenant_id": "t1", "faces": [{"point_id": FACE, "person_id": "P"}]},
        "person_id 'P' is not 32 lowercase hex digits",
    ),
    ("set_persons_no_tenant", "SetFacePersons", {}, "tenant_id '' is required"),
    ("list_faces_bad_person", "ListFaces", {"tenant_id": "t1", "person_id": "x"}, "person_id 'x' is not 32"),
    (
        "list_faces_bad_sha",
        "ListFaces",
        {"tenant_id": "t1", "image_sha256": "x"},
        "image_sha256 'x' is not 64",
    ),
]


@pytest.mark.parametrize(
    ("method", "fields", "message"), [c[1:] for c in FACE_CALLS], ids=[c[0] for c in FACE_CALLS]
)
def test_face_call_field_is_invalid_argument(bench, method: str, fields: dict, message: str) -> None:
    with grpc.insecure_channel(bench.services["indexer"].addr) as channel:
        stub = indexer_pb2_grpc.IndexerStub(channel)
        error = rpc_error(getattr(stub, method), getattr(indexer_pb2, f"{method}Request")(**fields))
    assert_refused(error, grpc.StatusCode.INVALID_ARGUMENT, message)


def test_face_graph_k_out_of_range_is_invalid_argument(bench) -> None:
    with grpc.insecure_channel(bench.services["indexer"].addr) as channel:
        stub = indexer_pb2_grpc.IndexerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.FaceGraph(indexer_pb2.FaceGraphRequest(tenant_id="t1", k=500), timeout=60))
    assert_refused(info.value, grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1 and 200")


INGESTS = [
    ("ingest_overlong_tenant", {"tenant_id": LONG, "url": "https://example.org/a.jpg"}, "invalid tenant_id"),
    (
        "ingest_overlong_message_id",
        {"tenant_id": "t1", "url": "https://example.org/a.jpg", "message_id": "m" * 10_000},
        "invalid message_id 'mmmm",
    ),
    ("ingest_malformed_url", {"tenant_id": "t1", "url": "http://[::1"}, "is not a valid URL"),
    ("ingest_unsupported_scheme", {"tenant_id": "t1", "url": "gopher://x/"}, "is not an http(s) URL"),
    ("ingest_nothing_to_fetch", {"tenant_id": "t1"}, "missing required fields: url (or bucket and key)"),
    (
        "ingest_overlong_folder",
        {"tenant_id": "t1", "url": "https://example.org/a.jpg", "folder": "/x" * 1000},
        "invalid folder: folder must be at most 1024 printable characters",
    ),
]


@pytest.mark.parametrize(("fields", "message"), [i[1:] for i in INGESTS], ids=[i[0] for i in INGESTS])
def test_ingest_field_is_invalid_argument(bench, fields: dict, message: str) -> None:
    with grpc.insecure_channel(bench.services["extractor"].addr) as channel:
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        error = rpc_error(stub.Ingest, pipeline_pb2.IngestRequest(**fields))
    assert_refused(error, grpc.StatusCode.INVALID_ARGUMENT, message)


# -- the recognizer --------------------------------------------------------------------------
FACE_PHOTO = (SHARED_FACES / "brad_pitt" / "brad_1.jpg").read_bytes()
NO_SUBJECT = "0" * 32
R = recognizer_pb2
INVALID, NOT_FOUND, PRECONDITION = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)
RECOGNIZER_CASES = [
    ("enrol_no_tenant", "EnrolSubject", R.EnrolSubjectRequest(), INVALID, "tenant_id '' is required"),
    (
        "enrol_nothing_to_add",
        "EnrolSubject",
        R.EnrolSubjectRequest(tenant_id="t1", subject_id=NO_SUBJECT),
        INVALID,
        "give the photos to enrol (images) or a person (from_person_id)",
    ),
    (
        "enrol_no_name",
        "EnrolSubject",
        R.EnrolSubjectRequest(tenant_id="t1", images=[FACE_PHOTO]),
        INVALID,
        "a subject needs a name",
    ),
    (
        "enrol_overlong_name",
        "EnrolSubject",
        R.EnrolSubjectRequest(tenant_id="t1", name=LONG, images=[FACE_PHOTO]),
        INVALID,
        "must be at most 200 printable characters",
    ),
    (
        "enrol_too_many_images",
        "EnrolSubject",
        R.EnrolSubjectRequest(tenant_id="t1", name="x", images=[JPEG] * 33),
        INVALID,
        "at most 32 images per enrolment, got 33",
    ),
    (
        "enrol_unreadable_and_faceless_images",
        "EnrolSubject",
        R.EnrolSubjectRequest(tenant_id="t1", name="x", images=[b"not an image", JPEG]),
        INVALID,
        "no face to enrol (image 0: not a readable image",
    ),
    (
        "enrol_too_much_metadata",
        "EnrolSubject",
        R.EnrolSubjectRequest(
            tenant_id="t1", name="x", images=[FACE_PHOTO], metadata={str(i): "v" for i in range(65)}
        ),
        INVALID,
        "at most 64 metadata entries, got 65",
    ),
    (
        "enrol_bad_subject_id",
        "EnrolSubject",
        R.EnrolSubjectRequest(tenant_id="t1", subject_id="../x", images=[FACE_PHOTO]),
        INVALID,
        "subject_id '../x' is not a subject id",
    ),
    (
        "enrol_unknown_subject",
        "EnrolSubject",
        R.EnrolSubjectRequest(tenant_id="t1", subject_id=NO_SUBJECT, images=[FACE_PHOTO]),
        NOT_FOUND,
        f"no subject {NO_SUBJECT} in tenant t1",
    ),
    (
        "enrol_from_a_person_without_persons",
        "EnrolSubject",
        R.EnrolSubjectRequest(tenant_id="t1", name="x", from_person_id="p1"),
        PRECONDITION,
        "enrolment from a person needs the Persons service",
    ),
    (
        "get_unknown_subject",
        "GetSubject",
        R.GetSubjectRequest(tenant_id="t1", subject_id=NO_SUBJECT),
        NOT_FOUND,
        "no subject",
    ),
    (
        "update_nothing",
        "UpdateSubject",
        R.UpdateSubjectRequest(tenant_id="t1", subject_id=NO_SUBJECT),
        INVALID,
        "nothing to change: give name, external_id or metadata",
    ),
    (
        "update_empty_name",
        "UpdateSubject",
        R.UpdateSubjectRequest(tenant_id="t1", subject_id=NO_SUBJECT, name="  "),
        INVALID,
        "a subject needs a name",
    ),
    (
        "remove_no_faces",
        "RemoveSubjectFaces",
        R.RemoveSubjectFacesRequest(tenant_id="t1", subject_id=NO_SUBJECT),
        INVALID,
        "give the face_ids to remove",
    ),
    (
        "remove_bad_face_id",
        "RemoveSubjectFaces",
        R.RemoveSubjectFacesRequest(tenant_id="t1", subject_id=NO_SUBJECT, face_ids=["x" * 500]),
        INVALID,
        "is not a face id",
    ),
    (
        "delete_one_and_all",
        "DeleteSubject",
        R.DeleteSubjectRequest(tenant_id="t1", subject_id=NO_SUBJECT, all_subjects=True),
        INVALID,
        "give a subject_id or all_subjects, not both",
    ),
    (
        "delete_no_subject",
        "DeleteSubject",
        R.DeleteSubjectRequest(tenant_id="t1"),
        INVALID,
        "subject_id '' is not",
    ),
    (
        "list_page_size_huge",
        "ListSubjects",
        R.ListSubjectsRequest(tenant_id="t1", page_size=100_000),
        INVALID,
        "page_size must be between 1 and 1000",
    ),
    (
        "list_foreign_page_token",
        "ListSubjects",
        R.ListSubjectsRequest(tenant_id="t1", page_token="abc"),
        INVALID,
        "page_token 'abc' is not one this service gave",
    ),
    ("verify_empty_image", "Verify", R.VerifyRequest(image_b=FACE_PHOTO), INVALID, "image_a is empty"),
    (
        "verify_unreadable_image",
        "Verify",
        R.VerifyRequest(image_a=FACE_PHOTO, image_b=b"not an image"),
        INVALID,
        "image_b is not a readable image",
    ),
    (
        "verify_no_face",
        "Verify",
        R.VerifyRequest(image_a=JPEG, image_b=FACE_PHOTO),
        PRECONDITION,
        "no face found in image_a",
    ),
    (
        "verify_oblong_aligned_crop",
        "Verify",
        R.VerifyRequest(image_a=JPEG, image_b=JPEG, aligned=True),
        INVALID,
        "image_a: the image is 64x48; a pre-aligned crop is square",
    ),
    ("verify_overlong_tenant", "Verify", R.VerifyRequest(tenant_id=LONG), INVALID, "tenant_id 'tttt"),
    (
        "recognize_candidates_negative",
        "Recognize",
        R.RecognizeRequest(tenant_id="t1", image=FACE_PHOTO, options=R.RecognizeOptions(candidates=-1)),
        INVALID,
        "candidates must be between 0 and 100, got -1",
    ),
    (
        "recognize_min_similarity_nan",
        "Recognize",
        R.RecognizeRequest(
            tenant_id="t1", image=FACE_PHOTO, options=R.RecognizeOptions(min_similarity=math.nan)
        ),
        INVALID,
        "min_similarity must be a cosine similarity in [-1, 1]",
    ),
    (
        "recognize_input_size_4096",
        "Recognize",
        R.RecognizeRequest(
            tenant_id="t1",
            image=FACE_PHOTO,
            options=R.RecognizeOptions(detect=detector_pb2.DetectOptions(input_size=4096)),
        ),
        INVALID,
        "input_size 4096 is not allowed",
    ),
    ("recognize_empty_image", "Recognize", R.RecognizeRequest(tenant_id="t1"), INVALID, "image is empty"),
    (
        "recognize_unreadable_image",
        "Recognize",
        R.RecognizeRequest(tenant_id="t1", image=b"\x89PNG\r\n"),
        INVALID,
        "image is not a readable image",
    ),
    (
        "recognize_no_tenant",
        "Recognize",
        R.RecognizeRequest(image=FACE_PHOTO),
        INVALID,
        "tenant_id '' is required",
    ),
    ("access_log_no_tenant", "ListAccessLog", R.ListAccessLogRequest(), INVALID, "tenant_id '' is required"),
    (
        "access_log_bad_camera",
        "ListAccessLog",
        R.ListAccessLogRequest(tenant_id="t1", camera_id="front door"),
        INVALID,
        "invalid camera id 'front door'",
    ),
    (
        "access_log_bad_subject",
        "ListAccessLog",
        R.ListAccessLogRequest(tenant_id="t1", subject_id="a.b"),
        INVALID,
        "invalid subject id 'a.b'",
    ),
    (
        "access_log_limit_too_high",
        "ListAccessLog",
        R.ListAccessLogRequest(tenant_id="t1", limit=10001),
        INVALID,
        "limit must be 0 (the default, 100) to 10000",
    ),
    (
        "access_log_until_before_since",
        "ListAccessLog",
        R.ListAccessLogRequest(tenant_id="t1", since_ms=2000, until_ms=1000),
        INVALID,
        "until is before since",
    ),
    (
        "access_log_without_nats",
        "ListAccessLog",
        R.ListAccessLogRequest(tenant_id="t1"),
        PRECONDITION,
        "this recognizer keeps no access log",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [c[1:] for c in RECOGNIZER_CASES],
    ids=[c[0] for c in RECOGNIZER_CASES],
)
def test_recognizer_input_gets_a_status_and_a_message(bench, method, request_, code, message: str) -> None:
    with grpc.insecure_channel(
        bench.services["recognizer"].addr, options=[("grpc.max_send_message_length", -1)]
    ) as channel:
        stub = recognizer_pb2_grpc.RecognizerStub(channel)
        error = rpc_error(getattr(stub, method), request_)
    assert_refused(error, code, message)


# -- CLI flags -------------------------------------------------------------------------------
FLAGS = [
    (
        "detect_input_size_4096",
        ["detect", "{jpeg}", "--input-size", "4096"],
        1,
        "input_size 4096 is not allowed",
    ),
    ("detect_input_size_negative", ["detect", "{jpeg}", "--input-size", "-32"], 2, "-32 is not between 0"),
    ("detect_threshold_nan", ["detect", "{jpeg}", "--threshold", "nan"], 2, "nan is not between 0 and 1"),
    ("detect_threshold_word", ["detect", "{jpeg}", "--threshold", "high"], 2, "'high' is not a number"),
    ("detect_max_faces_negative", ["detect", "{jpeg}", "--max-faces", "-1"], 2, "-1 is not between 0"),
    ("detect_missing_file", ["detect", "/nonexistent/photo.jpg"], 2, "/nonexistent/photo.jpg"),
    ("detect_no_images", ["detect"], 2, "the following arguments are required: IMAGE"),
    ("search_overlong_tenant", ["search", "{jpeg}", "--tenant", LONG], 2, "invalid tenant 'tttt"),
    (
        "search_taken_after_word",
        ["search", "{jpeg}", "--taken-after", "yesterday"],
        2,
        "'yesterday' is not an ISO date or date and time",
    ),
    ("reindex_overlong_tenant", ["reindex", "--tenant", LONG], 2, "invalid tenant 'tttt"),
    ("reindex_no_tenant", ["reindex"], 2, "the following arguments are required: --tenant"),
    ("crawl_unsupported_scheme", ["crawl", "ftp://example.org/"], 2, "is not an http(s) URL"),
    ("serve_unknown_service", ["serve", "nosuch"], 2, "invalid choice: 'nosuch'"),
    ("recognize_no_tenant", ["recognize", "{jpeg}"], 2, "the following arguments are required: --tenant"),
    (
        "recognize_candidates_huge",
        ["recognize", "{jpeg}", "--tenant", "t1", "--candidates", "1000"],
        2,
        "1000 is not between 0 and 100",
    ),
    ("subjects_enrol_no_name", ["subjects", "enrol", "--tenant", "t1", "{jpeg}"], 2, "give --name NAME"),
    (
        "subjects_enrol_bad_meta",
        ["subjects", "enrol", "--tenant", "t1", "--name", "x", "--meta", "novalue", "{jpeg}"],
        2,
        "--meta 'novalue' is not KEY=VALUE",
    ),
    ("subjects_no_action", ["subjects"], 2, "the following arguments are required: ACTION"),
    (
        "recognize_video_missing",
        ["recognize", "--tenant", "t1", "--video", "/nonexistent/a.mp4"],
        1,
        "no video file",
    ),
    (
        "recognize_video_and_image",
        ["recognize", "{jpeg}", "--tenant", "t1", "--video", "{jpeg}"],
        2,
        "give IMAGE, or --video / --camera, not both",
    ),
    (
        "recognize_bad_camera_id",
        ["recognize", "--tenant", "t1", "--video", "{jpeg}", "--camera-id", "front door"],
        2,
        "invalid camera id 'front door'",
    ),
    (
        "recognize_fast_without_video",
        ["recognize", "{jpeg}", "--tenant", "t1", "--fast"],
        2,
        "--fast needs --video",
    ),
    (
        "recognize_video_and_camera",
        ["recognize", "--tenant", "t1", "--video", "{jpeg}", "--camera", "0"],
        2,
        "not allowed with argument",
    ),
    ("access_log_no_tenant", ["access-log"], 2, "the following arguments are required: --tenant"),
    (
        "access_log_bad_camera",
        ["access-log", "--tenant", "t1", "--camera", "a.b"],
        2,
        "invalid camera id 'a.b'",
    ),
    ("access_log_bad_since", ["access-log", "--tenant", "t1", "--since", "soon"], 2, "is neither a duration"),
    ("access_log_limit_zero", ["access-log", "--tenant", "t1", "--limit", "0"], 2, "0 is not between 1"),
    ("unknown_command", ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("args", "status", "message"), [f[1:] for f in FLAGS], ids=[f[0] for f in FLAGS])
def test_cli_flag_gets_a_one_line_error(bench, tmp_path, args: list[str], status: int, message: str) -> None:
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(JPEG)
    argv = [str(VENV_BIN / "facepipe"), *(a.replace("{jpeg}", str(jpeg)) for a in args)]
    result = subprocess.run(argv, env=bench.env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert message in result.stderr, output
    assert "Traceback" not in output
    assert len(result.stderr) < 4000, "the error echoes the value cut short"
