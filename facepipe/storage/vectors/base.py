"""The vector store interface, its value types, and what every engine shares.

:class:`BaseVectorStore` holds the behaviour both engines had written twice:
input validation (ids, vectors, tenant and filters, ``top_k``), paging through
a scroll, and delete-by-listing (scroll the matching ids under the lock, then
delete exactly those). An engine supplies only its native calls.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from facepipe.echo import echo

DEFAULT_COLLECTION = "faces"
TENANT_FIELD = "tenant_id"
# Keyword payload fields that filters and erasure look up.
INDEXED_FIELDS = (TENANT_FIELD, "site", "phash_prefix", "image_sha256", "url", "folders", "person_id")
# Integer payload fields that range filters look up (photo capture time, Unix ms).
INTEGER_FIELDS = ("taken_at",)

UPSERT_BATCH = 256
PAGE = 1000
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Range:
    """A numeric range condition, ``gte <= value < lt``; None leaves that side open.
    A point without the field never matches."""

    gte: float | None = None
    lt: float | None = None


FilterValue = str | int | bool | Range
Conditions = list[tuple[str, FilterValue]]


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


@dataclass(frozen=True)
class VectorPage:
    """A page of stored points' ids and their (unit) vectors, row i for ``ids[i]``."""

    ids: list[str]
    vectors: np.ndarray  # float32 [len(ids), dim]


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

    def search_many(
        self,
        vectors: np.ndarray,
        tenant_id: str,
        top_k: int = 10,
        min_score: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
        with_payload: bool = True,
        hnsw_ef: int | None = None,
    ) -> list[list[SearchHit]]: ...

    def vector_pages(
        self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None, page: int = PAGE
    ) -> Iterator[VectorPage]: ...

    def delete(self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None) -> list[dict]: ...

    def existing(self, ids: Sequence[str]) -> set[str]: ...

    def retrieve(self, tenant_id: str, ids: Sequence[str]) -> list[StoredPoint]: ...

    def set_payload(self, tenant_id: str, payloads: Mapping[str, Mapping[str, Any]]) -> int: ...

    def vectors(self, tenant_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]: ...

    def count(self, tenant_id: str | None = None) -> int: ...

    def optimize(self) -> bool: ...

    def ping(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


# --- validation --------------------------------------------------------------------------------


def point_id(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"point id {echo(value)} is not a UUID string") from None


def check_vector(value: Sequence[float] | np.ndarray, dim: int | None) -> list[float]:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"vector must be one-dimensional and non-empty, got shape {arr.shape}")
    if dim is not None and arr.size != dim:
        raise DimensionMismatch(f"vector has {arr.size} dimensions, the collection has {dim}")
    if not np.isfinite(arr).all():
        raise ValueError("vector contains NaN or infinite values")
    return arr.tolist()


def conditions(
    tenant_id: str | None, filters: Mapping[str, FilterValue] | None, *, require_tenant: bool = True
) -> Conditions:
    """The conditions of a query: the tenant first, then the caller's filters (exact
    matches, or a :class:`Range`)."""
    conds: Conditions = []
    if tenant_id is not None or require_tenant:
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ValueError("tenant_id is required: every query is scoped to one tenant")
        conds.append((TENANT_FIELD, tenant_id))
    for key, value in (filters or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"filter key {echo(key)} must be a non-empty string")
        if key == TENANT_FIELD:
            raise ValueError("pass the tenant as tenant_id, not in filters")
        if not isinstance(value, str | int | bool | Range):
            raise ValueError(f"filter {key}={echo(value)}: only str, int or bool exact matches, or a Range")
        conds.append((key, value))
    return conds


