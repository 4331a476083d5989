"""Embedder service entrypoint: ``facepipe serve embedder``. Serves
facepipe.v1.Embedder and, with NATS configured, consumes the embedder stage."""

from __future__ import annotations

import asyncio

from facepipe import bus
from facepipe.config import Settings
from facepipe.dedup import FaceHashIndex
from facepipe.faces import FaceEmbedder, FaceEngine
from facepipe.pipeline import StageService
from facepipe.runtime.server import run_service
from facepipe.storage import open_object_store
from facepipe.v1 import embedder_pb2, embedder_pb2_grpc, pipeline_pb2
from services.embedder.consumer import DedupPolicy, embed_record
from services.embedder.servicer import EmbedderServicer


class EmbedderService(StageService):
    name = "embedder"
    stage = "embedder"
    message_type = pipeline_pb2.DetectedImage

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.engine: FaceEngine | None = None
        self.embedder: FaceEmbedder | None = None
        self.objects = None
        self.faces_index: FaceHashIndex | None = None
        self.policy = DedupPolicy(settings.enable_global_dedup, settings.dedup_max_hamming)

    def register(self, server) -> list[str]:
        embedder_pb2_grpc.add_EmbedderServicer_to_server(EmbedderServicer(self), server)
        return [embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name]

    async def load(self) -> None:
        self.objects = open_object_store(self.settings.objects)
        self.engine = await asyncio.to_thread(FaceEngine.load, self.settings, self.name, False, True)
        self.embedder = self.engine.embedder

    async def start(self, runtime) -> None:
        await super().start(runtime)
        if self.js is not None:
            self.faces_index = await FaceHashIndex.open(self.js, max_hamming=self.policy.max_hamming)

    async def unload(self) -> None:
        if self.engine:
            await self.engine.close()

    async def handle(self, delivery: bus.Delivery) -> None:
        embedded = await embed_record(
            self.embedder,
            self.objects,
            self.faces_index,
            self.policy,
            delivery.payload,
            self.settings.max_pixels,
            self.name,
        )
        self.count_faces("dup_skipped", embedded.faces_dup_skipped)
        await bus.publish(
            self.js,
            bus.SUBJECT_EMBEDDED,
            embedded.SerializeToString(),
            msg_id=f"embedded.{embedded.image.message_id}",
        )

    def ready_checks(self):
        checks = super().ready_checks()

        async def models() -> tuple[bool, str]:
            return self.embedder is not None, "models not loaded"

        async def storage() -> tuple[bool, str]:
            await asyncio.to_thread(self.objects.ping)
            return True, ""

        async def dedup_cache() -> tuple[bool, str]:
            if not self.settings.nats_url or not self.policy.enabled:
                return True, ""
            return self.faces_index is not None, "dedup cache not open"

        checks.update(models=models, object_store=storage, dedup_cache=dedup_cache)
        return checks


def main(settings: Settings) -> None:
    run_service(EmbedderService(settings), settings)
