"""The indexer stage: embedded faces become vector points with deterministic ids;
and erasure, which deletes a tenant's points with their stored objects.

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
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from nats.aio.msg import Msg

from facepipe import bus
from facepipe.batching import DynamicBatcher
from facepipe.dedup import FaceHashIndex, ImageStates
from facepipe.echo import echo
from facepipe.faces import FaceEngine
from facepipe.optout import OptOutRegistry, min_score
from facepipe.persons.records import PersonBook
from facepipe.photos import folder_and_parents, image_thumb_key
from facepipe.pipeline import Opened, Stage, StageOutput, check_tenant, point_id, report_failed
from facepipe.storage import (
    BUCKETS,
    FACE_CROPS_BUCKET,
    FACE_THUMBS_BUCKET,
    RAW_IMAGES_BUCKET,
    FacePoint,
    ObjectStore,
    VectorStore,
)
from facepipe.storage.vectors.collections import VectorCollections
from facepipe.v1 import common_pb2, pipeline_pb2

from .reindex import Reindexer

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
            f"image_sha256 {echo(sha)} is not 64 lowercase hex digits", reason="missing_fields"
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
                    **photo_payload(record),
                },
            )
        )
    return points


def photo_payload(record: pipeline_pb2.ImageRecord) -> dict[str, Any]:
    """The photo-library fields of a face's payload. ``taken_at`` and the position are
    written only when the photo gives them, so a range filter never matches a photo
    without a capture time; ``folders`` holds the folder and those above it (filters)."""
    photo = record.photo
    payload: dict[str, Any] = {
        "has_gps": photo.has_gps,
        "camera_make": photo.camera_make,
        "camera_model": photo.camera_model,
        "folder": photo.folder,
        "folders": folder_and_parents(photo.folder),
        "width": record.width,
        "height": record.height,
        "image_thumb_key": record.image_thumb.key,
    }
    if photo.taken_at_ms:
        payload["taken_at"] = photo.taken_at_ms
    if photo.has_gps:
        payload["lat"], payload["lon"] = photo.latitude, photo.longitude
    return payload


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


PERSON_KEYS = ("person_id", "person_pinned")


def keep_persons(store: VectorStore, points: list[FacePoint]) -> None:
    """A face written again (a redelivery, an image ingested again) keeps the person it
    was assigned to: the upsert replaces the whole payload."""
    by_tenant: dict[str, list[FacePoint]] = {}
    for p in points:
        by_tenant.setdefault(str(p.payload.get("tenant_id", "")), []).append(p)
    for tenant, group in by_tenant.items():
        if not tenant:
            continue
        stored = {s.id: s.payload for s in store.retrieve(tenant, [p.id for p in group])}
        for p in group:
            old = stored.get(p.id)
            if old is not None:
                for key in PERSON_KEYS:
                    if key in old:
                        p.payload.setdefault(key, old[key])


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
        keep_persons(self.store, points)
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


@dataclass(frozen=True)
class IndexerDeps:
    store: VectorStore
    objects: ObjectStore
    engine: FaceEngine
    writer: PointWriter
    # The shared dedup state, in NATS KV; None without NATS.
    images: ImageStates | None
    face_hashes: FaceHashIndex | None
    # The collection's size follows the model, so a model change is caught, never mixed in.
    dim: int
    model: str
    output: StageOutput
    # The opt-out registry (NATS KV), None without NATS; and the similarity that matches
    # an opted-out person, None when neither the setting nor the model pack gives one.
    optouts: OptOutRegistry | None = None
    optout_min_score: float | None = None
    # Every face collection (``store`` is the active one's) and the reindex of tenants
    # into the active one; set by open_deps.
    collections: VectorCollections | None = None
    reindexer: Reindexer | None = None
    # The person records (names for search results), None without NATS.
    persons: PersonBook | None = None

    def all_stores(self) -> list[VectorStore]:
        """The active collection first, then every other face collection (erasure reaches all)."""
        if self.collections is None:
            return [self.store]
        return [self.collections.store(name) for name in self.collections.names()]


async def open_deps(opened: Opened, optimize_every: int = OPTIMIZE_EVERY) -> IndexerDeps:
    settings = opened.settings
    store, objects = opened.vectors, opened.objects
    assert store is not None and objects is not None  # declared in main.py
    engine = await asyncio.to_thread(FaceEngine.load, settings, opened.name)
    try:
        dim, model = engine.embedder.dim, engine.embedder.model_name
        await asyncio.to_thread(store.ensure_collection, dim)
        js = opened.output.js
        images = await ImageStates.open(js) if js is not None else None
        face_hashes = await FaceHashIndex.open(js, settings.dedup_max_hamming) if js is not None else None
        optouts = await OptOutRegistry.open(js) if js is not None else None
        persons = await _person_book(js) if js is not None else None
    except BaseException:
        await engine.close()
        raise
    writer = PointWriter(
        store,
        max_batch=max(1, settings.max_inflight) * 4,
        optimize_every=optimize_every,
        service=opened.name,
    )
    points = await writer.refresh()
    collections = VectorCollections(settings.vectors, store)
    await asyncio.to_thread(collections.register, collections.active_name, dim, model)
    others = await asyncio.to_thread(collections.others)
    log.info(
        "index open",
        extra={"vector_store": store.describe(), "dim": dim, "points": points, "other_collections": others},
    )
    return IndexerDeps(
        store,
        objects,
        engine,
        writer,
        images,
        face_hashes,
        dim,
        model,
        opened.output,
        optouts,
        min_score(settings),
        collections,
        Reindexer(collections, objects, engine.embedder, writer.write),
        persons,
    )


async def _person_book(js) -> PersonBook | None:
    """The persons bucket when it exists (the deployment made it); the indexer only reads it."""
    try:
        return await PersonBook.open(js, create=False)
    except Exception as exc:  # noqa: BLE001 - search works without names
        log.warning("no person names in search results", extra={"error": str(exc)})
        return None


async def close_deps(deps: IndexerDeps) -> None:
    if deps.reindexer is not None:
        await deps.reindexer.close()
    await deps.writer.close()
    if deps.collections is not None:
        await asyncio.to_thread(deps.collections.close)
    await deps.engine.close()


async def handle(deps: IndexerDeps, delivery: bus.Delivery) -> None:
    msg: pipeline_pb2.EmbeddedImage = delivery.payload
    record = msg.image
    points = face_points(msg, deps.dim, deps.model, int(time.time() * 1000))
    await deps.writer.write(points)
    if points and deps.output.connected:
        # The persons service assigns each new face to a person.
        event = pipeline_pb2.FacesIndexed(
            tenant_id=record.tenant_id,
            image_sha256=record.image_sha256,
            indexed_at_ms=int(points[0].payload["indexed_at"]),
            message_id=record.message_id,
            url=record.url,
            faces=[
                pipeline_pb2.IndexedFace(
                    point_id=p.id,
                    face_index=int(p.payload["face_index"]),
                    quality=float(p.payload["quality"]),
                    thumb=common_pb2.ObjectRef(bucket=p.payload["thumb_bucket"], key=p.payload["thumb_key"]),
                )
                for p in points
            ],
        )
        msg_id = f"indexed-{record.message_id}" if record.message_id else None
        await deps.output.publish(bus.SUBJECT_FACES_INDEXED, event.SerializeToString(), msg_id=msg_id)
    if deps.images is not None:
        await deps.images.mark_indexed(record.tenant_id, record.image_sha256, len(points))
    output = deps.output
    await output.emit_done(
        record,
        pipeline_pb2.IMAGE_STATUS_INDEXED,
        faces_indexed=len(points),
        faces_dup_skipped=msg.faces_dup_skipped,
        faces_rejected=msg.faces_rejected,
        rejected_reasons=msg.rejected_reasons,
        faces_optout_skipped=msg.faces_optout_skipped,
    )
    output.count_faces("indexed", len(points))
    output.count_faces("rejected", msg.faces_rejected)
    output.count_faces("dup_skipped", msg.faces_dup_skipped)


async def on_dead(deps: IndexerDeps, msg: Msg, payload: Any, error: str, reason: str) -> None:
    """A dead-lettered image is marked failed, so a later ingest of it can take it over."""
    record = getattr(payload, "image", None)
    if deps.images is not None and record is not None:
        try:
            await deps.images.mark_failed(record.tenant_id, record.image_sha256, record.message_id)
        except ValueError:
            pass  # no valid tenant or sha: no state to mark
        except Exception as exc:  # noqa: BLE001 - the FAILED event below matters more
            log.warning("cannot mark image failed", extra={"error": str(exc)})
    await report_failed(deps.output, payload, error, reason)


async def forget_erased(deps: IndexerDeps, tenant: str, erased: Erased, everything: bool) -> None:
    """Drops dedup state, so the erased images and faces can be ingested again, and tells
    the persons service which persons lost faces."""
    if deps.output.connected and (everything or erased.persons):
        event = pipeline_pb2.FacesErased(
            tenant_id=tenant,
            all=everything,
            faces=[
                pipeline_pb2.ErasedFace(point_id=p, person_id=q) for p, q in sorted(erased.persons.items())
            ],
        )
        await deps.output.publish(bus.SUBJECT_FACES_ERASED, event.SerializeToString())
    if deps.images is not None:
        if everything:
            await deps.images.forget_tenant(tenant)
        for sha in erased.images:
            await deps.images.forget(tenant, sha)
    if deps.face_hashes is not None:
        if everything:
            await deps.face_hashes.forget_tenant(tenant)
        for phash in erased.face_phashes:
            await deps.face_hashes.forget(tenant, phash)


@dataclass
class Erased:
    points: int = 0
    objects: int = 0
    images: set[str] = field(default_factory=set)  # shas left without any face in the tenant
    face_phashes: set[str] = field(default_factory=set)
    # Erased faces that were assigned to a person: point id -> person id.
    persons: dict[str, str] = field(default_factory=dict)


def erase_faces(
    stores: Sequence[VectorStore],
    objects: ObjectStore | None,
    tenant: str,
    filters: dict[str, str | int] | None,
) -> Erased:
    """Deletes the selected points from every collection (each model's), then their stored
    objects; ``filters`` None erases the tenant. A face in two collections counts once."""
    payloads = [p for store in stores for p in store.delete(tenant, filters)]
    faces = {(p.get("image_sha256"), p.get("face_index")) for p in payloads}
    erased = Erased(points=len(faces))
    erased.face_phashes = {p["face_phash"] for p in payloads if p.get("face_phash")}
    erased.persons = {
        point_id(tenant, str(p.get("image_sha256", "")), int(p.get("face_index", 0))): str(p["person_id"])
        for p in payloads
        if p.get("person_id")
    }
    if objects is None:
        return erased
    prefix = f"{tenant}/"
    if filters is None:
        erased.objects = sum(objects.delete_prefix(bucket, prefix) for bucket in BUCKETS)
        return erased
    for p in payloads:
        crop_key = p.get("crop_key") or ""
        erased.objects += _delete(objects, p.get("crop_bucket") or FACE_CROPS_BUCKET, crop_key, prefix)
        if crop_key:
            sidecar = str(PurePosixPath(crop_key).with_suffix(".json"))
            erased.objects += _delete(objects, p.get("crop_bucket") or FACE_CROPS_BUCKET, sidecar, prefix)
        erased.objects += _delete(
            objects, p.get("thumb_bucket") or FACE_THUMBS_BUCKET, p.get("thumb_key"), prefix
        )
    shas = {p.get("image_sha256") for p in payloads} | {filters.get("image_sha256")}
    for sha in shas:
        if not sha or not SHA256_RE.match(sha):
            continue
        if any(store.scroll(tenant, {"image_sha256": sha}, limit=1) for store in stores):
            continue
        # Nothing of this image is left in the tenant: its raw image and any stray crops go too.
        erased.objects += objects.delete_prefix(RAW_IMAGES_BUCKET, f"{prefix}{sha}.")
        erased.objects += objects.delete_prefix(FACE_CROPS_BUCKET, f"{prefix}{sha}/")
        erased.objects += objects.delete_prefix(FACE_THUMBS_BUCKET, f"{prefix}{sha}/")
        erased.objects += _delete(objects, FACE_THUMBS_BUCKET, image_thumb_key(tenant, sha), prefix)
        erased.images.add(sha)
    return erased


def erase_matching(
    store: VectorStore,
    stores: Sequence[VectorStore],
    objects: ObjectStore | None,
    tenant: str,
    vectors: Sequence[np.ndarray],
    threshold: float,
    page: int = 1000,
) -> Erased:
    """Erases every face of the tenant at or above ``threshold`` similarity to any of
    ``vectors`` (an opted-out person) in ``store``, the collection of the model that made
    ``vectors``, from every collection in ``stores``, with its stored objects."""
    total = Erased()
    for vector in vectors:
        while True:
            hits = store.search(vector, tenant, page, threshold)
            for hit in hits:
                selector = {
                    "image_sha256": str(hit.payload.get("image_sha256", "")),
                    "face_index": int(hit.payload.get("face_index", 0)),
                }
                erased = erase_faces(stores, objects, tenant, selector)
                total.points += erased.points
                total.objects += erased.objects
                total.images |= erased.images
                total.face_phashes |= erased.face_phashes
                total.persons.update(erased.persons)
            if len(hits) < page:
                break
    return total


def _delete(objects: ObjectStore, bucket: str, key: str | None, prefix: str) -> int:
    # Only the tenant's own keys: a payload must never lead erasure into another tenant's objects.
    if not key or not key.startswith(prefix):
        return 0
    try:
        return int(objects.delete(bucket, key))
    except ValueError as exc:  # an invalid bucket or key in a payload: nothing stored there
        log.warning("skipping object", extra={"bucket": bucket, "key": key, "error": str(exc)})
        return 0


def counters(deps: IndexerDeps) -> dict[str, int]:
    """Integer counters of the stage worker and the writer, for /stats and GetStats."""
    out: dict[str, int] = {}
    if deps.output.stats is not None:
        out.update({k: v for k, v in deps.output.stats.snapshot().items() if isinstance(v, int)})
    out.update(deps.writer.counters)
    return out


def stats(deps: IndexerDeps) -> dict[str, Any]:
    return {
        **deps.writer.counters,
        "points": deps.writer.points,
        "dim": deps.dim,
        "model": deps.model,
        "vector_store": deps.store.describe(),
        "collection": deps.collections.active_name if deps.collections else "",
    }


STAGE: Stage[IndexerDeps] = Stage(bus.STAGES["indexer"], pipeline_pb2.EmbeddedImage, handle, on_dead=on_dead)
