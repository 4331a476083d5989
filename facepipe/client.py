"""Client side of the pipeline, used by the CLI: ingest files and URLs, wait for
them, search and erase."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats import errors as nats_errors
from opentelemetry.trace import SpanKind, Status, StatusCode

from facepipe import bus, importlog
from facepipe.config import Settings
from facepipe.echo import echo
from facepipe.imaging import EXTENSIONS
from facepipe.importlog import FileState, ImportLog
from facepipe.runtime.tracing import setup_tracing, tracer
from facepipe.storage.objects import RAW_IMAGES_BUCKET
from facepipe.v1 import pipeline_pb2

# Batch ids are subject tokens: facepipe.events.done.<batch_id>.
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
# In --watch, a file modified less than this long ago may still be being written: later.
WATCH_SETTLED_S = 1.0
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
    # Local files unchanged since the stack handled them (resume log): not read again.
    skipped: int = 0
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
            "skipped": self.skipped,
            "errors": self.errors,
            "no_face": self.no_face,
            "rejected": self.rejected,
            "batch_id": self.batch_id,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class ImportOptions:
    """How an ingest treats local files: the resume log (None: none), whether to read
    every file again (``rescan``), and, with ``watch_every_s`` > 0, keep polling the
    sources for new or changed files every that many seconds until ``stop`` is set."""

    log: ImportLog | None = None
    rescan: bool = False
    watch_every_s: float = 0.0
    stop: asyncio.Event | None = None


async def ingest(
    nats_url: str,
    objects,
    sources: list[str],
    tenant: str,
    site: str = "",
    wait: bool = False,
    wait_s: float = 600.0,
    progress: Callable[[str, int, int], None] | None = None,
    aligned: bool = False,
    options: ImportOptions | None = None,
) -> IngestSummary:
    """Stores local files, publishes one IngestRequest per image, and with ``wait``
    collects one ImageDone per message. Each image's trace starts here, in a
    span whose context travels with the message through every stage. With a resume
    log, local files unchanged since the stack handled them are skipped unread."""
    settings = Settings.from_env("cli")
    setup_tracing("cli", settings.otlp_endpoint, settings.trace_file)
    started = time.monotonic()
    options = options or ImportOptions()
    run = _ImportRun(
        IngestSummary(batch_id=uuid.uuid4().hex), objects, tenant, site, aligned, options, progress
    )
    log = options.log
    watching = options.watch_every_s > 0
    nc = None
    events = _DoneEvents()
    try:
        if log is not None and log.pending(tenant):
            nc = await bus.connect(nats_url, "cli")
            await _settle(nc.jetstream(), log, tenant)
            run.earlier = _awaitable(log.pending(tenant), time.time())
        if log is not None and not options.rescan:
            run.handled = log.handled(tenant)
        todo = run.plan(list_sources(sources))
        # Nothing to publish, settle or watch (every file unchanged): no NATS round trip at all.
        if todo or watching:
            nc = nc or await bus.connect(nats_url, "cli")
            js = run.js = nc.jetstream()
            await bus.ensure_topology(js)
            if wait or watching:
                await events.follow(js, run.summary.batch_id)
            await run.publish(todo)
            if wait or watching:
                # The earlier messages of files published again: their outcomes may be the files'.
                for batch_id in sorted({run.earlier[path].batch_id for path in run.resumed_paths()}):
                    await events.follow(js, batch_id)
        if watching and events.following:
            await run.watch(events, sources)
        elif events.following:
            await run.collect(events, wait_s)
    finally:
        await events.close()
        if nc is not None:
            await nc.close()
    run.summary.seconds = time.monotonic() - started
    return run.summary


Listed = tuple[str, "tuple[str, FileState] | None"]


def list_sources(sources: list[str]) -> list[Listed]:
    """What :func:`expand_sources` lists, each local file with its resolved path, size and
    modification time (None for URLs and files that cannot be read). Folders are walked
    with one stat per file and their resolved path joined once, so a large library is
    listed in a fraction of a second."""
    out: list[Listed] = []
    for src in sources:
        if src.startswith(("http://", "https://")):
            out.append((src, None))
        elif os.path.isdir(src):
            out.extend(sorted(_walk(src), key=lambda item: item[0].split(os.sep)))
        else:
            out.append((src, _local_state(src)))
    return out


def _walk(root: str) -> list[Listed]:
    """The image files below ``root`` (symlinked folders are not followed, as rglob does
    not follow them)."""
    out: list[Listed] = []
    folders = [(root.rstrip(os.sep) or os.sep, os.path.realpath(root))]
    while folders:
        shown, real = folders.pop()
        try:
            entries = list(os.scandir(shown))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append((entry.path, os.path.join(real, entry.name)))
                    continue
                if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES or not entry.is_file():
                    continue
                if entry.is_symlink():
                    out.append((entry.path, _local_state(entry.path)))
                else:
                    st = entry.stat()
                    out.append(
                        (entry.path, (os.path.join(real, entry.name), FileState(st.st_size, st.st_mtime_ns)))
                    )
            except OSError:
                continue
    return out


@dataclass
class _ImportRun:
    """The state of one ingest run: what it published, and for local files which file
    each message carries, so its outcome lands in the resume log."""

    summary: IngestSummary
    objects: object
    tenant: str
    site: str
    aligned: bool
    options: ImportOptions
    progress: Callable[[str, int, int], None] | None
    js: object = None
    expected: set[str] = field(default_factory=set)
    # Files the stack handled earlier (the resume log), and files this run has published.
    handled: dict[str, FileState] = field(default_factory=dict)
    published: dict[str, FileState] = field(default_factory=dict)
    files: dict[str, tuple[str, FileState]] = field(default_factory=dict)  # message id -> file
    seen: set[str] = field(default_factory=set)  # message ids whose outcome counted
    # Files an earlier import published whose outcome it did not see, by path. Published
    # again, such a file may be reported a duplicate of its own earlier message, still in
    # the stack: then the earlier message's outcome is the file's, and the run waits for it.
    earlier: dict[str, importlog.Pending] = field(default_factory=dict)
    resumed: dict[str, str] = field(default_factory=dict)  # message id -> earlier message id
    earlier_ids: set[str] = field(default_factory=set)  # the values of ``resumed``
    earlier_done: dict[str, pipeline_pb2.ImageDone] = field(default_factory=dict)
    awaiting: dict[str, str] = field(default_factory=dict)  # earlier message id -> message id

    def unchanged(self, path: str, state: FileState) -> bool:
        return self.handled.get(path) == state or self.published.get(path) == state

    def plan(self, listed: list[Listed], settled_s: float = 0.0, again: bool = False) -> list[Listed]:
        """What to publish of ``listed``: all but the local files unchanged since they were
        handled (or published by this run). With ``settled_s``, a file modified less than
        that long ago is left for a later look (it may still be being written). ``again``:
        a later look at the same sources (--watch), where URLs are not fetched again, nor
        files that cannot be read retried at every look, and skipped files are not counted
        twice."""
        todo: list[Listed] = []
        now = time.time()
        for src, local in listed:
            if again and local is None:
                continue
            if local is not None:
                if self.unchanged(*local):
                    self.summary.skipped += 0 if again else 1
                    continue
                if settled_s and now - local[1].mtime_ns / 1e9 < settled_s:
                    continue
            todo.append((src, local))
        return todo

    async def publish(self, todo: list[Listed]) -> None:
        for i, (src, local) in enumerate(todo, 1):
            await self._publish(src, local)
            if self.progress:
                self.progress("published", i, len(todo))

    async def _publish(self, src: str, local: tuple[str, FileState] | None) -> None:
        summary, log = self.summary, self.options.log
        message_id = uuid.uuid4().hex
        attributes = {
            "messaging.destination.name": bus.SUBJECT_INGEST,
            "facepipe.tenant_id": self.tenant,
            "facepipe.batch_id": summary.batch_id,
            "facepipe.message_id": message_id,
            "facepipe.source": src,
        }
        with tracer().start_as_current_span(
            f"publish {bus.SUBJECT_INGEST}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            try:
                request = await asyncio.to_thread(
                    _request_for,
                    src,
                    self.objects,
                    self.tenant,
                    self.site,
                    summary.batch_id,
                    message_id,
                    self.aligned,
                )
            except (OSError, ValueError) as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                summary.add_error({"source": src, "stage": "cli", "reason": "unreadable", "error": str(exc)})
                if local is not None:
                    self.published[local[0]] = local[1]
                    if log is not None and isinstance(exc, ValueError):  # not an image: for good
                        log.done(self.tenant, local[0], local[1], importlog.UNREADABLE)
                return
            await bus.publish(
                self.js, bus.SUBJECT_INGEST, request.SerializeToString(), msg_id=f"ingest.{message_id}"
            )
        self.expected.add(message_id)
        summary.images += 1
        if local is not None:
            self.published[local[0]] = local[1]
            self.files[message_id] = local
            earlier = self.earlier.get(local[0])
            if earlier is not None and earlier.state == local[1]:
                self.resumed[message_id] = earlier.message_id
                self.earlier_ids.add(earlier.message_id)
            if log is not None:
                log.published(self.tenant, local[0], local[1], summary.batch_id, message_id)

    def resumed_paths(self) -> list[str]:
        return [self.files[mid][0] for mid in self.resumed]

    def take(self, done: pipeline_pb2.ImageDone) -> None:
        """Counts one completion event: of a message of this run, or of the earlier
        message of a file this run published again."""
        mid = done.message_id
        if mid in self.awaiting:
            self._count(self.awaiting.pop(mid), done)
            return
        if mid not in self.expected:
            if mid in self.earlier_ids:
                self.earlier_done.setdefault(mid, done)
            return
        if mid in self.seen:
            return  # redelivered stages may repeat an event
        earlier = self.resumed.get(mid)
        if earlier is not None and done.status == pipeline_pb2.IMAGE_STATUS_DUPLICATE:
            if earlier in self.earlier_done:
                self._count(mid, self.earlier_done[earlier])
            else:
                self.awaiting[earlier] = mid
            return
        self._count(mid, done)

    def _count(self, mid: str, done: pipeline_pb2.ImageDone) -> None:
        """``done`` is the outcome of message ``mid``'s image; recorded in the resume log."""
        if mid in self.seen:
            return
        self.seen.add(mid)
        self.summary.add_done(done)
        local = self.files.get(mid)
        if local is not None and self.options.log is not None:
            self.options.log.done(self.tenant, local[0], local[1], outcome(done), done.image_sha256)
        if self.progress:
            self.progress("done", len(self.seen), len(self.expected))

    async def collect(self, events: _DoneEvents, wait_s: float) -> None:
        """Takes completion events until every published image has its outcome, or for
        at most ``wait_s`` seconds; the rest are pending."""
        deadline = time.monotonic() + wait_s
        while len(self.seen) < len(self.expected):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done = await events.next(min(remaining, 5.0))
            if done is not None:
                self.take(done)
        self.summary.pending = len(self.expected - self.seen)

    async def watch(self, events: _DoneEvents, sources: list[str]) -> None:
        """Collects outcomes and polls the sources for new or changed files until stopped."""
        stop = self.options.stop or asyncio.Event()
        while not stop.is_set():
            deadline = time.monotonic() + self.options.watch_every_s
            while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
                done = await events.next(min(remaining, 0.25))
                if done is not None:
                    self.take(done)
            if not stop.is_set():
                await self.publish(self.plan(list_sources(sources), WATCH_SETTLED_S, again=True))
        # Outcomes that already arrived still count; the rest stay pending in the log.
        while (done := await events.next(0.2)) is not None:
            self.take(done)
        self.summary.pending = len(self.expected - self.seen)


