"""RecognizeStream: a camera's frames in, one result per processed frame out.

A reader task takes frames off the wire as fast as they come and keeps only the latest
unprocessed one: when a newer frame arrives before the last was taken up, the older one
is dropped and counted (per stream in each result, and in
``facepipe_recognize_frames_dropped_total``). So a stream never builds a backlog and its
latency stays that of one frame, whatever the camera sends. Frames are processed one at a
time with :func:`services.recognizer.stage.recognize_image` in a worker thread.

Faces are tracked across frames (:class:`facepipe.recognition.tracking.Tracker`, by the
frames' capture times) and every result names each face's track. A record is written to
the access log for each track and decision when the decision ends: the track ended, the
decision changed, the decision ran longer than the tracker's flush period, or the stream
ended.

No liveness detection is done: ``deps.liveness``, when set, is called with the decoded
frame and each face's box and fills ``RecognizedFace.liveness`` (e.g. "live", "spoof");
without it the field stays empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from facepipe.imaging import ImageError, decode_image
from facepipe.protoconv import image_error
from facepipe.recognition.accesslog import check_token
from facepipe.recognition.tracking import AccessEvent, Observation, Tracker, TrackerSettings
from facepipe.runtime import metrics
from facepipe.v1 import recognizer_pb2

from .stage import RecognizerDeps, recognize_image, recognize_problem

log = logging.getLogger("facepipe.recognizer.stream")

SERVICE = "recognizer"
# A liveness check: the decoded frame and the faces' boxes (x1, y1, x2, y2) in, one
# verdict per face out. Runs in the frame's worker thread.
LivenessCheck = Callable[[np.ndarray, Sequence[tuple[float, float, float, float]]], Sequence[str]]


class StreamRefused(ValueError):
    """A stream that cannot go on (no tenant, a bad camera id, a tenant that changed)."""


@dataclass
class _Arrived:
    frame: recognizer_pb2.RecognizeFrame
    arrived: float  # time.monotonic() on arrival
    arrived_ms: int  # wall clock on arrival, for frames without a capture time


@dataclass
class _Latest:
    """The one frame waiting to be processed, and what the reader saw."""

    pending: _Arrived | None = None
    dropped: int = 0
    ended: bool = False
    failure: BaseException | None = None


async def recognize_stream(
    deps: RecognizerDeps,
    request_iterator: AsyncIterator[recognizer_pb2.RecognizeFrame],
    context: grpc.aio.ServicerContext,
) -> AsyncIterator[recognizer_pb2.RecognizeFrameResult]:
    """Results of the latest frames of ``request_iterator``; see the module docstring."""
    latest = _Latest()
    wake = asyncio.Event()
    tenant_of_stream: list[str] = []  # set by the first frame

    async def read() -> None:
        try:
            async for frame in request_iterator:
                _check_frame(frame, tenant_of_stream)
                if latest.pending is not None:
                    latest.dropped += 1
                    metrics.RECOGNIZE_FRAMES_DROPPED.labels(SERVICE).inc()
                latest.pending = _Arrived(frame, time.monotonic(), int(time.time() * 1000))
                wake.set()
        except BaseException as exc:  # handed to the loop below, which raises it to gRPC
            latest.failure = exc
        finally:
            latest.ended = True
            wake.set()

    reader = asyncio.create_task(read())
    tracker: Tracker | None = None
    processed = 0
    metrics.RECOGNIZE_STREAMS.labels(SERVICE).inc()
    try:
        while True:
            if latest.failure is not None:
                raise latest.failure  # a refused frame, a denied tenant, or the caller's end
            arrived, latest.pending = latest.pending, None
            if arrived is None:
                if latest.ended:
                    break
                wake.clear()  # nothing can arrive between the look above and here: no await
                await wake.wait()
                continue
            frame = arrived.frame
            camera_id = frame.camera_id
            if tracker is None:
                tracker = Tracker(camera_id, TrackerSettings())
            processed += 1
            result, events = await asyncio.to_thread(
                _process, deps, tenant_of_stream[0], frame, arrived, tracker
            )
            await _write(deps, tenant_of_stream[0], events)
            result.frames_dropped = latest.dropped
            result.frames_processed = processed
            result.latency_ms = (time.monotonic() - arrived.arrived) * 1000.0
            metrics.RECOGNIZE_FRAME_LATENCY.labels(SERVICE).observe(result.latency_ms / 1000.0)
            yield result
    except StreamRefused as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    finally:
        metrics.RECOGNIZE_STREAMS.labels(SERVICE).dec()
        reader.cancel()
        if tracker is not None:
            # The stream ended (or the caller went away): its open tracks end with it.
            await _write(deps, tenant_of_stream[0], tracker.close())


def _check_frame(frame: recognizer_pb2.RecognizeFrame, tenant_of_stream: list[str]) -> None:
    """The first frame names the tenant and camera; later ones may repeat them, never
    change them. Options out of range end the stream (every later frame would fail alike)."""
    problem = recognize_problem(frame.options)
    if problem:
        raise StreamRefused(problem)
    if not tenant_of_stream:
        if not frame.tenant_id:
            raise StreamRefused("the first frame must name the tenant (tenant_id)")
        try:
            check_token(frame.tenant_id, "tenant")
            check_token(frame.camera_id, "camera id")
        except ValueError as exc:
            raise StreamRefused(str(exc)) from None
        tenant_of_stream.append(frame.tenant_id)
        tenant_of_stream.append(frame.camera_id)
        return
    tenant, camera = tenant_of_stream
    if frame.tenant_id and frame.tenant_id != tenant:
        raise StreamRefused(f"a stream's tenant cannot change (it is {tenant!r})")
    if frame.camera_id and frame.camera_id != camera:
        raise StreamRefused(f"a stream's camera cannot change (it is {camera!r})")
    frame.camera_id = camera


def _process(
    deps: RecognizerDeps,
    tenant: str,
    frame: recognizer_pb2.RecognizeFrame,
    arrived: _Arrived,
    tracker: Tracker,
) -> tuple[recognizer_pb2.RecognizeFrameResult, list[AccessEvent]]:
    """One frame, in a worker thread: decode, recognize, liveness, track."""
    result = recognizer_pb2.RecognizeFrameResult(
        frame_id=frame.frame_id, camera_id=tracker.camera_id, captured_at_ms=frame.captured_at_ms
    )
    seen_ms = frame.captured_at_ms or arrived.arrived_ms
    settings = deps.settings
    try:
        decoded = decode_image(frame.image, settings.max_pixels, settings.max_image_bytes)
        response = recognize_image(deps, tenant, decoded.bgr, frame.options)
    except ImageError as exc:
        metrics.RECOGNIZE_FRAMES.labels(SERVICE, exc.code).inc()
        result.error.CopyFrom(image_error(exc))
        # A frame that could not be read still passes time: tracks it hides may end.
        return result, tracker.update([], None, seen_ms)[1]
    except ValueError as exc:  # options out of range: every later frame would fail alike
        raise StreamRefused(str(exc)) from None
    metrics.RECOGNIZE_FRAMES.labels(SERVICE, "ok").inc()
    result.width, result.height = response.width, response.height
    faces = list(response.faces)
    boxes = [(f.face.box.x1, f.face.box.y1, f.face.box.x2, f.face.box.y2) for f in faces]
    liveness: LivenessCheck | None = deps.liveness
    if liveness is not None and faces:
        for face, verdict in zip(faces, liveness(decoded.bgr, boxes), strict=True):
            face.liveness = verdict
    observations = [
        Observation(
            box=box,
            subject_id=face.subject_id,
            subject_name=face.subject_name,
            external_id=face.external_id,
            similarity=face.similarity,
            quality=face.face.quality.score,
        )
        for face, box in zip(faces, boxes, strict=True)
    ]
    track_ids, events = tracker.update(observations, decoded.bgr, seen_ms)
    for face, track_id in zip(faces, track_ids, strict=True):
        face.track_id = track_id
    result.faces.extend(faces)
    return result, events


async def _write(deps: RecognizerDeps, tenant: str, events: list[AccessEvent]) -> None:
    """Appends the records; a record the log did not take is logged and counted, and the
    stream goes on (the camera must not stop because the log is away)."""
    access_log = deps.access_log
    for event in events:
        decision = "subject" if event.subject_id else "unknown"
        if access_log is None:
            log.info(
                "access", extra={"tenant": tenant, "camera": event.camera_id, "subject": event.subject_id}
            )
            continue
        try:
            await access_log.write(tenant, event)
        except Exception as exc:  # noqa: BLE001 - any failure of the log; the stream goes on
            metrics.ACCESS_RECORDS.labels(SERVICE, decision, "failed").inc()
            log.error(
                "access record not stored",
                extra={
                    "tenant": tenant,
                    "camera": event.camera_id,
                    "subject": event.subject_id,
                    "error": str(exc),
                },
            )
            continue
        metrics.ACCESS_RECORDS.labels(SERVICE, decision, "ok").inc()
