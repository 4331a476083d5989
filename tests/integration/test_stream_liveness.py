"""The stream's liveness hook, in-process on the real recognizer dependencies (models,
gallery, object store): without a check the field stays empty; a check set on the
dependencies is called with the frame and the faces' boxes, and its verdicts fill
``RecognizedFace.liveness``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import cv2
import numpy as np
from conftest import SHARED_FACES

from facepipe.config import Settings, environ
from facepipe.pipeline import Opened, StageOutput
from facepipe.storage import open_object_store
from facepipe.v1 import recognizer_pb2
from facepipe_services.recognizer.stage import close_deps, open_deps
from facepipe_services.recognizer.stream import recognize_stream

PHOTO = (SHARED_FACES / "brad_pitt" / "brad_1.jpg").read_bytes()


async def frames(count: int) -> AsyncIterator[recognizer_pb2.RecognizeFrame]:
    for n in range(count):
        yield recognizer_pb2.RecognizeFrame(tenant_id="t1", camera_id="door", image=PHOTO, frame_id=n)


async def test_the_liveness_hook_fills_each_faces_verdict(facepipe_home, tmp_path) -> None:
    env = environ(
        {
            "FACEPIPE_HOME": str(facepipe_home),
            "FACEPIPE_VECTOR_DIR": str(tmp_path / "vectors"),
            "FACEPIPE_OBJECT_DIR": str(tmp_path / "objects"),
            "FACEPIPE_NATS_URL": "",
        }
    )
    settings = Settings.from_env("recognizer", env)
    objects = open_object_store(settings.objects)
    deps = await open_deps(Opened("recognizer", settings, StageOutput("recognizer"), objects))
    try:
        # The stream only aborts through its context; these frames are all good.
        plain = [result async for result in recognize_stream(deps, frames(1), context=None)]
        assert plain[0].faces and all(face.liveness == "" for face in plain[0].faces)

        seen: list[tuple[tuple[int, ...], list[tuple[float, float, float, float]]]] = []

        def check(image: np.ndarray, boxes: Sequence[tuple[float, float, float, float]]) -> list[str]:
            seen.append((image.shape, list(boxes)))
            return ["spoof" if i == 0 else "live" for i in range(len(boxes))]

        deps.liveness = check
        checked = [result async for result in recognize_stream(deps, frames(1), context=None)]
    finally:
        await close_deps(deps)
    (result,) = checked
    assert [face.liveness for face in result.faces] == ["spoof"] + ["live"] * (len(result.faces) - 1)
    height, width = cv2.imdecode(np.frombuffer(PHOTO, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    assert seen[0][0] == (height, width, 3)
    assert seen[0][1] == [(f.face.box.x1, f.face.box.y1, f.face.box.x2, f.face.box.y2) for f in result.faces]
