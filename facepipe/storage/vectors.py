"""Face embeddings with their payloads, searchable by cosine similarity.

One interface, two engines: Qdrant Edge in-process (the single-machine default)
and a Qdrant server through qdrant-client (at scale). Every read and delete is
scoped to one tenant; there is no call that crosses tenants except ``count()``.
Both are synchronous and thread-safe; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np
import qdrant_edge as edge
from qdrant_client import QdrantClient
from qdrant_client import models as qm

DEFAULT_COLLECTION = "faces"
TENANT_FIELD = "tenant_id"
# Keyword payload fields that filters and erasure look up.
INDEXED_FIELDS = (TENANT_FIELD, "site", "phash_prefix", "image_sha256", "url")

_UPSERT_BATCH = 256
_PAGE = 1000
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

FilterValue = str | int | bool


@dataclass
class FacePoint:
    id: str  # UUID string
    vector: Sequence[float] | np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredPoint:
    id: str
    payload: dict[str, Any]


class DimensionMismatch(ValueError):
    """The collection exists with another vector size than the model produces."""


class StoreLocked(RuntimeError):
    """Another process has the Edge shard directory open."""


class CollectionMissing(RuntimeError):
    """A write was attempted before ``ensure_collection(dim)``."""


@runtime_checkable
class VectorStore(Protocol):
    def ensure_collection(self, dim: int) -> None: ...

    def upsert(self, points: Sequence[FacePoint]) -> None: ...

    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        tenant_id: str,
        top_k: int = 10,
        min_score: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[SearchHit]: ...

    def scroll(
        self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None, limit: int = 1000
    ) -> list[StoredPoint]: ...

    def delete(self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None) -> list[dict]: ...

    def count(self, tenant_id: str | None = None) -> int: ...

    def optimize(self) -> bool: ...

    def ping(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


# --- validation shared by both engines -------------------------------------------------------


def _point_id(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"point id {value!r} is not a UUID string") from None


def _vector(value: Sequence[float] | np.ndarray, dim: int | None) -> list[float]:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"vector must be one-dimensional and non-empty, got shape {arr.shape}")
    if dim is not None and arr.size != dim:
        raise DimensionMismatch(f"vector has {arr.size} dimensions, the collection has {dim}")
    if not np.isfinite(arr).all():
        raise ValueError("vector contains NaN or infinite values")
    return arr.tolist()


def _conditions(
    tenant_id: str | None, filters: Mapping[str, FilterValue] | None, *, require_tenant: bool = True
) -> list[tuple[str, FilterValue]]:
    """The exact-match conditions of a query: the tenant first, then the caller's filters."""
    conds: list[tuple[str, FilterValue]] = []
    if tenant_id is not None or require_tenant:
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ValueError("tenant_id is required: every query is scoped to one tenant")
        conds.append((TENANT_FIELD, tenant_id))
    for key, value in (filters or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"filter key {key!r} must be a non-empty string")
        if key == TENANT_FIELD:
            raise ValueError("pass the tenant as tenant_id, not in filters")
        if not isinstance(value, str | int | bool):
            raise ValueError(f"filter {key}={value!r}: only str, int or bool exact matches")
        conds.append((key, value))
    return conds


