"""Extractor service entrypoint: ``facepipe serve extractor``.

Consumes the ``facepipe.ingest`` stage (services/extractor/consumer.py) and
serves facepipe.v1.Extractor/Ingest, which validates and queues the same
message for producers that speak gRPC (services/extractor/servicer.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.msg import Msg

from facepipe import bus
from facepipe.config import Settings
from facepipe.pipeline import StageService
from facepipe.runtime.server import ReadyCheck, run_service
from facepipe.storage import ObjectStore, open_object_store
from facepipe.v1 import extractor_pb2, extractor_pb2_grpc, pipeline_pb2
from services.extractor.consumer import IngestConsumer
from services.extractor.fetch import ImageFetcher
from services.extractor.servicer import ExtractorServicer


class ExtractorService(StageService):
    name = "extractor"
    stage = "extractor"
    message_type = pipeline_pb2.IngestRequest

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.objects: ObjectStore | None = None
        self.fetcher: ImageFetcher | None = None
        self.consumer = IngestConsumer(self)

    def register(self, server) -> list[str]:
        extractor_pb2_grpc.add_ExtractorServicer_to_server(ExtractorServicer(self), server)
        return [extractor_pb2.DESCRIPTOR.services_by_name["Extractor"].full_name]

    async def load(self) -> None:
        self.objects = open_object_store(self.settings.objects)
        self.fetcher = ImageFetcher(
            self.settings.max_image_bytes, allow_private=self.settings.netguard.allow_private_networks
        )

    async def unload(self) -> None:
        if self.fetcher is not None:
            await self.fetcher.aclose()

    def decode(self, msg: Msg) -> pipeline_pb2.IngestRequest:
        return self.consumer.decode(msg)

    async def handle(self, delivery: bus.Delivery) -> None:
        await self.consumer.handle(delivery)

    async def on_dead(self, msg: Msg, payload: Any, error: str, reason: str) -> None:
        await self.consumer.on_dead(msg, payload, error, reason)

    def ready_checks(self) -> dict[str, ReadyCheck]:
        checks = super().ready_checks()

        async def object_store() -> tuple[bool, str]:
            if self.objects is None:
                return False, "object store not opened"
            await asyncio.to_thread(self.objects.ping)
            return True, ""

        checks["object_store"] = object_store
        return checks


def main(settings: Settings) -> None:
    run_service(ExtractorService(settings), settings)
