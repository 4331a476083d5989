"""Our detector and embedder against insightface's FaceAnalysis on the same model files
(the research pack, the one insightface can load)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_MODELS, insightface_sample

from facepipe.faces import FaceEngine


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from bench.engine import reference_app

    return reference_app(SHARED_MODELS, tmp_path_factory.mktemp("insightface"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_matches_insightface(local_settings, face_files, reference) -> None:
    images = [*face_files, insightface_sample("t1.jpg"), insightface_sample("Tom_Hanks_54745.png")]

    async def ours(paths: list[Path]):
        # insightface detects at a fixed 640, so ours does too here.
        engine = FaceEngine.load(dataclasses.replace(local_settings, adaptive_det_size=False))
        params = engine.detector.params(include_rejected=True)  # FaceAnalysis applies no quality filter
        try:
            out = []
            for path in paths:
                image = engine.detector.decode(path.read_bytes())
                faces = await engine.detector.detect(image, params)
                vectors, _ = await engine.embedder.embed_faces(image.bgr, [f.landmarks for f in faces])
                out.append((faces, vectors))
            return out
        finally:
            await engine.close()

    results = asyncio.run(ours(images))
    total_faces = 0
    for path, (faces, vectors) in zip(images, results, strict=True):
        ref = reference.get(cv2.imread(str(path)))
        assert len(faces) == len(ref), f"{path.name}: {len(faces)} faces, insightface {len(ref)}"
        for r in ref:
            overlaps = [iou(f.box, r.bbox) for f in faces]
            j = int(np.argmax(overlaps))
            assert overlaps[j] >= 0.95, f"{path.name}: box IoU {overlaps[j]:.3f}"
            err = float(np.abs(faces[j].landmarks - r.kps).max())
            assert err < 2.0, f"{path.name}: landmark error {err:.2f}px"
            cos = float(np.dot(vectors[j], r.normed_embedding))
            assert cos >= 0.99, f"{path.name}: embedding cosine {cos:.4f}"
            assert vectors[j].shape[0] == r.normed_embedding.shape[0]
            total_faces += 1
    assert total_faces >= len(images)


def test_embedding_dimension_matches_insightface(local_settings, face_files, reference) -> None:
    img = cv2.imread(str(face_files[0]))
    face = reference.get(img)[0]
    expected = face.normed_embedding.shape[0]  # what insightface's own model produces
    assert expected == reference.models["recognition"].output_shape[-1]

    async def ours() -> tuple[int, int]:
        engine = FaceEngine.load(local_settings, detector=False)
        try:
            vectors, _ = await engine.embedder.embed_faces(img, [face.kps])
            return engine.embedder.dim, len(vectors[0])
        finally:
            await engine.close()

    assert asyncio.run(ours()) == (expected, expected)


def test_alignment_matches_insightface_norm_crop(face_files, reference) -> None:
    from insightface.utils import face_align

    from facepipe.models.align import align_face

    img = cv2.imread(str(face_files[0]))
    face = reference.get(img)[0]
    ours = align_face(img, face.kps).astype(int)
    theirs = face_align.norm_crop(img, landmark=face.kps).astype(int)
    assert np.abs(ours - theirs).mean() < 0.5
