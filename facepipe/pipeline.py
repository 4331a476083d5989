"""The skeleton every facepipe service is built from: it opens the shared
resources a service declares (object store, vector store) and the service's own
dependencies, registers its gRPC servicers, consumes its stage from NATS
JetStream when ``FACEPIPE_NATS_URL`` is set, and derives the /readyz checks
(NATS, stores, models) from what the service declared.

A service supplies functions, never a subclass: ``open_deps`` builds its
dependencies, ``register`` adds its servicers over them, and a :class:`Stage`
holds the stage logic as functions of those dependencies."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from facepipe import bus, natsauth
from facepipe.config import Settings
from facepipe.echo import echo
from facepipe.runtime import metrics
from facepipe.runtime.server import ReadyCheck, Service, ServiceRuntime
from facepipe.v1 import pipeline_pb2

if TYPE_CHECKING:
    # Annotations only: facepipe.storage loads the vector clients, slow for CLI start-up.
    from facepipe.storage import ObjectStore, VectorStore

log = logging.getLogger("facepipe.pipeline")

TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Point ids are deterministic, so a redelivered message never duplicates a face.
POINT_NAMESPACE = uuid.UUID("6f1d3c1e-6b43-4f7e-9a6b-2f0f3c5d9a10")


def point_id(tenant_id: str, image_sha256: str, face_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant_id}/{image_sha256}/{face_index}"))


def check_tenant(tenant_id: str) -> str:
    if not TENANT_RE.match(tenant_id or ""):
        raise bus.PermanentError(
            f"invalid tenant_id {echo(tenant_id)}: 1-64 letters, digits, '_' or '-'", reason="invalid_tenant"
        )
    return tenant_id


async def read_raw(objects, record: pipeline_pb2.ImageRecord) -> bytes:
    """The stored raw image of a record; a missing object can never succeed."""
    from facepipe.storage import ObjectNotFound

    try:
        return await asyncio.to_thread(objects.get, record.raw.bucket, record.raw.key)
    except ObjectNotFound as exc:
        raise bus.PermanentError(f"raw image is gone: {exc}", reason="not_found") from exc


D = TypeVar("D")

FACE_COUNTERS = {
    "indexed": "faces_processed",
    "rejected": "faces_rejected",
    "dup_skipped": "faces_dup_skipped",
    "optout_skipped": "faces_optout_skipped",
}


class StageOutput:
    """What stage logic sends besides its own work: messages, done events and face
    counts. Without NATS (gRPC only) there is no ``js``: done events and counts are
    skipped, and publishing is refused."""

    def __init__(
        self, service: str, js: JetStreamContext | None = None, stats: bus.StageStats | None = None
    ) -> None:
        self.service = service
        self.js = js
        self.stats = stats

    @property
    def connected(self) -> bool:
        return self.js is not None

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> None:
        if self.js is None:
            raise RuntimeError(f"{self.service} cannot publish to {subject}: no NATS (FACEPIPE_NATS_URL)")
        await bus.publish(self.js, subject, data, msg_id=msg_id)

    async def emit_done(
        self,
        record: pipeline_pb2.ImageRecord | pipeline_pb2.IngestRequest,
        status: int,
        faces_indexed: int = 0,
        faces_dup_skipped: int = 0,
        faces_rejected: int = 0,
        error: str = "",
        rejected_reasons: Mapping[str, int] | None = None,
        faces_known: int = 0,
        reason: str = "",
        faces_optout_skipped: int = 0,
    ) -> None:
        if self.js is None:
            return
        done = pipeline_pb2.ImageDone(
            batch_id=record.batch_id,
            message_id=record.message_id,
            tenant_id=record.tenant_id,
            url=record.url,
            image_sha256=record.image_sha256,
            status=status,
            faces_indexed=faces_indexed,
            faces_dup_skipped=faces_dup_skipped,
            faces_rejected=faces_rejected,
            stage=self.service,
            error=error,
            rejected_reasons=dict(rejected_reasons or {}),
            faces_known=faces_known,
            reason=reason,
            faces_optout_skipped=faces_optout_skipped,
        )
        subject = f"{bus.SUBJECT_DONE}.{record.batch_id or 'none'}"
        msg_id = f"done-{record.message_id}" if record.message_id else None
        await bus.publish(self.js, subject, done.SerializeToString(), msg_id=msg_id)

    def count_faces(self, outcome: str, n: int) -> None:
        if n and self.stats is not None:
            self.stats.add(FACE_COUNTERS[outcome], n)
            metrics.PIPELINE_FACES.labels(self.service, outcome).inc(n)


async def report_failed(output: StageOutput, payload: Any, error: str, reason: str = "") -> None:
    """A dead-lettered image still completes its ingest run, as FAILED."""
    record = getattr(payload, "image", None)
    if isinstance(record, pipeline_pb2.ImageRecord):
        await output.emit_done(record, pipeline_pb2.IMAGE_STATUS_FAILED, error=error, reason=reason)


@dataclass(frozen=True)
class Stage(Generic[D]):
    """A service's stage as functions of its dependencies ``D``.

    ``decode`` defaults to parsing ``message_type``; ``on_dead`` defaults to
    :func:`report_failed`; ``drain`` runs before the consumer stops taking work."""

    spec: bus.StageSpec
    message_type: type[Message]
    handle: Callable[[D, bus.Delivery], Awaitable[None]]
    decode: Callable[[Msg], Any] | None = None
    on_dead: Callable[[D, Msg, Any, str, str], Awaitable[None]] | None = None
    drain: Callable[[D], None] | None = None


@dataclass(frozen=True)
class Resources:
    """The shared resources a service holds. The skeleton opens the stores and checks
    each declared resource for /readyz; ``models`` is ready once ``open_deps`` returned."""

    object_store: bool = False
    vector_store: bool = False
    models: bool = False


@dataclass(frozen=True)
class Opened:
    """What the skeleton hands ``open_deps``: the settings, the stores it opened and
    the stage's output (connected to NATS when the service consumes a stage)."""

    name: str
    settings: Settings
    output: StageOutput
    objects: ObjectStore | None = None  # set when Resources(object_store=True)
    vectors: VectorStore | None = None  # set when Resources(vector_store=True)


