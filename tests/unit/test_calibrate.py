"""The calibration's choice of thresholds, on synthetic embeddings whose answer is known
or checked against a plain pair-by-pair count: the false-match-rate thresholds, the
average-linkage merges and the BCubed-best clustering cut."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facepipe.calibrate import (
    average_linkage,
    bcubed,
    best_cluster_cut,
    clusters_after,
    pick_thresholds,
    threshold_at_fmr,
)


def noisy_identities(
    identities: int, per_identity: int, noise: float, dim: int = 64, seed: int = 7
) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim))
    vectors, labels = [], []
    for i, c in enumerate(centres):
        for _ in range(per_identity):
            vectors.append(c + rng.normal(scale=noise, size=dim))
            labels.append(f"id{i}")
    return np.stack(vectors), labels


def pair_by_pair(vectors: np.ndarray, labels: list[str]) -> tuple[list[float], list[float]]:
    """Genuine and impostor cosine similarities, counted without the vectorised code."""
    unit = [v / np.linalg.norm(v) for v in vectors]
    genuine, impostor = [], []
    for i, j in itertools.combinations(range(len(unit)), 2):
        (genuine if labels[i] == labels[j] else impostor).append(float(unit[i] @ unit[j]))
    return genuine, impostor


@pytest.mark.parametrize("target", [0.01, 0.001])
def test_thresholds_meet_their_false_match_rate_and_are_the_lowest_that_do(target: float) -> None:
    vectors, labels = noisy_identities(12, 6, 0.8)
    result = pick_thresholds(vectors, labels, search_fmr=0.05, same_person_fmr=target)
    genuine, impostor = pair_by_pair(vectors, labels)
    assert (result.genuine_pairs, result.impostor_pairs) == (len(genuine), len(impostor))
    for chosen, fmr in ((result.search, 0.05), (result.same_person, target)):
        false_match = sum(s >= chosen.score for s in impostor) / len(impostor)
        assert false_match <= fmr and chosen.fmr == pytest.approx(false_match)
        assert chosen.fnmr == pytest.approx(sum(s < chosen.score for s in genuine) / len(genuine))
        # One step (0.001) lower lets more than the target through: it is the lowest such threshold.
        assert sum(s >= chosen.score - 0.001 for s in impostor) / len(impostor) > fmr
    # A stricter target never gives a lower threshold.
    assert result.same_person.score >= result.search.score


def test_threshold_is_just_above_the_impostors_that_must_stay_out() -> None:
    genuine = np.array([0.9, 0.8, 0.3])
    impostor = np.array([0.61, 0.5, 0.2, 0.1] + [0.0] * 996)  # 1000 pairs: 1e-3 lets one through
    chosen = threshold_at_fmr(genuine, impostor, 1e-3)
    assert chosen.score == 0.501  # the second highest impostor (0.5) must fall below it
    assert (chosen.fmr, chosen.fnmr) == (0.001, pytest.approx(1 / 3))
    assert threshold_at_fmr(genuine, impostor, 1e-4).score == 0.611
    with pytest.raises(ValueError, match="two identities"):
        threshold_at_fmr(np.array([]), impostor, 1e-3)


def reference_average_linkage(distances: np.ndarray) -> list[float]:
    """Merge heights recomputed from the member lists at every step (no update formula)."""
    clusters = [[i] for i in range(len(distances))]
    heights = []
    while len(clusters) > 1:
        best = min(
            (float(np.mean(distances[np.ix_(a, b)])), i, j)
            for (i, a), (j, b) in itertools.combinations(enumerate(clusters), 2)
        )
        height, i, j = best
        heights.append(height)
        clusters[i] = clusters[i] + clusters[j]
        del clusters[j]
    return heights


def test_average_linkage_matches_a_direct_computation() -> None:
    vectors, _ = noisy_identities(5, 4, 1.0, dim=16, seed=3)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = 1.0 - unit @ unit.T
    merges = average_linkage(distances)
    heights = [h for _, _, h in merges]
    assert heights == pytest.approx(reference_average_linkage(distances), abs=1e-12)
    assert heights == sorted(heights)  # monotone: a cut keeps a prefix of the merges
    assert len(set(clusters_after(len(unit), merges, len(merges)).tolist())) == 1


def test_bcubed_scores_known_clusterings() -> None:
    labels = ["a", "a", "b", "b"]
    assert bcubed(np.array([0, 0, 1, 1]), labels) == (1.0, 1.0, 1.0)
    precision, recall, f1 = bcubed(np.array([0, 0, 0, 0]), labels)
    assert (precision, recall) == (0.5, 1.0) and f1 == pytest.approx(2 / 3)
    precision, recall, _ = bcubed(np.array([0, 1, 2, 3]), labels)
    assert (precision, recall) == (1.0, 0.5)


def test_cluster_cut_separates_well_apart_identities_exactly() -> None:
    vectors, labels = noisy_identities(6, 5, 0.3)
    cut = best_cluster_cut(vectors, labels)  # a perfect clustering: no stricter one is near it
    assert (cut.bcubed_f1, cut.clusters) == (1.0, 6)
    # The cut lies between the last merge within an identity and the first across two.
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    merges = average_linkage(1.0 - unit @ unit.T)
    heights = [h for _, _, h in merges]
    within, across = heights[len(labels) - 6 - 1], heights[len(labels) - 6]
    assert within <= cut.distance < across
    assert cut.distance == pytest.approx((within + across) / 2, abs=5e-4)


def test_cluster_cut_is_the_best_of_every_possible_cut() -> None:
    vectors, labels = noisy_identities(8, 5, 1.1, seed=11)
    cut = best_cluster_cut(vectors, labels, tolerance=0.0)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    merges = average_linkage(1.0 - unit @ unit.T)
    every_cut = [bcubed(clusters_after(len(labels), merges, k), labels)[2] for k in range(len(labels))]
    assert cut.bcubed_f1 == pytest.approx(max(every_cut))
    # The stored distance gives that clustering: merges at or below it, none above.
    done = sum(h <= cut.distance for _, _, h in merges)
    assert bcubed(clusters_after(len(labels), merges, done), labels)[2] == pytest.approx(cut.bcubed_f1)


def test_cluster_cut_is_the_strictest_within_the_tolerance_of_the_best() -> None:
    vectors, labels = noisy_identities(8, 5, 1.1, seed=11)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    merges = average_linkage(1.0 - unit @ unit.T)
    heights = [0.0] + [h for _, _, h in merges] + [2.0]
    every_cut = {
        k: bcubed(clusters_after(len(labels), merges, k), labels)[2]
        for k in range(len(labels))
        if heights[k + 1] > heights[k]
    }
    best = max(every_cut.values())
    for tolerance in (0.0, 0.02, 0.05):
        cut = best_cluster_cut(vectors, labels, tolerance=tolerance)
        done = sum(h <= cut.distance for _, _, h in merges)
        assert cut.bcubed_f1 >= best - tolerance
        # No clustering with fewer merges is within the tolerance.
        assert all(f1 < best - tolerance for k, f1 in every_cut.items() if k < done)
    strict = best_cluster_cut(vectors, labels, tolerance=0.05)
    assert strict.distance <= best_cluster_cut(vectors, labels, tolerance=0.0).distance
