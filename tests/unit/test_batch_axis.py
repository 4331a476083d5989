"""Dynamic batch axis: the graph surgery on SCRFD exports, and a batch of N through
every installed detector and recognizer equal to N runs of one."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SHARED_FACES, SHARED_MODELS, insightface_sample, installed_pack_files

from facepipe.detection import detect_batch
from facepipe.faces import FaceEngine
from facepipe.models import registry
from facepipe.models.batchaxis import BatchAxisError, dynamic_batch_bytes, with_dynamic_batch
from facepipe.models.session import OnnxModel
from facepipe.v1 import common_pb2, detector_pb2

SCRFD_FILES = ["scrfd_2.5g.onnx", "scrfd_500m.onnx"]
BATCH = 5
# A detector input that is neither square nor the usual 640, so nothing depends on either.
DETECTOR_HW = (288, 352)


def photos() -> list[np.ndarray]:
    paths = sorted(p for p in SHARED_FACES.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(paths) < BATCH:
        pytest.skip("../shared/faces is not present")
    # Spread over the identities, so the items of a batch differ.
    return [cv2.imread(str(p)) for p in paths[:: max(1, len(paths) // BATCH)][:BATCH]]


def shared_model(name: str) -> bytes:
    path = SHARED_MODELS / name
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return path.read_bytes()


def as_blob(images: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """Plain resized RGB tensors: any family's model gives item-wise comparable outputs."""
    return cv2.dnn.blobFromImages(images, 1 / 128, (hw[1], hw[0]), (127.5,) * 3, swapRB=True)


@pytest.mark.parametrize("name", SCRFD_FILES)
def test_surgery_is_reproducible_and_keeps_single_image_outputs(name: str) -> None:
    original = shared_model(name)
    converted = dynamic_batch_bytes(original)
    assert converted != original
    assert dynamic_batch_bytes(original) == converted, "the same file converts to the same bytes"
    assert dynamic_batch_bytes(converted) is converted, "a converted model is left as it is"

    model = onnx.load_from_string(converted)
    (image_input,) = model.graph.input
    assert image_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        assert len(dims) == 3 and dims[0].dim_param == "batch", output.name

    cpu = ["CPUExecutionProvider"]
    before = ort.InferenceSession(original, providers=cpu)
    after = ort.InferenceSession(converted, providers=cpu)
    assert [o.name for o in after.get_outputs()] == [o.name for o in before.get_outputs()]
    blob = as_blob(photos()[:1], DETECTOR_HW)
    feed = {before.get_inputs()[0].name: blob}
    for old, new in zip(before.run(None, feed), after.run(None, feed), strict=True):
        # One image: the same values in the same order, with the batch axis in front.
        assert new.shape == (1, *old.shape)
        np.testing.assert_array_equal(new[0], old)


def test_graphs_of_another_layout_are_installed_unchanged() -> None:
    recognizer = shared_model("MobileFaceNet.onnx")
    assert dynamic_batch_bytes(recognizer) is recognizer
    with pytest.raises(BatchAxisError):
        with_dynamic_batch(onnx.load_from_string(recognizer))
    not_a_model = b"not an onnx file"
    assert dynamic_batch_bytes(not_a_model) is not_a_model


def test_install_converts_detectors_and_copies_the_rest(facepipe_home) -> None:
    directory = registry.models_root(facepipe_home) / "local"
    for name in SCRFD_FILES:
        assert (directory / name).read_bytes() == dynamic_batch_bytes(shared_model(name))
    assert (directory / "MobileFaceNet.onnx").read_bytes() == shared_model("MobileFaceNet.onnx")


@pytest.mark.parametrize("role", ["detector", "recognizer"])
def test_a_batch_equals_single_runs_for_every_installed_model(facepipe_home, role: str) -> None:
    models = installed_pack_files(facepipe_home, role)
    assert models, f"no {role} installed"
    images = photos()
    for pack, name in models:
        m = OnnxModel(registry.models_root(facepipe_home) / pack / name, ("CPUExecutionProvider",))
        try:
            if role == "detector":
                # Detectors run a batch as one tensor; a recognizer may be fixed at 1.
                assert m.batch_dynamic, f"{pack}/{name} has no dynamic batch axis"
            fixed_h, fixed_w = m.input_hw
            blob = as_blob(images, (fixed_h or DETECTOR_HW[0], fixed_w or DETECTOR_HW[1]))
            batched = m.run_batch(blob)
            for i in range(BATCH):
                single = m.run_batch(blob[i : i + 1])
                for out, one in zip(batched, single, strict=True):
                    assert out.shape == (BATCH, *one.shape[1:]) and one.shape[0] == 1, (pack, name)
                    np.testing.assert_allclose(out[i], one[0], rtol=1e-4, atol=1e-4, err_msg=f"{pack}/{name}")
            # The photos differ, so a mix-up of the batch's items would show.
            assert not np.allclose(batched[0][0], batched[0][1]), f"{pack}/{name}"
        finally:
            m.close()


async def test_detect_batch_finds_the_same_faces_as_one_image_at_a_time(settings) -> None:
    paths = [insightface_sample("t1.jpg"), *sorted(SHARED_FACES.glob("*/*.jp*g"))[:5]]
    request = detector_pb2.DetectBatchRequest(
        images=[common_pb2.ImageInput(id=str(i), data=p.read_bytes()) for i, p in enumerate(paths)]
    )
    engine = FaceEngine.load(settings, "test", embedder=False)
    try:
        together = (await detect_batch(engine.detector, request)).results
        alone = [
            (await detect_batch(engine.detector, detector_pb2.DetectBatchRequest(images=[image]))).results[0]
            for image in request.images
        ]
    finally:
        await engine.close()
    assert sum(len(r.faces) for r in together) >= len(paths) + 2  # the group photo has several
    for one, many in zip(alone, together, strict=True):
        assert len(one.faces) == len(many.faces), one.id
        for a, b in zip(one.faces, many.faces, strict=True):
            box_a = np.array([a.box.x1, a.box.y1, a.box.x2, a.box.y2])
            box_b = np.array([b.box.x1, b.box.y1, b.box.x2, b.box.y2])
            np.testing.assert_allclose(box_a, box_b, atol=0.01)
            assert abs(a.score - b.score) < 1e-4
