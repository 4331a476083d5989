"""The embedder stage: aligns and embeds accepted faces, drops the faces of people
who opted out (facepipe.optout) and near-duplicates (face pHash within
DEDUP_MAX_HAMMING, per tenant), stores crops, thumbnails and a metadata sidecar,
and passes the faces on to the indexer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from facepipe import bus
from facepipe.dedup import FaceHashIndex, phash_hex
from facepipe.faces import FaceEmbedder, FaceEngine
from facepipe.imaging import ImageError, decode_image, encode_jpeg, thumbnail
from facepipe.optout import OptOutRegistry, min_score
from facepipe.pipeline import Opened, Stage, StageOutput, point_id, read_raw
from facepipe.protoconv import embedding_to_proto, landmarks_from_proto
from facepipe.runtime import metrics
from facepipe.storage import FACE_CROPS_BUCKET, FACE_THUMBS_BUCKET, ObjectStore
from facepipe.v1 import common_pb2, pipeline_pb2

log = logging.getLogger("facepipe.embedder")


@dataclass(frozen=True)
class DedupPolicy:
    enabled: bool
    max_hamming: int


@dataclass(frozen=True)
class OptOutPolicy:
    """The opt-outs of every tenant (watched in NATS KV) and the similarity that matches them."""

    registry: OptOutRegistry
    min_score: float


@dataclass(frozen=True)
class EmbedderDeps:
    engine: FaceEngine
    objects: ObjectStore
    # The tenant's face hashes, shared through NATS KV; None without NATS.
    faces_index: FaceHashIndex | None
    policy: DedupPolicy
    max_pixels: int
    output: StageOutput
    # None without NATS, or without a threshold to match opted-out people by.
    optouts: OptOutPolicy | None = None

    @property
    def embedder(self) -> FaceEmbedder:
        return self.engine.embedder


async def open_deps(opened: Opened) -> EmbedderDeps:
    settings = opened.settings
    policy = DedupPolicy(settings.enable_global_dedup, settings.dedup_max_hamming)
    engine = await asyncio.to_thread(FaceEngine.load, settings, opened.name, False, True)
    optouts = None
    try:
        js = opened.output.js
        faces_index = await FaceHashIndex.open(js, max_hamming=policy.max_hamming) if js else None
        if js is not None:
            optouts = await _open_optouts(js, settings)
    except BaseException:
        await engine.close()
        raise
    assert opened.objects is not None  # declared in main.py
    return EmbedderDeps(
        engine, opened.objects, faces_index, policy, settings.max_pixels, opened.output, optouts
    )


async def _open_optouts(js, settings) -> OptOutPolicy | None:
    threshold = min_score(settings)
    if threshold is None:
        log.error(
            "no opt-out threshold (FACEPIPE_OPTOUT_MIN_SCORE, or the model pack's search_min_score): "
            "faces of opted-out people are not skipped"
        )
        return None
    registry = await OptOutRegistry.open(js)
    await registry.start_watch()
    log.info("opt-outs loaded", extra={"optouts": len(registry.entries), "min_score": threshold})
    return OptOutPolicy(registry, threshold)


async def close_deps(deps: EmbedderDeps) -> None:
    if deps.optouts is not None:
        await deps.optouts.registry.stop()
    await deps.engine.close()


async def handle(deps: EmbedderDeps, delivery: bus.Delivery) -> None:
    embedded = await embed_record(
        deps.embedder,
        deps.objects,
        deps.faces_index,
        deps.policy,
        delivery.payload,
        deps.max_pixels,
        deps.output.service,
        deps.optouts,
    )
    deps.output.count_faces("dup_skipped", embedded.faces_dup_skipped)
    deps.output.count_faces("optout_skipped", embedded.faces_optout_skipped)
    await deps.output.publish(
        bus.SUBJECT_EMBEDDED, embedded.SerializeToString(), msg_id=f"embedded.{embedded.image.message_id}"
    )


async def embed_record(
    embedder: FaceEmbedder,
    objects,
    faces_index: FaceHashIndex | None,
    policy: DedupPolicy,
    detected: pipeline_pb2.DetectedImage,
    max_pixels: int,
    service: str = "embedder",
    optouts: OptOutPolicy | None = None,
) -> pipeline_pb2.EmbeddedImage:
    record = detected.image
    out = pipeline_pb2.EmbeddedImage(
        image=record, faces_rejected=detected.faces_rejected, rejected_reasons=detected.rejected_reasons
    )
    if not detected.faces:
        return out
    crops, thumbs = await _crops_and_thumbs(embedder, objects, detected, max_pixels)
    vectors = await embedder.embed_crops(crops)
    tenant, sha = record.tenant_id, record.image_sha256
    kept = []
    for index, (face, vector, crop, thumb) in enumerate(
        zip(detected.faces, vectors, crops, thumbs, strict=True)
    ):
        if optouts is not None and optouts.registry.match(
            tenant, vector, optouts.min_score, embedder.model_name
        ):
            # The person asked not to be indexed: nothing of this face is kept.
            out.faces_optout_skipped += 1
            continue
        kept.append((index, face, vector, crop, thumb))
    # One worker-thread hop for the image's hashes, and one for its writes, not two a face.
    hashes = await asyncio.to_thread(lambda: [phash_hex(crop) for _, _, _, crop, _ in kept])
    stored: list[tuple[str, np.ndarray, bytes, dict]] = []
    for (index, face, vector, crop, thumb), face_hash in zip(kept, hashes, strict=True):
        pid = point_id(tenant, sha, index)
        if policy.enabled and faces_index is not None:
            match = await faces_index.find(tenant, face_hash, policy.max_hamming)
            if match is not None and match != pid:
                metrics.DEDUP.labels(service, "near", "hit").inc()
                out.faces_dup_skipped += 1
                continue
            metrics.DEDUP.labels(service, "near", "miss").inc()
            if match is None:
                await faces_index.add(tenant, face_hash, pid)
        crop_key = f"{tenant}/{sha}/{index}.jpg"
        sidecar = {
            "tenant_id": tenant,
            "image_sha256": sha,
            "url": record.url,
            "site": record.site,
            "page_url": record.page_url,
            "alt_text": record.alt_text,
            "face_index": index,
            "point_id": pid,
            "bbox": [face.box.x1, face.box.y1, face.box.x2, face.box.y2],
            "score": face.score,
            "quality": face.quality.score,
            "face_phash": face_hash,
            "model": embedder.model_name,
            "created_at_ms": int(time.time() * 1000),
        }
        stored.append((crop_key, crop, thumb, sidecar))
        out.faces.append(
            pipeline_pb2.EmbeddedFace(
                face_index=index,
                face=face,
                embedding=embedding_to_proto(vector, embedder.model_name),
                crop=common_pb2.ObjectRef(bucket=FACE_CROPS_BUCKET, key=crop_key),
                thumb=common_pb2.ObjectRef(bucket=FACE_THUMBS_BUCKET, key=crop_key),
                face_phash=face_hash,
            )
        )

    def store() -> None:
        for crop_key, crop, thumb, sidecar in stored:
            objects.put(FACE_CROPS_BUCKET, crop_key, encode_jpeg(crop, 95), "image/jpeg")
            objects.put(
                FACE_CROPS_BUCKET, crop_key[:-4] + ".json", json.dumps(sidecar).encode(), "application/json"
            )
            objects.put(FACE_THUMBS_BUCKET, crop_key, thumb, "image/jpeg")

    if stored:
        await asyncio.to_thread(store)
    return out


async def _crops_and_thumbs(
    embedder: FaceEmbedder, objects, detected: pipeline_pb2.DetectedImage, max_pixels: int
) -> tuple[list[np.ndarray], list[bytes]]:
    """Aligned crops and JPEG thumbnails: from the detector when it cut them at this
    recognizer's input size, else from the raw image."""
    size = embedder.size
    given = detected.crops
    if len(given) == len(detected.faces) and all(
        c.size == size and len(c.aligned_bgr) == size * size * 3 for c in given
    ):
        crops = [np.frombuffer(c.aligned_bgr, np.uint8).reshape(size, size, 3) for c in given]
        return crops, [c.thumb_jpeg for c in given]
    data = await read_raw(objects, detected.image)
    try:
        image = await asyncio.to_thread(decode_image, data, max_pixels)
    except ImageError as exc:
        raise bus.PermanentError(str(exc), reason=exc.code.lower()) from exc

    def cut() -> tuple[list[np.ndarray], list[bytes]]:
        crops = [embedder.align(image.bgr, landmarks_from_proto(f)) for f in detected.faces]
        thumbs = [encode_jpeg(thumbnail(image.bgr, f.box), 85) for f in detected.faces]
        return crops, thumbs

    return await asyncio.to_thread(cut)


STAGE: Stage[EmbedderDeps] = Stage(bus.STAGES["embedder"], pipeline_pb2.DetectedImage, handle)