def check_dim(dim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ValueError(f"vector dimension must be a positive int, got {dim!r}")
    return dim


def check_collection(name: str) -> str:
    if not _COLLECTION_RE.match(name):
        raise ValueError(f"invalid collection name {echo(name)}: use letters, digits, '_' or '-'")
    return name


def batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- the shared engine skeleton ----------------------------------------------------------------


class BaseVectorStore(ABC):
    """Validation, paging and delete-by-listing on top of an engine's native calls.

    Subclasses set ``_lock`` and ``_dim`` and implement the ``_native_*`` hooks;
    every hook runs under ``_lock`` and only after the collection is known to exist.
    """

    collection: str
    _lock: AbstractContextManager[Any]
    _dim: int | None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- engine hooks ---

    @abstractmethod
    def _collection_exists(self) -> bool:
        """Whether the collection exists now (raises when the store is closed)."""

    def _require_collection(self) -> None:
        """Raises :class:`CollectionMissing` unless the collection exists."""
        if not self._collection_exists():
            raise CollectionMissing(
                f"collection {self.collection!r} does not exist yet; call ensure_collection(dim)"
            )

    @abstractmethod
    def _native_point(self, id_: str, vector: list[float], payload: dict[str, Any]) -> Any:
        """A validated point in the engine's own type."""

    @abstractmethod
    def _native_upsert(self, points: list[Any]) -> None:
        """Writes one batch of points made by :meth:`_native_point`."""

    @abstractmethod
    def _native_search(
        self, query: list[float], conds: Conditions, top_k: int, min_score: float | None
    ) -> list[SearchHit]:
        """The ``top_k`` nearest points matching ``conds``, best first."""

    @abstractmethod
    def _native_scroll_page(
        self, conds: Conditions, offset: Any, limit: int
    ) -> tuple[list[StoredPoint], Any]:
        """One page of matching points and the offset of the next page (None at the end)."""

    @abstractmethod
    def _native_search_many(
        self,
        queries: list[list[float]],
        conds: Conditions,
        top_k: int,
        min_score: float | None,
        with_payload: bool,
        hnsw_ef: int | None,
    ) -> list[list[SearchHit]]:
        """Several searches (``hnsw_ef``: the engine's search breadth, None = its default)."""

    @abstractmethod
    def _native_vector_page(
        self, conds: Conditions, offset: Any, limit: int
    ) -> tuple[list[str], list[list[float]], Any]:
        """One page of matching point ids with their vectors, and the next page's offset."""

    @abstractmethod
    def _native_delete(self, ids: list[str]) -> None:
        """Deletes these point ids."""

    @abstractmethod
    def _native_existing(self, ids: list[str]) -> set[str]:
        """Which of these point ids are stored."""

    @abstractmethod
    def _native_retrieve(self, ids: list[str], with_vector: bool) -> list[tuple[StoredPoint, Any]]:
        """The stored points among these ids with their payloads, and their vectors
        (a list of floats) when ``with_vector``, else None."""

    @abstractmethod
    def _native_set_payload(self, ids: list[str], payload: dict[str, Any]) -> None:
        """Merges ``payload`` into the payload of these point ids."""

    @abstractmethod
    def _native_count(self, conds: Conditions) -> int:
        """The exact number of points matching ``conds``."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for logs and /stats."""

    @abstractmethod
    def close(self) -> None:
        """Flushes and releases the store."""

    # --- the shared behaviour ---

    def upsert(self, points: Sequence[FacePoint]) -> None:
        # Validate everything before writing anything, so bad input leaves the index untouched.
        prepared = [
            self._native_point(point_id(p.id), check_vector(p.vector, self._dim), dict(p.payload))
            for p in points
        ]
        with self._lock:
            self._require_collection()
            for batch in batches(prepared, UPSERT_BATCH):
                self._native_upsert(list(batch))

    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        tenant_id: str,
        top_k: int = 10,
        min_score: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[SearchHit]:
        conds = conditions(tenant_id, filters)
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        query = check_vector(vector, self._dim)
        with self._lock:
            if not self._collection_exists():
                return []
            return self._native_search(query, conds, top_k, min_score)

    def scroll(
        self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None, limit: int = 1000
    ) -> list[StoredPoint]:
        conds = conditions(tenant_id, filters)
        with self._lock:
            return self._scroll(conds, limit)

    def search_many(
        self,
        vectors: np.ndarray,
        tenant_id: str,
        top_k: int = 10,
        min_score: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
        with_payload: bool = True,
        hnsw_ef: int | None = None,
    ) -> list[list[SearchHit]]:
        """:meth:`search` for each row of ``vectors``, in one call. ``hnsw_ef`` widens the
        approximate (HNSW) search past the engine's default, for callers that need the
        true nearest neighbours more than speed."""
        conds = conditions(tenant_id, filters)
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        if hnsw_ef is not None and hnsw_ef <= 0:
            raise ValueError(f"hnsw_ef must be positive, got {hnsw_ef}")
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError(f"vectors must be two-dimensional [n, dim], got shape {rows.shape}")
        queries = [check_vector(row, self._dim) for row in rows]
        with self._lock:
            if not queries or not self._collection_exists():
                return [[] for _ in queries]
            return self._native_search_many(queries, conds, top_k, min_score, with_payload, hnsw_ef)

    def vector_pages(
        self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None, page: int = PAGE
    ) -> Iterator[VectorPage]:
        """Every matching point's id and vector, a page at a time. The lock is held per
        page only, so writes go on meanwhile (a point written during the walk may or may
        not be listed)."""
        conds = conditions(tenant_id, filters)
        if page <= 0:
            raise ValueError(f"page must be positive, got {page}")
        offset = None
        while True:
            with self._lock:
                if not self._collection_exists():
                    return
                ids, vectors, offset = self._native_vector_page(conds, offset, page)
            if ids:
                yield VectorPage(ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1))
            if offset is None or not ids:
                return

    def _scroll(self, conds: Conditions, limit: int | None) -> list[StoredPoint]:
        """Every matching point (up to ``limit``), page by page; the caller holds the lock."""
        if not self._collection_exists():
            return []
        out: list[StoredPoint] = []
        offset = None
        while limit is None or len(out) < limit:
            page = PAGE if limit is None else min(PAGE, limit - len(out))
            records, offset = self._native_scroll_page(conds, offset, page)
            out.extend(records)
            if offset is None or not records:
                break
        return out

    def delete(self, tenant_id: str, filters: Mapping[str, FilterValue] | None = None) -> list[dict]:
        conds = conditions(tenant_id, filters)
        with self._lock:
            # Under the lock nothing can slip in between listing and deleting, and exactly the
            # listed ids are deleted, so the returned payloads are exactly what was erased.
            doomed = self._scroll(conds, None)
            for batch in batches([p.id for p in doomed], PAGE):
                self._native_delete(list(batch))
        return [p.payload for p in doomed]

    def existing(self, ids: Sequence[str]) -> set[str]:
        """The ids among ``ids`` that the collection holds (a resumed copy skips them)."""
        wanted = [point_id(i) for i in ids]
        with self._lock:
            if not wanted or not self._collection_exists():
                return set()
            found: set[str] = set()
            for batch in batches(wanted, PAGE):
                found |= self._native_existing(list(batch))
            return found

    def set_payload(self, tenant_id: str, payloads: Mapping[str, Mapping[str, Any]]) -> int:
        """Merges payload keys into points of the tenant, point id -> keys to set; points
        not stored, or of another tenant, are skipped. Returns the points updated. Points
        given the same keys are written in one call."""
        conds = conditions(tenant_id, None)
        wanted: dict[str, dict[str, Any]] = {}
        for id_, keys in payloads.items():
            if TENANT_FIELD in keys:
                raise ValueError("set_payload cannot move a point to another tenant")
            wanted[point_id(id_)] = dict(keys)
        groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
        with self._lock:
            if not wanted or not self._collection_exists():
                return 0
            owned: list[str] = []
            for batch in batches(list(wanted), PAGE):
                owned += [p.id for p, _ in self._native_retrieve(list(batch), False) if _owned(p, conds)]
            for id_ in owned:
                keys = wanted[id_]
                groups.setdefault(repr(sorted(keys.items())), (keys, []))[1].append(id_)
            for keys, ids in groups.values():
                for batch in batches(ids, PAGE):
                    self._native_set_payload(list(batch), keys)
        return len(owned)

    def retrieve(self, tenant_id: str, ids: Sequence[str]) -> list[StoredPoint]:
        """The stored points among ``ids`` that are the tenant's, with their payloads."""
        conds = conditions(tenant_id, None)
        wanted = [point_id(i) for i in ids]
        out: list[StoredPoint] = []
        with self._lock:
            if not wanted or not self._collection_exists():
                return out
            for batch in batches(wanted, PAGE):
                out += [p for p, _ in self._native_retrieve(list(batch), False) if _owned(p, conds)]
        return out

    def vectors(self, tenant_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these points of the tenant (others are left out)."""
        conds = conditions(tenant_id, None)
        wanted = [point_id(i) for i in ids]
        out: dict[str, np.ndarray] = {}
        with self._lock:
            if not wanted or not self._collection_exists():
                return out
            for batch in batches(wanted, PAGE):
                for p, vector in self._native_retrieve(list(batch), True):
                    if _owned(p, conds) and vector is not None:
                        out[p.id] = np.asarray(vector, dtype=np.float32)
        return out

    def count(self, tenant_id: str | None = None) -> int:
        conds = conditions(tenant_id, None, require_tenant=False)
        with self._lock:
            if not self._collection_exists():
                return 0
            return self._native_count(conds)


def _owned(point: StoredPoint, conds: Conditions) -> bool:
    """Whether a retrieved point matches the tenant condition (the first of ``conds``)."""
    key, value = conds[0]
    return point.payload.get(key) == value
