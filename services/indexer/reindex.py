"""Moving a tenant to the active model: its faces are embedded again from their stored
aligned crops (face-crops/<tenant>/<sha>/<index>.jpg) into the active model's
collection with the same point ids and payloads, and only then is its search switched
over. Faces already in the active collection are skipped, so a run that stopped
resumes where it was. A crop stored at another side than the recognizer's input is
re-aligned to it (facepipe.models.align.realign_crop).

Search asks :meth:`Reindexer.search_problem` first: a tenant whose faces are in another
model's collection, or whose reindex has not finished, is told so instead of getting
an empty answer from a collection that does not hold its faces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from facepipe.faces import FaceEmbedder
from facepipe.models.align import realign_crop
from facepipe.storage import FACE_CROPS_BUCKET, FacePoint, ObjectNotFound, ObjectStore, StoredPoint
from facepipe.storage.vectors.collections import DONE, RUNNING, VectorCollections

log = logging.getLogger("facepipe.indexer")

# Faces embedded and written per step.
PAGE = 64
# A tenant's points read from the old collection at most.
MAX_POINTS = 10_000_000

FAILED = "failed"


class ReindexRefused(ValueError):
    """The request cannot be served as given (the message says why)."""


@dataclass
class ReindexJob:
    tenant: str
    source: str
    target: str
    model: str
    drop_old: bool = False
    state: str = RUNNING
    total: int = 0
    reindexed: int = 0
    skipped: int = 0
    missing: int = 0
    realigned: int = 0
    dropped: int = 0
    error: str = ""
    task: asyncio.Task | None = field(default=None, repr=False)


class Reindexer:
    """The reindex jobs of one indexer and the per-tenant check of search."""

    def __init__(
        self,
        collections: VectorCollections,
        objects: ObjectStore,
        embedder: FaceEmbedder,
        write,
    ) -> None:
        self.collections = collections
        self.objects = objects
        self.embedder = embedder
        self.write = write  # async (points) -> None: the indexer's writer into the active collection
        self.jobs: dict[str, ReindexJob] = {}
        # Held while a page of a tenant is moved and while its faces are erased, so that an
        # erased face is never written back by a reindex running beside the erasure.
        self._locks: dict[str, asyncio.Lock] = {}
        # Tenants known to have every face in the active collection. Nothing writes to
        # another collection, so a tenant never leaves this set while the process runs.
        self._current: set[str] = set()

    # --- search's check ---

    def search_problem(self, tenant: str) -> str | None:
        """Why the tenant cannot be searched in the active collection yet, or None."""
        if tenant in self._current:
            return None
        mark = self.collections.mark_of(tenant, self.collections.active_name)
        command = f"facepipe reindex --tenant {tenant}"
        if mark is not None and mark.state == RUNNING:
            job = self.jobs.get(tenant)
            done = ""
            if job is not None and job.state == RUNNING:
                done = f" ({job.reindexed + job.skipped + job.missing} of {job.total} faces done)"
            elif job is None or job.state == FAILED:
                done = " (it stopped before the end: run it again to resume it)"
            return (
                f"tenant {tenant} is being moved from collection {mark.source} to the active "
                f"model's collection{done}; its search resumes once `{command}` has finished"
            )
        if mark is not None and mark.state == DONE:
            self._current.add(tenant)
            return None
        elsewhere = self.sources(tenant)
        if not elsewhere:
            self._current.add(tenant)
            return None
        listed = ", ".join(f"{name} ({n} face(s))" for name, n in elsewhere)
        return (
            f"tenant {tenant} has faces indexed with another model, in collection {listed}, "
            f"which the active model ({self.embedder.model_name}) cannot search: "
            f"run `{command}` to embed them again with it"
        )

    def sources(self, tenant: str) -> list[tuple[str, int]]:
        """The other collections holding faces of the tenant, with their counts."""
        found = []
        for name in self.collections.others():
            n = self.collections.store(name).count(tenant)
            if n:
                found.append((name, n))
        return found

    def tenant_lock(self, tenant: str) -> asyncio.Lock:
        return self._locks.setdefault(tenant, asyncio.Lock())

    # --- jobs ---

    async def start(self, tenant: str, source: str, drop_old: bool) -> ReindexJob:
        """The tenant's running job, or a new one (raises ReindexRefused)."""
        job = self.jobs.get(tenant)
        if job is not None and job.state == RUNNING:
            return job
        target = self.collections.active_name
        if source:
            if source == target:
                raise ReindexRefused(f"collection {source} is the active model's own: nothing to move")
            others = await asyncio.to_thread(self.collections.others)
            if source not in others:
                known = ", ".join(others) or "none"
                raise ReindexRefused(f"no face collection {source}; the others are: {known}")
        else:
            elsewhere = await asyncio.to_thread(self.sources, tenant)
            if len(elsewhere) > 1:
                listed = ", ".join(f"{name} ({n} face(s))" for name, n in elsewhere)
                raise ReindexRefused(
                    f"tenant {tenant} has faces in several other collections: {listed}; "
                    "choose one with from_collection (--from)"
                )
            if not elsewhere:
                # Nothing elsewhere: the tenant is already wholly in the active collection.
                self._current.add(tenant)
                return ReindexJob(tenant, "", target, self.embedder.model_name, drop_old, state=DONE)
            source = elsewhere[0][0]
        job = ReindexJob(tenant, source, target, self.embedder.model_name, drop_old)
        self.jobs[tenant] = job
        self._current.discard(tenant)
        job.task = asyncio.create_task(self._run(job), name=f"reindex-{tenant}")
        return job

    async def _run(self, job: ReindexJob) -> None:
        started = time.perf_counter()
        try:
            await self._move(job)
        except Exception as exc:  # noqa: BLE001 - the job reports it; its mark keeps search off
            job.state, job.error = FAILED, str(exc) or type(exc).__name__
            log.exception("reindex failed", extra={"tenant_id": job.tenant, "from": job.source})
            return
        log.info(
            "tenant reindexed",
            extra={
                "tenant_id": job.tenant,
                "from": job.source,
                "to": job.target,
                "faces": job.total,
                "reindexed": job.reindexed,
                "skipped": job.skipped,
                "missing": job.missing,
                "dropped": job.dropped,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )

    async def _move(self, job: ReindexJob) -> None:
        collections = self.collections
        # Search stays off the tenant from here until every face is in the target.
        await asyncio.to_thread(collections.mark, job.tenant, job.target, job.source, RUNNING)
        source = await asyncio.to_thread(collections.store, job.source)
        stored = await asyncio.to_thread(source.scroll, job.tenant, None, MAX_POINTS)
        job.total = len(stored)
        for start in range(0, len(stored), PAGE):
            async with self.tenant_lock(job.tenant):
                await self._move_page(job, stored[start : start + PAGE])
        await asyncio.to_thread(collections.mark, job.tenant, job.target, job.source, DONE)
        self._current.add(job.tenant)
        if job.drop_old:
            job.dropped = len(await asyncio.to_thread(source.delete, job.tenant, None))
            # Deleted vectors leave the segment files at once, as with erasure.
            await asyncio.to_thread(source.optimize)
        job.state = DONE

    async def _move_page(self, job: ReindexJob, page: list[StoredPoint]) -> None:
        active = self.collections.active
        present = await asyncio.to_thread(active.existing, [p.id for p in page])
        todo = [p for p in page if p.id not in present]
        job.skipped += len(page) - len(todo)
        if not todo:
            return
        loaded = await asyncio.to_thread(self._crops, job, todo)
        if not loaded:
            return
        vectors = await self.embedder.embed_crops([crop for _, crop in loaded])
        now_ms = int(time.time() * 1000)
        points = [
            FacePoint(
                id=p.id,
                vector=vector,
                payload={
                    **p.payload,
                    "model": self.embedder.model_name,
                    "dim": self.embedder.dim,
                    "reindexed_at": now_ms,
                },
            )
            for (p, _), vector in zip(loaded, vectors, strict=True)
        ]
        await self.write(points)
        job.reindexed += len(points)

    def _crops(self, job: ReindexJob, points: list[StoredPoint]) -> list[tuple[StoredPoint, np.ndarray]]:
        """Each point's stored aligned crop at the recognizer's input side; a gone or
        unreadable crop is counted missing."""
        size = self.embedder.size
        prefix = f"{job.tenant}/"
        out = []
        for p in points:
            key = str(p.payload.get("crop_key") or "")
            bucket = str(p.payload.get("crop_bucket") or FACE_CROPS_BUCKET)
            crop = None
            # Only the tenant's own crops: a payload must never lead to another tenant's objects.
            if key.startswith(prefix):
                try:
                    data = self.objects.get(bucket, key)
                    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                except (ObjectNotFound, ValueError):
                    crop = None
            if crop is None or crop.ndim != 3 or crop.shape[0] != crop.shape[1]:
                job.missing += 1
                log.warning("no stored crop to reindex", extra={"tenant_id": job.tenant, "key": key})
                continue
            if crop.shape[0] != size:
                crop = realign_crop(crop, size)
                job.realigned += 1
            out.append((p, crop))
        return out

    async def close(self) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
