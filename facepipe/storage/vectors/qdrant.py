"""A Qdrant server through qdrant-client (at scale), or qdrant-client's local mode."""

from __future__ import annotations

import threading
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from facepipe.storage.vectors.base import (
    DEFAULT_COLLECTION,
    INDEXED_FIELDS,
    INTEGER_FIELDS,
    TENANT_FIELD,
    BaseVectorStore,
    Conditions,
    DimensionMismatch,
    FilterValue,
    Range,
    SearchHit,
    StoredPoint,
    check_collection,
    check_dim,
)


def _server_condition(key: str, value: FilterValue) -> qm.FieldCondition:
    if isinstance(value, Range):
        return qm.FieldCondition(key=key, range=qm.Range(gte=value.gte, lt=value.lt))
    return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))


def _server_filter(conds: Conditions) -> qm.Filter | None:
    if not conds:
        return None
    return qm.Filter(must=[_server_condition(k, v) for k, v in conds])


class QdrantServerVectorStore(BaseVectorStore):
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
        self.collection = check_collection(collection)
        if url:
            self.client = QdrantClient(url=url, api_key=api_key or None, timeout=timeout_s)
        else:
            self.client = QdrantClient(path=path)
        self._dim: int | None = None
        self._exists = False
        # The HTTP client is thread-safe; local mode (SQLite, shared dicts) is not.
        self._lock: AbstractContextManager[Any] = threading.RLock() if path else nullcontext()

    def _collection_exists(self) -> bool:
        # Another process (the indexer) may create the collection after we started.
        if not self._exists:
            self._exists = self.client.collection_exists(self.collection)
        return self._exists

    def ensure_collection(self, dim: int) -> None:
        check_dim(dim)
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
                for name in INTEGER_FIELDS:
                    self.client.create_payload_index(
                        self.collection, name, field_schema=qm.PayloadSchemaType.INTEGER, wait=True
                    )
            self._dim = dim
            self._exists = True

    def _native_point(self, id_: str, vector: list[float], payload: dict[str, Any]) -> qm.PointStruct:
        return qm.PointStruct(id=id_, vector=vector, payload=payload)

    def _native_upsert(self, points: list[qm.PointStruct]) -> None:
        self.client.upsert(self.collection, points=points, wait=True)

    def _native_search(
        self, query: list[float], conds: Conditions, top_k: int, min_score: float | None
    ) -> list[SearchHit]:
        hits = self.client.query_points(
            self.collection,
            query=query,
            query_filter=_server_filter(conds),
            limit=top_k,
            score_threshold=min_score,
            with_payload=True,
        ).points
        return [SearchHit(str(h.id), float(h.score), dict(h.payload or {})) for h in hits]

    def _native_scroll_page(
        self, conds: Conditions, offset: Any, limit: int
    ) -> tuple[list[StoredPoint], Any]:
        records, next_offset = self.client.scroll(
            self.collection,
            scroll_filter=_server_filter(conds),
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=False,
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
        flt = _server_filter(conds)
        # Local mode searches exactly (and warns about search parameters).
        params = qm.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef is not None and self.url else None
        responses = self.client.query_batch_points(
            self.collection,
            requests=[
                qm.QueryRequest(
                    query=query,
                    filter=flt,
                    limit=top_k,
                    score_threshold=min_score,
                    with_payload=with_payload,
                    params=params,
                )
                for query in queries
            ],
        )
        return [
            [SearchHit(str(h.id), float(h.score), dict(h.payload or {})) for h in response.points]
            for response in responses
        ]

    def _native_vector_page(
        self, conds: Conditions, offset: Any, limit: int
    ) -> tuple[list[str], list[list[float]], Any]:
        records, next_offset = self.client.scroll(
            self.collection,
            scroll_filter=_server_filter(conds),
            limit=limit,
            offset=offset,
            with_payload=False,
            with_vectors=True,
        )
        return [str(r.id) for r in records], [list(r.vector) for r in records], next_offset

    def _native_delete(self, ids: list[str]) -> None:
        self.client.delete(self.collection, points_selector=qm.PointIdsList(points=ids), wait=True)

    def _native_existing(self, ids: list[str]) -> set[str]:
        records = self.client.retrieve(self.collection, ids=ids, with_payload=False, with_vectors=False)
        return {str(r.id) for r in records}

    def _native_retrieve(self, ids: list[str], with_vector: bool) -> list[tuple[StoredPoint, Any]]:
        records = self.client.retrieve(self.collection, ids=ids, with_payload=True, with_vectors=with_vector)
        out = []
        for r in records:
            vector = r.vector if with_vector else None
            if isinstance(vector, dict):
                vector = vector.get("") if "" in vector else next(iter(vector.values()), None)
            out.append((StoredPoint(str(r.id), dict(r.payload or {})), vector))
        return out

    def _native_set_payload(self, ids: list[str], payload: dict[str, Any]) -> None:
        self.client.set_payload(self.collection, payload=payload, points=ids, wait=True)

    def _native_count(self, conds: Conditions) -> int:
        return int(self.client.count(self.collection, count_filter=_server_filter(conds), exact=True).count)

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
