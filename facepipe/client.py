"""Client side of the pipeline, used by the CLI: ingest files and URLs, wait for
them, search and erase."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.trace import SpanKind, Status, StatusCode

from facepipe import bus
from facepipe.config import Settings
from facepipe.echo import echo
from facepipe.imaging import EXTENSIONS
from facepipe.runtime.tracing import setup_tracing, tracer
from facepipe.storage.objects import RAW_IMAGES_BUCKET
from facepipe.v1 import pipeline_pb2

# Batch ids are subject tokens: facepipe.events.done.<batch_id>.
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".avif"}


def expand_sources(sources: list[str]) -> list[str]:
    """URLs as they are; files; folders walked recursively for image files, sorted."""
    out: list[str] = []
    for src in sources:
        if src.startswith(("http://", "https://")):
            out.append(src)
            continue
        path = Path(src)
        if path.is_dir():
            out.extend(
                str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            out.append(str(path))
    return out


def sniff_extension(data: bytes) -> str:
    """The stored extension for encoded image bytes, from the header; raises ValueError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("not a recognised image format") from exc
    return EXTENSIONS.get(fmt, fmt.lower() or "bin")


@dataclass
class IngestSummary:
    """What one ingest run did. Each image is counted once, in exactly one outcome:
    indexed (with or without faces), duplicate (already ingested), failed or pending."""

    images: int = 0  # published
    images_indexed: int = 0
    faces_indexed: int = 0
    # Faces of new images skipped as near-duplicates of faces already indexed.
    faces_dup_skipped: int = 0
    # Faces of people who opted out of the tenant's index.
    faces_optout_skipped: int = 0
    faces_rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    # Images already ingested for the tenant (same sha256); their faces are not counted above.
    duplicates: int = 0
    failed: int = 0
    pending: int = 0
    errors: list[dict] = field(default_factory=list)
    no_face: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    batch_id: str = ""
    seconds: float = 0.0

    def add_error(self, error: dict) -> None:
        """``failed`` is always the number of listed errors."""
        self.errors.append(error)
        self.failed = len(self.errors)

    def add_done(self, done: pipeline_pb2.ImageDone) -> None:
        if done.status == pipeline_pb2.IMAGE_STATUS_FAILED:
            self.add_error(
                {"source": done.url, "stage": done.stage, "reason": done.reason, "error": done.error}
            )
            return
        if done.status == pipeline_pb2.IMAGE_STATUS_DUPLICATE:
            self.duplicates += 1
            return
        self.images_indexed += 1
        self.faces_indexed += done.faces_indexed
        self.faces_dup_skipped += done.faces_dup_skipped
        self.faces_optout_skipped += done.faces_optout_skipped
        self.faces_rejected += done.faces_rejected
        reasons = dict(sorted(done.rejected_reasons.items()))
        for reason, n in reasons.items():
            self.rejected_reasons[reason] = self.rejected_reasons.get(reason, 0) + n
        if done.faces_rejected:
            self.rejected.append(
                {"source": done.url, "faces_rejected": done.faces_rejected, "reasons": reasons}
            )
        if done.faces_indexed + done.faces_rejected + done.faces_dup_skipped + done.faces_optout_skipped == 0:
            self.no_face.append({"source": done.url, "image_sha256": done.image_sha256})

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "images_indexed": self.images_indexed,
            "faces_indexed": self.faces_indexed,
            "faces_dup_skipped": self.faces_dup_skipped,
            "faces_optout_skipped": self.faces_optout_skipped,
            "faces_rejected": self.faces_rejected,
            "rejected_reasons": dict(sorted(self.rejected_reasons.items())),
            "duplicates": self.duplicates,
            "failed": self.failed,
            "pending": self.pending,
            "errors": self.errors,
            "no_face": self.no_face,
            "rejected": self.rejected,
            "batch_id": self.batch_id,
            "seconds": round(self.seconds, 2),
        }


