"""Rebuilding a tenant's persons from its k-nearest-neighbour graph, in the background.

The graph comes from the indexer (FaceGraph), streamed row by row into arrays of
O(n*k). The user's decisions become :class:`facepipe.persons.clustering.Constraints`:
the pinned faces of a person stay together, persons split apart stay apart, and a face
taken out of a person never goes back. :func:`~facepipe.persons.clustering.carry_over`
keeps the person ids, so names, hidden flags and decisions survive.

Ingest goes on meanwhile: the graph is a snapshot; the result is applied under the
tenant's lock against the faces as they are then. Faces pinned by hand meanwhile keep
their person; faces indexed meanwhile keep theirs when it still exists, else they are
assigned again incrementally.

Settling: one face at a time, an early face of one person can join a look-alike's small
person and pull later faces along, depending on the order photos arrived in. So once a
tenant has had no new faces for ``settle_s`` seconds, and has grown by ``settle_growth``
since its last recluster, it is reclustered on its own: the order-free partition, with
every user decision kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from facepipe.persons.clustering import Constraints, KnnGraph, carry_over, recluster
from facepipe.persons.records import PersonRecord

from .people import NewFace, People, best_of

log = logging.getLogger("facepipe.persons")

RUNNING, DONE, FAILED = "running", "done", "failed"
# A state another replica wrote as running is trusted this long without an update.
STALE_RUNNING_S = 600.0


@dataclass
class ReclusterJob:
    tenant: str
    state: str = RUNNING
    faces: int = 0
    persons_before: int = 0
    persons_after: int = 0
    faces_moved: int = 0
    seconds: float = 0.0
    error: str = ""
    started_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    updated_at: float = field(default_factory=time.time)
    automatic: bool = False  # started by settling, not by a caller

    def doc(self) -> dict:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict) -> ReclusterJob:
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


@dataclass
class Unsettled:
    """Faces a tenant was given since its last recluster, as this replica saw them."""

    faces: int = 0
    last_at: float = 0.0  # time.monotonic() of the last
    # Too few after a finished recluster: not looked at again until more faces come.
    parked: bool = False


def settle_due(unsettled: Unsettled, latest: ReclusterJob | None, growth: float) -> bool:
    """Whether a tenant whose new faces have settled is reclustered now: never while a
    recluster runs (it may miss them: decided once it ends); always when none succeeded
    yet; else once the new faces are ``growth`` of those the last one grouped."""
    if latest is None or latest.state == FAILED:
        return True
    if latest.state == RUNNING:
        return False
    return unsettled.faces >= growth * latest.faces


class Reclusterer:
    """The recluster jobs of one replica; their states are shared through the records' KV."""

    def __init__(
        self, people: People, graph_k: int, settle_s: float = 0.0, settle_growth: float = 0.0
    ) -> None:
        self.people = people
        self.graph_k = graph_k
        self.settle_s = settle_s
        self.settle_growth = settle_growth
        self.jobs: dict[str, ReclusterJob] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.unsettled: dict[str, Unsettled] = {}
        self._settler: asyncio.Task | None = None

    async def start(self, tenant: str, automatic: bool = False) -> ReclusterJob:
        """The tenant's running job (this replica's or another's), else a new one."""
        job = self.jobs.get(tenant)
        if job is not None and job.state == RUNNING:
            return job
        shared = await self.latest(tenant)
        if shared is not None and shared.state == RUNNING:
            return shared
        job = ReclusterJob(tenant, automatic=automatic)
        self.jobs[tenant] = job
        await self.people.book.put_state(tenant, job.doc())
        self.tasks[tenant] = asyncio.create_task(self._run(job))
        return job

    async def latest(self, tenant: str) -> ReclusterJob | None:
        """The tenant's latest job, from any replica; one whose replica stopped updating a
        running state is reported failed. None when the tenant was never reclustered."""
        job = self.jobs.get(tenant)
        if job is not None and job.state == RUNNING:
            return job
        shared = await self.people.book.get_state(tenant)
        if not shared:
            return None
        latest = ReclusterJob.from_doc(shared)
        if latest.state == RUNNING and time.time() - latest.updated_at >= STALE_RUNNING_S:
            latest.state, latest.error = FAILED, "the replica running it stopped"
        return latest

    # -- settling ------------------------------------------------------------------------

    def assigned(self, tenant: str, faces: int) -> None:
        """Notes faces just given to the tenant's persons; see the module's "Settling"."""
        if self.settle_s <= 0 or faces <= 0:
            return
        entry = self.unsettled.setdefault(tenant, Unsettled())
        entry.faces += faces
        entry.last_at = time.monotonic()
        entry.parked = False
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle())

    async def _settle(self) -> None:
        while self.unsettled:
            await asyncio.sleep(min(1.0, self.settle_s / 4))
            now = time.monotonic()
            for tenant, entry in list(self.unsettled.items()):
                if entry.parked or now - entry.last_at < self.settle_s:
                    continue
                try:
                    latest = await self.latest(tenant)
                    if not settle_due(entry, latest, self.settle_growth):
                        # Kept: small additions add up. A running job is looked at until it
                        # ends; after a finished one only more faces can change the answer.
                        entry.parked = latest is not None and latest.state == DONE
                        continue
                    del self.unsettled[tenant]
                    await self.start(tenant, automatic=True)
                    log.info("settling persons", extra={"tenant_id": tenant, "new_faces": entry.faces})
                except Exception as exc:  # noqa: BLE001 - NATS away: tried again on the next pass
                    log.warning("cannot settle persons", extra={"tenant_id": tenant, "error": str(exc)})

    async def wait(self, tenant: str, job: ReclusterJob) -> ReclusterJob:
        """Waits for the job to end (another replica's through its shared state)."""
        task = self.tasks.get(tenant)
        if task is not None and self.jobs.get(tenant) is job:
            await asyncio.shield(task)
            return job
        while True:
            await asyncio.sleep(0.5)
            latest = await self.latest(tenant)  # a stopped replica's job reads as failed
            if latest is None or latest.state != RUNNING:
                return latest or job

    async def close(self) -> None:
        tasks = [*self.tasks.values(), *([self._settler] if self._settler is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: ReclusterJob) -> None:
        start = time.perf_counter()
        try:
            await self._recluster(job)
            job.state = DONE
        except asyncio.CancelledError:
            job.state, job.error = FAILED, "the service stopped"
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the caller as the job's error
            log.exception("recluster failed", extra={"tenant_id": job.tenant})
            job.state, job.error = FAILED, str(exc) or type(exc).__name__
        finally:
            job.seconds = round(time.perf_counter() - start, 3)
            job.updated_at = time.time()
            try:
                await asyncio.shield(self.people.book.put_state(job.tenant, job.doc()))
            except Exception as exc:  # noqa: BLE001 - this replica still answers with it
                log.warning("cannot share the recluster state", extra={"error": str(exc)})
        log.info("recluster ended", extra=job.doc())

    async def _recluster(self, job: ReclusterJob) -> None:
        tenant, people = job.tenant, self.people
        ids: list[str] = []
        rows: list[tuple[list[int], list[float]]] = []
        vectors: list[list[float]] = []
        snapshot: dict[str, str] = {}
        pinned: set[str] = set()
        async for row in people.faces.graph(tenant, self.graph_k):
            ids.append(row.point_id)
            rows.append((list(row.neighbors), list(row.similarities)))
            vectors.append(list(row.vector))
            if row.person_id:
                snapshot[row.point_id] = row.person_id
            if row.pinned and row.person_id:
                pinned.add(row.point_id)
        job.faces = len(ids)
        k = max((len(n) for n, _ in rows), default=0) or 1
        neighbours = np.full((len(ids), k), -1, dtype=np.int32)
        similarities = np.zeros((len(ids), k), dtype=np.float32)
        for i, (n, s) in enumerate(rows):
            neighbours[i, : len(n)] = n
            similarities[i, : len(s)] = s
        del rows
        dims = {len(v) for v in vectors}
        # With every face's vector the linkage is exact; without, it works from the graph alone.
        matrix = np.asarray(vectors, dtype=np.float32) if len(dims) == 1 and 0 not in dims else None
        del vectors
        graph = KnnGraph(ids, neighbours, similarities, vectors=matrix)
        records = {r.person_id: r for r in await people.book.list(tenant)}
        job.persons_before = len(records)
        constraints = _constraints(snapshot, pinned, records)
        labels = await asyncio.to_thread(recluster, graph, people.cut_distance, constraints)
        keep = [p for p, r in records.items() if r.name or r.hidden or r.apart_from or r.rejected]
        keep += sorted({snapshot[f] for f in pinned})
        mapping = carry_over(ids, labels, snapshot, keep=keep)
        for face in pinned:  # a hand move is never undone
            mapping[face] = snapshot[face]
        async with people.book.locked(tenant):
            await self._apply(job, mapping, matrix, {face: i for i, face in enumerate(ids)})

    async def _apply(
        self,
        job: ReclusterJob,
        mapping: dict[str, str],
        matrix: np.ndarray | None,
        vector_of: dict[str, int],
    ) -> None:
        tenant, people = job.tenant, self.people
        # Read again under the lock: persons started, renamed or hidden while the graph was
        # clustered are kept as they are now, and one left without faces is removed.
        records = {r.person_id: r for r in await people.book.list(tenant)}
        current, pinned_now = await people.faces.listing(tenant)
        changes: list[tuple[str, str, bool]] = []
        final: dict[str, str] = {}
        stray: list[NewFace] = []
        new_persons = set(mapping.values())
        for match in current:
            face, now = match.point_id, match.person_id
            pinned = face in pinned_now and bool(now)
            if pinned:
                target = now  # by hand: kept, even when pinned while the graph was built
            elif face in mapping:
                target = mapping[face]
            elif now and now in new_persons:
                target = now  # indexed meanwhile into a person that still exists
            elif now:
                # Indexed meanwhile into a person the recluster dissolved: assigned again below.
                stray.append(NewFace(face, float(match.quality)))
                changes.append((face, "", False))
                continue
            else:
                target = ""
            if target != now:
                changes.append((face, target, pinned))
            if target:
                final[face] = target
        job.faces_moved = sum(1 for _, target, _ in changes if target)
        await people.faces.set_persons(tenant, changes)
        by_person: dict[str, list] = {}
        for match in current:
            person = final.get(match.point_id)
            if person:
                by_person.setdefault(person, []).append(match)
        for person, matches in by_person.items():
            record = records.get(person) or PersonRecord(person, tenant)
            record.apart_from = [p for p in record.apart_from if p in by_person]
            record.face_count = len(matches)
            record.best = None
            for match in matches:
                record.offer(best_of(match))
            rows = [vector_of.get(m.point_id) for m in matches]
            # Exact only when every face's vector came with the graph (not one indexed meanwhile).
            record.vector_sum = (
                matrix[rows].astype(np.float64).sum(axis=0).tolist()
                if matrix is not None and None not in rows
                else None
            )
            await people.book.put(record)
        for person in records:
            if person not in by_person:
                await people.book.remove(tenant, person)
        if stray:
            await people.assign_locked(tenant, stray)
        job.persons_after = len(await people.book.list(tenant))


def _constraints(snapshot: dict[str, str], pinned: set[str], records: dict[str, PersonRecord]) -> Constraints:
    """The user's decisions over the faces of the graph."""
    faces_of: dict[str, list[str]] = {}
    for face, person in snapshot.items():
        faces_of.setdefault(person, []).append(face)
    pinned_of: dict[str, list[str]] = {}
    for face in sorted(pinned):
        pinned_of.setdefault(snapshot[face], []).append(face)
    constraints = Constraints()
    constraints.together = [faces for faces in pinned_of.values() if len(faces) > 1]
    for person, record in sorted(records.items()):
        mine = pinned_of.get(person) or faces_of.get(person) or []
        for other in record.apart_from:
            theirs = pinned_of.get(other) or faces_of.get(other) or []
            if person < other and mine and theirs:
                constraints.apart.append((mine, theirs))
        rejected = [f for f in record.rejected if f not in snapshot or snapshot[f] != person]
        if rejected and faces_of.get(person):
            constraints.apart.append((rejected, faces_of[person]))
    return constraints
