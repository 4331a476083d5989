"""RecognizeStream on a real recognizer (and detector) over real NATS: a video made of
eval photos through ``facepipe recognize --video`` gives exactly one access-log record per
appearance with the right subject or unknown, and the stream's boxes are the detector's;
frames sent three times faster than the recognizer follows are dropped, not queued, so
latency stays flat."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from conftest import EVAL_FACES, EVAL_LFW, run_facepipe

from bench.recognize import HEIGHT, WIDTH, scene
from facepipe.cli.stream_cmds import JPEG_QUALITY
from facepipe.v1 import common_pb2, detector_pb2, detector_pb2_grpc, recognizer_pb2, recognizer_pb2_grpc

TENANT = "office"
ENROLLED = EVAL_LFW[:4]
NOT_ENROLLED = EVAL_LFW[6:8]
FPS = 10
SHOWN_S, GAP_S = 2.0, 1.5  # each appearance, and the empty scene between two (> the track TTL)


def photos(identity: str) -> list[Path]:
    return sorted((EVAL_FACES / identity).glob("*.jpg"))


def write_video(path: Path, appearances: list[Path]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    empty = scene(None, True)
    for _ in range(int(GAP_S * FPS)):
        writer.write(empty)
    for index, photo in enumerate(appearances):
        shown = scene(photo, left=index % 2 == 0)
        for _ in range(int(SHOWN_S * FPS)):
            writer.write(shown)
        for _ in range(int(GAP_S * FPS)):
            writer.write(empty)
    writer.release()


def enrol(stub: recognizer_pb2_grpc.RecognizerStub, identity: str) -> str:
    response = stub.EnrolSubject(
        recognizer_pb2.EnrolSubjectRequest(
            tenant_id=TENANT, name=identity, images=[p.read_bytes() for p in photos(identity)[:5]]
        ),
        timeout=120,
    )
    assert response.faces_added == 5, response.problems
    return response.subject.subject_id


@pytest.fixture
def recognizer(start_service, nats_server, tmp_path):
    return start_service(
        "recognizer",
        env={
            "FACEPIPE_NATS_URL": nats_server.url,
            "FACEPIPE_VECTOR_DIR": str(tmp_path / "vectors"),
            "FACEPIPE_OBJECT_DIR": str(tmp_path / "objects"),
        },
    )


def test_a_video_gives_one_record_per_appearance_and_the_detectors_boxes(
    recognizer, start_service, tmp_path
) -> None:
    with grpc.insecure_channel(recognizer.addr) as channel:
        stub = recognizer_pb2_grpc.RecognizerStub(channel)
        for identity in ENROLLED:
            enrol(stub, identity)
    # Enrolled people are shown a photo not enrolled (the 6th), the others their first.
    sequence = [ENROLLED[0], NOT_ENROLLED[0], ENROLLED[1], NOT_ENROLLED[1], ENROLLED[2], ENROLLED[3]]
    appearances = [photos(who)[5] if who in ENROLLED else photos(who)[0] for who in sequence]
    video = tmp_path / "door.avi"
    write_video(video, appearances)

    env = {**recognizer.env, "FACEPIPE_API_KEY": ""}
    out = run_facepipe(
        "recognize", "--video", str(video), "--tenant", TENANT, "--camera-id", "door",
        "--addr", recognizer.addr, "--json", env=env, timeout=300,
    ).stdout  # fmt: skip
    lines = [json.loads(line) for line in out.splitlines()]
    results = [line["frame"] for line in lines if "frame" in line]
    summary = lines[-1]["summary"]
    total_frames = int((GAP_S + len(sequence) * (SHOWN_S + GAP_S)) * FPS)
    assert summary["frames_sent"] == total_frames
    assert summary["frames_processed"] + summary["frames_dropped"] == total_frames

    log = run_facepipe(
        "access-log", "--tenant", TENANT, "--camera", "door", "--addr", recognizer.addr, "--json", env=env
    ).stdout
    records = sorted(json.loads(log), key=lambda r: r["first_seen_ms"])
    expected = [who if who in ENROLLED else None for who in sequence]
    assert [r["subject"] for r in records] == expected, records
    # Each record spans its appearance: about SHOWN_S, never into the next one.
    for record in records:
        assert 0.5 * SHOWN_S * 1000 <= record["last_seen_ms"] - record["first_seen_ms"] <= SHOWN_S * 1000
        assert record["frames"] >= 3 and record["best_similarity"] > 0
    # The same records through a subject filter, by name and as unknown.
    by_name = run_facepipe(
        "access-log",
        "--tenant",
        TENANT,
        "--subject",
        ENROLLED[1],
        "--addr",
        recognizer.addr,
        "--json",
        env=env,
    ).stdout
    assert [r["subject"] for r in json.loads(by_name)] == [ENROLLED[1]]
    unknown = run_facepipe(
        "access-log", "--tenant", TENANT, "--subject", "unknown", "--addr", recognizer.addr, "--json", env=env
    ).stdout
    assert len(json.loads(unknown)) == 2, (unknown, records)

    # The stream's boxes are those DetectBatch finds on the same frames (same bytes).
    capture = cv2.VideoCapture(str(video))
    encoded: list[bytes] = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        encoded.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes())
    capture.release()
    with_faces = [r for r in results if r["faces"]]
    assert len(with_faces) >= 0.5 * len(sequence) * SHOWN_S * FPS * summary["frames_processed"] / total_frames
    detector = start_service("detector")
    checked = with_faces[::3]
    with grpc.insecure_channel(detector.addr) as channel:
        detect = detector_pb2_grpc.DetectorStub(channel)
        for start in range(0, len(checked), 32):
            chunk = checked[start : start + 32]
            request = detector_pb2.DetectBatchRequest(
                images=[
                    common_pb2.ImageInput(id=str(r["frame_id"]), data=encoded[r["frame_id"]]) for r in chunk
                ]
            )
            response = detect.DetectBatch(request, timeout=120)
            for result, detected in zip(chunk, response.results, strict=True):
                want = sorted([f.box.x1, f.box.y1, f.box.x2, f.box.y2] for f in detected.faces)
                got = sorted(face["box"] for face in result["faces"])
                assert len(got) == len(want), (result["frame_id"], got, want)
                np.testing.assert_allclose(got, want, atol=1.0)


def _metric(http_port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def _run_stream(stub, frame: bytes, pace) -> list[recognizer_pb2.RecognizeFrameResult]:
    """Streams ``frame`` repeatedly; ``pace(results_so_far)`` blocks before each next frame
    and returns False to end the stream."""
    results: list[recognizer_pb2.RecognizeFrameResult] = []
    arrived: queue.Queue[int] = queue.Queue()

    def frames():
        n = 0
        while pace(n, arrived):
            yield recognizer_pb2.RecognizeFrame(
                tenant_id=TENANT,
                camera_id="bench",
                image=frame,
                frame_id=n,
                captured_at_ms=int(time.time() * 1000),
            )
            n += 1

    for result in stub.RecognizeStream(frames(), timeout=300):
        results.append(result)
        arrived.put(len(results))
    return results


def _unloaded_and_loaded(stub, frame: bytes) -> tuple[np.ndarray, list[recognizer_pb2.RecognizeFrameResult]]:
    """Latencies of frames sent one after another's result, then the results of frames
    sent at three times the rate that showed."""
    unloaded_frames, loaded_frames = 38, 120

    def lockstep(n: int, arrived: queue.Queue) -> bool:
        if n and n <= unloaded_frames:
            arrived.get(timeout=60)  # the previous frame's result
        return n < unloaded_frames

    unloaded = _run_stream(stub, frame, lockstep)[3:]  # the first few warm up
    assert all(r.frames_dropped == 0 for r in unloaded)
    unloaded_ms = np.array([r.latency_ms for r in unloaded])
    interval_s = float(np.mean(unloaded_ms)) / 1000.0 / 3.0  # three times the sustainable rate
    start = time.monotonic()

    def fast(n: int, arrived: queue.Queue) -> bool:
        delay = start + n * interval_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return n < loaded_frames

    loaded = _run_stream(stub, frame, fast)
    assert loaded[-1].frames_processed + loaded[-1].frames_dropped == loaded_frames
    return unloaded_ms, loaded


def test_frames_sent_faster_than_processed_are_dropped_and_latency_stays_flat(recognizer) -> None:
    frame = cv2.imencode(
        ".jpg", scene(photos(EVAL_LFW[0])[0], left=True), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )[1].tobytes()
    dropped_before = _metric(recognizer.http_port, "facepipe_recognize_frames_dropped_total")
    dropped = 0
    rounds: list[tuple[float, float]] = []
    with grpc.insecure_channel(recognizer.addr) as channel:
        stub = recognizer_pb2_grpc.RecognizerStub(channel)
        enrol(stub, EVAL_LFW[0])
        # The machine is shared: a round whose p99 another process spoiled is measured
        # again (at most three rounds). A backlog would fail every round: its latency grows
        # with each frame.
        for _ in range(3):
            unloaded_ms, loaded = _unloaded_and_loaded(stub, frame)
            loaded_ms = np.array([r.latency_ms for r in loaded])
            dropped += loaded[-1].frames_dropped
            # At three times the rate about two frames in three are dropped.
            assert loaded[-1].frames_dropped > 0.4 * (loaded[-1].frames_processed + loaded[-1].frames_dropped)
            assert np.median(loaded_ms[-20:]) <= 3.0 * np.median(unloaded_ms), (unloaded_ms, loaded_ms)
            assert all(
                len(r.faces) == 1 and r.faces[0].track_id == loaded[0].faces[0].track_id for r in loaded
            )
            rounds.append((float(np.percentile(unloaded_ms, 99)), float(np.percentile(loaded_ms, 99))))
            if rounds[-1][1] <= 2.0 * rounds[-1][0]:
                break
    assert rounds[-1][1] <= 2.0 * rounds[-1][0], f"p99 unloaded vs at 3x the rate, per round: {rounds}"
    dropped_after = _metric(recognizer.http_port, "facepipe_recognize_frames_dropped_total")
    assert dropped_after - dropped_before == dropped


def test_a_stream_without_a_tenant_or_with_a_bad_camera_is_refused(recognizer) -> None:
    with grpc.insecure_channel(recognizer.addr) as channel:
        stub = recognizer_pb2_grpc.RecognizerStub(channel)
        cases = [
            (recognizer_pb2.RecognizeFrame(camera_id="door"), "tenant"),
            (recognizer_pb2.RecognizeFrame(tenant_id=TENANT, camera_id="front door"), "camera id"),
            (recognizer_pb2.RecognizeFrame(tenant_id=TENANT, camera_id=""), "camera id"),
        ]
        for frame, message in cases:
            with pytest.raises(grpc.RpcError) as raised:
                list(stub.RecognizeStream(iter([frame]), timeout=60))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in raised.value.details()
        # A tenant that changes mid-stream ends it; an unreadable frame does not.
        good = recognizer_pb2.RecognizeFrame(tenant_id=TENANT, camera_id="door", image=b"not an image")
        results = list(
            stub.RecognizeStream(iter([good, recognizer_pb2.RecognizeFrame(image=b"x")]), timeout=60)
        )
        assert results and all(r.error.code == common_pb2.ERROR_CODE_UNDECODABLE for r in results)
        assert results[-1].frames_processed + results[-1].frames_dropped == 2
        with pytest.raises(grpc.RpcError) as raised:
            moved = recognizer_pb2.RecognizeFrame(tenant_id="other", image=b"x")
            list(stub.RecognizeStream(iter([good, moved]), timeout=60))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot change" in raised.value.details()


def test_a_stream_the_caller_drops_still_writes_its_open_tracks(recognizer) -> None:
    frame = cv2.imencode(
        ".jpg", scene(photos(EVAL_LFW[0])[5], left=True), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )[1].tobytes()
    with grpc.insecure_channel(recognizer.addr) as channel:
        stub = recognizer_pb2_grpc.RecognizerStub(channel)
        subject_id = enrol(stub, EVAL_LFW[0])
        endless = threading.Event()

        def frames():
            n = 0
            while not endless.is_set():
                yield recognizer_pb2.RecognizeFrame(
                    tenant_id=TENANT,
                    camera_id="gate",
                    image=frame,
                    frame_id=n,
                    captured_at_ms=int(time.time() * 1000),
                )
                n += 1
                time.sleep(0.1)

        call = stub.RecognizeStream(frames(), timeout=120)
        results = []
        for result in call:
            results.append(result)
            if len(results) == 6:
                call.cancel()  # the camera goes away without ending the stream
                break
        endless.set()
        assert {face.subject_id for r in results for face in r.faces} == {subject_id}
        request = recognizer_pb2.ListAccessLogRequest(tenant_id=TENANT, camera_id="gate")
        deadline = time.monotonic() + 30
        while (
            not (records := stub.ListAccessLog(request, timeout=30).records) and time.monotonic() < deadline
        ):
            time.sleep(0.5)
    assert [(r.subject_id, r.subject_name, r.track_id) for r in records] == [(subject_id, EVAL_LFW[0], 1)]
    assert records[0].frames >= 6 and records[0].snapshot_jpeg.startswith(b"\xff\xd8")