def outcome(done: pipeline_pb2.ImageDone) -> str:
    """The resume log's outcome of a completion event."""
    if done.status == pipeline_pb2.IMAGE_STATUS_FAILED:
        return importlog.FAILED
    if done.status == pipeline_pb2.IMAGE_STATUS_DUPLICATE:
        return importlog.DUPLICATE
    faces = done.faces_indexed + done.faces_rejected + done.faces_dup_skipped + done.faces_optout_skipped
    return importlog.INDEXED if faces else importlog.NO_FACE


def _local_state(src: str) -> tuple[str, FileState] | None:
    """The resolved path of a local file and its size and modification time; None when
    it cannot be read (publishing it reports why)."""
    try:
        path = os.path.realpath(src)
        st = os.stat(path)
    except OSError:
        return None
    return path, FileState(st.st_size, st.st_mtime_ns)


async def _settle(js, log: ImportLog, tenant: str) -> None:
    """Records the outcomes of files that earlier imports published without seeing them
    done, from the completion events the stack keeps (a day). Files left pending are
    published again; the stack's duplicate check keeps them from being indexed twice."""
    by_batch: dict[str, dict[str, importlog.Pending]] = {}
    for entry in log.pending(tenant):
        by_batch.setdefault(entry.batch_id, {})[entry.message_id] = entry
    for batch_id, entries in by_batch.items():
        if not BATCH_ID_RE.match(batch_id):
            continue
        try:
            await _settle_batch(js, log, tenant, batch_id, entries)
        except nats_errors.Error:
            # A user that may not read the events stream: the files are published again.
            return


