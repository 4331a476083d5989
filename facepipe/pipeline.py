"""The skeleton of a pipeline stage service: a gRPC service that also consumes
its stage from NATS JetStream when ``FACEPIPE_NATS_URL`` is set."""

from __future__ import annotations

import abc
import asyncio
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg

from facepipe import bus
from facepipe.config import Settings
from facepipe.runtime import metrics
from facepipe.runtime.server import ReadyCheck, Service
from facepipe.v1 import pipeline_pb2

log = logging.getLogger("facepipe.pipeline")

TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Point ids are deterministic, so a redelivered message never duplicates a face.
POINT_NAMESPACE = uuid.UUID("6f1d3c1e-6b43-4f7e-9a6b-2f0f3c5d9a10")


def point_id(tenant_id: str, image_sha256: str, face_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant_id}/{image_sha256}/{face_index}"))


def check_tenant(tenant_id: str) -> str:
    if not TENANT_RE.match(tenant_id or ""):
        raise bus.PermanentError(
            f"invalid tenant_id {tenant_id!r}: 1-64 letters, digits, '_' or '-'", reason="invalid_tenant"
        )
    return tenant_id


async def read_raw(objects, record: pipeline_pb2.ImageRecord) -> bytes:
    """The stored raw image of a record; a missing object can never succeed."""
    from facepipe.storage import ObjectNotFound

    try:
        return await asyncio.to_thread(objects.get, record.raw.bucket, record.raw.key)
    except ObjectNotFound as exc:
        raise bus.PermanentError(f"raw image is gone: {exc}", reason="not_found") from exc


class StageService(Service):
    """Subclasses set ``stage`` and ``message_type`` and implement ``handle``."""

    stage: str
    message_type: type[Message]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nc = None
        self.js = None
        self.worker: bus.StageWorker | None = None

    async def load(self) -> None:
        """Loads models and opens stores, before consuming starts."""

    async def unload(self) -> None:
        """Releases what ``load`` opened."""

    @abc.abstractmethod
    async def handle(self, delivery: bus.Delivery) -> None: ...

    @property
    def spec(self) -> bus.StageSpec:
        return bus.STAGES[self.stage]

    async def connected(self) -> None:
        """Runs once NATS and the topology are up, before consuming starts."""

    async def start(self, runtime) -> None:
        await self.load()
        if not self.settings.nats_url:
            log.info("no FACEPIPE_NATS_URL: serving gRPC only")
            return
        self.nc = await bus.connect(self.settings.nats_url, self.name)
        self.js = self.nc.jetstream()
        await bus.ensure_topology(self.js, self.settings.dedup_ttl_seconds)
        await self.connected()
        self.worker = bus.StageWorker(
            self.nc,
            self.spec,
            self.decode,
            self.handle,
            on_dead=self.on_dead,
            max_inflight=self.settings.max_inflight,
            service=self.name,
        )
        await self.worker.start()

    async def drain(self) -> None:
        if self.worker is not None:
            await self.worker.drain(grace=self.settings.drain_seconds)

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        await self.unload()

    def decode(self, msg: Msg) -> Any:
        message = self.message_type()
        try:
            message.ParseFromString(msg.data)
        except DecodeError as exc:
            raise bus.PermanentError(
                f"malformed {self.message_type.__name__}: {exc}", reason="malformed"
            ) from exc
        return message

    async def on_dead(self, msg: Msg, payload: Any, error: str, reason: str) -> None:
        """A dead-lettered image still completes its ingest run, as FAILED."""
        record = getattr(payload, "image", None)
        if isinstance(record, pipeline_pb2.ImageRecord):
            await self.emit_done(record, pipeline_pb2.IMAGE_STATUS_FAILED, error=error, reason=reason)

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
            stage=self.name,
            error=error,
            rejected_reasons=dict(rejected_reasons or {}),
            faces_known=faces_known,
            reason=reason,
        )
        subject = f"{bus.SUBJECT_DONE}.{record.batch_id or 'none'}"
        msg_id = f"done-{record.message_id}" if record.message_id else None
        await bus.publish(self.js, subject, done.SerializeToString(), msg_id=msg_id)

    def count_faces(self, outcome: str, n: int) -> None:
        if n and self.worker is not None:
            key = {
                "indexed": "faces_processed",
                "rejected": "faces_rejected",
                "dup_skipped": "faces_dup_skipped",
            }
            self.worker.stats.add(key[outcome], n)
            metrics.PIPELINE_FACES.labels(self.name, outcome).inc(n)

    def ready_checks(self) -> dict[str, ReadyCheck]:
        checks: dict[str, ReadyCheck] = {}
        if self.settings.nats_url:

            async def nats_ok() -> tuple[bool, str]:
                if self.nc is None or not self.nc.is_connected:
                    return False, "not connected to NATS"
                await self.js.stream_info(bus.STREAM)
                return True, ""

            checks["nats"] = nats_ok
        return checks

    def stats(self) -> dict[str, Any]:
        return {"stage": self.stage, **(self.worker.stats.snapshot() if self.worker else {})}
