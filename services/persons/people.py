"""What the persons service does to a tenant's persons, always under the tenant's lock
(facepipe.persons.records), so replicas never see or make half a change.

- A new face joins the person that :func:`facepipe.persons.clustering.choose_person`
  picks among its nearest faces (from the indexer), or starts a new person.
- Erasure recounts the persons that lost faces; a person left without faces goes.
- The user's operations (rename, merge, split, hide, unassign) change the faces'
  ``person_id``/``person_pinned`` through the indexer and the records here. Faces moved
  by hand are pinned; splits and unassigned faces are remembered in the records, so
  that a recluster keeps them as constraints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from facepipe.persons.clustering import Neighbour, choose_person
from facepipe.persons.records import BestFace, PersonBook, PersonRecord, new_person_id
from facepipe.v1 import indexer_pb2

from .faces import IndexerFaces

log = logging.getLogger("facepipe.persons")


class NotFound(LookupError):
    """The person or face is not the tenant's (the message says which)."""


class Refused(ValueError):
    """The operation cannot be done as asked (the message says why)."""


# A face to assign, as the indexer's event describes it: the fields a person's best face keeps.
NewFace = BestFace


def _linkage(a: PersonRecord | None, b: PersonRecord | None) -> float | None:
    """The exact average similarity over every pair of faces of two persons, or None."""
    if a is None or b is None or not a.vector_sum or not b.vector_sum or not a.face_count or not b.face_count:
        return None
    if len(a.vector_sum) != len(b.vector_sum):
        return None
    return float(np.dot(a.vector_sum, b.vector_sum)) / (a.face_count * b.face_count)


def _mergeable(a: PersonRecord | None, b: PersonRecord | None) -> bool:
    """Whether two persons may be joined without the user: no split, hide or removed face
    between them, and not two names."""
    if a is None or b is None:
        return False
    if b.person_id in a.apart_from or a.person_id in b.apart_from:
        return False
    if a.hidden or b.hidden or a.rejected or b.rejected:
        return False
    return not (a.name and b.name)


def best_of(match: indexer_pb2.SearchMatch) -> BestFace:
    return BestFace(
        point_id=match.point_id,
        quality=float(match.quality),
        image_sha256=match.image_sha256,
        face_index=match.face_index,
        url=match.url,
        thumb_bucket=match.thumb.bucket,
        thumb_key=match.thumb.key,
    )


