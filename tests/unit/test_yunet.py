"""YuNet decoding on hand-made outputs (the comparison with OpenCV's own decoder on real
photos is in tests/integration/test_opencv_pack.py), and the family table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facepipe.models.arcface import ArcFace
from facepipe.models.families import detector_decoder, recognizer_codec
from facepipe.models.scrfd import SCRFD, Letterbox
from facepipe.models.sface import SFace
from facepipe.models.yunet import STRIDES, YuNet

NAMES = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]
SIDE = 64  # input side: 8x8, 4x4 and 2x2 cells


def outputs(names: list[str]) -> dict[str, np.ndarray]:
    """Zero outputs (no batch axis) for a SIDE x SIDE input."""
    width = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
    return {
        n: np.zeros(((SIDE // int(n.split("_")[1])) ** 2, width[n.split("_")[0]]), np.float32) for n in names
    }


def test_one_anchor_decodes_to_opencv_s_box_and_landmarks() -> None:
    names = list(reversed(NAMES))  # the decoder finds its outputs by name, in any order
    raw = outputs(names)
    row, col, stride = 2, 3, 8
    anchor = row * (SIDE // stride) + col
    raw["cls_8"][anchor] = 1.3  # clamped to 1 like OpenCV does
    raw["obj_8"][anchor] = 0.81
    raw["bbox_8"][anchor] = [0.5, 0.25, math.log(4), math.log(2)]
    raw["kps_8"][anchor] = np.arange(10, dtype=np.float32) / 10
    raw["cls_16"][0] = raw["obj_16"][0] = 0.2  # score 0.2: under the threshold

    yunet = YuNet(names)
    found = yunet.postprocess([raw[n] for n in names], Letterbox(scale=0.5, width=SIDE, height=SIDE), 0.5)
    assert len(found) == 1
    assert found.scores[0] == pytest.approx(0.9)
    # Centre ((col + 0.5) * 8, (row + 0.25) * 8) = (28, 18), size (4 * 8, 2 * 8); then / scale.
    np.testing.assert_allclose(found.boxes[0], np.array([12, 10, 44, 26]) / 0.5, rtol=1e-5)
    expected = (np.arange(10).reshape(5, 2) / 10 + [col, row]) * stride / 0.5
    np.testing.assert_allclose(found.landmarks[0], expected, rtol=1e-5)


def test_nothing_found_and_bad_graphs() -> None:
    raw = outputs(NAMES)
    found = YuNet(NAMES).postprocess([raw[n] for n in NAMES], Letterbox(1.0, SIDE, SIDE), 0.5)
    assert len(found) == 0 and found.landmarks.shape == (0, 5, 2)
    with pytest.raises(ValueError, match="not a YuNet graph"):
        YuNet(NAMES[:-1])


def test_preprocess_keeps_bgr_pixels_unnormalised() -> None:
    image = np.zeros((30, 60, 3), np.uint8)
    image[..., 0], image[..., 2] = 10, 200  # blue, red
    blob, box = YuNet(NAMES).preprocess(image, (SIDE, SIDE))
    assert blob.shape == (3, SIDE, SIDE) and blob.dtype == np.float32
    assert box == Letterbox(scale=SIDE / 60, width=SIDE, height=SIDE)
    assert (blob[0, 0, 0], blob[2, 0, 0]) == (10.0, 200.0)
    assert blob[:, -1, -1].tolist() == [0.0, 0.0, 0.0]  # the letterbox's black border


def test_families_pick_their_classes() -> None:
    assert isinstance(detector_decoder("yunet", NAMES), YuNet)
    assert isinstance(detector_decoder("scrfd", [str(i) for i in range(9)]), SCRFD)
    sface = recognizer_codec("sface", (112, 112), (None, 128))
    assert type(sface) is SFace and (sface.mean, sface.std, sface.dim) == (0.0, 1.0, 128)
    arcface = recognizer_codec("arcface", (112, 112), (1, 128))
    assert type(arcface) is ArcFace and (arcface.mean, arcface.std) == (127.5, 127.5)
    with pytest.raises(ValueError, match="unknown detector family 'retina'"):
        detector_decoder("retina", NAMES)
    with pytest.raises(ValueError, match="unknown recognizer family 'facenet'"):
        recognizer_codec("facenet", (112, 112), (1, 128))
