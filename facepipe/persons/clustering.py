"""Grouping faces into persons: average linkage over a sparse nearest-neighbour graph.

Both ways of grouping share one rule, so that they agree: a face (or a group of faces)
joins a person when the *average* cosine distance between them, over every pair of faces,
is at most the pack's ``persons_cluster_distance``. Average linkage does not chain
unrelated people together the way "join the most similar face" does: one close face is
outweighed by the rest of the person.

- :func:`recluster` rebuilds a tenant's partition from a :class:`KnnGraph` (each face's
  k nearest faces, from the vector store): the graph says which groups may merge, and
  with the faces' vectors the average is exact, since for unit vectors the mean
  similarity of two groups is the dot product of their sums over the product of their
  sizes. Memory is O(n*(k + dim)), never n^2. The user's decisions come in as
  :class:`Constraints`.
- :func:`choose_person` places one new face among the persons of its k nearest faces
  (incremental assignment). Members of a person that are not among those k count at the
  k-th similarity, an upper bound on theirs (the store would have listed them
  otherwise), and never above the listed members' mean: a person with one close face
  among many counts as far as the rest of its faces allow, not as that one face. Given
  the persons' vector sums it uses the exact average instead.
- :func:`carry_over` keeps the person ids (and so the names) across a recluster.
- :func:`bcubed` scores a partition against the true identities.

Incremental assignment is greedy: a face placed early cannot move when later faces show
it belongs elsewhere, so its result drifts a little with the order faces arrive in; a
recluster (order-free) brings it back to the batch answer.

Pure numpy and the standard library: no IO.
"""

from __future__ import annotations

import heapq
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Constraints",
    "KnnGraph",
    "Neighbour",
    "bcubed",
    "carry_over",
    "choose_person",
    "recluster",
]


@dataclass(frozen=True)
class Neighbour:
    """A stored face near a new one: its point id, cosine similarity and current person."""

    face_id: str
    similarity: float  # cosine
    person_id: str  # "" when unassigned


def _linkage(known_sum: float, known_count: int, pairs: int, fill: float) -> float:
    """Average similarity over ``pairs`` pairs: the known ones, the rest at ``fill``."""
    return (known_sum + (pairs - known_count) * fill) / pairs


