"""Helpers of the fault tests (test_faults.py, test_chaos.py): the stack's processes
as stack.json has them, the server's view of the work queue, completion events,
distinct face photos, and an HTTP server whose images arrive only when a test says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import SHARED_FACES, run_facepipe, stack_channel, stack_nats_url

from facepipe import bus
from facepipe.v1 import indexer_pb2, indexer_pb2_grpc, pipeline_pb2

PIPELINE_STAGES = ("extractor", "detector", "embedder", "indexer")
# Every consumer of the work queue: the stages, and the persons service (the indexer's face events).
QUEUE_CONSUMERS = (*PIPELINE_STAGES, "persons")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


# -- the stack's processes -------------------------------------------------------------
def components(stack: dict) -> dict[str, dict]:
    return json.loads((Path(stack["dir"]) / "stack.json").read_text())["components"]


def pid_of(stack: dict, name: str) -> int:
    return components(stack)[name]["pid"]


def process_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` (Z: a zombie), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def kill(stack: dict, name: str, sig: int = signal.SIGKILL) -> int:
    pid = pid_of(stack, name)
    assert pid > 0, f"{name} has no process"
    os.kill(pid, sig)
    return pid


def wait_restarted(stack: dict, name: str, old_pid: int, within_s: float = 90.0) -> dict:
    """The component's record once the supervisor runs it again under a new pid."""
    deadline = time.monotonic() + within_s
    while (c := components(stack)[name])["pid"] in (old_pid, 0):
        assert time.monotonic() < deadline, f"the supervisor did not restart {name}"
        time.sleep(0.1)
    return c


def wait_all_serving(stack: dict, within_s: float = 120.0) -> list[dict]:
    """Every component healthy (services SERVING, nats-server listening), as `facepipe status`."""
    deadline = time.monotonic() + within_s
    while True:
        rows = json.loads(
            run_facepipe("status", "--json", "--data-dir", str(stack["dir"]), env=stack["env"]).stdout
        )
        if all(r["healthy"] for r in rows):
            return rows
        assert time.monotonic() < deadline, f"not every component is healthy: {rows}"
        time.sleep(0.5)


def points_by_face(stack: dict, tenant: str) -> Counter:
    """The tenant's points counted per (sha256, face index), read from the indexer."""
    counts: Counter = Counter()
    with stack_channel(stack, "indexer") as ch:
        stub = indexer_pb2_grpc.IndexerStub(ch)
        total = stub.GetStats(indexer_pb2.GetStatsRequest(tenant_id=tenant)).points
        token = ""
        while True:
            page = stub.ListFaces(
                indexer_pb2.ListFacesRequest(tenant_id=tenant, page_size=1000, page_token=token)
            )
            for face in page.faces:
                counts[(face.image_sha256, face.face_index)] += 1
            if not (token := page.next_page_token):
                break
    assert sum(counts.values()) == total, (sum(counts.values()), total)
    return counts


# -- NATS: the work queue and completion events ------------------------------------------
async def connect(stack: dict):
    import nats

    return await nats.connect(
        components_url(stack), max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2
    )


def components_url(stack: dict) -> str:
    """The stack's NATS URL as stack.json has it now, carrying the admin user."""
    state = json.loads((Path(stack["dir"]) / "stack.json").read_text())
    return stack_nats_url({**stack, "state": state})


@dataclass
class QueueView:
    """The FACEPIPE stream and the stage consumers as the server sees them."""

    messages: int
    subjects: dict[str, int]
    consumers: dict[str, dict] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        return any(c["num_pending"] or c["num_ack_pending"] for c in self.consumers.values())


async def queue_view(js) -> QueueView:
    info = await js.stream_info(bus.STREAM, subjects_filter=">")
    view = QueueView(info.state.messages, dict(info.state.subjects or {}))
    for name in QUEUE_CONSUMERS:
        ci = await js.consumer_info(bus.STREAM, name)
        view.consumers[name] = {
            "num_pending": ci.num_pending,
            "num_ack_pending": ci.num_ack_pending,
            "num_waiting": ci.num_waiting,
            "delivered": ci.delivered.consumer_seq,
            "ack_floor_stream_seq": ci.ack_floor.stream_seq,
        }
    return view


