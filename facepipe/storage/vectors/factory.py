"""Opens the vector store that the settings select."""

from __future__ import annotations

from collections.abc import Mapping

from facepipe.config import VectorStoreSettings
from facepipe.storage.vectors.base import DEFAULT_COLLECTION, VectorStore
from facepipe.storage.vectors.edge import EdgeVectorStore
from facepipe.storage.vectors.qdrant import QdrantServerVectorStore


def open_vector_store(settings: VectorStoreSettings, collection: str | None = None) -> VectorStore:
    """Collection ``collection`` in Qdrant Edge under ``settings.dir`` or on the Qdrant server
    at ``settings.qdrant_url``. Services pass the collection that
    :func:`facepipe.storage.vectors.collections.active_collection` names; without one, the
    operator's ``FACEPIPE_QDRANT_COLLECTION``, else ``faces``."""
    collection = collection or settings.qdrant_collection or DEFAULT_COLLECTION
    if settings.kind == "edge":
        return EdgeVectorStore(settings.dir, collection)
    if not settings.qdrant_url:
        raise ValueError("FACEPIPE_VECTOR_STORE=qdrant needs FACEPIPE_QDRANT_URL (e.g. http://qdrant:6333)")
    return QdrantServerVectorStore(
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key or None,
        collection=collection,
    )


def vector_store_from_env(env: Mapping[str, str] | None = None) -> VectorStore:
    """The vector store that ``env`` (default: the process environment) configures."""
    return open_vector_store(VectorStoreSettings.from_env(env))
