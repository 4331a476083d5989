"""Embedder service entrypoint: ``facepipe serve embedder``."""

from __future__ import annotations

import asyncio

from facepipe.config import Settings
from facepipe.faces import FaceEngine
from facepipe.runtime.server import Service, run_service
from facepipe.v1 import embedder_pb2, embedder_pb2_grpc
from services.embedder.servicer import EmbedderServicer


class EmbedderService(Service):
    name = "embedder"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: FaceEngine | None = None
        self.embedder = None
        self.objects = None

    def register(self, server) -> list[str]:
        embedder_pb2_grpc.add_EmbedderServicer_to_server(EmbedderServicer(self), server)
        return [embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name]

    async def start(self, runtime) -> None:
        self.engine = await asyncio.to_thread(FaceEngine.load, self.settings, self.name, False, True)
        self.embedder = self.engine.embedder

    async def stop(self) -> None:
        if self.engine:
            await self.engine.close()

    def ready_checks(self):
        async def models() -> tuple[bool, str]:
            return self.embedder is not None, "models not loaded"

        return {"models": models}


def main(settings: Settings) -> None:
    run_service(EmbedderService(settings), settings)