async def ingest(
    nats_url: str,
    objects,
    sources: list[str],
    tenant: str,
    site: str = "",
    wait: bool = False,
    wait_s: float = 600.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestSummary:
    """Stores local files, publishes one IngestRequest per image, and with ``wait``
    collects one ImageDone per message. Each image's trace starts here, in a
    span whose context travels with the message through every stage."""
    settings = Settings.from_env("cli")
    setup_tracing("cli", settings.otlp_endpoint, settings.trace_file)
    started = time.monotonic()
    summary = IngestSummary(batch_id=uuid.uuid4().hex)
    nc = await bus.connect(nats_url, "cli")
    js = nc.jetstream()
    await bus.ensure_topology(js)
    sub = None
    if wait:
        sub = await js.subscribe(
            f"{bus.SUBJECT_DONE}.{summary.batch_id}", stream=bus.EVENTS_STREAM, ordered_consumer=True
        )
    expected: set[str] = set()
    items = expand_sources(sources)
    try:
        for i, src in enumerate(items, 1):
            message_id = uuid.uuid4().hex
            attributes = {
                "messaging.destination.name": bus.SUBJECT_INGEST,
                "facepipe.tenant_id": tenant,
                "facepipe.batch_id": summary.batch_id,
                "facepipe.message_id": message_id,
                "facepipe.source": src,
            }
            with tracer().start_as_current_span(
                f"publish {bus.SUBJECT_INGEST}", kind=SpanKind.PRODUCER, attributes=attributes
            ) as span:
                try:
                    request = await asyncio.to_thread(
                        _request_for, src, objects, tenant, site, summary.batch_id, message_id
                    )
                except (OSError, ValueError) as exc:
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    summary.add_error(
                        {"source": src, "stage": "cli", "reason": "unreadable", "error": str(exc)}
                    )
                    continue
                await bus.publish(
                    js, bus.SUBJECT_INGEST, request.SerializeToString(), msg_id=f"ingest.{message_id}"
                )
            expected.add(message_id)
            summary.images += 1
            if progress:
                progress("published", i, len(items))
        if sub is not None:
            await _collect(sub, expected, summary, wait_s, progress)
    finally:
        if sub is not None:
            await sub.unsubscribe()
        await nc.close()
    summary.seconds = time.monotonic() - started
    return summary


def _request_for(
    src: str, objects, tenant: str, site: str, batch_id: str, message_id: str
) -> pipeline_pb2.IngestRequest:
    common = {"tenant_id": tenant, "site": site, "batch_id": batch_id, "message_id": message_id}
    if src.startswith(("http://", "https://")):
        return pipeline_pb2.IngestRequest(url=src, **common)
    path = Path(src).resolve()
    data = path.read_bytes()
    ext = sniff_extension(data)
    sha = hashlib.sha256(data).hexdigest()
    key = f"{tenant}/{sha}.{ext}"
    if not objects.exists(RAW_IMAGES_BUCKET, key):
        objects.put(RAW_IMAGES_BUCKET, key, data, f"image/{ext}")
    return pipeline_pb2.IngestRequest(
        bucket=RAW_IMAGES_BUCKET, key=key, image_sha256=sha, url=path.as_uri(), **common
    )


async def _collect(sub, expected: set[str], summary: IngestSummary, wait_s: float, progress) -> None:
    seen: set[str] = set()
    deadline = time.monotonic() + wait_s
    while seen != expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        msg = await _next(sub, min(remaining, 5.0))
        if msg is None:
            continue
        done = pipeline_pb2.ImageDone()
        done.ParseFromString(msg.data)
        if done.message_id not in expected or done.message_id in seen:
            continue  # redelivered stages may repeat an event
        seen.add(done.message_id)
        summary.add_done(done)
        if progress:
            progress("done", len(seen), len(expected))
    summary.pending = len(expected - seen)


async def _next(sub, wait_s: float):
    """The next message, or None after ``wait_s`` seconds."""
    try:
        return await sub.next_msg(timeout=wait_s)
    except TimeoutError:
        return None
    except Exception as exc:  # nats-py raises its own TimeoutError subclass
        if type(exc).__name__ == "TimeoutError":
            return None
        raise


async def batch_summary(nats_url: str, batch_id: str, idle_s: float = 1.0) -> IngestSummary:
    """The summary of an earlier ingest run, from the completion events kept on the
    events stream (a day). ``images`` counts the images done so far."""
    if not BATCH_ID_RE.match(batch_id):
        raise ValueError(f"invalid batch id {echo(batch_id)}: letters, digits, '_' or '-'")
    summary = IngestSummary(batch_id=batch_id)
    nc = await bus.connect(nats_url, "cli")
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            f"{bus.SUBJECT_DONE}.{batch_id}", stream=bus.EVENTS_STREAM, ordered_consumer=True
        )
        seen: set[str] = set()
        try:
            # Replays every stored event; the batch is read when none arrives for idle_s.
            while (msg := await _next(sub, idle_s)) is not None:
                done = pipeline_pb2.ImageDone()
                done.ParseFromString(msg.data)
                if done.message_id in seen:
                    continue
                seen.add(done.message_id)
                summary.images += 1
                summary.add_done(done)
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return summary


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


def progress_bar(stream=sys.stderr, every_s: float = 10.0) -> Callable[[str, int, int], None]:
    """Progress with rate and ETA: a redrawn bar on a terminal, else one plain line
    every ``every_s`` seconds and at the end of each phase."""
    tty = stream.isatty()
    started: dict[str, float] = {}
    last_line: dict[str, float] = {}  # phase -> when its latest plain line was written

    def show(phase: str, n: int, total: int) -> None:
        if total == 0:
            return
        now = time.monotonic()
        t0 = started.setdefault(phase, now)
        elapsed = now - t0
        rate = n / elapsed if elapsed > 0 else 0.0
        eta = _duration((total - n) / rate) if rate > 0 else "?"
        figures = f"{n}/{total} {rate:.1f} img/s ETA {eta}"
        if tty:
            width = 30
            filled = int(width * n / total)
            stream.write(f"\r{phase:9} [{'#' * filled}{'.' * (width - filled)}] {figures}   ")
            if n == total:
                stream.write("\n")
        elif n == total or phase not in last_line or now - last_line[phase] >= every_s:
            last_line[phase] = now
            stream.write(f"{phase}: {figures}\n")
        stream.flush()

    return show
