"""The indexer stage: embedded faces become vector points with deterministic ids.

Points of concurrent messages are grouped into one upsert, and the Edge shard
is optimized in the background every ``optimize_every`` changed points, since
Qdrant Edge has no optimizer thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Sequence

import numpy as np

from facepipe import bus
from facepipe.batching import DynamicBatcher
from facepipe.pipeline import check_tenant, point_id
from facepipe.storage import FacePoint, VectorStore
from facepipe.v1 import pipeline_pb2

log = logging.getLogger("facepipe.indexer")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
OPTIMIZE_EVERY = 10_000


def face_points(msg: pipeline_pb2.EmbeddedImage, dim: int, model: str, now_ms: int) -> list[FacePoint]:
    """The points of one message, validated whole: bad input raises PermanentError, writes nothing."""
    record = msg.image
    tenant = check_tenant(record.tenant_id)
    sha = record.image_sha256
    if not SHA256_RE.match(sha):
        raise bus.PermanentError(
            f"image_sha256 {sha!r} is not 64 lowercase hex digits", reason="missing_fields"
        )
    points: list[FacePoint] = []
    seen: set[int] = set()
    for face in msg.faces:
        index = face.face_index
        if index < 0 or index in seen:
            raise bus.PermanentError(f"face_index {index} is negative or repeated", reason="malformed")
        seen.add(index)
        vector = _unit_vector(face.embedding.vector, dim, index)
        if face.embedding.model and model and face.embedding.model != model:
            raise bus.PermanentError(
                f"face {index} was embedded with {face.embedding.model!r}, the index holds {model!r}",
                reason="model_mismatch",
            )
        box = face.face.box
        phash = record.phash
        points.append(
            FacePoint(
                id=point_id(tenant, sha, index),
                vector=vector,
                payload={
                    "tenant_id": tenant,
                    "site": record.site,
                    "url": record.url,
                    "page_url": record.page_url,
                    "alt_text": record.alt_text,
                    "image_sha256": sha,
                    "phash": phash,
                    "phash_prefix": phash[:4],
                    "face_phash": face.face_phash,
                    "face_index": index,
                    "bbox": [box.x1, box.y1, box.x2, box.y2],
                    "score": face.face.score,
                    "quality": face.face.quality.score,
                    "crop_key": face.crop.key,
                    "thumb_key": face.thumb.key,
                    "crop_bucket": face.crop.bucket,
                    "thumb_bucket": face.thumb.bucket,
                    "model": face.embedding.model or model,
                    "dim": dim,
                    "indexed_at": now_ms,
                },
            )
        )
    return points


def _unit_vector(values: Sequence[float], dim: int, index: int) -> np.ndarray:
    vec = np.asarray(values, dtype=np.float32)
    if vec.size != dim:
        raise bus.PermanentError(
            f"face {index} has a {vec.size}-d embedding, the index holds {dim}-d vectors",
            reason="dim_mismatch",
        )
    norm = float(np.linalg.norm(vec))
    if not math.isfinite(norm) or norm == 0.0:
        raise bus.PermanentError(f"face {index} has a zero or non-finite embedding", reason="malformed")
    return vec / norm


class PointWriter:
    """Upserts the points of concurrent messages in one call each, off the event loop."""

    def __init__(
        self,
        store: VectorStore,
        max_batch: int = 64,
        max_wait_ms: float = 10.0,
        optimize_every: int = OPTIMIZE_EVERY,
        service: str = "indexer",
    ) -> None:
        self.store = store
        self.optimize_every = max(1, optimize_every)
        self.counters = {"points_upserted": 0, "upsert_calls": 0, "points_deleted": 0, "optimizations": 0}
        self.points = 0  # the store's point count after the latest write or delete
        self._changed = 0
        self._optimizing: asyncio.Task | None = None
        self._batcher: DynamicBatcher[list[FacePoint], None] = DynamicBatcher(
            self._upsert, max_batch, max_wait_ms, concurrency=1, name="vector-upsert", service=service
        )

    async def write(self, points: list[FacePoint]) -> None:
        if points:
            await self._batcher.submit(points)

    async def _upsert(self, groups: list[list[FacePoint]]) -> list[None]:
        flat = [p for group in groups for p in group]
        self.points = await asyncio.to_thread(self._upsert_and_count, flat)
        self.counters["points_upserted"] += len(flat)
        self.counters["upsert_calls"] += 1
        self._note_changes(len(flat))
        return [None] * len(groups)

    def _upsert_and_count(self, points: list[FacePoint]) -> int:
        self.store.upsert(points)
        return self.store.count()

    async def refresh(self) -> int:
        self.points = await asyncio.to_thread(self.store.count)
        return self.points

    async def note_deleted(self, n: int) -> None:
        """Erasure vacuums at once (in the background): deleted vectors leave the segment files."""
        self.counters["points_deleted"] += n
        if n:
            self._note_changes(self.optimize_every)
        await self.refresh()

    def _note_changes(self, n: int) -> None:
        self._changed += n
        if self._changed >= self.optimize_every and (self._optimizing is None or self._optimizing.done()):
            self._changed = 0
            self._optimizing = asyncio.create_task(self._optimize())

    async def _optimize(self) -> None:
        start = time.perf_counter()
        try:
            changed = await asyncio.to_thread(self.store.optimize)
        except Exception:  # noqa: BLE001 - the index stays searchable unoptimized; try again later
            log.exception("vector store optimize failed")
            return
        self.counters["optimizations"] += 1
        log.info(
            "vector store optimized",
            extra={"changed": changed, "seconds": round(time.perf_counter() - start, 2)},
        )

    async def close(self) -> None:
        await self._batcher.close()
        if self._optimizing is not None:
            await asyncio.gather(self._optimizing, return_exceptions=True)
