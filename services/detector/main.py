"""Detector service entrypoint: ``facepipe serve detector``. Serves
facepipe.v1.Detector and, with NATS configured, consumes the detector stage."""

from __future__ import annotations

import asyncio

from facepipe import bus
from facepipe.config import Settings
from facepipe.faces import FaceDetector, FaceEngine
from facepipe.models.registry import square_input_size
from facepipe.pipeline import StageService
from facepipe.runtime.server import run_service
from facepipe.storage import open_object_store
from facepipe.v1 import detector_pb2, detector_pb2_grpc, pipeline_pb2
from services.detector.consumer import detect_record
from services.detector.servicer import DetectorServicer


class DetectorService(StageService):
    name = "detector"
    stage = "detector"
    message_type = pipeline_pb2.ImageRecord

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.engine: FaceEngine | None = None
        self.detector: FaceDetector | None = None
        self.objects = None
        self.crop_size: int | None = None

    def register(self, server) -> list[str]:
        detector_pb2_grpc.add_DetectorServicer_to_server(DetectorServicer(self), server)
        return [detector_pb2.DESCRIPTOR.services_by_name["Detector"].full_name]

    async def load(self) -> None:
        self.objects = open_object_store(self.settings.objects)
        self.engine = await asyncio.to_thread(FaceEngine.load, self.settings, self.name, True, False)
        self.detector = self.engine.detector
        # Cutting the embedder's crops here spares it a second full decode.
        self.crop_size = await asyncio.to_thread(square_input_size, self.engine.pack.recognizer)

    async def unload(self) -> None:
        if self.engine:
            await self.engine.close()

    async def handle(self, delivery: bus.Delivery) -> None:
        detected = await detect_record(self.detector, self.objects, delivery.payload, self.crop_size)
        self.count_faces("rejected", detected.faces_rejected)
        await bus.publish(
            self.js,
            bus.SUBJECT_DETECTED,
            detected.SerializeToString(),
            msg_id=f"detected.{detected.image.message_id}",
        )

    def ready_checks(self):
        checks = super().ready_checks()

        async def models() -> tuple[bool, str]:
            return self.detector is not None, "models not loaded"

        async def storage() -> tuple[bool, str]:
            await asyncio.to_thread(self.objects.ping)
            return True, ""

        checks["models"] = models
        checks["object_store"] = storage
        return checks


def main(settings: Settings) -> None:
    run_service(DetectorService(settings), settings)
