"""Opens the vector store that the settings select."""

from __future__ import annotations

from collections.abc import Mapping

from facepipe.config import VectorStoreSettings
from facepipe.storage.vectors.base import VectorStore
from facepipe.storage.vectors.edge import EdgeVectorStore
from facepipe.storage.vectors.qdrant import QdrantServerVectorStore


def open_vector_store(settings: VectorStoreSettings) -> VectorStore:
    """Qdrant Edge in ``settings.dir`` or the Qdrant server at ``settings.qdrant_url``."""
    if settings.kind == "edge":
        return EdgeVectorStore(settings.dir, settings.qdrant_collection)
    if not settings.qdrant_url:
        raise ValueError("FACEPIPE_VECTOR_STORE=qdrant needs FACEPIPE_QDRANT_URL (e.g. http://qdrant:6333)")
    return QdrantServerVectorStore(
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key or None,
        collection=settings.qdrant_collection,
    )


def vector_store_from_env(env: Mapping[str, str] | None = None) -> VectorStore:
    """The vector store that ``env`` (default: the process environment) configures."""
    return open_vector_store(VectorStoreSettings.from_env(env))