def person_linkages(
    neighbours: Sequence[Neighbour],
    person_sizes: Mapping[str, int],
    fill_similarity: float | None = None,
    vector: np.ndarray | None = None,
    person_sums: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """The average similarity of a new face to each person among its neighbours.

    Members of a person that are not among ``neighbours`` count at ``fill_similarity``,
    by default the lowest similarity listed (the k-th nearest: no unlisted face can be
    closer), and never above the listed members' mean. A person's size is
    ``person_sizes[pid]``, at least its listed members. Given the face's unit ``vector``
    and a person's sum of unit vectors in ``person_sums``, that person's average is exact:
    ``vector . sum / size``."""
    listed = [n for n in neighbours if n.person_id]
    if not listed:
        return {}
    fill = min(n.similarity for n in neighbours) if fill_similarity is None else fill_similarity
    sums: dict[str, float] = defaultdict(float)
    counts: Counter[str] = Counter()
    for n in listed:
        sums[n.person_id] += float(n.similarity)
        counts[n.person_id] += 1
    out: dict[str, float] = {}
    for pid, count in counts.items():
        size = max(int(person_sizes.get(pid, count)), count)
        total = person_sums.get(pid) if person_sums is not None and vector is not None else None
        if total is not None:
            out[pid] = float(np.dot(np.asarray(vector, np.float64), np.asarray(total, np.float64))) / size
        else:
            out[pid] = _linkage(sums[pid], count, size, min(fill, sums[pid] / count))
    return out


def choose_person(
    neighbours: Sequence[Neighbour],
    person_sizes: Mapping[str, int],
    cut_distance: float,
    fill_similarity: float | None = None,
    vector: np.ndarray | None = None,
    person_sums: Mapping[str, np.ndarray] | None = None,
    min_similarity: float | None = None,
) -> str | None:
    """The person a new face joins, or None to start a new person.

    ``neighbours`` are the face's k nearest stored faces of the tenant (itself excluded),
    each with its current person; ``person_sizes`` the number of faces of those persons.
    The face joins the person with the highest average similarity (see
    :func:`person_linkages`) when its average cosine distance ``1 - similarity`` is within
    ``cut_distance``; ties go to the larger person, then the smaller id, so the choice
    never depends on the order of ``neighbours``. ``vector`` and ``person_sums`` (the
    face's unit vector, each person's sum of its faces' unit vectors) make the average
    exact for the persons they cover.

    ``min_similarity`` (pass the pack's ``same_person_min_score``): a person qualifies only
    when its most similar face listed reaches it. Joining a person of one or two faces is
    a claim about one pair, the claim ``verify`` makes; a batch clustering protects small
    groups by merging the closest pairs first, but one face at a time an early face would
    otherwise join the first stranger above the cut and pull that person's later faces
    along."""
    linkages = person_linkages(neighbours, person_sizes, fill_similarity, vector, person_sums)
    if min_similarity is not None:
        closest: dict[str, float] = {}
        for n in neighbours:
            if n.person_id:
                closest[n.person_id] = max(closest.get(n.person_id, -1.0), float(n.similarity))
        linkages = {pid: link for pid, link in linkages.items() if closest[pid] >= min_similarity}
    linkages = {pid: link for pid, link in linkages.items() if 1.0 - link <= cut_distance}
    if not linkages:
        return None
    return min(linkages, key=lambda pid: (-linkages[pid], -person_sizes.get(pid, 0), pid))


@dataclass(frozen=True)
class KnnGraph:
    """Each face's k nearest faces of the same tenant: row i lists face ``ids[i]``'s
    neighbours as indexes into ``ids`` (-1 = none), best first, with their cosine
    similarities. Itself is not listed."""

    ids: list[str]
    neighbours: np.ndarray  # int32 [n, k], -1 = none
    similarities: np.ndarray  # float32 [n, k]
    # float32 [n, dim] unit rows, or None: with them a recluster's linkage is exact.
    vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.neighbours.ndim != 2 or self.neighbours.shape[0] != n:
            raise ValueError(f"neighbours must be [n, k] with n = {n}, got {self.neighbours.shape}")
        if self.similarities.shape != self.neighbours.shape:
            raise ValueError(
                f"similarities {self.similarities.shape} and neighbours {self.neighbours.shape} differ"
            )
        if self.vectors is not None and (self.vectors.ndim != 2 or self.vectors.shape[0] != n):
            raise ValueError(f"vectors must be [n, dim] with n = {n}, got {self.vectors.shape}")

    @property
    def k(self) -> int:
        return int(self.neighbours.shape[1])


@dataclass
class Constraints:
    """The user's decisions, as constraints on a recluster.

    ``together``: groups of face ids that must end in one person (a merge, a hand move);
    ``apart``: pairs of groups whose faces never share a person (a split, a face taken
    out of a person). Unknown face ids are ignored."""

    together: list[list[str]] = field(default_factory=list)  # face ids that must share a person
    apart: list[tuple[list[str], list[str]]] = field(default_factory=list)  # groups never joined


def _edges(graph: KnnGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph's undirected edges (i < j) once each, with their similarity."""
    n, k = graph.neighbours.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = graph.neighbours.reshape(-1).astype(np.int64)
    sims = graph.similarities.reshape(-1).astype(np.float64)
    keep = (cols >= 0) & (cols < n) & (cols != rows)
    rows, cols, sims = rows[keep], cols[keep], sims[keep]
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    key = low * n + high
    order = np.argsort(key, kind="stable")
    key, sims = key[order], sims[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    # Both directions of a pair carry the same cosine; the store may round them apart.
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, key.size))
    mean = np.add.reduceat(sims, starts) / counts if key.size else sims
    key = key[first]
    return key // n, key % n, mean


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def root(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i


def recluster(graph: KnnGraph, cut_distance: float, constraints: Constraints | None = None) -> np.ndarray:
    """Average-linkage clustering of the graph's faces cut at ``cut_distance``: labels [n].

    Starts from the ``together`` groups (each one cluster) and merges the pair of clusters
    joined by a graph edge with the smallest average cosine distance over all their pairs
    of faces, until none is within ``cut_distance``; clusters holding the two sides of an
    ``apart`` pair never merge. The graph decides which clusters may merge; the average
    is exact when the graph carries the vectors (for unit vectors the mean similarity of
    two groups is the dot product of their sums over the product of their sizes, so a
    cluster is kept as one sum: memory O(n*(k + dim))). Without vectors, pairs of faces
    the graph does not list count as unrelated (similarity 0): that never chains, but a
    person much larger than k may stay split. Labels are 0..m-1, numbered by each
    cluster's first face."""
    constraints = constraints or Constraints()
    n = len(graph.ids)
    if n == 0:
        return np.zeros(0, np.int64)
    index = {face_id: i for i, face_id in enumerate(graph.ids)}
    found = _UnionFind(n)
    sums = None if graph.vectors is None else np.array(graph.vectors, dtype=np.float32, copy=True)

    # Cannot-link: each apart pair t tags its two sides 2t and 2t+1; tags 2t and 2t+1 never meet.
    tags: list[set[int] | None] = [None] * n
    for t, (left, right) in enumerate(constraints.apart):
        for side, group in ((2 * t, left), (2 * t + 1, right)):
            for face_id in group:
                i = index.get(face_id)
                if i is not None:
                    tags[i] = (tags[i] or set()) | {side}

    def clash(a: set[int] | None, b: set[int] | None) -> bool:
        return bool(a and b) and any((tag ^ 1) in b for tag in a)

    size = np.ones(n, np.int64)

    def join(kept: int, absorbed: int) -> None:
        found.parent[absorbed] = kept
        size[kept] += size[absorbed]
        if sums is not None:
            sums[kept] += sums[absorbed]
        if tags[absorbed]:
            tags[kept] = (tags[kept] or set()) | tags[absorbed]

    for group in constraints.together:
        members = [index[f] for f in group if f in index]
        for i in members[1:]:
            a, b = found.root(members[0]), found.root(i)
            if a != b and not clash(tags[a], tags[b]):  # where together contradicts apart, apart wins
                join(min(a, b), max(a, b))

    # Per cluster: neighbouring cluster -> sum of the listed similarities between them.
    adjacency: list[dict[int, float] | None] = [None] * n
    for i in range(n):
        if found.root(i) == i:
            adjacency[i] = {}
    lows, highs, sims = _edges(graph)
    roots = np.fromiter((found.root(i) for i in range(n)), np.int64, n)
    for a, b, s in zip(roots[lows].tolist(), roots[highs].tolist(), sims.tolist(), strict=True):
        if a != b:
            adjacency[a][b] = adjacency[b][a] = adjacency[a].get(b, 0.0) + s
    del lows, highs, sims, roots

    def distances(a: int, others: list[int]) -> np.ndarray:
        """Average cosine distance of cluster ``a`` to each of ``others``."""
        pairs = (size[others] * size[a]).astype(np.float64)
        if sums is not None:
            return 1.0 - (sums[others].astype(np.float64) @ sums[a].astype(np.float64)) / pairs
        links = adjacency[a]
        return 1.0 - np.fromiter((links[o] for o in others), np.float64, len(others)) / pairs

    # Only pairs within the cut are queued: a pair beyond it is queued again if a merge
    # brings it within. An entry is stale when either side has merged since (its distance
    # changed); every merge queues the merged cluster's pairs afresh.
    heap: list[tuple[float, int, int]] = []
    for a in range(n):
        links = adjacency[a]
        others = [b for b in links if b > a] if links else []
        if others:
            near = distances(a, others)
            heap.extend((float(d), a, b) for d, b in zip(near, others, strict=True) if d <= cut_distance)
    heapq.heapify(heap)

    while heap:
        d, a, b = heapq.heappop(heap)
        links_a, links_b = adjacency[a], adjacency[b]
        if links_a is None or links_b is None or b not in links_a or clash(tags[a], tags[b]):
            continue
        if abs(float(distances(a, [b])[0]) - d) > 1e-9:
            continue  # stale
        # Merge the smaller adjacency into the larger one.
        kept, absorbed = (a, b) if len(links_a) >= len(links_b) else (b, a)
        kept_links, absorbed_links = adjacency[kept], adjacency[absorbed]
        del kept_links[absorbed]
        del absorbed_links[kept]
        for other, s in absorbed_links.items():
            other_links = adjacency[other]
            del other_links[absorbed]
            kept_links[other] = other_links[kept] = kept_links.get(other, 0.0) + s
        adjacency[absorbed] = None
        join(kept, absorbed)
        others = list(kept_links)
        if others:
            for dist, other in zip(distances(kept, others).tolist(), others, strict=True):
                if dist <= cut_distance:
                    heapq.heappush(heap, (dist, min(kept, other), max(kept, other)))

    labels = np.empty(n, np.int64)
    numbers: dict[int, int] = {}
    for i in range(n):
        labels[i] = numbers.setdefault(found.root(i), len(numbers))
    return labels


def carry_over(
    ids: Sequence[str],
    labels: np.ndarray,
    previous: Mapping[str, str],
    keep: Collection[str] = (),
) -> dict[str, str]:
    """Face id -> person id for a new partition, keeping the old person ids.

    Each cluster takes the previous person id it shares the most faces with, each id going
    to one cluster only (greedily, largest overlap first); ids in ``keep`` (named or
    user-made persons) are placed before the others, so they survive whenever any cluster
    overlaps them. Clusters left without an id get a new one (uuid4 hex). Ties go to the
    smaller id, so the answer does not depend on the order of the input."""
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    label_list = [int(label) for label in np.asarray(labels).tolist()]
    overlap: Counter[tuple[int, str]] = Counter()
    for face_id, label in zip(ids, label_list, strict=True):
        pid = previous.get(face_id, "")
        if pid:
            overlap[(label, pid)] += 1
    kept = set(keep)
    ranked = sorted(
        overlap.items(), key=lambda item: (item[0][1] not in kept, -item[1], item[0][1], item[0][0])
    )
    person_of: dict[int, str] = {}
    taken: set[str] = set()
    for (label, pid), _ in ranked:
        if label not in person_of and pid not in taken:
            person_of[label] = pid
            taken.add(pid)
    for label in sorted(set(label_list)):
        if label not in person_of:
            person_of[label] = uuid.uuid4().hex
    return {face_id: person_of[label] for face_id, label in zip(ids, label_list, strict=True)}


def bcubed(
    labels_true: Sequence[Hashable] | np.ndarray, labels_pred: Sequence[Hashable] | np.ndarray
) -> tuple[float, float, float]:
    """BCubed (precision, recall, F1) of a partition against the true labels.

    Per item: precision is the share of its cluster with its label, recall the share of
    its label in its cluster; both averaged over the items."""
    truth = (
        list(np.asarray(labels_true).tolist()) if isinstance(labels_true, np.ndarray) else list(labels_true)
    )
    pred = (
        list(np.asarray(labels_pred).tolist()) if isinstance(labels_pred, np.ndarray) else list(labels_pred)
    )
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} true labels but {len(pred)} predicted")
    if not truth:
        return 1.0, 1.0, 1.0
    both = Counter(zip(truth, pred, strict=True))
    true_sizes = Counter(truth)
    pred_sizes = Counter(pred)
    precision = sum(c * c / pred_sizes[p] for (_, p), c in both.items()) / len(truth)
    recall = sum(c * c / true_sizes[t] for (t, _), c in both.items()) / len(truth)
    f1 = 2 * precision * recall / (precision + recall)
    return precision, recall, f1
