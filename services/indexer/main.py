"""Indexer service entrypoint: ``facepipe serve indexer``.

Consumes facepipe.faces.embedded into the vector store and serves
facepipe.v1.Indexer (search, stats, erasure) over the same store; with Qdrant
Edge this process is the only one that opens the shard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from nats.aio.msg import Msg

from facepipe import bus
from facepipe.config import Settings
from facepipe.dedup import FaceHashIndex, ImageStates
from facepipe.faces import FaceEngine
from facepipe.pipeline import StageService
from facepipe.runtime.server import ReadyCheck, run_service
from facepipe.storage import ObjectStore, VectorStore, open_object_store, open_vector_store
from facepipe.v1 import indexer_pb2, indexer_pb2_grpc, pipeline_pb2
from services.indexer.consumer import PointWriter, face_points
from services.indexer.servicer import IndexerServicer

log = logging.getLogger("facepipe.indexer")


class IndexerService(StageService):
    name = "indexer"
    stage = "indexer"
    message_type = pipeline_pb2.EmbeddedImage

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.store: VectorStore | None = None
        self.objects: ObjectStore | None = None
        self.engine: FaceEngine | None = None
        self.writer: PointWriter | None = None
        self.images: ImageStates | None = None
        self.face_hashes: FaceHashIndex | None = None
        self.dim = 0
        self.model = ""
        self.optimize_every = settings.indexer.optimize_every

    def register(self, server) -> list[str]:
        indexer_pb2_grpc.add_IndexerServicer_to_server(IndexerServicer(self), server)
        return [indexer_pb2.DESCRIPTOR.services_by_name["Indexer"].full_name]

    async def load(self) -> None:
        self.objects = await asyncio.to_thread(open_object_store, self.settings.objects)
        self.store = await asyncio.to_thread(open_vector_store, self.settings.vectors)
        try:
            self.engine = await asyncio.to_thread(FaceEngine.load, self.settings, self.name)
            # The collection's size follows the model, so a model change is caught, never mixed in.
            self.dim = self.engine.embedder.dim
            self.model = self.engine.embedder.model_name
            await asyncio.to_thread(self.store.ensure_collection, self.dim)
        except BaseException:
            await asyncio.to_thread(self.store.close)
            raise
        self.writer = PointWriter(
            self.store,
            max_batch=max(1, self.settings.max_inflight) * 4,
            optimize_every=self.optimize_every,
            service=self.name,
        )
        points = await self.writer.refresh()
        log.info(
            "index open", extra={"vector_store": self.store.describe(), "dim": self.dim, "points": points}
        )

    async def dedup_state(self) -> tuple[ImageStates | None, FaceHashIndex | None]:
        """The shared dedup buckets, opened on first use (the consumer may start before)."""
        if self.js is not None and (self.images is None or self.face_hashes is None):
            self.images = await ImageStates.open(self.js)
            self.face_hashes = await FaceHashIndex.open(self.js, self.settings.dedup_max_hamming)
        return self.images, self.face_hashes

    async def unload(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self.engine is not None:
            await self.engine.close()
        if self.store is not None:
            # Flushes, and releases the Edge lock so the next process can open the shard.
            await asyncio.to_thread(self.store.close)
            self.store = None

    async def handle(self, delivery: bus.Delivery) -> None:
        msg: pipeline_pb2.EmbeddedImage = delivery.payload
        record = msg.image
        points = face_points(msg, self.dim, self.model, int(time.time() * 1000))
        await self.writer.write(points)
        images, _ = await self.dedup_state()
        if images is not None:
            await images.mark_indexed(record.tenant_id, record.image_sha256, len(points))
        await self.emit_done(
            record,
            pipeline_pb2.IMAGE_STATUS_INDEXED,
            faces_indexed=len(points),
            faces_dup_skipped=msg.faces_dup_skipped,
            faces_rejected=msg.faces_rejected,
        )
        self.count_faces("indexed", len(points))
        self.count_faces("rejected", msg.faces_rejected)
        self.count_faces("dup_skipped", msg.faces_dup_skipped)

    async def on_dead(self, msg: Msg, payload: Any, error: str, reason: str) -> None:
        """A dead-lettered image is marked failed, so a later ingest of it can take it over."""
        record = getattr(payload, "image", None)
        images, _ = await self.dedup_state()
        if images is not None and record is not None:
            try:
                await images.mark_failed(record.tenant_id, record.image_sha256, record.message_id)
            except ValueError:
                pass  # no valid tenant or sha: no state to mark
            except Exception as exc:  # noqa: BLE001 - the FAILED event below matters more
                log.warning("cannot mark image failed", extra={"error": str(exc)})
        await super().on_dead(msg, payload, error, reason)

    def ready_checks(self) -> dict[str, ReadyCheck]:
        checks = super().ready_checks()

        async def vector_store() -> tuple[bool, str]:
            if self.store is None:
                return False, "vector store not open"
            await asyncio.to_thread(self.store.ping)
            return True, ""

        async def object_store() -> tuple[bool, str]:
            if self.objects is None:
                return False, "object store not configured"
            await asyncio.to_thread(self.objects.ping)
            return True, ""

        async def models() -> tuple[bool, str]:
            return self.engine is not None, "models not loaded"

        checks.update({"vector_store": vector_store, "object_store": object_store, "models": models})
        return checks

    def counters(self) -> dict[str, int]:
        """Integer counters of the stage worker and the writer, for /stats and GetStats."""
        out: dict[str, int] = {}
        if self.worker is not None:
            out.update({k: v for k, v in self.worker.stats.snapshot().items() if isinstance(v, int)})
        if self.writer is not None:
            out.update(self.writer.counters)
        return out

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            **(self.writer.counters if self.writer else {}),
            "points": self.writer.points if self.writer else 0,
            "dim": self.dim,
            "model": self.model,
            "vector_store": self.store.describe() if self.store else "",
        }


def main(settings: Settings) -> None:
    run_service(IndexerService(settings), settings)