async def _settle_batch(
    js, log: ImportLog, tenant: str, batch_id: str, entries: dict[str, importlog.Pending]
) -> None:
    subject = f"{bus.SUBJECT_DONE}.{batch_id}"
    info = await js.stream_info(bus.EVENTS_STREAM, subjects_filter=subject)
    stored = (info.state.subjects or {}).get(subject, 0)
    if not stored:
        return
    sub = await js.subscribe(subject, stream=bus.EVENTS_STREAM, ordered_consumer=True)
    try:
        for _ in range(stored):
            msg = await _next(sub, 5.0)
            if msg is None:
                break
            done = pipeline_pb2.ImageDone()
            done.ParseFromString(msg.data)
            entry = entries.get(done.message_id)
            if entry is not None:
                log.done(tenant, entry.path, entry.state, outcome(done), done.image_sha256)
    finally:
        await sub.unsubscribe()


def _request_for(
    src: str, objects, tenant: str, site: str, batch_id: str, message_id: str, aligned: bool = False
) -> pipeline_pb2.IngestRequest:
    common = {
        "tenant_id": tenant,
        "site": site,
        "batch_id": batch_id,
        "message_id": message_id,
        "aligned": aligned,
    }
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
        bucket=RAW_IMAGES_BUCKET,
        key=key,
        image_sha256=sha,
        url=path.as_uri(),
        folder=path.parent.as_posix(),
        **common,
    )


