"""Object (blob) and vector storage behind small interfaces, chosen by configuration."""

from typing import TYPE_CHECKING, Any

from facepipe.storage.objects import (
    BUCKETS,
    FACE_CROPS_BUCKET,
    FACE_THUMBS_BUCKET,
    RAW_IMAGES_BUCKET,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    object_store_from_env,
)

# The vector stores pull in qdrant_client (seconds to import): loaded on first use,
# so code that only stores objects (the CLI's ingest) stays quick to start.
_VECTOR_NAMES = {
    "DEFAULT_COLLECTION",
    "INDEXED_FIELDS",
    "CollectionMissing",
    "DimensionMismatch",
    "EdgeVectorStore",
    "FacePoint",
    "QdrantServerVectorStore",
    "SearchHit",
    "StoredPoint",
    "StoreLocked",
    "VectorStore",
    "vector_store_from_env",
}


def __getattr__(name: str) -> Any:
    if name in _VECTOR_NAMES:
        from facepipe.storage import vectors

        return getattr(vectors, name)
    raise AttributeError(f"module 'facepipe.storage' has no attribute {name!r}")


if TYPE_CHECKING:
    from facepipe.storage.vectors import (
        DEFAULT_COLLECTION,
        INDEXED_FIELDS,
        CollectionMissing,
        DimensionMismatch,
        EdgeVectorStore,
        FacePoint,
        QdrantServerVectorStore,
        SearchHit,
        StoredPoint,
        StoreLocked,
        VectorStore,
        vector_store_from_env,
    )

__all__ = [
    "BUCKETS",
    "DEFAULT_COLLECTION",
    "FACE_CROPS_BUCKET",
    "FACE_THUMBS_BUCKET",
    "INDEXED_FIELDS",
    "RAW_IMAGES_BUCKET",
    "CollectionMissing",
    "DimensionMismatch",
    "EdgeVectorStore",
    "FacePoint",
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "QdrantServerVectorStore",
    "S3ObjectStore",
    "SearchHit",
    "StoreLocked",
    "StoredPoint",
    "VectorStore",
    "object_store_from_env",
    "vector_store_from_env",
]
