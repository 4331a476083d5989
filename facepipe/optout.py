"""Opt-outs: people who asked not to be indexed, per tenant.

An opt-out holds the embeddings of the person's faces (from the photos given to
``facepipe optout add``), never their photos. It lives in the NATS KV bucket
``facepipe-optout`` (key ``<tenant>.<optout id>``), not in the search collection: the
embedder, which must drop every later face of the person, has NATS but not the vector
store (Qdrant Edge belongs to the indexer process alone); every embedder replica
watches the bucket, so a new opt-out takes effect at once; and a search never returns
an opted-out person, since their embeddings are not among the searchable points.

A face matches an opt-out when its cosine similarity to one of the person's
embeddings is at or above :func:`min_score` (``FACEPIPE_OPTOUT_MIN_SCORE``, else the
model pack's calibrated ``search_min_score``), the same bar a search uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from facepipe import bus
from facepipe.bus.kvwatch import mirror_kv, scan_kv
from facepipe.config import Settings

log = logging.getLogger("facepipe.optout")


def min_score(settings: Settings) -> float | None:
    """The similarity at or above which a face is the opted-out person; None when neither
    the setting nor the model pack gives one."""
    from facepipe.models.registry import pack_thresholds

    if settings.privacy.optout_min_score > 0:
        return settings.privacy.optout_min_score
    return pack_thresholds(settings.resolved_models_dir).get("search_min_score")


def new_id() -> str:
    return secrets.token_hex(8)


@dataclass
class OptOut:
    optout_id: str
    tenant: str
    vectors: list[list[float]]  # L2-normalised embeddings of the person's faces
    model: str
    note: str = ""
    key_id: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return f"{self.tenant}.{self.optout_id}"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> OptOut:
        doc = json.loads(data)
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


class OptOutRegistry:
    """The opt-outs of every tenant. Writers call add/remove/list; the embedder also
    watches the bucket and asks :meth:`match` for every face."""

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self.kv = kv
        self.js = js
        self.entries: dict[str, OptOut] = {}  # by KV key
        # tenant -> model -> (embeddings, opt-out id of each): only embeddings of the same
        # model compare, and two models' may differ in size.
        self._by_tenant: dict[str, dict[str, tuple[np.ndarray, list[str]]]] = {}
        self._task: asyncio.Task | None = None
        self._loaded = asyncio.Event()

    @classmethod
    async def open(cls, js: JetStreamContext) -> OptOutRegistry:
        return cls(await bus.ensure_optout_kv(js), js)

    # -- management ----------------------------------------------------------------
    async def add(self, entry: OptOut) -> None:
        await self.kv.put(entry.key, entry.to_bytes())
        self._set(entry.key, entry)

    async def remove(self, tenant: str, optout_id: str) -> bool:
        key = f"{tenant}.{optout_id}"
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return False
        if not entry.value:
            return False
        await self.kv.purge(key)
        self._set(key, None)
        return True

    async def list(self, tenant: str) -> list[OptOut]:
        found = await scan_kv(self.js, self.kv, bus.OPTOUT_KV, f"{tenant}.*")
        return sorted((OptOut.from_bytes(v) for v in found.values()), key=lambda e: e.created_at)

    # -- matching ------------------------------------------------------------------
    def match(self, tenant: str, vector: np.ndarray, threshold: float, model: str) -> str | None:
        """The id of the tenant's opt-out that ``vector`` (L2-normalised) matches, or None."""
        held = self._by_tenant.get(tenant) or {}
        query = np.asarray(vector, dtype=np.float32)
        found, best_score = None, threshold
        for made_by in {model, ""}:
            if made_by not in held:
                continue
            matrix, ids = held[made_by]
            if matrix.shape[1] != query.size:
                continue
            scores = matrix @ query
            best = int(np.argmax(scores))
            if scores[best] >= best_score:
                found, best_score = ids[best], float(scores[best])
        return found

    def _set(self, key: str, entry: OptOut | None) -> None:
        self.entries.pop(key, None)
        if entry is not None:
            self.entries[key] = entry
        tenant = key.split(".", 1)[0]  # tenant names hold no dots
        by_model: dict[str, tuple[list[list[float]], list[str]]] = {}
        for e in self.entries.values():
            if e.tenant == tenant:
                rows, ids = by_model.setdefault(e.model, ([], []))
                for v in e.vectors:
                    rows.append(v)
                    ids.append(e.optout_id)
        if by_model:
            self._by_tenant[tenant] = {
                model: (np.asarray(rows, dtype=np.float32), ids) for model, (rows, ids) in by_model.items()
            }
        else:
            self._by_tenant.pop(tenant, None)

    async def start_watch(self, load_seconds: float = 10.0) -> None:
        """Loads every opt-out and follows changes until :meth:`stop`."""
        self._task = asyncio.create_task(self._watch())
        await asyncio.wait_for(self._loaded.wait(), load_seconds)

    async def _watch(self) -> None:
        await mirror_kv(self.kv, self._apply, self._loaded, "opt-out")

    def _apply(self, key: str, value: bytes | None) -> None:
        self._set(key, None if value is None else OptOut.from_bytes(value))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
