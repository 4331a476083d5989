"""Which collection holds which model's vectors, and where each tenant stands.

Vectors of different recognizers live in different embedding spaces, so they never
share a collection: the active collection is named after the active pack's
recognizer (:func:`active_collection`, the one place that decides it) unless the
operator names one (``FACEPIPE_QDRANT_COLLECTION``). A Qdrant server holds them as
collections, Qdrant Edge as one shard folder each under ``FACEPIPE_VECTOR_DIR``.

:class:`VectorCollections` opens the active collection and, on demand, every other
face collection (erasure reaches all of them; reindexing reads an old one). A small
state collection beside them records the face collections made and, per tenant, a
reindex into a collection: ``running`` keeps search off that tenant until it is
``done``. The state holds collection names and counts only, never faces.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facepipe.storage.vectors.base import (
    DEFAULT_COLLECTION,
    FacePoint,
    VectorStore,
    check_collection,
)

if TYPE_CHECKING:
    from facepipe.config import Settings, VectorStoreSettings

# The collection of a recognizer: faces_<first 16 hex digits of its file's sha256>_<dim>d.
MODEL_COLLECTION_RE = re.compile(r"^faces_[0-9a-f]{16}_[0-9]+d$")
# The recognizer service's gallery of enrolled subjects, kept apart from the faces
# collections: subjects_<first 16 hex digits of the recognizer's sha256>_<dim>d.
SUBJECTS_PREFIX = "subjects_"
SUBJECTS_COLLECTION_RE = re.compile(r"^subjects_[0-9a-f]{16}_[0-9]+d$")
SHA_DIGITS = 16
# Beside the face collections: what was made, and each tenant's reindex state.
STATE_COLLECTION = "facepipe_state"
STATE_DIM = 1
# The state's records of collections are kept under a tenant id no tenant can have
# (tenant ids are letters, digits, '_' and '-').
COLLECTIONS_RECORD_TENANT = "facepipe:collections"
STATE_NAMESPACE = uuid.UUID("0c4a51e6-1f0e-4f5b-8d7e-3a9b2c6d4e11")

RUNNING = "running"
DONE = "done"


def model_collection(recognizer_sha256: str, dim: int) -> str:
    """The collection of the recognizer whose file has this sha256 and makes ``dim``-d vectors."""
    sha = recognizer_sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"recognizer sha256 {recognizer_sha256!r} is not 64 hex digits")
    return f"faces_{sha[:SHA_DIGITS]}_{int(dim)}d"


def subjects_collection(recognizer_sha256: str, dim: int) -> str:
    """The gallery of enrolled subjects for the recognizer with this sha256 and ``dim``-d
    vectors: its own collection, never one search or erasure of indexed faces reads."""
    return SUBJECTS_PREFIX + model_collection(recognizer_sha256, dim).removeprefix("faces_")


@dataclass(frozen=True)
class Recognizer:
    """What names a model's collection: the recognizer file and its vectors' size."""

    file: str
    sha256: str
    dim: int

    @property
    def collection(self) -> str:
        return model_collection(self.sha256, self.dim)

    @property
    def subjects_collection(self) -> str:
        return subjects_collection(self.sha256, self.dim)


def active_recognizer(settings: Settings) -> Recognizer:
    """The active pack's recognizer: its sha256 from pack.json (else hashed), its
    output size from the graph."""
    import json

    import onnxruntime as ort

    from facepipe.models.registry import MANIFEST, load_pack, sha256_file

    pack = load_pack(settings.resolved_models_dir, settings.detector_model, settings.recognizer_model)
    sha = ""
    manifest = pack.directory / MANIFEST
    if manifest.is_file():
        entry = (json.loads(manifest.read_text()).get("files") or {}).get(pack.recognizer.name) or {}
        sha = str(entry.get("sha256") or "")
    if not sha:
        sha = sha256_file(pack.recognizer)
    session = ort.InferenceSession(str(pack.recognizer), providers=["CPUExecutionProvider"])
    dim = session.get_outputs()[0].shape[-1]
    if not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"recognizer {pack.recognizer} has no fixed embedding size")
    return Recognizer(pack.recognizer.name, sha, dim)


def active_collection(settings: Settings) -> str:
    """The collection search and indexing use: ``FACEPIPE_QDRANT_COLLECTION`` when the
    operator names one, else the active recognizer's own."""
    if settings.vectors.qdrant_collection:
        return check_collection(settings.vectors.qdrant_collection)
    return active_recognizer(settings).collection


def _state_id(*parts: str) -> str:
    return str(uuid.uuid5(STATE_NAMESPACE, "/".join(parts)))


@dataclass(frozen=True)
class ReindexMark:
    """A tenant's reindex into ``collection``: ``running`` until every face is there."""

    tenant: str
    collection: str
    source: str
    state: str
    updated_ms: int


