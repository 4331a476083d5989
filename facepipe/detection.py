"""Face detection over a DetectBatchRequest: the Detector service's RPCs and
``facepipe detect`` without a service both answer through ``detect_batch``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from facepipe.faces import FaceDetector
from facepipe.imaging import ImageError
from facepipe.protoconv import face_to_proto, image_bytes, image_error
from facepipe.runtime import metrics
from facepipe.v1 import common_pb2, detector_pb2

if TYPE_CHECKING:
    # Only for the annotation: facepipe.storage loads the vector clients, slow for `facepipe detect`.
    from facepipe.storage import ObjectStore


async def detect_batch(
    detector: FaceDetector, request: detector_pb2.DetectBatchRequest, objects: ObjectStore | None = None
) -> detector_pb2.DetectBatchResponse:
    """One result per image, in order; an image that cannot be read or decoded gets an
    error of its own and never fails the batch. ``objects`` resolves images given by
    object reference."""
    opts = request.options
    params = detector.params(opts.input_size, opts.score_threshold, opts.max_faces, opts.include_rejected)

    async def one(index: int, image: common_pb2.ImageInput) -> detector_pb2.ImageDetections:
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
