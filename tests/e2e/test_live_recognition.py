"""Live recognition through a running local stack, with its API keys and NATS users: a
video streamed by ``recognize --video`` lands in the access log (the recognizer's NATS user
may create, write and read the stream), and ``access-log`` reads it back by subject name."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import EVAL_FACES, EVAL_LFW, run_facepipe

pytestmark = pytest.mark.slow

TENANT = "live"


def _run(stack: dict, *args: str) -> str:
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], timeout=300).stdout


def _video(path: Path, photo: Path) -> None:
    """Two seconds of the photo on a grey wall, 10 frames/s."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    frame = np.full((480, 640, 3), 128, np.uint8)
    image = cv2.imread(str(photo))
    side = int(min(image.shape[:2]) * 0.64)
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    frame[120:360, 200:440] = cv2.resize(image[top : top + side, left : left + side], (240, 240))
    for _ in range(20):
        writer.write(frame)
    writer.release()


def test_a_streamed_video_is_in_the_access_log(shared_stack, tmp_path) -> None:
    who = EVAL_LFW[2]
    photos = sorted((EVAL_FACES / who).glob("*.jpg"))
    _run(shared_stack, "subjects", "enrol", "--tenant", TENANT, "--name", who, *map(str, photos[:5]))
    video = tmp_path / "hall.avi"
    _video(video, photos[6])
    lines = [json.loads(line) for line in _run(shared_stack, "recognize", "--video", str(video), "--tenant", TENANT, "--camera-id", "hall", "--json").splitlines()]  # fmt: skip
    (track,) = lines[-1]["summary"]["tracks"]
    assert track["subject"] == who
    records = json.loads(_run(shared_stack, "access-log", "--tenant", TENANT, "--subject", who, "--json"))
    assert [(r["camera"], r["subject"], r["track_id"]) for r in records] == [("hall", who, track["track_id"])]
    text = _run(shared_stack, "access-log", "--tenant", TENANT, "--camera", "hall", "--since", "1h")
    assert f"camera hall  {who}" in text
