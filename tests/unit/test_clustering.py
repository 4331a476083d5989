"""The grouping rules of facepipe.persons.clustering, on small hand-made and random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from facepipe.calibrate import average_linkage, clusters_after
from facepipe.persons.clustering import (
    Constraints,
    KnnGraph,
    Neighbour,
    bcubed,
    carry_over,
    choose_person,
    person_linkages,
    recluster,
)


def _clustered(people: int, per_person: int, dim: int = 32, spread: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    truth = np.repeat(np.arange(people), per_person)
    vectors = centres[truth] * 0.3 + rng.normal(size=(truth.size, dim)) * spread
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), truth


def _graph(vectors: np.ndarray, k: int, with_vectors: bool = True) -> KnnGraph:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k].astype(np.int32)
    return KnnGraph(
        [f"f{i}" for i in range(len(vectors))],
        order,
        np.take_along_axis(sims, order, axis=1).astype(np.float32),
        vectors.astype(np.float32) if with_vectors else None,
    )


def _exact_average_linkage(vectors: np.ndarray, cut: float) -> np.ndarray:
    merges = average_linkage(np.clip(1.0 - vectors @ vectors.T, 0.0, 2.0))
    return clusters_after(len(vectors), merges, sum(1 for _, _, h in merges if h <= cut))


def test_choose_person_outweighs_one_close_face_by_the_rest_of_the_person() -> None:
    # One member of A is close, A's nine other members are no closer than the 4th neighbour.
    neighbours = [
        Neighbour("a1", 0.8, "A"),
        Neighbour("x1", 0.25, "X"),
        Neighbour("x2", 0.2, "X"),
        Neighbour("y1", 0.1, "Y"),
    ]
    # Most-similar-face would join A (0.8); average linkage sees (0.8 + 9*0.1)/10 = 0.17.
    assert choose_person(neighbours, {"A": 10, "X": 2, "Y": 1}, cut_distance=0.7) is None
    # A person of one face is all listed: its average is that face.
    assert choose_person(neighbours, {"A": 1, "X": 2, "Y": 1}, cut_distance=0.7) == "A"


def test_choose_person_min_similarity_keeps_a_face_from_a_stranger_above_the_cut() -> None:
    # A person of one face at 0.40: within a cut of 0.65 (0.35), below a verify score of 0.43.
    neighbours = [Neighbour("b", 0.45, "B"), Neighbour("s", 0.40, "S"), Neighbour("x", 0.1, "X")]
    sizes = {"S": 1, "B": 40, "X": 5}
    assert choose_person(neighbours, sizes, 0.65) == "S"
    assert choose_person(neighbours, sizes, 0.65, min_similarity=0.43) is None
    # A person qualifies by its closest face; its average still decides.
    close = [Neighbour(f"b{i}", 0.6, "B") for i in range(10)] + neighbours
    assert choose_person(close, {**sizes, "B": 10}, 0.65, min_similarity=0.43) == "B"


def test_choose_person_with_person_sums_uses_the_exact_average() -> None:
    vectors, _ = _clustered(2, 30, spread=0.3, seed=2)
    face, person_a, person_b = vectors[0], vectors[1:30], vectors[30:]
    neighbours = [Neighbour(f"a{i}", float(face @ v), "A") for i, v in enumerate(person_a[:3])]
    neighbours += [Neighbour("b0", float(face @ person_b[0]), "B")]
    sizes = {"A": 29, "B": 30}
    sums = {"A": person_a.sum(axis=0), "B": person_b.sum(axis=0)}
    exact_a = float(np.mean(person_a @ face))
    linkages = person_linkages(neighbours, sizes, vector=face, person_sums=sums)
    assert linkages["A"] == pytest.approx(exact_a)
    assert choose_person(neighbours, sizes, 1.0 - exact_a + 1e-6, vector=face, person_sums=sums) == "A"
    assert choose_person(neighbours, sizes, 1.0 - exact_a - 1e-6, vector=face, person_sums=sums) is None


def test_choose_person_does_not_depend_on_neighbour_order_and_starts_new_when_alone() -> None:
    neighbours = [Neighbour("a", 0.6, "A"), Neighbour("b", 0.6, "B"), Neighbour("c", 0.5, "")]
    sizes = {"A": 3, "B": 3}
    assert choose_person(neighbours, sizes, 0.7) == choose_person(neighbours[::-1], sizes, 0.7)
    assert choose_person([], {}, 0.7) is None
    assert choose_person([Neighbour("c", 0.9, "")], {}, 0.7) is None
    # Beyond the cut: a new person.
    assert choose_person([Neighbour("a", 0.2, "A")], {"A": 1}, 0.7) is None


@pytest.mark.parametrize("with_vectors", [True, False])
def test_recluster_on_a_complete_graph_is_exact_average_linkage(with_vectors: bool) -> None:
    vectors, _ = _clustered(8, 6, spread=0.25, seed=3)
    expected = _exact_average_linkage(vectors, 0.8)
    assert len(set(expected.tolist())) > 4  # a cut with something to get wrong
    labels = recluster(_graph(vectors, len(vectors) - 1, with_vectors), 0.8, Constraints())
    assert bcubed(expected, labels) == pytest.approx((1.0, 1.0, 1.0))


def test_recluster_with_vectors_is_exact_on_a_sparse_graph_and_without_never_chains() -> None:
    # Persons larger than k: only the vectors tell the average over the unlisted pairs.
    vectors, truth = _clustered(12, 20, spread=0.2, seed=5)
    expected = _exact_average_linkage(vectors, 0.5)
    exact = recluster(_graph(vectors, 6), 0.5, Constraints())
    assert bcubed(expected, exact) == pytest.approx((1.0, 1.0, 1.0))
    assert bcubed(truth, exact)[2] > 0.99
    # Without vectors, unlisted pairs count as unrelated: people may split, never merge.
    graph_only = recluster(_graph(vectors, 6, with_vectors=False), 0.5, Constraints())
    precision, recall, _ = bcubed(truth, graph_only)
    assert precision == 1.0 and recall < 0.5


def test_recluster_finds_the_people_from_a_sparse_graph() -> None:
    vectors, truth = _clustered(40, 10)
    labels = recluster(_graph(vectors, 8), 0.7, Constraints())
    precision, recall, f1 = bcubed(truth, labels)
    assert precision == 1.0 and f1 > 0.99


def test_recluster_honours_together_and_apart() -> None:
    vectors, truth = _clustered(4, 5)
    graph = _graph(vectors, 6)
    ids = graph.ids
    constraints = Constraints(
        together=[[ids[0], ids[5]]],  # two people's faces forced into one
        apart=[([ids[10], ids[11]], [ids[12]])],  # one person split
    )
    labels = recluster(graph, 0.7, constraints)
    assert labels[0] == labels[5]
    assert labels[10] == labels[11] != labels[12]
    assert len(set(labels[15:20].tolist())) == 1


def test_recluster_apart_wins_over_together() -> None:
    vectors, _ = _clustered(2, 3)
    graph = _graph(vectors, 5)
    ids = graph.ids
    labels = recluster(graph, 0.7, Constraints(together=[[ids[0], ids[1]]], apart=[([ids[0]], [ids[1]])]))
    assert labels[0] != labels[1]


def test_carry_over_keeps_ids_by_largest_overlap() -> None:
    ids = ["a", "b", "c", "d", "e", "f"]
    labels = np.array([0, 0, 0, 1, 1, 2])
    previous = {"a": "P", "b": "P", "c": "Q", "d": "Q", "e": "Q"}
    out = carry_over(ids, labels, previous)
    assert out["a"] == out["b"] == out["c"] == "P"
    assert out["d"] == out["e"] == "Q"
    assert out["f"] not in {"P", "Q"} and len(out["f"]) == 32
    # A kept (named) id goes first even where another overlaps more.
    named = carry_over(["a", "b", "c"], np.array([0, 0, 0]), {"a": "P", "b": "P", "c": "N"}, keep={"N"})
    assert set(named.values()) == {"N"}


def test_bcubed_known_values() -> None:
    assert bcubed(["x", "x", "y", "y"], [0, 0, 1, 1]) == (1.0, 1.0, 1.0)
    precision, recall, f1 = bcubed(["x", "x", "y", "y"], [0, 0, 0, 0])
    assert (precision, recall) == (0.5, 1.0)
    assert f1 == pytest.approx(2 / 3)
    precision, recall, _ = bcubed(["x", "x", "y", "y"], [0, 1, 2, 3])
    assert (precision, recall) == (1.0, 0.5)
