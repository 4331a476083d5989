"""Adaptive detection size: each image is detected at the smallest input that still
shows the smallest accepted face large enough to find, and no accepted face is lost
against the fixed size."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import cv2
import numpy as np
import pytest
from conftest import SHARED, SHARED_FACES, insightface_sample, installed_pack_files

from facepipe.faces import (
    INPUT_SIZE_MAX,
    INPUT_SIZE_MIN,
    INPUT_SIZE_STEP,
    DetectedFace,
    FaceDetector,
    FaceEngine,
    adaptive_input_size,
    input_size_problem,
)
from facepipe.imaging import DecodedImage
from facepipe.runtime import metrics

EVAL_FACES = SHARED / "eval" / "faces"
# The eval set's Glint crops are tight aligned faces: padded as its SOURCES.md says, they
# become photos the detector finds faces in.
GLINT_PAD = 56
# Sides a web page's thumbnails come in.
THUMBNAIL_SIDES = (120, 160, 200, 240, 320)


def allowed_sides(cap: int) -> set[int]:
    return {s for s in range(INPUT_SIZE_MIN, cap + 1, INPUT_SIZE_STEP) if input_size_problem(s) is None}


@pytest.mark.parametrize(
    ("image_hw", "cap", "expected"),
    [
        ((250, 250), 640, (192, 192)),  # an LFW photo: 24 px faces need 2/3 scale, 167 px
        ((112 + 2 * GLINT_PAD,) * 2, 640, (160, 160)),  # never below the smallest side
        ((120, 160), 640, (160, 160)),  # a thumbnail
        ((480, 640), 640, (448, 320)),  # landscape in, landscape out
        ((640, 480), 640, (320, 448)),
        ((1200, 800), 640, (448, 640)),  # large photos stay at the cap's letterbox scale
        ((3000, 3000), 640, (640, 640)),
        ((3000, 3000), 320, (320, 320)),  # the cap is the request's or FACEPIPE_DET_SIZE
        ((250, 250), 160, (160, 160)),
        ((1, 5000), 640, (640, 160)),
    ],
)
def test_the_smallest_input_that_keeps_the_smallest_face_findable(image_hw, cap, expected) -> None:
    assert adaptive_input_size(image_hw, cap, min_face_px=24, detectable_px=16) == expected


def test_without_a_smallest_face_the_cap_scale_is_kept() -> None:
    assert adaptive_input_size((250, 250), 640, min_face_px=0, detectable_px=16) == (640, 640)
    assert adaptive_input_size((480, 640), 640, min_face_px=0, detectable_px=16) == (640, 480)


def test_sizes_stay_in_a_bounded_set_and_never_shrink_the_smallest_face() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        image_hw = (rng.randint(1, 6000), rng.randint(1, 6000))
        cap = rng.choice(sorted(allowed_sides(INPUT_SIZE_MAX)))
        min_face = rng.choice([0, 12, 24, 40, 80])
        w, h = adaptive_input_size(image_hw, cap, min_face, 16)
        assert {w, h} <= allowed_sides(cap), (image_hw, cap, w, h)
        # The letterbox scale the detector then uses shows the smallest accepted face at
        # least 16 px wide, unless even the cap's letterbox cannot.
        scale = min(w / image_hw[1], h / image_hw[0])
        cap_scale = cap / max(image_hw)
        wanted = min(16 / min_face, cap_scale) if min_face else cap_scale
        assert scale >= wanted - 1e-9, (image_hw, cap, min_face, w, h)


def photo_set() -> list[tuple[str, DecodedImage]]:
    """../shared/faces, their thumbnails, the eval set (LFW photos and padded Glint crops)
    and a group photo with small faces."""
    paths = sorted(p for p in SHARED_FACES.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    evals = sorted(EVAL_FACES.glob("*/*.jpg")) + sorted(EVAL_FACES.glob("*/*.png"))
    if not paths or not evals:
        pytest.skip("../shared/faces or ../shared/eval is not present")
    images: list[tuple[str, np.ndarray]] = []
    for path in [*paths, insightface_sample("t1.jpg")]:
        bgr = cv2.imread(str(path))
        images.append((path.name, bgr))
        for side in THUMBNAIL_SIDES:
            scale = side / max(bgr.shape[:2])
            thumb = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            images.append((f"{path.name} at {side} px", thumb))
    for path in evals:
        bgr = cv2.imread(str(path))
        if path.suffix == ".png":
            bgr = cv2.copyMakeBorder(bgr, *(GLINT_PAD,) * 4, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        images.append((f"{path.parent.name}/{path.name}", bgr))
    return [(name, DecodedImage(bgr, "PNG")) for name, bgr in images]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def centre_face(faces: list[DetectedFace], image: DecodedImage) -> DetectedFace:
    cx, cy = image.width / 2, image.height / 2
    return min(faces, key=lambda f: (f.box[0] + f.box[2] - 2 * cx) ** 2 + (f.box[1] + f.box[3] - 2 * cy) ** 2)


async def accepted_faces(
    detector: FaceDetector, images: list[tuple[str, DecodedImage]]
) -> list[list[DetectedFace]]:
    params = detector.params()
    return list(await asyncio.gather(*(detector.detect(image, params) for _, image in images)))


@pytest.mark.timeout(1800)
async def test_no_accepted_face_is_lost_against_the_fixed_size(settings, facepipe_home) -> None:
    images = photo_set()
    detectors = installed_pack_files(facepipe_home, "detector")
    assert detectors, "no detector installed"
    for pack, detector_file in detectors:
        model = dataclasses.replace(settings, model_pack=pack, detector_model=detector_file)
        fixed_engine = FaceEngine.load(
            dataclasses.replace(model, adaptive_det_size=False), "test", embedder=False
        )
        adaptive_engine = FaceEngine.load(
            dataclasses.replace(model, adaptive_det_size=True), "test", embedder=False
        )
        try:
            fixed = await accepted_faces(fixed_engine.detector, images)
            adaptive = await accepted_faces(adaptive_engine.detector, images)
            sizes = set(adaptive_engine.detector._batchers)
        finally:
            await fixed_engine.close()
            await adaptive_engine.close()

        lost = []
        for (name, image), at_640, at_adaptive in zip(images, fixed, adaptive, strict=True):
            if name.endswith(".png") and "/" in name:
                # A Glint crop is one tight, aligned face: other boxes in it are not faces
                # (YuNet at 640 finds, say, a 26 px "face" on a cap), so only the centre one counts.
                at_640 = [centre_face(at_640, image)] if at_640 else []
            for face in at_640:
                if not any(iou(face.box, other.box) >= 0.5 for other in at_adaptive):
                    lost.append(f"{name}: {face.quality.size_px:.0f} px face, score {face.score:.2f}")
        which = f"{pack}/{detector_file}"
        assert sum(len(f) for f in fixed) >= len(images) - 10, f"{which}: the set has faces to lose"
        assert not lost, f"{which}: {len(lost)} accepted faces lost:\n" + "\n".join(lost)
        # The set's small images ran at small inputs, all of them allowed sides.
        assert {s for size in sizes for s in size} <= allowed_sides(settings.det_size), which
        assert (INPUT_SIZE_MIN, INPUT_SIZE_MIN) in sizes and (192, 192) in sizes, which
        # Images with a face near a cut-off went through again at the configured size.
        assert (settings.det_size, settings.det_size) in sizes, which


async def test_a_face_near_the_size_cut_off_is_measured_at_the_configured_size(settings) -> None:
    photo = SHARED_FACES / "kit_harington" / "john1.jpeg"
    if not photo.is_file():
        pytest.skip("../shared/faces is not present")
    bgr = cv2.imread(str(photo))
    scale = 240 / max(bgr.shape[:2])  # a thumbnail whose face is about FACEPIPE_MIN_FACE_PX wide
    image = DecodedImage(cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), "JPEG")
    rechecks = metrics.DETECT_RECHECKS.labels("test")
    engine = FaceEngine.load(dataclasses.replace(settings, adaptive_det_size=True), "test", embedder=False)
    try:
        params = engine.detector.params(include_rejected=True)
        assert engine.detector.input_size((image.height, image.width), params) == (160, 160)
        before = rechecks._value.get()
        faces = await engine.detector.detect(image, params)
        assert rechecks._value.get() == before + 1
        assert set(engine.detector._batchers) == {(160, 160), (640, 640)}
    finally:
        await engine.close()
    near = [f for f in faces if abs(f.quality.size_px - settings.min_face_px) <= 0.15 * settings.min_face_px]
    assert near, [f.quality.size_px for f in faces]


async def test_the_setting_off_detects_every_image_at_the_configured_size(settings) -> None:
    engine = FaceEngine.load(dataclasses.replace(settings, adaptive_det_size=False), "test", embedder=False)
    try:
        lfw = sorted(EVAL_FACES.glob("*/*.jpg"))
        if not lfw:
            pytest.skip("../shared/eval is not present")
        small = DecodedImage(cv2.imread(str(lfw[0])), "JPEG")
        assert engine.detector.input_size((small.height, small.width), engine.detector.params()) == (640, 640)
        assert await engine.detector.detect(small, engine.detector.params())
        assert set(engine.detector._batchers) == {(640, 640)}
    finally:
        await engine.close()
