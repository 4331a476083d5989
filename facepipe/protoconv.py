"""Conversions between the engine's dataclasses and the facepipe.v1 messages."""

from __future__ import annotations

import numpy as np

from facepipe.echo import shorten
from facepipe.faces import DetectedFace
from facepipe.imaging import ImageError
from facepipe.v1 import common_pb2

ERROR_CODES = {
    "EMPTY": common_pb2.ERROR_CODE_EMPTY,
    "UNDECODABLE": common_pb2.ERROR_CODE_UNDECODABLE,
    "TOO_LARGE": common_pb2.ERROR_CODE_TOO_LARGE,
    "NOT_FOUND": common_pb2.ERROR_CODE_NOT_FOUND,
    "INVALID_ARGUMENT": common_pb2.ERROR_CODE_INVALID_ARGUMENT,
    "INTERNAL": common_pb2.ERROR_CODE_INTERNAL,
    "FETCH_FAILED": common_pb2.ERROR_CODE_FETCH_FAILED,
}


def image_error(exc: Exception) -> common_pb2.ImageError:
    code = getattr(exc, "code", "INTERNAL") if isinstance(exc, ImageError) else "INTERNAL"
    return common_pb2.ImageError(code=ERROR_CODES.get(code, common_pb2.ERROR_CODE_INTERNAL), message=str(exc))


def face_to_proto(f: DetectedFace) -> common_pb2.Face:
    q = f.quality
    return common_pb2.Face(
        box=common_pb2.BoundingBox(
            x1=float(f.box[0]), y1=float(f.box[1]), x2=float(f.box[2]), y2=float(f.box[3])
        ),
        score=f.score,
        landmarks=[common_pb2.Point(x=float(x), y=float(y)) for x, y in f.landmarks],
        quality=common_pb2.Quality(
            score=q.score,
            accepted=q.accepted,
            reasons=[common_pb2.QualityReason.Value(f"QUALITY_REASON_{r}") for r in q.reasons],
            size_px=q.size_px,
            blur=q.blur,
            yaw=q.yaw,
            roll=q.roll,
        ),
    )


def landmarks_from_proto(face: common_pb2.Face) -> np.ndarray:
    if len(face.landmarks) != 5:
        raise ValueError(f"a face needs 5 landmarks to be aligned, got {len(face.landmarks)}")
    return np.array([[p.x, p.y] for p in face.landmarks], dtype=np.float32)


def embedding_to_proto(vector: np.ndarray, model: str) -> common_pb2.Embedding:
    return common_pb2.Embedding(vector=vector.astype(float).tolist(), model=model, dim=int(vector.shape[0]))


class ObjectMissing(ImageError):
    code = "NOT_FOUND"


async def image_bytes(image: common_pb2.ImageInput, objects=None) -> bytes:
    """The encoded bytes of an ImageInput, reading object-store references."""
    import asyncio

    which = image.WhichOneof("source")
    if which == "data":
        return image.data
    if which == "ref":
        if objects is None:
            raise ObjectMissing("object references need an object store; none is configured")
        try:
            return await asyncio.to_thread(objects.get, image.ref.bucket, image.ref.key)
        except Exception as exc:  # noqa: BLE001 - reported per image
            raise ObjectMissing(
                f"cannot read {shorten(image.ref.bucket + '/' + image.ref.key)}: {exc}"
            ) from exc
    return b""