async def wait_queue_idle(js, within_s: float = 120.0) -> QueueView:
    """The queue once no consumer has messages pending or awaiting an ack."""
    deadline = time.monotonic() + within_s
    while True:
        with contextlib.suppress(Exception):  # nats-server may be restarting
            view = await queue_view(js)
            if not view.busy:
                return view
        assert time.monotonic() < deadline, f"the queue never went idle: {view}"
        await asyncio.sleep(0.5)


async def done_events(js, batch_id: str, expected: int, within_s: float = 180.0) -> list:
    """Every ImageDone of ``batch_id`` the events stream holds, once ``expected`` of them
    came (or at the deadline), plus any that follow within a second."""
    deadline = time.monotonic() + within_s
    sub = await js.subscribe(
        f"{bus.SUBJECT_DONE}.{batch_id}", stream=bus.EVENTS_STREAM, ordered_consumer=True
    )
    events = []
    try:
        while time.monotonic() < deadline:
            wait = 1.0 if len(events) >= expected else 2.0
            try:
                msg = await sub.next_msg(timeout=wait)
            except Exception:  # noqa: BLE001 - a quiet second, or a reconnect
                if len(events) >= expected:
                    break
                continue
            done = pipeline_pb2.ImageDone()
            done.ParseFromString(msg.data)
            events.append(done)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return events


# -- photos -------------------------------------------------------------------------------
def face_photos() -> list[Path]:
    return sorted(p for p in SHARED_FACES.glob("*/*") if p.suffix.lower() in PHOTO_SUFFIXES)


def distinct_photos(dest: Path, count: int, max_side: int = 320, salt: str = "") -> list[Path]:
    """``count`` small JPEGs from ../shared/faces, each of its own sha256 (a size and a
    border of its own) with its face still detectable."""
    from PIL import Image, ImageOps

    bases = []
    for src in face_photos():
        with Image.open(src) as img:
            img.draft("RGB", (max_side, max_side))  # a fast, reduced decode of big JPEGs
            small = img.convert("RGB")
        small.thumbnail((max_side, max_side))
        bases.append((src.parent.name, small))
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        person, base = bases[i % len(bases)]
        variant = i // len(bases)
        img = base
        if variant % 7:
            shrink = 1 - (variant % 7) * 0.03
            img = base.resize((int(base.width * shrink), int(base.height * shrink)))
        color = ((variant * 37) % 256, (variant * 91 + len(salt) * 13) % 256, (i * 53) % 256)
        img = ImageOps.expand(img, border=2 + variant % 11, fill=color)
        path = dest / f"{i:04d}-{person}.jpg"
        img.save(path, "JPEG", quality=90)
        out.append(path)
    return out


# -- a gate for the extractor's fetches ---------------------------------------------------
class GatedImages:
    """An HTTP server on 127.0.0.1 serving images; a gated path holds each request until
    ``release()``, so a test knows the extractor is in the middle of that message."""

    def __init__(self, images: dict[str, bytes], gated: set[str]) -> None:
        self.images = images
        self.gated = gated
        self.requests: Counter = Counter()
        self.arrived = threading.Event()
        self.released = threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                gate.requests[self.path] += 1
                if self.path in gate.gated:
                    gate.arrived.set()
                    gate.released.wait(120)
                body = gate.images.get(self.path)
                with contextlib.suppress(OSError):  # the extractor may have been killed meanwhile
                    if body is None:
                        self.send_error(404)
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def release(self) -> None:
        self.released.set()

    def __enter__(self) -> GatedImages:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


async def publish_ingest(js, tenant: str, url: str, batch_id: str, message_id: str) -> None:
    body = {"tenant_id": tenant, "url": url, "batch_id": batch_id, "message_id": message_id}
    await js.publish(bus.SUBJECT_INGEST, json.dumps(body).encode())
