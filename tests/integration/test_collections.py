"""One collection per model: the active collection's name follows the recognizer, an
operator's name wins, every face collection is found (recorded or on disk), the state
beside them keeps each tenant's reindex, and a crop of another side is re-aligned."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from facepipe.config import Settings, VectorStoreSettings
from facepipe.models.align import realign_crop, similarity_transform, template
from facepipe.models.registry import sha256_file
from facepipe.storage import EdgeVectorStore, FacePoint
from facepipe.storage.vectors.collections import (
    DONE,
    MODEL_COLLECTION_RE,
    RUNNING,
    STATE_COLLECTION,
    VectorCollections,
    active_collection,
    active_recognizer,
    model_collection,
)


def test_the_active_collection_is_the_recognizers_own(settings: Settings) -> None:
    recognizer = active_recognizer(settings)
    pack = settings.resolved_models_dir
    assert recognizer.sha256 == sha256_file(pack / recognizer.file)
    assert recognizer.dim == 128
    name = active_collection(settings)
    assert name == model_collection(recognizer.sha256, 128) == f"faces_{recognizer.sha256[:16]}_128d"
    assert MODEL_COLLECTION_RE.match(name)
    named = dataclasses.replace(settings, vectors=VectorStoreSettings(qdrant_collection="mine"))
    assert active_collection(named) == "mine"
    with pytest.raises(ValueError, match="invalid collection name"):
        active_collection(dataclasses.replace(settings, vectors=VectorStoreSettings(qdrant_collection="a/b")))
    with pytest.raises(ValueError, match="64 hex digits"):
        model_collection("abc", 128)


def point(tenant: str, dim: int) -> FacePoint:
    return FacePoint(str(uuid.uuid4()), [1.0] + [0.0] * (dim - 1), {"tenant_id": tenant})


def test_every_face_collection_is_found_and_tenants_keep_their_reindex_state(tmp_path: Path) -> None:
    settings = VectorStoreSettings(dir=tmp_path)
    new, old = "faces_" + "a" * 16 + "_256d", "faces_" + "b" * 16 + "_128d"
    with EdgeVectorStore(tmp_path, old) as store:  # made before collections were recorded
        store.ensure_collection(128)
        store.upsert([point("t", 128)])
    active = EdgeVectorStore(tmp_path, new)
    active.ensure_collection(256)
    collections = VectorCollections(settings, active)
    try:
        assert collections.names() == [new, old] and collections.others() == [old]
        # A collection named by an operator is found under any name.
        collections.store("named").ensure_collection(8)
        collections.register("named", 8, "m.onnx")
        assert collections.names() == [new, old, "named"]
        assert STATE_COLLECTION not in collections.names()
        with pytest.raises(ValueError, match="state"):
            collections.store(STATE_COLLECTION)
        assert collections.store(old).count("t") == 1

        assert collections.mark_of("t", new) is None
        collections.mark("t", new, old, RUNNING)
        mark = collections.mark_of("t", new)
        assert mark is not None and (mark.source, mark.state) == (old, RUNNING)
        collections.mark("t", new, old, DONE)
        assert collections.mark_of("t", new).state == DONE
        assert collections.mark_of("u", new) is None
        collections.forget_tenant("t")
        assert collections.mark_of("t", new) is None
    finally:
        collections.close()
        active.close()


def test_a_crop_of_another_side_is_realigned_onto_the_new_template() -> None:
    rng = np.random.default_rng(3)
    crop = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    assert realign_crop(crop, 112) is crop
    # Multiples of 112 share the template's shape: a plain resize.
    doubled = realign_crop(crop, 224)
    resized = cv2.warpAffine(crop, np.array([[2.0, 0, 0], [0, 2.0, 0]]), (224, 224))
    assert doubled.shape == (224, 224, 3) and np.array_equal(doubled, resized)
    # 128 puts the face 8 px right of where 112 has it, at the same scale.
    matrix = similarity_transform(template(112), template(128))
    mapped = template(112) @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(mapped, template(128), atol=1e-6)
    assert np.allclose(matrix[:, :2], np.eye(2), atol=1e-9) and np.allclose(matrix[:, 2], [8.0, 0.0])
    assert realign_crop(crop, 128).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="square"):
        realign_crop(crop[:, :100], 128)