class Loaded(Generic[D]):
    """A service's dependencies once ``open_deps`` returned. Servicers are registered
    before that (the server answers health checks while models load), so they hold
    this and answer UNAVAILABLE while ``value`` is None."""

    def __init__(self) -> None:
        self.value: D | None = None

    async def require(self, context: Any, still: str) -> D:
        """The dependencies, or the call ends UNAVAILABLE saying what is ``still`` going on."""
        if self.value is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, still)
        assert self.value is not None  # abort raises
        return self.value


def decode_as(message_type: type[Message]) -> Callable[[Msg], Any]:
    def decode(msg: Msg) -> Any:
        message = message_type()
        try:
            message.ParseFromString(msg.data)
        except DecodeError as exc:
            raise bus.PermanentError(f"malformed {message_type.__name__}: {exc}", reason="malformed") from exc
        return message

    return decode


class StageService(Service, Generic[D]):
    """A service assembled from its parts; see the module docstring."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        open_deps: Callable[[Opened], Awaitable[D]],
        register: Callable[[grpc.aio.Server, Loaded[D]], list[str]],
        close_deps: Callable[[D], Awaitable[None]] | None = None,
        stage: Stage[D] | None = None,
        resources: Resources = Resources(),
        stats: Callable[[D], dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.stage = stage
        self.resources = resources
        self.loaded: Loaded[D] = Loaded()
        self._open_deps = open_deps
        self._close_deps = close_deps
        self._register = register
        self._stats = stats
        self.objects: ObjectStore | None = None
        self.vectors: VectorStore | None = None
        self.output = StageOutput(name)
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.worker: bus.StageWorker | None = None

    def register(self, server: grpc.aio.Server) -> list[str]:
        return self._register(server, self.loaded)

    async def start(self, runtime: ServiceRuntime | None) -> None:
        from facepipe.storage import open_object_store, open_vector_store

        if self.resources.object_store:
            self.objects = await asyncio.to_thread(open_object_store, self.settings.objects)
        if self.resources.vector_store:
            from facepipe.storage.vectors.collections import active_collection

            # The active model's own collection: vectors of different models never mix.
            collection = await asyncio.to_thread(active_collection, self.settings)
            self.vectors = await asyncio.to_thread(open_vector_store, self.settings.vectors, collection)
        if self.stage is not None:
            await self._connect(self.stage)
        self.output = StageOutput(self.name, self.js, self.worker.stats if self.worker else None)
        opened = Opened(self.name, self.settings, self.output, self.objects, self.vectors)
        self.loaded.value = await self._open_deps(opened)
        if self.worker is not None:
            await self.worker.start()

    async def _connect(self, stage: Stage[D]) -> None:
        if not self.settings.nats_url:
            log.info("no FACEPIPE_NATS_URL: serving gRPC only")
            return
        user, password = natsauth.credentials(self.settings)
        self.nc = await bus.connect(self.settings.nats_url, self.name, user, password)
        self.js = self.nc.jetstream()
        if not (user or natsauth.url_user(self.settings.nats_url)):
            # An open server: the service makes what it needs. Where NATS has users,
            # the deployment's supervisor made the topology, and a service may not.
            await bus.ensure_topology(self.js, self.settings.dedup_ttl_seconds)
        spec = stage.spec
        if spec.ack_wait is None:
            spec = dataclasses.replace(spec, ack_wait=self.settings.stage_ack_wait)
        self.worker = bus.StageWorker(
            self.nc,
            spec,
            stage.decode or decode_as(stage.message_type),
            self._handle,
            on_dead=self._on_dead,
            max_inflight=self.settings.max_inflight,
            service=self.name,
        )

    async def _handle(self, delivery: bus.Delivery) -> None:
        assert self.stage is not None and self.loaded.value is not None  # the worker starts after both
        await self.stage.handle(self.loaded.value, delivery)

    async def _on_dead(self, msg: Msg, payload: Any, error: str, reason: str) -> None:
        assert self.stage is not None and self.loaded.value is not None
        if self.stage.on_dead is not None:
            await self.stage.on_dead(self.loaded.value, msg, payload, error, reason)
        else:
            await report_failed(self.output, payload, error, reason)

    async def drain(self) -> None:
        if self.stage is not None and self.stage.drain is not None and self.loaded.value is not None:
            self.stage.drain(self.loaded.value)
        if self.worker is not None:
            await self.worker.drain(grace=self.settings.drain_seconds)

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        deps, self.loaded.value = self.loaded.value, None
        try:
            if deps is not None and self._close_deps is not None:
                await self._close_deps(deps)
        finally:
            if self.vectors is not None:
                # Flushes, and releases the Edge lock so the next process can open the shard.
                await asyncio.to_thread(self.vectors.close)
                self.vectors = None

    def ready_checks(self) -> dict[str, ReadyCheck]:
        checks: dict[str, ReadyCheck] = {}
        if self.stage is not None and self.settings.nats_url:
            checks["nats"] = self._nats_ready
        if self.resources.object_store:
            checks["object_store"] = self._object_store_ready
        if self.resources.vector_store:
            checks["vector_store"] = self._vector_store_ready
        if self.resources.models:
            checks["models"] = self._models_ready
        return checks

    async def _nats_ready(self) -> tuple[bool, str]:
        if self.nc is None or self.js is None or not self.nc.is_connected:
            return False, "not connected to NATS"
        await self.js.stream_info(bus.STREAM)
        return True, ""

    async def _object_store_ready(self) -> tuple[bool, str]:
        if self.objects is None:
            return False, "object store not opened"
        await asyncio.to_thread(self.objects.ping)
        return True, ""

    async def _vector_store_ready(self) -> tuple[bool, str]:
        if self.vectors is None:
            return False, "vector store not open"
        await asyncio.to_thread(self.vectors.ping)
        return True, ""

    async def _models_ready(self) -> tuple[bool, str]:
        return self.loaded.value is not None, "models not loaded"

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.stage is not None:
            out = {"stage": self.stage.spec.name}
            if self.worker is not None:
                out.update(self.worker.stats.snapshot(), ack_wait_s=self.worker.stage.ack_wait_s)
        if self._stats is not None and self.loaded.value is not None:
            out.update(self._stats(self.loaded.value))
        return out