class VectorCollections:
    """The active collection, the other face collections and the state beside them.

    Collections are opened once and kept open: a Qdrant Edge shard allows one process,
    the indexer, which holds them all."""

    def __init__(
        self,
        settings: VectorStoreSettings,
        active: VectorStore,
        opener: Callable[[VectorStoreSettings, str], VectorStore] | None = None,
    ) -> None:
        from facepipe.storage.vectors.factory import open_vector_store

        self.settings = settings
        self.active = active
        self.active_name = active.collection  # type: ignore[attr-defined]
        self._open = opener or open_vector_store
        self._stores: dict[str, VectorStore] = {self.active_name: active}
        self._lock = threading.Lock()
        self._state: VectorStore | None = None

    # --- collections ---

    def store(self, name: str) -> VectorStore:
        """The open store of collection ``name`` (opened on first use)."""
        check_collection(name)
        if name == STATE_COLLECTION:
            raise ValueError(f"{name!r} holds facepipe's state, not faces")
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                store = self._stores[name] = self._open(self.settings, name)
            return store

    def state(self) -> VectorStore:
        with self._lock:
            if self._state is None:
                store = self._open(self.settings, STATE_COLLECTION)
                store.ensure_collection(STATE_DIM)
                self._state = store
            return self._state

    def register(self, name: str, dim: int, model: str) -> None:
        """Records a face collection, so that erasure finds it under any name."""
        point = FacePoint(
            _state_id("collection", name),
            [1.0],
            {"tenant_id": COLLECTIONS_RECORD_TENANT, "collection": name, "dim": dim, "model": model},
        )
        self.state().upsert([point])

    def names(self) -> list[str]:
        """Every face collection that exists: the active one first, then the others sorted."""
        found = {self.active_name}
        found |= {
            str(p.payload.get("collection"))
            for p in self.state().scroll(COLLECTIONS_RECORD_TENANT, limit=10_000)
            if p.payload.get("collection")
        }
        found |= self._existing()
        others = sorted(n for n in found - {self.active_name} if self._exists(n))
        return [self.active_name, *others]

    def others(self) -> list[str]:
        return self.names()[1:]

    def _existing(self) -> set[str]:
        """Face collections on disk or on the server, whether or not recorded."""
        if self.settings.kind == "edge":
            root = Path(self.settings.dir)
            if not root.is_dir():
                return set()
            return {
                p.name
                for p in root.iterdir()
                if (p / "segments").is_dir()
                and p.name != STATE_COLLECTION
                # The recognizer service owns (and holds open) the subject galleries.
                and not p.name.startswith(SUBJECTS_PREFIX)
                and _valid(p.name)
            }
        client = getattr(self.active, "client", None)
        if client is None:
            return set()
        names = {c.name for c in client.get_collections().collections}
        # A shared server may hold others' collections: only facepipe's names count.
        return {n for n in names if n == DEFAULT_COLLECTION or MODEL_COLLECTION_RE.match(n)}

    def _exists(self, name: str) -> bool:
        if name == self.active_name:
            return True
        if self.settings.kind == "edge":
            return (Path(self.settings.dir) / name / "segments").is_dir()
        client = getattr(self.active, "client", None)
        return bool(client is not None and client.collection_exists(name))

    # --- per-tenant reindex state ---

    def mark(self, tenant: str, collection: str, source: str, state: str) -> ReindexMark:
        mark = ReindexMark(tenant, collection, source, state, int(time.time() * 1000))
        point = FacePoint(
            _state_id("reindex", tenant, collection),
            [1.0],
            {
                "tenant_id": tenant,
                "kind": "reindex",
                "collection": collection,
                "source": source,
                "state": state,
                "updated_ms": mark.updated_ms,
            },
        )
        self.state().upsert([point])
        return mark

    def mark_of(self, tenant: str, collection: str) -> ReindexMark | None:
        found = self.state().scroll(tenant, {"kind": "reindex", "collection": collection}, limit=1)
        if not found:
            return None
        p: dict[str, Any] = found[0].payload
        return ReindexMark(
            tenant, collection, str(p.get("source", "")), str(p.get("state", "")), int(p.get("updated_ms", 0))
        )

    def forget_tenant(self, tenant: str) -> None:
        """Drops a tenant's reindex records (once everything of it is erased)."""
        self.state().delete(tenant)

    def close(self) -> None:
        """Closes what this object opened; the active store belongs to its opener."""
        with self._lock:
            opened = [s for n, s in self._stores.items() if n != self.active_name]
            if self._state is not None:
                opened.append(self._state)
            self._stores = {self.active_name: self.active}
            self._state = None
        for store in opened:
            store.close()


def _valid(name: str) -> bool:
    try:
        check_collection(name)
    except ValueError:
        return False
    return True
