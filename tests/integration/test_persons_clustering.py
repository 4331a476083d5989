"""Grouping the eval faces into persons with the real models and a real Qdrant Edge store.

The faces: ../shared/eval/faces (LFW photos, the face nearest the centre; Glint crops,
already aligned, embedded as they are) and ../shared/faces (the face nearest the centre).
Each pack is measured at its own calibrated ``persons_cluster_distance``, which was
chosen on the calibration identities only (../shared/eval/CALIBRATION.md); the
thresholds here are the acceptance's, not tuned.

- recluster: the kNN graph read from the store, average linkage cut at the pack's cut.
- incremental: faces arrive one at a time in a random order; each one's k nearest stored
  faces (with their persons, from the store, as the persons service asks) decide its
  person, and it is stored with it. Three orders.
- reconcile: a recluster after an incremental run gives the same partition whatever the
  order, and keeps the incremental person ids.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import EVAL_FACES, EVAL_LFW, SHARED_FACES

from facepipe.calibrate import CALIBRATION_GLINT
from facepipe.persons.clustering import (
    Constraints,
    Neighbour,
    bcubed,
    carry_over,
    choose_person,
    recluster,
)
from facepipe.persons.graph import DEFAULT_K, knn_graph
from facepipe.storage import EdgeVectorStore, FacePoint

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
ORDERS = (0, 1, 2)
# The baseline rule: join the person of the most similar face when above this.
BASELINE_SIMILARITY = 0.4


@dataclass(frozen=True)
class EvalSet:
    pack: str
    ids: list[str]  # point ids
    vectors: np.ndarray  # unit rows
    labels: np.ndarray  # identity (folder name)
    glint: np.ndarray  # bool: a pre-aligned Glint crop
    held_out: np.ndarray  # bool: an identity outside the calibration split
    cut: float
    same_person: float


def _eval_files() -> list[tuple[Path, bool]]:
    """(file, is an aligned crop) of the whole eval set, in a fixed order."""
    files: list[tuple[Path, bool]] = []
    for root in (EVAL_FACES, SHARED_FACES):
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in PHOTO_SUFFIXES:
                    aligned = root == EVAL_FACES and folder.name not in EVAL_LFW
                    files.append((path, aligned))
    return files


async def _embed(settings, files: list[tuple[Path, bool]]) -> tuple[np.ndarray, list[int]]:
    import cv2

    from facepipe.faces import FaceEngine, centre_face
    from facepipe.imaging import decode_image

    engine = FaceEngine.load(settings, "test")
    vectors, kept = [], []
    try:
        size = engine.embedder.size
        for i, (path, aligned) in enumerate(files):
            data = path.read_bytes()
            if aligned:
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                crop = bgr if bgr.shape[:2] == (size, size) else cv2.resize(bgr, (size, size))
                vectors.append((await engine.embedder.embed_crops([crop]))[0])
            else:
                image = decode_image(data)
                faces = await engine.detector.detect(image, engine.detector.params(include_rejected=True))
                if not faces:
                    continue
                face = centre_face(faces, image.width, image.height)
                vectors.append((await engine.embedder.embed_faces(image.bgr, [face.landmarks]))[0][0])
            kept.append(i)
    finally:
        await engine.close()
    return np.stack(vectors).astype(np.float32), kept


@pytest.fixture(scope="module", params=["opencv", "local"])
def eval_set(request, facepipe_home) -> EvalSet:
    from facepipe.config import Settings
    from facepipe.models.registry import pack_thresholds

    if not EVAL_FACES.is_dir():
        pytest.skip("../shared/eval is not present")
    pack = request.param
    directory = facepipe_home / "models" / pack
    if not directory.is_dir():
        pytest.skip(f"pack {pack} is not installed")
    settings = Settings.from_env("detector", home=facepipe_home, model_pack=pack)
    files = _eval_files()
    vectors, kept = asyncio.run(_embed(settings, files))
    assert len(kept) >= len(files) - 2  # nearly every photo has a face
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.asarray([files[i][0].parent.name for i in kept])
    calibration = set(CALIBRATION_GLINT) | {p.name for p in SHARED_FACES.iterdir() if p.is_dir()}
    thresholds = pack_thresholds(directory)
    return EvalSet(
        pack=pack,
        ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, str(files[i][0]))) for i in kept],
        vectors=vectors,
        labels=labels,
        glint=np.asarray([files[i][1] for i in kept]),
        held_out=np.asarray([label not in calibration for label in labels]),
        cut=thresholds["persons_cluster_distance"],
        same_person=thresholds["same_person_min_score"],
    )


def _scores(faces: EvalSet, persons: list[str] | np.ndarray, name: str) -> tuple[float, float, float]:
    persons = np.asarray(persons)
    whole = bcubed(faces.labels, persons)
    glint = bcubed(faces.labels[faces.glint], persons[faces.glint])
    held = bcubed(faces.labels[faces.held_out], persons[faces.held_out])
    print(
        f"{faces.pack} {name}: P {whole[0]:.4f} R {whole[1]:.4f} F1 {whole[2]:.4f} | "
        f"Glint F1 {glint[2]:.4f} | held-out F1 {held[2]:.4f} | {len(set(persons.tolist()))} persons"
    )
    return whole[0], whole[2], glint[2]


def _store(tmp_path: Path, faces: EvalSet) -> EdgeVectorStore:
    store = EdgeVectorStore(tmp_path / "vectors")
    store.ensure_collection(faces.vectors.shape[1])
    return store


def _recluster(store: EdgeVectorStore, tenant: str, faces: EvalSet, constraints: Constraints | None = None):
    graph = knn_graph(store, tenant, DEFAULT_K)
    labels = recluster(graph, faces.cut, constraints or Constraints())
    where = {face_id: i for i, face_id in enumerate(graph.ids)}
    return graph, np.asarray([labels[where[f]] for f in faces.ids])


def _recluster_fresh(store: EdgeVectorStore, faces: EvalSet):
    store.upsert(
        [FacePoint(i, v, {"tenant_id": "fresh"}) for i, v in zip(faces.ids, faces.vectors, strict=True)]
    )
    return _recluster(store, "fresh", faces)


def _incremental(store: EdgeVectorStore, tenant: str, faces: EvalSet, seed: int, baseline: bool = False):
    """Each face in a random order: its k nearest stored faces with their persons decide."""
    order = np.random.default_rng(seed).permutation(len(faces.ids))
    person_of: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for i in order.tolist():
        hits = store.search(faces.vectors[i], tenant, top_k=DEFAULT_K)
        neighbours = [Neighbour(h.id, h.score, str(h.payload.get("person_id", ""))) for h in hits]
        if baseline:
            chosen = neighbours[0].person_id if hits and hits[0].score > BASELINE_SIMILARITY else None
        else:
            chosen = choose_person(neighbours, sizes, faces.cut, min_similarity=faces.same_person)
        person = chosen or uuid.uuid4().hex
        sizes[person] = sizes.get(person, 0) + 1
        person_of[faces.ids[i]] = person
        store.upsert([FacePoint(faces.ids[i], faces.vectors[i], {"tenant_id": tenant, "person_id": person})])
    return [person_of[f] for f in faces.ids]


def test_recluster_meets_the_quality_targets(eval_set: EvalSet, tmp_path) -> None:
    with _store(tmp_path, eval_set) as store:
        store.upsert(
            [FacePoint(i, v, {"tenant_id": "t"}) for i, v in zip(eval_set.ids, eval_set.vectors, strict=True)]
        )
        graph, labels = _recluster(store, "t", eval_set)
    assert len(graph.ids) == len(eval_set.ids) and graph.vectors is not None
    precision, f1, glint_f1 = _scores(eval_set, labels, f"recluster (cut {eval_set.cut})")
    assert precision >= 0.98 and f1 >= 0.95 and glint_f1 >= 0.93


def test_incremental_assignment_in_three_orders(eval_set: EvalSet, tmp_path) -> None:
    with _store(tmp_path, eval_set) as store:
        results = [_incremental(store, f"order{seed}", eval_set, seed) for seed in ORDERS]
        baselines = [_incremental(store, f"baseline{seed}", eval_set, seed, baseline=True) for seed in ORDERS]
        _, reclustered = _recluster_fresh(store, eval_set)
    scores = [
        _scores(eval_set, persons, f"incremental order {seed}")
        for seed, persons in zip(ORDERS, results, strict=True)
    ]
    base = [
        _scores(eval_set, persons, f"baseline order {seed}")
        for seed, persons in zip(ORDERS, baselines, strict=True)
    ]
    _, batch_f1, _ = _scores(eval_set, reclustered, "recluster")
    f1s = [f1 for _, f1, _ in scores]
    print(
        f"{eval_set.pack}: incremental F1 spread {max(f1s) - min(f1s):.4f}, "
        f"mean {np.mean(f1s):.4f} vs recluster {batch_f1:.4f}; "
        f"baseline mean {np.mean([f1 for _, f1, _ in base]):.4f}"
    )
    # No chaining: strangers stay apart whatever the order.
    assert all(precision >= 0.97 for precision, _, _ in scores)
    assert min(f1s) >= 0.90
    assert np.mean(f1s) >= np.mean([f1 for _, f1, _ in base]) - 0.005


def test_a_recluster_after_any_order_gives_one_partition_and_keeps_the_ids(
    eval_set: EvalSet, tmp_path
) -> None:
    partitions, kept = [], []
    with _store(tmp_path, eval_set) as store:
        for seed in ORDERS:
            tenant = f"order{seed}"
            incremental = _incremental(store, tenant, eval_set, seed)
            graph, labels = _recluster(store, tenant, eval_set)
            previous = dict(zip(eval_set.ids, incremental, strict=True))
            persons = carry_over(eval_set.ids, labels, previous)
            partitions.append(labels)
            kept.append(np.mean([persons[f] == previous[f] for f in eval_set.ids]))
            # One person id per cluster, and each previous id to one cluster at most.
            by_label: dict[int, set[str]] = {}
            for face_id, label in zip(eval_set.ids, labels.tolist(), strict=True):
                by_label.setdefault(label, set()).add(persons[face_id])
            assert all(len(ids) == 1 for ids in by_label.values())
            assert len({next(iter(ids)) for ids in by_label.values()}) == len(by_label)
    print(f"{eval_set.pack}: faces keeping their incremental person id after the recluster: {kept}")
    for other in partitions[1:]:
        assert bcubed(partitions[0], other) == (1.0, 1.0, 1.0)
    assert min(kept) >= 0.8


def test_recluster_honours_constraints_on_real_faces(eval_set: EvalSet, tmp_path) -> None:
    with _store(tmp_path, eval_set) as store:
        store.upsert(
            [FacePoint(i, v, {"tenant_id": "t"}) for i, v in zip(eval_set.ids, eval_set.vectors, strict=True)]
        )
        _, free = _recluster(store, "t", eval_set)
        ids = np.asarray(eval_set.ids)
        first, second = sorted(set(eval_set.labels.tolist()))[:2]
        first_faces = ids[eval_set.labels == first].tolist()
        second_faces = ids[eval_set.labels == second].tolist()
        # A user merged two people's persons, and split a third person in two.
        third = sorted(set(eval_set.labels.tolist()))[2]
        third_faces = ids[eval_set.labels == third].tolist()
        constraints = Constraints(
            together=[first_faces[:1] + second_faces[:1]],
            apart=[(third_faces[:3], third_faces[3:])],
        )
        _, bound = _recluster(store, "t", eval_set, constraints)
    where = {f: i for i, f in enumerate(eval_set.ids)}
    assert bound[where[first_faces[0]]] == bound[where[second_faces[0]]]
    assert free[where[first_faces[0]]] != free[where[second_faces[0]]]
    assert not {bound[where[f]] for f in third_faces[:3]} & {bound[where[f]] for f in third_faces[3:]}
    # Elsewhere the partition stands.
    untouched = ~np.isin(eval_set.labels, [first, second, third])
    assert bcubed(free[untouched], bound[untouched])[2] > 0.99


def test_knn_graph_from_the_store_is_the_exact_neighbourhood(tmp_path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(300)]
    with EdgeVectorStore(tmp_path / "vectors") as store:
        store.ensure_collection(32)
        store.upsert(
            [FacePoint(ids[i], vectors[i], {"tenant_id": "a" if i < 200 else "b"}) for i in range(300)]
        )
        graph = knn_graph(store, "a", 7, page=64)
        assert knn_graph(store, "nobody", 7).ids == []
    assert sorted(graph.ids) == sorted(ids[:200])  # the tenant's faces only
    where = [ids.index(f) for f in graph.ids]
    mine = vectors[where]
    sims = mine @ mine.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1)[:, :7]
    assert (np.sort(graph.neighbours, axis=1) == np.sort(expected, axis=1)).mean() > 0.99
    assert np.allclose(graph.similarities, np.take_along_axis(sims, graph.neighbours, axis=1), atol=1e-5)
    assert np.allclose(graph.vectors, mine, atol=1e-6)
