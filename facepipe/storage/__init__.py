"""Object (blob) and vector storage behind small interfaces, chosen by configuration.

Names are imported on first use: a command that only stores objects (``facepipe
ingest``) must not pay for loading the vector store's client library."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SUBMODULE = {
    **dict.fromkeys(
        (
            "BUCKETS",
            "FACE_CROPS_BUCKET",
            "FACE_THUMBS_BUCKET",
            "RAW_IMAGES_BUCKET",
            "LocalObjectStore",
            "ObjectNotFound",
            "ObjectStore",
            "S3ObjectStore",
            "object_store_from_env",
            "open_object_store",
        ),
        "objects",
    ),
    **dict.fromkeys(
        (
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
            "open_vector_store",
        ),
        "vectors",
    ),
}

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
    "open_object_store",
    "open_vector_store",
    "vector_store_from_env",
]

if TYPE_CHECKING:
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
        open_object_store,
    )
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
        open_vector_store,
        vector_store_from_env,
    )


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SUBMODULE[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