class People:
    """The persons of every tenant: records in ``book``, faces through ``faces``."""

    def __init__(
        self,
        book: PersonBook,
        faces: IndexerFaces,
        cut_distance: float,
        neighbours: int,
        min_similarity: float | None = None,
    ) -> None:
        self.book = book
        self.faces = faces
        self.cut_distance = cut_distance
        self.neighbours = neighbours
        # The pack's same_person_min_score: a person is joined only through a face this close.
        self.min_similarity = min_similarity
        self.counters = {"faces_assigned": 0, "persons_created": 0, "faces_erased": 0}

    # -- incremental assignment ----------------------------------------------------------

    async def assign(self, tenant: str, faces: Sequence[NewFace]) -> dict[str, str]:
        async with self.book.locked(tenant):
            return await self.assign_locked(tenant, faces)

    async def assign_locked(self, tenant: str, faces: Sequence[NewFace]) -> dict[str, str]:
        """Assigns each face that has no person yet; returns face -> person of those assigned.
        The caller holds the tenant's lock."""
        if not faces:
            return {}
        ordered = sorted(faces, key=lambda f: f.point_id)
        found = await self.faces.neighbours(tenant, [f.point_id for f in ordered], self.neighbours)
        records: dict[str, PersonRecord | None] = {}
        chosen: dict[str, str] = {}
        # Persons a new face of a person came close to (within the same-person floor).
        touching: dict[str, set[str]] = {}
        for face, entry in zip(ordered, found, strict=True):
            if not entry.found or entry.person_id:
                continue  # erased meanwhile, or assigned already (a redelivered event)
            neighbours = [
                Neighbour(n.point_id, float(n.score), chosen.get(n.point_id, n.person_id))
                for n in entry.neighbors
            ]
            vector = np.asarray(entry.vector, dtype=np.float64)
            sizes: dict[str, int] = {}
            sums: dict[str, np.ndarray] = {}
            for n in neighbours:
                if n.person_id and n.person_id not in sizes:
                    record = await self._record(tenant, n.person_id, records)
                    sizes[n.person_id] = record.face_count if record is not None else 0
                    if record is not None and record.vector_sum and len(record.vector_sum) == vector.size:
                        sums[n.person_id] = np.asarray(record.vector_sum, dtype=np.float64)
            person = (
                choose_person(
                    neighbours,
                    sizes,
                    self.cut_distance,
                    vector=vector if vector.size else None,
                    person_sums=sums,
                    min_similarity=self.min_similarity,
                )
                or new_person_id()
            )
            chosen[face.point_id] = person
            floor = self.min_similarity if self.min_similarity is not None else -1.0
            touching.setdefault(person, set()).update(
                n.person_id
                for n in neighbours
                if n.person_id and n.person_id != person and n.similarity >= floor
            )
            # Counted at once: the next face of this batch sees the person as it is now.
            record = await self._record(tenant, person, records)
            if record is None:
                record = records[person] = PersonRecord(
                    person, tenant, face_count=0, vector_sum=[0.0] * vector.size
                )
                self.counters["persons_created"] += 1
            record.face_count += 1
            record.offer(face)
            if record.vector_sum is not None and len(record.vector_sum) == vector.size and vector.size:
                record.vector_sum = (np.asarray(record.vector_sum, dtype=np.float64) + vector).tolist()
            else:
                record.vector_sum = None
        if not chosen:
            return chosen
        await self.faces.set_persons(tenant, [(p, q, False) for p, q in chosen.items()])
        for person in set(chosen.values()):
            record = records[person]
            assert record is not None
            await self.book.put(record)
        self.counters["faces_assigned"] += len(chosen)
        merged = await self._merge_close(tenant, touching, records)
        return {face: merged.get(person, person) for face, person in chosen.items()}

    def _close(self, link: float) -> bool:
        """Whether two persons are one: on average as similar as the pack's same-person
        threshold (a pair ``verify`` calls the same person), and within the cut. Stricter
        than the cut alone, which a batch clustering can afford by joining the closest
        pairs first, while joining persons one event at a time cannot."""
        floor = self.min_similarity if self.min_similarity is not None else 1.0 - self.cut_distance
        return link >= floor and 1.0 - link <= self.cut_distance

    async def _merge_close(
        self, tenant: str, touching: dict[str, set[str]], records: dict[str, PersonRecord | None]
    ) -> dict[str, str]:
        """Joins two persons a new face brought close to each other (see :meth:`_close`, on
        their average linkage over every pair of faces, exact from the vector sums), so
        that the persons depend less on the order faces arrived in.
        Persons the user named differently, hid, split or took faces out of are left alone.
        Returns person -> the person it was merged into."""
        pairs: list[tuple[float, str, str]] = []
        for person, others in touching.items():
            for other in others:
                a, b = records.get(person), await self._record(tenant, other, records)
                link = _linkage(a, b)
                if link is not None and self._close(link) and _mergeable(a, b):
                    pairs.append((link, *sorted((person, other))))
        into: dict[str, str] = {}

        def final(p: str) -> str:
            while p in into:
                p = into[p]
            return p

        for _, first, second in sorted(pairs, key=lambda x: (-x[0], x[1], x[2])):
            a, b = records.get(final(first)), records.get(final(second))
            if a is None or b is None or a.person_id == b.person_id:
                continue
            link = _linkage(a, b)  # again: an earlier merge may have changed either
            if link is None or not self._close(link) or not _mergeable(a, b):
                continue
            # The larger (then the named, then the smaller id) stays.
            keep, gone = sorted((a, b), key=lambda r: (-r.face_count, not r.name, r.person_id))
            faces, pinned = await self.faces.listing(tenant, person_id=gone.person_id)
            if pinned:
                continue  # faces placed by hand stay where they were put
            await self.faces.set_persons(tenant, [(m.point_id, keep.person_id, False) for m in faces])
            keep.face_count += gone.face_count
            keep.name = keep.name or gone.name
            if gone.best is not None:
                keep.offer(gone.best)
            assert keep.vector_sum is not None and gone.vector_sum is not None
            keep.vector_sum = (np.asarray(keep.vector_sum) + np.asarray(gone.vector_sum)).tolist()
            await self.book.put(keep)
            await self.book.remove(tenant, gone.person_id)
            records[gone.person_id] = None
            into[gone.person_id] = keep.person_id
            self.counters["persons_merged"] = self.counters.get("persons_merged", 0) + 1
        return {p: final(p) for p in into}

    async def _record(
        self, tenant: str, person_id: str, cache: dict[str, PersonRecord | None]
    ) -> PersonRecord | None:
        if person_id not in cache:
            cache[person_id] = await self.book.get(tenant, person_id)
        return cache[person_id]

    # -- erasure -------------------------------------------------------------------------

    async def erased(self, tenant: str, persons: Iterable[str], everything: bool) -> None:
        async with self.book.locked(tenant):
            if everything:
                for record in await self.book.list(tenant):
                    await self.book.remove(tenant, record.person_id)
                return
            for person in sorted(set(persons)):
                await self.refresh_locked(tenant, person)
                self.counters["faces_erased"] += 1

    async def refresh_locked(
        self, tenant: str, person_id: str, record: PersonRecord | None = None
    ) -> PersonRecord | None:
        """Recounts a person from its faces and picks its best face again; a person
        without faces is removed (None)."""
        record = record or await self.book.get(tenant, person_id)
        faces = await self.faces.faces(tenant, person_id=person_id)
        if not faces:
            await self.book.remove(tenant, person_id)
            return None
        record = record or PersonRecord(person_id, tenant)
        record.face_count = len(faces)
        record.best = None
        for match in faces:
            record.offer(best_of(match))
        record.vector_sum = await self.vector_sum(tenant, [m.point_id for m in faces])
        await self.book.put(record)
        return record

    async def vector_sum(self, tenant: str, point_ids: Sequence[str]) -> list[float] | None:
        """The sum of these faces' unit vectors; None when one of them has none."""
        total: np.ndarray | None = None
        for entry in await self.faces.neighbours(tenant, point_ids, 1):
            if not entry.found or not entry.vector:
                return None
            vector = np.asarray(entry.vector, dtype=np.float64)
            total = vector if total is None else total + vector
        return total.tolist() if total is not None else None

    # -- the user's operations -------------------------------------------------------------

    async def require(self, tenant: str, person_id: str) -> PersonRecord:
        record = await self.book.get(tenant, person_id)
        if record is None:
            raise NotFound(f"tenant {tenant} has no person {person_id}")
        return record

    async def rename(self, tenant: str, person_id: str, name: str) -> PersonRecord:
        async with self.book.locked(tenant):
            record = await self.require(tenant, person_id)
            record.name = name
            await self.book.put(record)
            return record

    async def hide(self, tenant: str, person_id: str, hidden: bool) -> PersonRecord:
        async with self.book.locked(tenant):
            record = await self.require(tenant, person_id)
            record.hidden = hidden
            await self.book.put(record)
            return record

    async def merge(self, tenant: str, into: str, others: Sequence[str]) -> PersonRecord:
        """Every face of ``others`` joins ``into``, pinned, and so do ``into``'s own: the
        merged person stays one through a recluster."""
        others = [p for p in dict.fromkeys(others) if p != into]
        if not others:
            raise Refused("give at least one person other than into_person_id to merge")
        async with self.book.locked(tenant):
            target = await self.require(tenant, into)
            merged = [await self.require(tenant, p) for p in others]
            moved: list[str] = []
            for person in [into, *others]:
                moved += [m.point_id for m in await self.faces.faces(tenant, person_id=person)]
            await self.faces.set_persons(tenant, [(p, into, True) for p in moved])
            gone = set(others)
            for record in merged:
                if not target.name and record.name:
                    target.name = record.name
                target.apart_from = sorted((set(target.apart_from) | set(record.apart_from)) - gone - {into})
                target.rejected = sorted(set(target.rejected) | set(record.rejected))
                await self.book.remove(tenant, record.person_id)
            # Persons split from a merged one are now split from the merged whole.
            for record in await self.book.list(tenant):
                if gone & set(record.apart_from):
                    record.apart_from = sorted((set(record.apart_from) - gone) | {into})
                    await self.book.put(record)
            refreshed = await self.refresh_locked(tenant, into, target)
            return refreshed or target

    async def split(
        self, tenant: str, person_id: str, point_ids: Sequence[str], to_person: str, name: str
    ) -> tuple[PersonRecord | None, PersonRecord]:
        """Moves chosen faces of a person to another person (or a new one), pinned; the
        faces left behind are pinned too, and the two persons are kept apart."""
        if to_person == person_id:
            raise Refused("to_person_id is the person the faces are split from")
        async with self.book.locked(tenant):
            source = await self.require(tenant, person_id)
            target = await self.require(tenant, to_person) if to_person else None
            faces = {m.point_id for m in await self.faces.faces(tenant, person_id=person_id)}
            chosen = list(dict.fromkeys(point_ids))
            strangers = [p for p in chosen if p not in faces]
            if strangers:
                raise NotFound(f"face {strangers[0]} is not a face of person {person_id}")
            if target is None:
                target = PersonRecord(new_person_id(), tenant, name=name)
            staying = sorted(faces - set(chosen))
            await self.faces.set_persons(
                tenant,
                [(p, target.person_id, True) for p in chosen] + [(p, person_id, True) for p in staying],
            )
            source.apart_from = sorted(set(source.apart_from) | {target.person_id})
            target.apart_from = sorted(set(target.apart_from) | {person_id})
            source_after = await self.refresh_locked(tenant, person_id, source)
            target_after = await self.refresh_locked(tenant, target.person_id, target)
            assert target_after is not None  # it has the moved faces
            if source_after is None:
                # Every face moved: the split persons are one again; nothing to keep apart.
                target_after.apart_from = [p for p in target_after.apart_from if p != person_id]
                await self.book.put(target_after)
            return source_after, target_after

    async def unassign(self, tenant: str, point_id: str) -> tuple[str, bool]:
        """Takes a face out of its person; returns (the person, whether it disappeared)."""
        async with self.book.locked(tenant):
            [entry] = await self.faces.neighbours(tenant, [point_id], 1)
            if not entry.found:
                raise NotFound(f"tenant {tenant} has no face {point_id}")
            person = entry.person_id
            if not person:
                return "", False
            await self.faces.set_persons(tenant, [(point_id, "", False)])
            record = await self.book.get(tenant, person)
            if record is not None:
                record.rejected = sorted(set(record.rejected) | {point_id})
            after = await self.refresh_locked(tenant, person, record)
            return person, after is None
