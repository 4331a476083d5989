"""facepipe.detection.detect_batch with the real model pack: results in order,
errors per image, an empty batch, the request's options, object references."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import numpy as np
import pytest
from conftest import insightface_sample

from facepipe.detection import MAX_IMAGES_PER_BATCH, detect_batch, request_problem
from facepipe.faces import (
    INPUT_SIZE_MAX,
    INPUT_SIZE_MIN,
    INPUT_SIZE_STEP,
    FaceDetector,
    FaceEngine,
    input_size_problem,
)
from facepipe.imaging import encode_jpeg
from facepipe.storage import LocalObjectStore
from facepipe.v1 import common_pb2, detector_pb2

# The insightface sample photo of a group: several faces, of several sizes.
GROUP = insightface_sample("t1.jpg")


@pytest.fixture
async def detector(settings) -> AsyncIterator[FaceDetector]:
    engine = FaceEngine.load(settings, "test", embedder=False)
    yield engine.detector
    await engine.close()


def batch(*images: common_pb2.ImageInput, **options) -> detector_pb2.DetectBatchRequest:
    return detector_pb2.DetectBatchRequest(images=images, options=detector_pb2.DetectOptions(**options))


def group(image_id: str = "") -> common_pb2.ImageInput:
    return common_pb2.ImageInput(id=image_id, data=GROUP.read_bytes())


async def test_each_image_gets_its_result_or_its_own_error(detector, face_files) -> None:
    blank = encode_jpeg(np.full((64, 64, 3), 255, np.uint8), 90)
    response = await detect_batch(
        detector,
        batch(
            group("group"),
            common_pb2.ImageInput(id="corrupt", data=b"\xff\xd8\xff not really a jpeg"),
            common_pb2.ImageInput(data=face_files[0].read_bytes()),
            common_pb2.ImageInput(id="nothing"),
            common_pb2.ImageInput(id="blank", data=blank),
            common_pb2.ImageInput(id="by-ref", ref=common_pb2.ObjectRef(bucket="raw-images", key="a.jpg")),
        ),
    )
    assert response.model == detector.model_name
    by_id = {r.id: r for r in response.results}
    # Results come in request order; an image without an id is named by its index.
    assert [r.id for r in response.results] == ["group", "corrupt", "2", "nothing", "blank", "by-ref"]
    assert len(by_id["group"].faces) >= 2 and not by_id["group"].HasField("error")
    assert (by_id["group"].width, by_id["group"].height) > (0, 0)
    assert by_id["2"].faces and not by_id["2"].HasField("error")
    assert by_id["corrupt"].error.code == common_pb2.ERROR_CODE_UNDECODABLE
    assert by_id["nothing"].error.code == common_pb2.ERROR_CODE_EMPTY
    assert not by_id["blank"].faces and not by_id["blank"].HasField("error")
    # An object reference without an object store is that image's error, not the batch's.
    assert by_id["by-ref"].error.code == common_pb2.ERROR_CODE_NOT_FOUND
    assert "object store" in by_id["by-ref"].error.message


async def test_an_empty_batch_answers_with_no_results(detector) -> None:
    response = await detect_batch(detector, batch())
    assert list(response.results) == [] and response.model == detector.model_name


async def test_options_bound_what_comes_back(detector) -> None:
    every = (await detect_batch(detector, batch(group()))).results[0].faces
    assert len(every) >= 2
    assert all(f.quality.accepted for f in every), "rejected faces only come back when asked for"

    (one,) = (await detect_batch(detector, batch(group(), max_faces=1))).results[0].faces
    assert one.quality.accepted

    scores = sorted(f.score for f in every)
    threshold = (scores[0] + scores[-1]) / 2
    strict = (await detect_batch(detector, batch(group(), score_threshold=threshold))).results[0].faces
    assert 1 <= len(strict) < len(every) and all(f.score >= threshold for f in strict)

    with_rejected = (await detect_batch(detector, batch(group(), include_rejected=True))).results[0].faces
    assert len(with_rejected) >= len(every)
    rejected = [f for f in with_rejected if not f.quality.accepted]
    assert all(f.quality.reasons for f in rejected)


async def test_object_references_are_read_from_the_store(detector, tmp_path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    objects.put("raw-images", "t1/group.jpg", GROUP.read_bytes(), "image/jpeg")
    response = await detect_batch(
        detector,
        batch(
            common_pb2.ImageInput(
                id="stored", ref=common_pb2.ObjectRef(bucket="raw-images", key="t1/group.jpg")
            ),
            common_pb2.ImageInput(
                id="gone", ref=common_pb2.ObjectRef(bucket="raw-images", key="t1/gone.jpg")
            ),
        ),
        objects,
    )
    stored, gone = response.results
    direct = (await detect_batch(detector, batch(group()))).results[0]
    assert len(stored.faces) == len(direct.faces) >= 2
    assert gone.error.code == common_pb2.ERROR_CODE_NOT_FOUND


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_size": -640}, "input_size -640 is not allowed: 160 to 1280 pixels, a multiple of 32"),
        ({"input_size": 4096}, "input_size 4096 is not allowed"),
        ({"input_size": 100_000}, "input_size 100000 is not allowed"),
        ({"input_size": 128}, "input_size 128 is not allowed"),
        ({"input_size": 650}, "input_size 650 is not allowed"),
        ({"score_threshold": float("nan")}, "score_threshold nan is not allowed: 0 to 1"),
        ({"score_threshold": -0.5}, "score_threshold -0.5 is not allowed"),
        ({"score_threshold": 2.0}, "score_threshold 2.0 is not allowed"),
        ({"max_faces": -1}, "max_faces -1 is not allowed: 0 or more"),
    ],
)
async def test_options_out_of_range_are_refused_before_any_work(detector, options, message) -> None:
    request = batch(group(), **options)
    assert message in (request_problem(request) or "")
    with pytest.raises(ValueError, match=message.split(":")[0]):
        await detect_batch(detector, request)
    assert not detector._batchers, "nothing was queued for the model"


@pytest.mark.parametrize("size", [INPUT_SIZE_MIN, 320, 640, INPUT_SIZE_MAX])
def test_the_documented_input_sides_are_allowed(size: int) -> None:
    assert size % INPUT_SIZE_STEP == 0 and input_size_problem(size) is None
    assert request_problem(batch(group(), input_size=size)) is None


def test_too_many_images_are_refused() -> None:
    request = batch(*[common_pb2.ImageInput(id=str(i), data=b"x") for i in range(MAX_IMAGES_PER_BATCH + 1)])
    assert request_problem(request) == f"at most {MAX_IMAGES_PER_BATCH} images per batch, got 257"


async def test_one_batcher_per_allowed_side_at_most(settings) -> None:
    # At a fixed size (adaptive sizes draw from the same sides; see test_adaptive_size).
    engine = FaceEngine.load(dataclasses.replace(settings, adaptive_det_size=False), "test", embedder=False)
    detector = engine.detector
    image = common_pb2.ImageInput(id="small", data=encode_jpeg(np.full((40, 40, 3), 128, np.uint8), 90))
    try:
        for size in (160, 192, 160, 224, 192):
            await detect_batch(detector, batch(image, input_size=size))
    finally:
        await engine.close()
    assert sorted(detector._batchers) == [(160, 160), (192, 192), (224, 224)]
    allowed = range(INPUT_SIZE_MIN, INPUT_SIZE_MAX + 1, INPUT_SIZE_STEP)
    assert all(input_size_problem(s) is None for s in allowed)
    assert sum(input_size_problem(s) is None for s in range(-2000, 5000)) == len(allowed) == 36
