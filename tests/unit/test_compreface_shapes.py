"""The CompreFace-compatible routes' own logic, without a server: the query options as the
SDK sends them, and facepipe's answers in CompreFace's shapes."""

from __future__ import annotations

import pytest

from facepipe.v1 import common_pb2, recognizer_pb2
from facepipe_services.web.api.compreface import (
    CompreFaceError,
    RecognizeParams,
    box_dict,
    face_dict,
    parse_params,
    predictions,
    similarity,
)


def test_the_sdks_options_parse() -> None:
    # The SDK writes Python values with str(): True, not true.
    params = parse_params("3", "0.8", "2", "landmarks,age", "True")
    assert params == RecognizeParams(
        limit=3, det_prob_threshold=0.8, prediction_count=2, landmarks=True, status=True
    )
    assert parse_params(None, None, None, None, None) == RecognizeParams()
    assert parse_params("", "", "", "", "") == RecognizeParams()
    assert parse_params("0", "0", "0", "calculator", "false").landmarks is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-1", None, None, None, None), "limit must be greater or equal zero"),
        (("x", None, None, None, None), "limit must be a whole number"),
        ((None, "1.5", None, None, None), "det_prob_threshold must be between 0.0 and 1.0"),
        ((None, "nan", None, None, None), "det_prob_threshold must be between 0.0 and 1.0"),
        ((None, None, "-2", None, None), "prediction_count must be greater or equal zero"),
        ((None, None, None, "landmarks,telepathy", None), "unknown face plugin 'telepathy'"),
        ((None, None, None, None, "maybe"), "status must be true or false"),
    ],
)
def test_wrong_options_are_400_with_a_message(args, message) -> None:
    with pytest.raises(CompreFaceError) as raised:
        parse_params(*args)
    assert raised.value.status == 400 and message in raised.value.message


def face(x1: float, y1: float, x2: float, y2: float, score: float = 0.91234567) -> common_pb2.Face:
    return common_pb2.Face(
        box=common_pb2.BoundingBox(x1=x1, y1=y1, x2=x2, y2=y2),
        score=score,
        landmarks=[common_pb2.Point(x=x1 + i, y=y1 + i) for i in range(5)],
    )


def test_boxes_are_whole_pixels_with_the_detector_score() -> None:
    assert box_dict(face(10.4, 20.6, 110.5, 140.49)) == {
        "probability": 0.91235,
        "x_max": 110,  # round half to even
        "y_max": 140,
        "x_min": 10,
        "y_min": 21,
    }
    plain = face_dict(face(1, 2, 3, 4), RecognizeParams(), 12.0)
    assert set(plain) == {"box"}
    full = face_dict(face(1, 2, 3, 4), RecognizeParams(landmarks=True, status=True), 12.0)
    assert (
        full["landmarks"] == [[1 + i, 2 + i] for i in range(5)] and full["execution_time"]["detector"] == 12.0
    )


def test_subjects_are_the_nearest_best_first_above_the_threshold_or_not() -> None:
    known = recognizer_pb2.RecognizedFace(
        subject_id="a",
        subject_name="Ann",
        similarity=0.8,
        candidates=[
            recognizer_pb2.SubjectCandidate(subject_id="b", name="Bo", similarity=0.4),
            recognizer_pb2.SubjectCandidate(subject_id="c", name="Cy", similarity=-0.1),
        ],
    )
    assert predictions(known, 1) == [{"subject": "Ann", "similarity": 0.8}]
    assert predictions(known, 3) == [
        {"subject": "Ann", "similarity": 0.8},
        {"subject": "Bo", "similarity": 0.4},
        {"subject": "Cy", "similarity": 0.0},
    ]
    # Unknown: the nearest subject below the threshold is still the first prediction.
    unknown = recognizer_pb2.RecognizedFace(
        similarity=0.3,
        candidates=[recognizer_pb2.SubjectCandidate(subject_id="b", name="Bo", similarity=0.3)],
    )
    assert predictions(unknown, 1) == [{"subject": "Bo", "similarity": 0.3}]
    assert predictions(unknown, 0) == []
    assert similarity(0.123456789) == 0.12346 and similarity(-0.5) == 0.0
