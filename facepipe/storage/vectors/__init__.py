"""Face embeddings with their payloads, searchable by cosine similarity.

One interface, two engines: Qdrant Edge in-process (:mod:`.edge`, the
single-machine default) and a Qdrant server through qdrant-client
(:mod:`.qdrant`, at scale). :mod:`.base` holds what both share: validation,
paging, delete-by-listing. Every read and delete is scoped to one tenant; there
is no call that crosses tenants except ``count()``. Both are synchronous and
thread-safe; async callers use ``asyncio.to_thread``.
"""

from facepipe.storage.vectors.base import (
    DEFAULT_COLLECTION,
    INDEXED_FIELDS,
    TENANT_FIELD,
    BaseVectorStore,
    CollectionMissing,
    DimensionMismatch,
    FacePoint,
    FilterValue,
    SearchHit,
    StoredPoint,
    StoreLocked,
    VectorPage,
    VectorStore,
)
from facepipe.storage.vectors.edge import EdgeVectorStore
from facepipe.storage.vectors.factory import open_vector_store, vector_store_from_env
from facepipe.storage.vectors.qdrant import QdrantServerVectorStore

__all__ = [
    "DEFAULT_COLLECTION",
    "INDEXED_FIELDS",
    "TENANT_FIELD",
    "BaseVectorStore",
    "CollectionMissing",
    "DimensionMismatch",
    "EdgeVectorStore",
    "FacePoint",
    "FilterValue",
    "QdrantServerVectorStore",
    "SearchHit",
    "StoreLocked",
    "VectorPage",
    "StoredPoint",
    "VectorStore",
    "open_vector_store",
    "vector_store_from_env",
]