class _DoneEvents:
    """The completion events of one or more batches, replayed from the events stream
    and then followed, merged into one queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[pipeline_pb2.ImageDone] = asyncio.Queue()
        self.subs: list = []

    @property
    def following(self) -> bool:
        return bool(self.subs)

    async def follow(self, js, batch_id: str) -> None:
        async def put(msg) -> None:
            done = pipeline_pb2.ImageDone()
            done.ParseFromString(msg.data)
            self.queue.put_nowait(done)

        self.subs.append(
            await js.subscribe(
                f"{bus.SUBJECT_DONE}.{batch_id}", stream=bus.EVENTS_STREAM, ordered_consumer=True, cb=put
            )
        )

    async def next(self, wait_s: float) -> pipeline_pb2.ImageDone | None:
        """The next event, or None after ``wait_s`` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), wait_s)
        except TimeoutError:
            return None

    async def close(self) -> None:
        for sub in self.subs:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()
        self.subs.clear()


def _awaitable(pending: list[importlog.Pending], now_s: float) -> dict[str, importlog.Pending]:
    """The pending files whose earlier message can still report an outcome: published
    within the time the events stream keeps events (and with a batch id it can name)."""
    return {
        p.path: p
        for p in pending
        if BATCH_ID_RE.match(p.batch_id) and now_s - p.published_ms / 1000 < bus.EVENTS_MAX_AGE_S
    }


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
