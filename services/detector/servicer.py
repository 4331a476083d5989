"""facepipe.v1.Detector over gRPC: checks the batch, then detects through
facepipe.detection.detect_batch."""

from __future__ import annotations

import grpc

from facepipe.aio import ordered_map
from facepipe.detection import detect_batch, request_problem
from facepipe.pipeline import Loaded
from facepipe.v1 import detector_pb2, detector_pb2_grpc

from .stage import DetectorDeps


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    def __init__(self, loaded: Loaded[DetectorDeps]) -> None:
        self.loaded = loaded

    async def DetectBatch(
        self, request: detector_pb2.DetectBatchRequest, context
    ) -> detector_pb2.DetectBatchResponse:
        deps = await self._deps(context)
        await self._check(request, context)
        return await detect_batch(deps.detector, request, deps.objects)

    async def DetectStream(self, request_iterator, context):
        deps = await self._deps(context)

        async def one(request: detector_pb2.DetectBatchRequest) -> detector_pb2.DetectBatchResponse:
            # Each message is a batch under the same limits as DetectBatch.
            await self._check(request, context)
            return await detect_batch(deps.detector, request, deps.objects)

        async for response in ordered_map(request_iterator, one, max_inflight=4):
            yield response

    @staticmethod
    async def _check(request: detector_pb2.DetectBatchRequest, context) -> None:
        problem = request_problem(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    async def _deps(self, context) -> DetectorDeps:
        return await self.loaded.require(context, "models are still loading")


def register(server: grpc.aio.Server, loaded: Loaded[DetectorDeps]) -> list[str]:
    detector_pb2_grpc.add_DetectorServicer_to_server(DetectorServicer(loaded), server)
    return [detector_pb2.DESCRIPTOR.services_by_name["Detector"].full_name]
