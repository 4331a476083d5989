"""Person records, user decisions and the per-tenant lock, in the NATS KV bucket
``facepipe-persons``.

Keys: ``<tenant>.person.<person id>`` (a :class:`PersonRecord` as JSON),
``<tenant>.lock`` (who holds the tenant's lock, until when) and ``<tenant>.recluster``
(the state of the tenant's latest recluster). Which person a face belongs to lives on
the face's point (payload ``person_id``, ``person_pinned``); a record holds what the
faces cannot: the name, hidden flag, count, best face and the user's splits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from facepipe import bus
from facepipe.bus.kvwatch import scan_kv

# A lock not renewed for this long is taken over (its holder died).
LOCK_TTL_S = 30.0
LOCK_POLL_S = 0.02


def new_person_id() -> str:
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class BestFace:
    """The face shown for a person: the highest quality score among its faces."""

    point_id: str
    quality: float
    image_sha256: str = ""
    face_index: int = 0
    url: str = ""
    thumb_bucket: str = ""
    thumb_key: str = ""

    @classmethod
    def from_payload(cls, point_id: str, payload: dict[str, Any]) -> BestFace:
        return cls(
            point_id=point_id,
            quality=float(payload.get("quality", 0.0)),
            image_sha256=str(payload.get("image_sha256", "")),
            face_index=int(payload.get("face_index", 0)),
            url=str(payload.get("url", "")),
            thumb_bucket=str(payload.get("thumb_bucket", "")),
            thumb_key=str(payload.get("thumb_key", "")),
        )


@dataclass
class PersonRecord:
    person_id: str
    tenant: str
    name: str = ""
    hidden: bool = False
    face_count: int = 0
    best: BestFace | None = None
    created_at_ms: int = field(default_factory=now_ms)
    updated_at_ms: int = field(default_factory=now_ms)
    # Persons the user split this one from: a recluster never joins them again.
    apart_from: list[str] = field(default_factory=list)
    # Faces the user took out of this person: a recluster never puts them back.
    rejected: list[str] = field(default_factory=list)
    # The sum of its faces' unit vectors, for exact average linkage; None when unknown.
    vector_sum: list[float] | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PersonRecord:
        doc = json.loads(data)
        best = doc.pop("best", None)
        record = cls(**doc)
        record.best = BestFace(**best) if best else None
        return record

    def offer(self, face: BestFace) -> bool:
        """Takes ``face`` as the best face when it is better (ties: the smaller point id,
        so the choice does not depend on arrival order). True when it changed."""
        best = self.best
        if best is None or (face.quality, _neg(face.point_id)) > (best.quality, _neg(best.point_id)):
            self.best = face
            return True
        return False


def _neg(point_id: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in point_id)


def person_key(tenant: str, person_id: str) -> str:
    return f"{tenant}.person.{person_id}"


class PersonBook:
    """The person records of every tenant (one KV bucket)."""

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self.kv = kv
        self.js = js

    @classmethod
    async def open(cls, js: JetStreamContext, create: bool = True) -> PersonBook:
        if create:
            return cls(await bus.ensure_persons_kv(js), js)
        return cls(await js.key_value(bus.PERSONS_KV), js)

    async def get(self, tenant: str, person_id: str) -> PersonRecord | None:
        return await self._get(person_key(tenant, person_id))

    async def put(self, record: PersonRecord) -> None:
        record.updated_at_ms = now_ms()
        await self.kv.put(person_key(record.tenant, record.person_id), record.to_bytes())

    async def remove(self, tenant: str, person_id: str) -> None:
        with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
            await self.kv.purge(person_key(tenant, person_id))

    async def list(self, tenant: str) -> list[PersonRecord]:
        """Every record of the tenant, even one being rewritten meanwhile."""
        found = await scan_kv(self.js, self.kv, bus.PERSONS_KV, f"{tenant}.person.*")
        return [PersonRecord.from_bytes(data) for data in found.values()]

    async def _get(self, key: str) -> PersonRecord | None:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return PersonRecord.from_bytes(entry.value) if entry.value else None

    async def names(self, tenant: str, person_ids: set[str]) -> dict[str, str]:
        """The names of these persons (unnamed and unknown ones are left out)."""
        wanted = [p for p in person_ids if p]
        # One round trip's wait for all of them: a search's matches name several persons.
        records = await asyncio.gather(*(self.get(tenant, p) for p in wanted))
        return {p: r.name for p, r in zip(wanted, records, strict=True) if r is not None and r.name}

    # -- the recluster state (any replica answers Recluster with it) ------------------

    async def put_state(self, tenant: str, state: dict[str, Any]) -> None:
        await self.kv.put(f"{tenant}.recluster", json.dumps(state).encode())

    async def get_state(self, tenant: str) -> dict[str, Any] | None:
        try:
            entry = await self.kv.get(f"{tenant}.recluster")
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return json.loads(entry.value) if entry.value else None

    # -- the tenant lock ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def locked(self, tenant: str, timeout_s: float = 120.0) -> AsyncIterator[None]:
        """Holds the tenant's lock across replicas: a KV key created only when absent,
        renewed while held, taken over when its holder stopped renewing it."""
        key = f"{tenant}.lock"
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        revision = await self._acquire(key, holder, timeout_s)
        renewing = asyncio.create_task(self._renew(key, holder, revision))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            with contextlib.suppress(Exception):
                current = await self.kv.get(key)
                if current.value and json.loads(current.value).get("holder") == holder:
                    await self.kv.delete(key, last=current.revision)

    async def _acquire(self, key: str, holder: str, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        delay = LOCK_POLL_S
        while True:
            value = json.dumps({"holder": holder, "until": time.time() + LOCK_TTL_S}).encode()
            try:
                return await self.kv.create(key, value)
            except KeyWrongLastSequenceError:
                pass
            # Held, or deleted (a delete leaves a marker that create() still refuses).
            try:
                entry = await self.kv.get(key)
                held = entry.value and json.loads(entry.value).get("until", 0) > time.time()
                last = entry.revision
            except (KeyNotFoundError, KeyDeletedError) as exc:
                held, last = False, getattr(exc, "entry", None) and exc.entry.revision
            if not held and last:
                with contextlib.suppress(KeyWrongLastSequenceError):
                    return await self.kv.update(key, value, last=last)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the persons lock {key} stayed held for {timeout_s:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def _renew(self, key: str, holder: str, revision: int) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_S / 3)
            value = json.dumps({"holder": holder, "until": time.time() + LOCK_TTL_S}).encode()
            revision = await self.kv.update(key, value, last=revision)