def _check_dim(dim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ValueError(f"vector dimension must be a positive int, got {dim!r}")
    return dim


def _check_collection(name: str) -> str:
    if not _COLLECTION_RE.match(name):
        raise ValueError(f"invalid collection name {name!r}: use letters, digits, '_' or '-'")
    return name


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- Qdrant Edge (in-process) ----------------------------------------------------------------


def _lock_dir(path: Path) -> IO[str]:
    """Takes an exclusive lock that the OS drops when the process exits, even on a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 - held open for the store's lifetime
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise StoreLocked(
            f"vector store {path.parent} is open in another process (pid {holder}); Qdrant Edge "
            "allows one process per directory: stop it, or use a Qdrant server "
            "(FACEPIPE_VECTOR_STORE=qdrant) to share the index"
        ) from None
    if os.name != "nt":
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
    return f


def _edge_filter(conds: list[tuple[str, FilterValue]]) -> edge.Filter | None:
    if not conds:
        return None
    return edge.Filter(must=[edge.FieldCondition(key=k, match=edge.MatchValue(v)) for k, v in conds])


class EdgeVectorStore:
    """Qdrant Edge shard at ``path/collection``, guarded by ``path/collection.lock``."""

    def __init__(self, path: Path | str, collection: str = DEFAULT_COLLECTION) -> None:
        self.path = Path(path).expanduser().resolve()
        self.collection = _check_collection(collection)
        self._dir = self.path / collection
        self._lock = threading.RLock()
        # Held across a whole optimize so close() waits for it; the shard serves reads and writes meanwhile.
        self._optimizing = threading.Lock()
        self._dim: int | None = None
        self._lockfile: IO[str] | None = _lock_dir(self.path / f"{collection}.lock")
        self._shard: edge.EdgeShard | None = None
        try:
            if (self._dir / "segments").is_dir():
                self._shard = edge.EdgeShard.load(str(self._dir))
        except Exception:
            self._release()
            raise

    def __enter__(self) -> EdgeVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _current(self) -> edge.EdgeShard | None:
        """The open shard, or None while the collection does not exist yet."""
        if self._lockfile is None:
            raise RuntimeError(f"vector store {self.describe()} is closed")
        return self._shard

    def _writable(self) -> edge.EdgeShard:
        shard = self._current()
        if shard is None:
            raise CollectionMissing(
                f"collection {self.collection!r} does not exist yet; call ensure_collection(dim)"
            )
        return shard

    def ensure_collection(self, dim: int) -> None:
        _check_dim(dim)
        with self._lock:
            if self._current() is None:
                config = edge.EdgeConfig(
                    vectors=edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine),
                    # Any deletion makes a segment eligible for vacuum, so erased faces
                    # leave the segment files at the next optimize.
                    optimizers=edge.EdgeOptimizersConfig(deleted_threshold=1e-9, vacuum_min_vector_number=1),
                )
                self._shard = edge.EdgeShard.create(str(self._dir), config)
            else:
                # The engine checks dimensions on every query, so a one-point probe tells us its size.
                try:
                    self._shard.query(edge.QueryRequest(limit=1, query=edge.Query.Nearest([1.0] * dim)))
                except Exception as e:
                    if "dimension" not in str(e).lower():
                        raise
                    raise DimensionMismatch(
                        f"collection {self.describe()} exists with another vector size than {dim} "
                        f"({e}); the model changed: index into a new collection or directory"
                    ) from None
            present = set(self._shard.info().payload_schema)
            for name in INDEXED_FIELDS:
                if name not in present:
                    schema = (
                        edge.KeywordIndexParams(is_tenant=True)
                        if name == TENANT_FIELD
                        else edge.PayloadSchemaType.Keyword
                    )
                    self._shard.update(edge.UpdateOperation.create_field_index(name, schema))
            self._dim = dim

    def upsert(self, points: Sequence[FacePoint]) -> None:
        # Validate everything before writing anything, so bad input leaves the index untouched.
        prepared = [
            edge.Point(_point_id(p.id), _vector(p.vector, self._dim), dict(p.payload)) for p in points
        ]
        with self._lock:
            shard = self._writable()
            for batch in _batches(prepared, _UPSERT_BATCH):
                shard.update(edge.UpdateOperation.upsert_points(list(batch)))

    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        tenant_id: str,
        top_k: int = 10,
        min_score: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[SearchHit]:
        conds = _conditions(tenant_id, filters)
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        query = _vector(vector, self._dim)
        with self._lock:
            shard = self._current()
            if shard is None:
                return []
            hits = shard.query(
                edge.QueryRequest(
                    limit=top_k,
                    query=edge.Query.Nearest(query),
                    filter=_edge_filter(conds),
                    score_threshold=min_score,
                    with_payload=True,
                )
            )
        return [SearchHit(str(h.id), float(h.score), dict(h.payload or {})) for h in hits]

    def scroll(
        self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None, limit: int = 1000
    ) -> list[StoredPoint]:
        conds = _conditions(tenant_id, filters)
        with self._lock:
            return self._scroll(conds, limit)

    def _scroll(self, conds: list[tuple[str, FilterValue]], limit: int | None) -> list[StoredPoint]:
        shard = self._current()
        if shard is None:
            return []
        out: list[StoredPoint] = []
        offset = None
        while limit is None or len(out) < limit:
            page = _PAGE if limit is None else min(_PAGE, limit - len(out))
            records, offset = shard.scroll(
                edge.ScrollRequest(
                    offset=offset,
                    limit=page,
                    filter=_edge_filter(conds),
                    with_payload=True,
                    with_vector=False,
                )
            )
            out.extend(StoredPoint(str(r.id), dict(r.payload or {})) for r in records)
            if offset is None or not records:
                break
        return out

    def delete(self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None) -> list[dict]:
        conds = _conditions(tenant_id, filters)
        with self._lock:
            # Under the lock nothing can slip in between listing and deleting.
            doomed = self._scroll(conds, None)
            for batch in _batches([p.id for p in doomed], _PAGE):
                self._writable().update(edge.UpdateOperation.delete_points(list(batch)))
        return [p.payload for p in doomed]

    def count(self, tenant_id: str | None = None) -> int:
        conds = _conditions(tenant_id, None, require_tenant=False)
        with self._lock:
            shard = self._current()
            if shard is None:
                return 0
            return int(shard.count(edge.CountRequest(exact=True, filter=_edge_filter(conds))))

    def optimize(self) -> bool:
        """Builds the HNSW index and vacuums deleted points; Edge has no background optimizer."""
        with self._optimizing:
            with self._lock:
                shard = self._current()
            return bool(shard.optimize()) if shard is not None else False

    def ping(self) -> None:
        with self._lock:
            shard = self._current()
            if shard is not None:
                shard.info()

    def flush(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.flush()

    def close(self) -> None:
        with self._optimizing, self._lock:
            if self._shard is not None:
                try:
                    self._shard.flush()
                finally:
                    self._shard.close()
                    self._shard = None
            self._release()

    def _release(self) -> None:
        if self._lockfile is not None:
            self._lockfile.close()  # closing the descriptor drops the lock
            self._lockfile = None

    def describe(self) -> str:
        return f"qdrant-edge:{self._dir}"


# --- Qdrant server (qdrant-client) -----------------------------------------------------------


def _server_filter(conds: list[tuple[str, FilterValue]]) -> qm.Filter | None:
    if not conds:
        return None
    return qm.Filter(must=[qm.FieldCondition(key=k, match=qm.MatchValue(value=v)) for k, v in conds])


class QdrantServerVectorStore:
    """A collection on a Qdrant server (``url``), or qdrant-client's local mode (``path``)."""

    def __init__(
        self,
        url: str | None = None,
        path: str | None = None,
        api_key: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        timeout_s: int = 30,
    ) -> None:
        if bool(url) == bool(path):
            raise ValueError("give exactly one of url (a Qdrant server) or path (local mode)")
        self.url = url
        self.path = path
        self.collection = _check_collection(collection)
        if url:
            self.client = QdrantClient(url=url, api_key=api_key or None, timeout=timeout_s)
        else:
            self.client = QdrantClient(path=path)
        self._dim: int | None = None
        self._exists = False
        # The HTTP client is thread-safe; local mode (SQLite, shared dicts) is not.
        self._lock: AbstractContextManager[Any] = threading.RLock() if path else nullcontext()

    def __enter__(self) -> QdrantServerVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ready(self) -> bool:
        # Another process (the indexer) may create the collection after we started.
        if not self._exists:
            self._exists = self.client.collection_exists(self.collection)
        return self._exists

    def _require(self) -> None:
        if not self._ready():
            raise CollectionMissing(
                f"collection {self.collection!r} does not exist yet; call ensure_collection(dim)"
            )

    def ensure_collection(self, dim: int) -> None:
        _check_dim(dim)
        with self._lock:
            if not self.client.collection_exists(self.collection):
                try:
                    self.client.create_collection(
                        self.collection,
                        vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.COSINE),
                    )
                except Exception:
                    # Another replica may have created it between our check and create.
                    if not self.client.collection_exists(self.collection):
                        raise
            vectors = self.client.get_collection(self.collection).config.params.vectors
            size = vectors.size if isinstance(vectors, qm.VectorParams) else None
            if size != dim:
                raise DimensionMismatch(
                    f"collection {self.describe()} has vectors of size {size}, not {dim}; the model "
                    "changed: index into a new collection"
                )
            with warnings.catch_warnings():
                # Local mode warns that it ignores payload indexes; a server uses them.
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for name in INDEXED_FIELDS:
                    schema = (
                        qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True)
                        if name == TENANT_FIELD
                        else qm.PayloadSchemaType.KEYWORD
                    )
                    self.client.create_payload_index(self.collection, name, field_schema=schema, wait=True)
            self._dim = dim
            self._exists = True

    def upsert(self, points: Sequence[FacePoint]) -> None:
        prepared = [
            qm.PointStruct(id=_point_id(p.id), vector=_vector(p.vector, self._dim), payload=dict(p.payload))
            for p in points
        ]
        with self._lock:
            self._require()
            for batch in _batches(prepared, _UPSERT_BATCH):
                self.client.upsert(self.collection, points=list(batch), wait=True)

    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        tenant_id: str,
        top_k: int = 10,
        min_score: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[SearchHit]:
        conds = _conditions(tenant_id, filters)
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        query = _vector(vector, self._dim)
        with self._lock:
            if not self._ready():
                return []
            hits = self.client.query_points(
                self.collection,
                query=query,
                query_filter=_server_filter(conds),
                limit=top_k,
                score_threshold=min_score,
                with_payload=True,
            ).points
        return [SearchHit(str(h.id), float(h.score), dict(h.payload or {})) for h in hits]

    def scroll(
        self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None, limit: int = 1000
    ) -> list[StoredPoint]:
        conds = _conditions(tenant_id, filters)
        with self._lock:
            return self._scroll(conds, limit)

    def _scroll(self, conds: list[tuple[str, FilterValue]], limit: int | None) -> list[StoredPoint]:
        if not self._ready():
            return []
        out: list[StoredPoint] = []
        offset = None
        while limit is None or len(out) < limit:
            page = _PAGE if limit is None else min(_PAGE, limit - len(out))
            records, offset = self.client.scroll(
                self.collection,
                scroll_filter=_server_filter(conds),
                limit=page,
                offset=offset,
                with_payload=True,
                with_vectors=False,
            )
            out.extend(StoredPoint(str(r.id), dict(r.payload or {})) for r in records)
            if offset is None or not records:
                break
        return out

    def delete(self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None) -> list[dict]:
        conds = _conditions(tenant_id, filters)
        with self._lock:
            # Delete exactly the listed ids, so the returned payloads are exactly what was erased.
            doomed = self._scroll(conds, None)
            for batch in _batches([p.id for p in doomed], _PAGE):
                self.client.delete(
                    self.collection, points_selector=qm.PointIdsList(points=list(batch)), wait=True
                )
        return [p.payload for p in doomed]

    def count(self, tenant_id: str | None = None) -> int:
        conds = _conditions(tenant_id, None, require_tenant=False)
        with self._lock:
            if not self._ready():
                return 0
            return int(
                self.client.count(self.collection, count_filter=_server_filter(conds), exact=True).count
            )

    def optimize(self) -> bool:
        """A Qdrant server runs its own optimizers; nothing to do from the client."""
        return False

    def ping(self) -> None:
        with self._lock:
            self.client.get_collections()

    def flush(self) -> None:
        """Writes use ``wait=True``, so they are already durable when upsert returns."""

    def close(self) -> None:
        with self._lock:
            self.client.close()

    def describe(self) -> str:
        where = self.url or f"local:{self.path}"
        return f"qdrant:{where}/{self.collection}"


