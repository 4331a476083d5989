"""The detector stage: stored images in, accepted faces out (facepipe.faces.detected)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from facepipe import bus
from facepipe.faces import DetectedFace, FaceDetector, FaceEngine
from facepipe.imaging import DecodedImage, ImageError, encode_jpeg, thumbnail
from facepipe.models.align import align_face, realign_crop, template
from facepipe.models.registry import square_input_size
from facepipe.pipeline import Opened, Stage, StageOutput, read_raw
from facepipe.protoconv import face_to_proto
from facepipe.quality import assess
from facepipe.runtime import metrics
from facepipe.storage import ObjectStore
from facepipe.v1 import pipeline_pb2


@dataclass(frozen=True)
class DetectorDeps:
    engine: FaceEngine
    objects: ObjectStore
    # The embedder's crop size: cutting its crops here spares it a second full decode.
    crop_size: int
    output: StageOutput

    @property
    def detector(self) -> FaceDetector:
        return self.engine.detector


async def open_deps(opened: Opened) -> DetectorDeps:
    engine = await asyncio.to_thread(FaceEngine.load, opened.settings, opened.name, True, False)
    try:
        crop_size = await asyncio.to_thread(square_input_size, engine.pack.recognizer)
    except BaseException:
        await engine.close()
        raise
    assert opened.objects is not None  # declared in main.py
    return DetectorDeps(engine, opened.objects, crop_size, opened.output)


async def close_deps(deps: DetectorDeps) -> None:
    await deps.engine.close()


def aligned_crop_face(detector: FaceDetector, image: DecodedImage) -> DetectedFace:
    """The one face of an image that is an aligned face crop: the whole image, with the
    landmarks of the alignment template at its side. The caller vouches for the crop, so
    it is accepted; its quality score is still measured (best faces are chosen by it)."""
    side = image.width
    if image.height != side:
        raise bus.PermanentError(
            f"an aligned face crop is square, this image is {image.width}x{image.height}",
            reason="not_aligned_crop",
        )
    box = np.array([0.0, 0.0, float(side), float(side)], dtype=np.float32)
    landmarks = template(side).astype(np.float32)
    quality = assess(image.bgr, box, 1.0, landmarks, detector.thresholds)
    quality.accepted, quality.reasons = True, []
    return DetectedFace(box=box, score=1.0, landmarks=landmarks, quality=quality)


def face_crops(
    bgr, faces: list[DetectedFace], size: int, aligned: bool = False
) -> list[pipeline_pb2.FaceCrop]:
    """Aligned crops and thumbnails, cut here from the full-resolution image (an aligned
    crop is only resized to ``size``, exactly as it is when the sides match)."""
    crops = []
    for face in faces:
        aligned_crop = realign_crop(bgr, size) if aligned else align_face(bgr, face.landmarks, size)
        thumb = thumbnail(bgr, face_to_proto(face).box)
        crops.append(
            pipeline_pb2.FaceCrop(
                aligned_bgr=aligned_crop.tobytes(), size=size, thumb_jpeg=encode_jpeg(thumb, 85)
            )
        )
    return crops


async def detect_record(
    detector: FaceDetector, objects, record: pipeline_pb2.ImageRecord, crop_size: int | None = None
) -> pipeline_pb2.DetectedImage:
    data = await read_raw(objects, record)
    try:
        if record.aligned:  # detection is skipped: the whole image is the face
            image = await asyncio.to_thread(detector.decode, data)
            faces = [await asyncio.to_thread(aligned_crop_face, detector, image)]
        else:
            image, faces = await detector.detect_bytes(data, detector.params(include_rejected=True))
    except ImageError as exc:
        raise bus.PermanentError(str(exc), reason=exc.code.lower()) from exc
    accepted = [f for f in faces if f.quality.accepted]
    crops = (
        await asyncio.to_thread(face_crops, image.bgr, accepted, crop_size, record.aligned)
        if crop_size and accepted
        else []
    )
    rejected_reasons: dict[str, int] = {}
    for f in faces:
        outcome = "accepted" if f.quality.accepted else "rejected"
        for reason in f.quality.reasons or ["none"]:
            metrics.FACES.labels("detector", outcome, reason).inc()
            if not f.quality.accepted:
                rejected_reasons[reason] = rejected_reasons.get(reason, 0) + 1
    return pipeline_pb2.DetectedImage(
        image=record,
        faces=[face_to_proto(f) for f in accepted],
        detector_model=detector.model_name,
        faces_rejected=len(faces) - len(accepted),
        crops=crops,
        rejected_reasons=rejected_reasons,
    )


async def handle(deps: DetectorDeps, delivery: bus.Delivery) -> None:
    detected = await detect_record(deps.detector, deps.objects, delivery.payload, deps.crop_size)
    deps.output.count_faces("rejected", detected.faces_rejected)
    await deps.output.publish(
        bus.SUBJECT_DETECTED, detected.SerializeToString(), msg_id=f"detected.{detected.image.message_id}"
    )


STAGE: Stage[DetectorDeps] = Stage(bus.STAGES["detector"], pipeline_pb2.ImageRecord, handle)
