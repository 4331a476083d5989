"""The recognition pages: subjects (enrol from photos or a person, list, delete), the
access log (filters, snapshots) and the live camera, whose frames come over a WebSocket
and go on to Recognizer/RecognizeStream with the session's key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from facepipe.auth.client import key_metadata
from facepipe.v1 import recognizer_pb2, recognizer_pb2_grpc

from ..api.errors import error_text, http_status
from ..api.recognition import access_log, enrol, list_all_subjects, parse_time_ms, recognizer
from ..sessions import SESSION_COOKIE
from .pages import caller_of, form_session, render, ui_session

log = logging.getLogger("facepipe.web.camera")

router = APIRouter()
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The largest frame the camera page may send (a 640x480 JPEG is far smaller).
MAX_FRAME_BYTES = 2 * 1024 * 1024
ACCESS_PAGE_LIMIT = 200


# --- subjects ---------------------------------------------------------------------------------


@router.get("/ui/subjects")
async def subjects_page(request: Request, notice: str = "") -> Response:
    session = ui_session(request)
    subjects = await list_all_subjects(request, caller_of(session))
    return render(request, "subjects.html", session=session, subjects=subjects, notice=notice)


@router.post("/ui/subjects")
async def subjects_enrol(request: Request) -> Response:
    session, form = await form_session(request)
    caller = caller_of(session)
    name = str(form.get("name") or "").strip()
    person_id = str(form.get("from_person_id") or "").strip()
    images = []
    for upload in form.getlist("images"):
        if isinstance(upload, UploadFile):
            data = await upload.read()
            if data:
                images.append(data)
    problem = ""
    if not name:
        problem = "enter the subject's name"
    elif not images and not person_id:
        problem = "choose photos of the subject, or give a person id"
    if not problem:
        try:
            result = await enrol(request, caller, name=name, images=images, from_person_id=person_id)
        except grpc.aio.AioRpcError as exc:
            if http_status(exc) in (401, 403):
                raise
            problem = error_text(exc)
    if problem:
        subjects = await list_all_subjects(request, caller)
        return render(request, "subjects.html", status=400, session=session, subjects=subjects, error=problem)
    added = result["faces_added"]
    skipped = len(result["problems"])
    notice = f"enrolled {name} with {added} face{'s' if added != 1 else ''}" + (
        f"; {skipped} photo{'s' if skipped != 1 else ''} had no usable face" if skipped else ""
    )
    return RedirectResponse(f"/ui/subjects?notice={notice}", status_code=303)


@router.post("/ui/subjects/{subject_id}/delete")
async def subjects_delete(request: Request, subject_id: str) -> Response:
    session, _ = await form_session(request)
    caller = caller_of(session)
    await recognizer(request).DeleteSubject(
        recognizer_pb2.DeleteSubjectRequest(tenant_id=caller.tenant, subject_id=subject_id),
        **request.app.state.deps.call_options(caller.key),
    )
    return RedirectResponse("/ui/subjects?notice=subject deleted", status_code=303)


# --- access log -------------------------------------------------------------------------------


def shown_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else ""


@router.get("/ui/access")
async def access_page(
    request: Request, camera_id: str = "", subject_id: str = "", since: str = "", until: str = ""
) -> Response:
    session = ui_session(request)
    caller = caller_of(session)
    subjects = await list_all_subjects(request, caller)
    records = await access_log(
        request,
        caller,
        camera_id=camera_id.strip(),
        subject_id=subject_id.strip(),
        since_ms=parse_time_ms(since, "since"),
        until_ms=parse_time_ms(until, "until"),
        limit=ACCESS_PAGE_LIMIT,
    )
    for record in records:
        record["first_seen"] = shown_time(record["first_seen_ms"])
        record["last_seen"] = shown_time(record["last_seen_ms"])
    filters = {"camera_id": camera_id, "subject_id": subject_id, "since": since, "until": until}
    return render(
        request, "access.html", session=session, records=records, subjects=subjects, filters=filters
    )


# --- live camera ------------------------------------------------------------------------------


@router.get("/ui/camera")
async def camera_page(request: Request) -> Response:
    session = ui_session(request)
    return render(request, "camera.html", session=session)


def same_origin(websocket: WebSocket) -> bool:
    """A browser's WebSocket carries the cookie whichever page opened it: only this
    service's own pages may open one."""
    origin = websocket.headers.get("origin", "")
    host = websocket.headers.get("host", "")
    return bool(origin) and origin.split("://", 1)[-1] == host