# --- factory ---------------------------------------------------------------------------------


def vector_store_from_env(env: Mapping[str, str] | None = None) -> VectorStore:
    """Builds the vector store that ``FACEPIPE_VECTOR_STORE`` (edge|qdrant) selects."""
    env = os.environ if env is None else env
    kind = (env.get("FACEPIPE_VECTOR_STORE") or "edge").strip().lower()
    collection = env.get("FACEPIPE_QDRANT_COLLECTION") or DEFAULT_COLLECTION
    if kind == "edge":
        home = Path(env.get("FACEPIPE_HOME") or Path.home() / ".facepipe").expanduser()
        return EdgeVectorStore(Path(env.get("FACEPIPE_VECTOR_DIR") or home / "vectors"), collection)
    if kind == "qdrant":
        url = env.get("FACEPIPE_QDRANT_URL", "")
        if not url:
            raise ValueError(
                "FACEPIPE_VECTOR_STORE=qdrant needs FACEPIPE_QDRANT_URL (e.g. http://qdrant:6333)"
            )
        return QdrantServerVectorStore(
            url=url, api_key=env.get("FACEPIPE_QDRANT_API_KEY") or None, collection=collection
        )
    raise ValueError(f"FACEPIPE_VECTOR_STORE={kind!r}: expected 'edge' or 'qdrant'")
