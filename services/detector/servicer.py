"""facepipe.v1.Detector over gRPC."""

from __future__ import annotations

import asyncio

import grpc

from facepipe.aio import ordered_map
from facepipe.faces import FaceDetector
from facepipe.imaging import ImageError
from facepipe.protoconv import face_to_proto, image_bytes, image_error
from facepipe.runtime import metrics
from facepipe.v1 import detector_pb2, detector_pb2_grpc

MAX_IMAGES_PER_BATCH = 256


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    def __init__(self, service) -> None:
        self.service = service  # gives .detector once models are loaded, and .objects

    async def DetectBatch(
        self, request: detector_pb2.DetectBatchRequest, context
    ) -> detector_pb2.DetectBatchResponse:
        detector = await self._detector(context)
        if len(request.images) > MAX_IMAGES_PER_BATCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_IMAGES_PER_BATCH} images per batch"
            )
        return await detect_batch(detector, request, self.service.objects)

    async def DetectStream(self, request_iterator, context):
        detector = await self._detector(context)
        async for response in ordered_map(
            request_iterator, lambda req: detect_batch(detector, req, self.service.objects), max_inflight=4
        ):
            yield response

    async def _detector(self, context) -> FaceDetector:
        if self.service.detector is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are still loading")
        return self.service.detector


async def detect_batch(
    detector: FaceDetector, request: detector_pb2.DetectBatchRequest, objects=None
) -> detector_pb2.DetectBatchResponse:
    opts = request.options
    params = detector.params(opts.input_size, opts.score_threshold, opts.max_faces, opts.include_rejected)

    async def one(index: int, image) -> detector_pb2.ImageDetections:
        image_id = image.id or str(index)
        try:
            data = await image_bytes(image, objects)
            decoded, faces = await detector.detect_bytes(data, params)
        except ImageError as exc:
            metrics.IMAGES.labels("detector", exc.code).inc()
            return detector_pb2.ImageDetections(id=image_id, error=image_error(exc))
        metrics.IMAGES.labels("detector", "ok").inc()
        for f in faces:
            outcome = "accepted" if f.quality.accepted else "rejected"
            for reason in f.quality.reasons or ["none"]:
                metrics.FACES.labels("detector", outcome, reason).inc()
        return detector_pb2.ImageDetections(
            id=image_id, faces=[face_to_proto(f) for f in faces], width=decoded.width, height=decoded.height
        )

    results = await asyncio.gather(*(one(i, img) for i, img in enumerate(request.images)))
    return detector_pb2.DetectBatchResponse(results=results, model=detector.model_name)
