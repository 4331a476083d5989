"""Detector service entrypoint: ``facepipe serve detector``."""

from __future__ import annotations

import asyncio

from facepipe.config import Settings
from facepipe.faces import FaceEngine
from facepipe.runtime.server import Service, run_service
from facepipe.v1 import detector_pb2, detector_pb2_grpc
from services.detector.servicer import DetectorServicer


class DetectorService(Service):
    name = "detector"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: FaceEngine | None = None
        self.detector = None
        self.objects = None

    def register(self, server) -> list[str]:
        detector_pb2_grpc.add_DetectorServicer_to_server(DetectorServicer(self), server)
        return [detector_pb2.DESCRIPTOR.services_by_name["Detector"].full_name]

    async def start(self, runtime) -> None:
        self.engine = await asyncio.to_thread(FaceEngine.load, self.settings, self.name, True, False)
        self.detector = self.engine.detector

    async def stop(self) -> None:
        if self.engine:
            await self.engine.close()

    def ready_checks(self):
        async def models() -> tuple[bool, str]:
            return self.detector is not None, "models not loaded"

        return {"models": models}


def main(settings: Settings) -> None:
    run_service(DetectorService(settings), settings)
