"""Face detection over a DetectBatchRequest: the Detector service's RPCs and
``facepipe detect`` without a service both answer through ``detect_batch``."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from facepipe.faces import FaceDetector, input_size_problem
from facepipe.imaging import ImageError
from facepipe.protoconv import face_to_proto, image_bytes, image_error
from facepipe.runtime import metrics
from facepipe.v1 import common_pb2, detector_pb2

if TYPE_CHECKING:
    # Only for the annotation: facepipe.storage loads the vector clients, slow for `facepipe detect`.
    from facepipe.storage import ObjectStore


# Images one DetectBatchRequest (or one DetectStream message) may carry.
MAX_IMAGES_PER_BATCH = 256


def request_problem(request: detector_pb2.DetectBatchRequest) -> str | None:
    """What makes ``request`` invalid (too many images, options out of range), or None."""
    if len(request.images) > MAX_IMAGES_PER_BATCH:
        return f"at most {MAX_IMAGES_PER_BATCH} images per batch, got {len(request.images)}"
    return options_problem(request.options)


def options_problem(options: detector_pb2.DetectOptions) -> str | None:
    """What is out of range in ``options``, or None; zero values mean the server defaults."""
    if options.input_size:
        problem = input_size_problem(options.input_size)
        if problem:
            return problem
    threshold = options.score_threshold
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        return f"score_threshold {threshold} is not allowed: 0 to 1 (0: the server default)"
    if options.max_faces < 0:
        return f"max_faces {options.max_faces} is not allowed: 0 or more (0: all)"
    return None


async def detect_batch(
    detector: FaceDetector, request: detector_pb2.DetectBatchRequest, objects: ObjectStore | None = None
) -> detector_pb2.DetectBatchResponse:
    """One result per image, in order; an image that cannot be read or decoded gets an
    error of its own and never fails the batch. ``objects`` resolves images given by
    object reference. Raises ValueError when :func:`request_problem` finds one."""
    problem = request_problem(request)
    if problem:
        raise ValueError(problem)
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
