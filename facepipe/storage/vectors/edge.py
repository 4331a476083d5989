"""Qdrant Edge: the vector store in-process, one shard directory per collection.

Edge allows one process per directory, so the store takes an OS lock next to
the shard that the OS drops when the process exits, even on a crash.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Any

import qdrant_edge as edge

from facepipe.storage.vectors.base import (
    DEFAULT_COLLECTION,
    INDEXED_FIELDS,
    INTEGER_FIELDS,
    TENANT_FIELD,
    BaseVectorStore,
    CollectionMissing,
    Conditions,
    DimensionMismatch,
    FilterValue,
    Range,
    SearchHit,
    StoredPoint,
    StoreLocked,
    check_collection,
    check_dim,
)


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


def _edge_condition(key: str, value: FilterValue) -> edge.FieldCondition:
    if isinstance(value, Range):
        return edge.FieldCondition(key=key, range=edge.RangeFloat(gte=value.gte, lt=value.lt))
    return edge.FieldCondition(key=key, match=edge.MatchValue(value))


def _edge_filter(conds: Conditions) -> edge.Filter | None:
    if not conds:
        return None
    return edge.Filter(must=[_edge_condition(k, v) for k, v in conds])


def _plain_vector(vector: Any) -> Any:
    """The unnamed vector of a record (Edge returns a list, or a dict of named vectors)."""
    if isinstance(vector, dict):
        return vector.get("") if "" in vector else next(iter(vector.values()), None)
    return vector


class EdgeVectorStore(BaseVectorStore):
    """Qdrant Edge shard at ``path/collection``, guarded by ``path/collection.lock``."""

    def __init__(self, path: Path | str, collection: str = DEFAULT_COLLECTION) -> None:
        self.path = Path(path).expanduser().resolve()
        self.collection = check_collection(collection)
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

    def _collection_exists(self) -> bool:
        return self._current() is not None

    def ensure_collection(self, dim: int) -> None:
        check_dim(dim)
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
            for name in INTEGER_FIELDS:
                if name not in present:
                    self._shard.update(
                        edge.UpdateOperation.create_field_index(name, edge.PayloadSchemaType.Integer)
                    )
            self._dim = dim

    def _native_point(self, id_: str, vector: list[float], payload: dict[str, Any]) -> edge.Point:
        return edge.Point(id_, vector, payload)

    def _native_upsert(self, points: list[edge.Point]) -> None:
        self._writable().update(edge.UpdateOperation.upsert_points(points))

    def _native_search(
        self, query: list[float], conds: Conditions, top_k: int, min_score: float | None
    ) -> list[SearchHit]:
        hits = self._writable().query(
            edge.QueryRequest(
                limit=top_k,
                query=edge.Query.Nearest(query),
                filter=_edge_filter(conds),
                score_threshold=min_score,
                with_payload=True,
            )
        )
        return [SearchHit(str(h.id), float(h.score), dict(h.payload or {})) for h in hits]

    def _native_scroll_page(
        self, conds: Conditions, offset: Any, limit: int
    ) -> tuple[list[StoredPoint], Any]:
        records, next_offset = self._writable().scroll(
            edge.ScrollRequest(
                offset=offset, limit=limit, filter=_edge_filter(conds), with_payload=True, with_vector=False
            )
        )
        return [StoredPoint(str(r.id), dict(r.payload or {})) for r in records], next_offset

    def _native_search_many(
        self,
        queries: list[list[float]],
        conds: Conditions,
        top_k: int,
        min_score: float | None,
        with_payload: bool,
        hnsw_ef: int | None,
    ) -> list[list[SearchHit]]:
        flt = _edge_filter(conds)
        params = edge.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef is not None else None
        # One planned batch shares a pass over the segments.
        results = self._writable().query_batch(
            edge.QueryBatchRequest(
                [
                    edge.QueryRequest(
                        limit=top_k,
                        query=edge.Query.Nearest(query),
                        filter=flt,
                        score_threshold=min_score,
                        with_payload=with_payload,
                        params=params,
                    )
                    for query in queries
                ]
            )
        )
        return [
            [SearchHit(str(h.id), float(h.score), dict(h.payload or {})) for h in hits] for hits in results
        ]

    def _native_vector_page(
        self, conds: Conditions, offset: Any, limit: int
    ) -> tuple[list[str], list[list[float]], Any]:
        records, next_offset = self._writable().scroll(
            edge.ScrollRequest(
                offset=offset, limit=limit, filter=_edge_filter(conds), with_payload=False, with_vector=True
            )
        )
        return [str(r.id) for r in records], [list(r.vector) for r in records], next_offset

    def _native_delete(self, ids: list[str]) -> None:
        self._writable().update(edge.UpdateOperation.delete_points(ids))

    def _native_existing(self, ids: list[str]) -> set[str]:
        return {str(r.id) for r in self._writable().retrieve(ids, False, False)}

    def _native_retrieve(self, ids: list[str], with_vector: bool) -> list[tuple[StoredPoint, Any]]:
        records = self._writable().retrieve(ids, True, with_vector)
        return [
            (StoredPoint(str(r.id), dict(r.payload or {})), _plain_vector(r.vector) if with_vector else None)
            for r in records
        ]

    def _native_set_payload(self, ids: list[str], payload: dict[str, Any]) -> None:
        self._writable().update(edge.UpdateOperation.set_payload(ids, payload))

    def _native_count(self, conds: Conditions) -> int:
        return int(self._writable().count(edge.CountRequest(exact=True, filter=_edge_filter(conds))))

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