def frame_result(result: recognizer_pb2.RecognizeFrameResult) -> dict[str, Any]:
    """What the page draws: each face's box (in frame pixels), name and track."""
    return {
        "frame_id": result.frame_id,
        "width": result.width,
        "height": result.height,
        "latency_ms": round(result.latency_ms, 1),
        "dropped": result.frames_dropped,
        "processed": result.frames_processed,
        "error": result.error.message if result.HasField("error") else "",
        "faces": [
            {
                "box": [
                    round(f.face.box.x1),
                    round(f.face.box.y1),
                    round(f.face.box.x2),
                    round(f.face.box.y2),
                ],
                "name": f.subject_name or None,
                "similarity": round(f.similarity, 3),
                "track_id": f.track_id,
            }
            for f in result.faces
        ],
    }


@router.websocket("/ui/camera/ws")
async def camera_socket(websocket: WebSocket) -> None:
    """The camera page's frames to RecognizeStream and its results back. The first
    message is JSON with the session's CSRF token and the camera id; then each binary
    message is one JPEG frame, and each result comes back as JSON."""
    app = websocket.app
    session = app.state.sealer.open(websocket.cookies.get(SESSION_COOKIE))
    if session is None or not same_origin(websocket):
        await websocket.close(code=1008)
        return
    await websocket.accept()
    try:
        hello = json.loads(await asyncio.wait_for(websocket.receive_text(), 10))
    except (TimeoutError, ValueError, WebSocketDisconnect, KeyError):
        await websocket.close(code=1008)
        return
    camera_id = str(hello.get("camera_id", "")) if isinstance(hello, dict) else ""
    if not session.csrf_ok(hello.get("csrf") if isinstance(hello, dict) else None):
        await websocket.send_json({"fatal": "missing or wrong CSRF token: reload the page"})
        await websocket.close(code=1008)
        return
    if not CAMERA_ID_RE.match(camera_id):
        await websocket.send_json({"fatal": "camera id: 1-64 letters, digits, '_' or '-'"})
        await websocket.close(code=1008)
        return
    frames: asyncio.Queue[recognizer_pb2.RecognizeFrame | None] = asyncio.Queue(maxsize=4)

    async def outgoing() -> AsyncIterator[recognizer_pb2.RecognizeFrame]:
        while (frame := await frames.get()) is not None:
            yield frame

    stub = recognizer_pb2_grpc.RecognizerStub(app.state.deps.channel("recognizer"))
    call = stub.RecognizeStream(outgoing(), metadata=key_metadata(session.key))

    async def browser_to_stream() -> None:
        frame_id = 0
        try:
            while True:
                data = await websocket.receive_bytes()
                if len(data) > MAX_FRAME_BYTES:
                    continue
                frame_id += 1
                frame = recognizer_pb2.RecognizeFrame(
                    tenant_id=session.tenant,
                    camera_id=camera_id,
                    image=data,
                    captured_at_ms=int(time.time() * 1000),
                    frame_id=frame_id,
                )
                if frames.full():  # the page outruns the stream: the newest frame wins
                    with contextlib.suppress(asyncio.QueueEmpty):
                        frames.get_nowait()
                frames.put_nowait(frame)
        except (WebSocketDisconnect, KeyError, RuntimeError):
            pass
        finally:
            if frames.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    frames.get_nowait()
            frames.put_nowait(None)

    async def stream_to_browser() -> None:
        async for result in call:
            await websocket.send_json(frame_result(result))

    reader = asyncio.create_task(browser_to_stream())
    try:
        await stream_to_browser()
    except grpc.aio.AioRpcError as exc:
        with contextlib.suppress(Exception):
            await websocket.send_json({"fatal": error_text(exc)})
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        call.cancel()
        with contextlib.suppress(Exception):
            await websocket.close()
