"""The subject gallery on a real Qdrant Edge shard and a real object folder: its own
collection, records beside faces, best-face matching, tenants apart, and deletion that
leaves neither points nor objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facepipe.config import Settings, VectorStoreSettings
from facepipe.recognition.gallery import NewFace, SubjectGallery, SubjectRecord, new_subject_id, now_ms
from facepipe.storage import EdgeVectorStore, FacePoint, LocalObjectStore
from facepipe.storage.vectors.collections import (
    VectorCollections,
    active_recognizer,
    model_collection,
    subjects_collection,
)

DIM = 8
SHA = "ab" * 32


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


def face(vector: np.ndarray, source: str = "image:x") -> NewFace:
    return NewFace(vector, b"crop-jpeg", b"thumb-jpeg", 0.9, source)


@pytest.fixture
def gallery(tmp_path: Path):
    store = EdgeVectorStore(tmp_path / "vectors", subjects_collection(SHA, DIM))
    store.ensure_collection(DIM)
    yield SubjectGallery(store, LocalObjectStore(tmp_path / "objects"), DIM), tmp_path
    store.close()


def enrol(g: SubjectGallery, tenant: str, name: str, *vectors: np.ndarray) -> str:
    subject_id = new_subject_id()
    g.put_record(SubjectRecord(subject_id, tenant, name, created_at_ms=now_ms(), updated_at_ms=now_ms()))
    g.add_faces(tenant, subject_id, [face(v) for v in vectors])
    return subject_id


def objects_of(root: Path, tenant: str) -> list[Path]:
    return [
        p for p in (root / "objects").rglob("*") if p.is_file() and f"/{tenant}/subjects/" in p.as_posix()
    ]


def test_the_gallery_is_a_collection_of_its_own(settings: Settings, tmp_path: Path) -> None:
    recognizer = active_recognizer(settings)
    assert recognizer.subjects_collection == subjects_collection(recognizer.sha256, recognizer.dim)
    assert recognizer.subjects_collection == f"subjects_{recognizer.sha256[:16]}_{recognizer.dim}d"
    assert recognizer.subjects_collection != recognizer.collection
    # The indexer's collection discovery (erasure, reindex) leaves the gallery to its owner.
    faces = EdgeVectorStore(tmp_path, model_collection(SHA, DIM))
    faces.ensure_collection(DIM)
    gallery = EdgeVectorStore(tmp_path, subjects_collection(SHA, DIM))
    gallery.ensure_collection(DIM)
    gallery.upsert([FacePoint("00000000-0000-4000-8000-000000000001", unit(1), {"tenant_id": "t"})])
    collections = VectorCollections(VectorStoreSettings(kind="edge", dir=tmp_path), faces)
    try:
        assert collections.names() == [model_collection(SHA, DIM)]
    finally:
        collections.close()
        gallery.close()
        faces.close()


def test_a_subject_is_matched_by_its_best_face(gallery) -> None:
    g, _ = gallery
    # Ada has one face near the query and one far from it; Bob two faces in between.
    ada = enrol(g, "t", "Ada", unit(1, 0.1), unit(0, 1))
    bob = enrol(g, "t", "Bob", unit(1, 0.6), unit(1, 0.7))
    matches = g.match("t", unit(1, 0), 5)
    assert [m.subject_id for m in matches] == [ada, bob]
    assert matches[0].similarity == pytest.approx(float(unit(1, 0.1) @ unit(1, 0)), abs=1e-5)
    assert matches[1].similarity == pytest.approx(float(unit(1, 0.6) @ unit(1, 0)), abs=1e-5)
    assert len(g.match("t", unit(1, 0), 1)) == 1
    # Records are never matched, and another tenant sees nothing.
    assert g.match("other", unit(1, 0), 5) == []
    assert {r.name for r in g.records("t")} == {"Ada", "Bob"}
    assert g.face_counts("t") == {ada: 2, bob: 2}


def test_deleting_leaves_neither_points_nor_objects(gallery) -> None:
    g, root = gallery
    ada = enrol(g, "t", "Ada", unit(1), unit(0, 1), unit(0, 0, 1))
    bob = enrol(g, "t", "Bob", unit(0, 0, 0, 1))
    kept = enrol(g, "u", "Ada", unit(1))
    assert g.store.count() == 3 + 1 + 1 + 1 + 1 + 1  # five faces, three records
    assert len(objects_of(root, "t")) == 2 * 4
    first = g.faces("t", ada)[0]
    removed = g.remove_faces("t", ada, [first.face_id, "00000000-0000-4000-8000-00000000dead"])
    assert (removed.faces, removed.objects) == (1, 2)
    assert [f.face_id for f in g.faces("t", ada)] != [] and first.face_id not in {
        f.face_id for f in g.faces("t", ada)
    }
    # Another subject's face id is not this subject's to remove.
    assert g.remove_faces("t", bob, [g.faces("t", ada)[0].face_id]).faces == 0
    gone = g.delete_subject("t", ada)
    assert (gone.subjects, gone.faces, gone.objects) == (1, 2, 4)
    assert g.record("t", ada) is None and g.faces("t", ada) == []
    assert [m.subject_id for m in g.match("t", unit(0, 1), 5)] == [bob]
    erased = g.delete_tenant("t")
    assert (erased.subjects, erased.faces) == (1, 1)
    assert objects_of(root, "t") == [] and len(objects_of(root, "u")) == 2
    assert g.store.count() == 2 and g.record("u", kept) is not None
