"""The k-nearest-neighbour graph of a tenant's faces, read from the vector store.

Two walks over the tenant's vectors, a page at a time: the first names every face (an
index per id), the second asks the store for each page's nearest neighbours in one batch
and keeps the vectors, which make a recluster's average linkage exact. Memory is
O(n*(k + dim)); the store is locked per page only,
so ingest goes on meanwhile. A face written between the walks is left out (the next
recluster sees it; until then incremental assignment places it), a face deleted between
them is dropped, and neighbours that are not in the graph are not listed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from facepipe.persons.clustering import KnnGraph
from facepipe.storage.vectors.base import PAGE, FilterValue, VectorStore

DEFAULT_K = 24
# HNSW search breadth for the graph: the engine's default finds the true nearest face
# only about 70% of the time among 100,000 faces of many small persons; 256 finds it
# about 96% of the time at ~0.6 ms a query (bench/persons.py measures it).
GRAPH_HNSW_EF = 256


def knn_graph(
    store: VectorStore,
    tenant: str,
    k: int = DEFAULT_K,
    filters: Mapping[str, FilterValue] | None = None,
    page: int = PAGE,
    hnsw_ef: int | None = GRAPH_HNSW_EF,
) -> KnnGraph:
    """Each of the tenant's faces (matching ``filters``) with its ``k`` nearest faces and
    its vector."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    ids = [face_id for batch in store.vector_pages(tenant, filters, page) for face_id in batch.ids]
    index = {face_id: i for i, face_id in enumerate(ids)}
    n = len(ids)
    neighbours = np.full((n, k), -1, np.int32)
    similarities = np.zeros((n, k), np.float32)
    vectors: np.ndarray | None = None
    seen = np.zeros(n, bool)
    for batch in store.vector_pages(tenant, filters, page):
        if vectors is None:
            vectors = np.zeros((n, batch.vectors.shape[1]), np.float32)
        # k + 1: the face itself is (almost always) its own nearest hit.
        results = store.search_many(
            batch.vectors, tenant, top_k=k + 1, filters=filters, with_payload=False, hnsw_ef=hnsw_ef
        )
        for face_id, vector, hits in zip(batch.ids, batch.vectors, results, strict=True):
            row = index.get(face_id)
            if row is None:
                continue  # written after the first walk
            seen[row] = True
            vectors[row] = vector
            column = 0
            for hit in hits:
                other = index.get(hit.id)
                if other is None or other == row:
                    continue
                neighbours[row, column] = other
                similarities[row, column] = hit.score
                column += 1
                if column == k:
                    break
    if seen.all():
        return KnnGraph(ids, neighbours, similarities, vectors)
    # Faces deleted between the walks: drop their rows and renumber the rest.
    renumber = np.full(n + 1, -1, np.int32)  # the last slot maps -1 to -1
    kept = np.flatnonzero(seen)
    renumber[kept] = np.arange(kept.size, dtype=np.int32)
    remapped = renumber[neighbours[kept]]
    sims = np.where(remapped >= 0, similarities[kept], 0.0).astype(np.float32)
    # Keep each row's valid neighbours first, best first.
    order = np.argsort(remapped < 0, axis=1, kind="stable")
    return KnnGraph(
        [ids[i] for i in kept],
        np.take_along_axis(remapped, order, axis=1),
        np.take_along_axis(sims, order, axis=1),
        vectors[kept] if vectors is not None else None,
    )
