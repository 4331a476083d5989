"""Recognition over REST: subjects (enrol from photos or from a person, add faces, list,
show, rename, delete), recognize, verify, and the access log. Each call is one
Recognizer RPC made with the caller's key, so its roles and tenant binding apply."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from facepipe.v1 import detector_pb2, recognizer_pb2, recognizer_pb2_grpc

from .auth import Caller, CallerDep
from .convert import as_dict, object_url
from .errors import ERROR_RESPONSES, bad_request

router = APIRouter(tags=["recognition"], responses=ERROR_RESPONSES)
MAX_ACCESS_RECORDS = 10_000
MAX_CANDIDATES = 100


def recognizer(request: Request) -> recognizer_pb2_grpc.RecognizerStub:
    return recognizer_pb2_grpc.RecognizerStub(request.app.state.deps.channel("recognizer"))


def call_options(request: Request, caller: Caller) -> dict[str, Any]:
    return request.app.state.deps.call_options(caller.key)


INT64_TYPES = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)


def plain_dict(msg: Message) -> dict[str, Any]:
    """``as_dict`` with 64-bit integers as JSON numbers (protobuf's JSON writes them as
    strings); times in milliseconds fit a double exactly."""
    out = as_dict(msg)
    _numbers(msg, out)
    return out


def _numbers(msg: Message, out: dict[str, Any]) -> None:
    for field in msg.DESCRIPTOR.fields:
        if field.name not in out:
            continue
        repeated = field.is_repeated
        if field.cpp_type in INT64_TYPES:
            out[field.name] = [int(v) for v in out[field.name]] if repeated else int(out[field.name])
        elif (
            field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
            and not field.message_type.GetOptions().map_entry
        ):
            value = getattr(msg, field.name)
            if repeated:
                for item, item_out in zip(value, out[field.name], strict=True):
                    _numbers(item, item_out)
            else:
                _numbers(value, out[field.name])


def subject_dict(subject: recognizer_pb2.Subject) -> dict[str, Any]:
    """A Subject, each face with the URLs of its thumbnail and crop."""
    out = plain_dict(subject)
    out["faces"] = [
        {**plain_dict(face), "thumb_url": object_url(face.thumb), "crop_url": object_url(face.crop)}
        for face in subject.faces
    ]
    return out


def recognized_dict(face: recognizer_pb2.RecognizedFace) -> dict[str, Any]:
    out = plain_dict(face)
    out["subject"] = face.subject_name or None
    return out


async def read_uploads(uploads: list[UploadFile] | None) -> list[bytes]:
    out = []
    for upload in uploads or []:
        data = await upload.read()
        if not data:
            raise bad_request(f"{upload.filename or 'an upload'} is empty")
        out.append(data)
    return out


async def enrol(
    request: Request,
    caller: Caller,
    name: str = "",
    images: list[bytes] | None = None,
    subject_id: str = "",
    from_person_id: str = "",
    external_id: str = "",
    max_person_faces: int = 0,
) -> dict[str, Any]:
    """One EnrolSubject; the shared path of the API and the subjects page."""
    response = await recognizer(request).EnrolSubject(
        recognizer_pb2.EnrolSubjectRequest(
            tenant_id=caller.tenant,
            subject_id=subject_id,
            name=name,
            external_id=external_id,
            images=images or [],
            from_person_id=from_person_id,
            max_person_faces=max_person_faces,
        ),
        **call_options(request, caller),
    )
    return {
        "subject": subject_dict(response.subject),
        "faces_added": response.faces_added,
        "problems": [as_dict(p) for p in response.problems],
    }


async def list_all_subjects(
    request: Request, caller: Caller, name_contains: str = ""
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = ""
    while True:
        page = await recognizer(request).ListSubjects(
            recognizer_pb2.ListSubjectsRequest(
                tenant_id=caller.tenant, page_size=1000, page_token=token, name_contains=name_contains
            ),
            **call_options(request, caller),
        )
        out += [subject_dict(s) for s in page.subjects]
        token = page.next_page_token
        if not token:
            return out


async def access_log(
    request: Request,
    caller: Caller,
    camera_id: str = "",
    subject_id: str = "",
    since_ms: int = 0,
    until_ms: int = 0,
    limit: int = 100,
    snapshots: bool = True,
) -> list[dict[str, Any]]:
    """Access records, newest first, each snapshot as a data: URL."""
    if not 1 <= limit <= MAX_ACCESS_RECORDS:
        raise bad_request(f"limit must be 1-{MAX_ACCESS_RECORDS}")
    response = await recognizer(request).ListAccessLog(
        recognizer_pb2.ListAccessLogRequest(
            tenant_id=caller.tenant,
            camera_id=camera_id,
            subject_id=subject_id,
            since_ms=since_ms,
            until_ms=until_ms,
            limit=limit,
            without_snapshots=not snapshots,
        ),
        **call_options(request, caller),
    )
    out = []
    for record in response.records:
        item = plain_dict(record)
        item.pop("snapshot_jpeg", None)
        item["subject"] = record.subject_name or None
        item["snapshot_url"] = (
            "data:image/jpeg;base64," + base64.b64encode(record.snapshot_jpeg).decode()
            if record.snapshot_jpeg
            else ""
        )
        out.append(item)
    return out


def parse_time_ms(value: str, name: str) -> int:
    """Unix milliseconds, or an ISO 8601 time (UTC unless it says otherwise); "" is 0."""
    value = value.strip()
    if not value:
        return 0
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(
            f"{name} must be Unix milliseconds or an ISO 8601 time, got {value[:40]!r}"
        ) from None
    if when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


# --- subjects --------------------------------------------------------------------------------


@router.post("/subjects", summary="Enrol a subject", status_code=201)
async def create_subject(
    request: Request,
    name: str = Form(..., description="The subject's name."),
    images: list[UploadFile] | None = File(None, description="Photos; the face nearest the centre of each."),
    from_person_id: str = Form("", description="Also enrol this person's best faces."),
    max_person_faces: int = Form(0, description="With from_person_id: at most this many faces (0: 10)."),
    external_id: str = Form("", description="Your own id for the subject."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    """A new subject from photos and/or a person's faces. Photos without a face are listed
    in ``problems``; the others are enrolled."""
    data = await read_uploads(images)
    return await enrol(
        request,
        caller,
        name=name,
        images=data,
        from_person_id=from_person_id.strip(),
        external_id=external_id,
        max_person_faces=max_person_faces,
    )


@router.post("/subjects/{subject_id}/faces", summary="Add faces to a subject")
async def add_subject_faces(
    request: Request,
    subject_id: str,
    images: list[UploadFile] | None = File(None, description="Photos; the face nearest the centre of each."),
    from_person_id: str = Form("", description="Enrol this person's best faces."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    data = await read_uploads(images)
    return await enrol(
        request, caller, images=data, subject_id=subject_id, from_person_id=from_person_id.strip()
    )


@router.get("/subjects", summary="List subjects")
async def list_subjects(
    request: Request,
    name_contains: str = Query("", description="Only subjects whose name contains this (any case)."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    return {"tenant": caller.tenant, "subjects": await list_all_subjects(request, caller, name_contains)}


@router.get("/subjects/{subject_id}", summary="Show a subject with its faces")
async def get_subject(request: Request, subject_id: str, caller: Caller = CallerDep) -> dict[str, Any]:
    response = await recognizer(request).GetSubject(
        recognizer_pb2.GetSubjectRequest(tenant_id=caller.tenant, subject_id=subject_id),
        **call_options(request, caller),
    )
    return subject_dict(response.subject)


@router.patch("/subjects/{subject_id}", summary="Rename a subject or change its external id")
async def update_subject(
    request: Request,
    subject_id: str,
    name: str | None = Form(None, description="The new name."),
    external_id: str | None = Form(None, description="The new external id."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    update = recognizer_pb2.UpdateSubjectRequest(tenant_id=caller.tenant, subject_id=subject_id)
    if name is not None:
        update.name = name
    if external_id is not None:
        update.external_id = external_id
    response = await recognizer(request).UpdateSubject(update, **call_options(request, caller))
    return subject_dict(response.subject)


@router.delete("/subjects/{subject_id}/faces/{face_id}", summary="Remove one face of a subject")
async def remove_subject_face(
    request: Request, subject_id: str, face_id: str, caller: Caller = CallerDep
) -> dict[str, Any]:
    response = await recognizer(request).RemoveSubjectFaces(
        recognizer_pb2.RemoveSubjectFacesRequest(
            tenant_id=caller.tenant, subject_id=subject_id, face_ids=[face_id]
        ),
        **call_options(request, caller),
    )
    return subject_dict(response.subject)


@router.delete("/subjects/{subject_id}", summary="Delete a subject and its stored faces")
async def delete_subject(request: Request, subject_id: str, caller: Caller = CallerDep) -> dict[str, Any]:
    response = await recognizer(request).DeleteSubject(
        recognizer_pb2.DeleteSubjectRequest(tenant_id=caller.tenant, subject_id=subject_id),
        **call_options(request, caller),
    )
    return plain_dict(response)


# --- recognize and verify ---------------------------------------------------------------------------


@router.post("/recognize", summary="Recognize every face of a photo")
async def recognize(
    request: Request,
    image: UploadFile = File(..., description="An encoded photo."),
    candidates: int = Form(0, description=f"Runners-up per face, 0-{MAX_CANDIDATES}."),
    min_similarity: float = Form(
        0.0, description="Lowest similarity for a subject; 0: the pack's threshold."
    ),
    max_faces: int = Form(0, description="At most this many faces, largest and most central first; 0: all."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    """For each face: box, landmarks, quality, the best subject (``subject`` is null when
    unknown), its similarity, and runners-up on request."""
    data = await image.read()
    if not data:
        raise bad_request("image is empty: upload a photo")
    response = await recognizer(request).Recognize(
        recognizer_pb2.RecognizeRequest(
            tenant_id=caller.tenant,
            image=data,
            options=recognizer_pb2.RecognizeOptions(
                candidates=candidates,
                min_similarity=min_similarity,
                detect=detector_pb2.DetectOptions(max_faces=max_faces),
            ),
        ),
        **call_options(request, caller),
    )
    return {
        "tenant": caller.tenant,
        "threshold": response.threshold,
        "model": response.model,
        "width": response.width,
        "height": response.height,
        "faces": [recognized_dict(f) for f in response.faces],
    }


@router.post("/verify", summary="Whether two photos show the same person")
async def verify(
    request: Request,
    image_a: UploadFile = File(..., description="The first photo."),
    image_b: UploadFile = File(..., description="The second photo."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    """The faces nearest the centre of each photo: similarity, the pack's calibrated
    threshold, and the verdict."""
    a, b = await image_a.read(), await image_b.read()
    if not a or not b:
        raise bad_request("upload two photos: image_a and image_b")
    response = await recognizer(request).Verify(
        recognizer_pb2.VerifyRequest(tenant_id=caller.tenant, image_a=a, image_b=b),
        **call_options(request, caller),
    )
    return plain_dict(response)


# --- access log ------------------------------------------------------------------------------------------


@router.get("/access-log", summary="Access-log records, newest first")
async def get_access_log(
    request: Request,
    camera_id: str = Query("", description="Only this camera."),
    subject_id: str = Query("", description="Only this subject; `unknown` for unknown faces."),
    since: str = Query("", description="From this time (Unix ms or ISO 8601)."),
    until: str = Query("", description="Up to this time (Unix ms or ISO 8601)."),
    limit: int = Query(100, description=f"At most this many records, 1-{MAX_ACCESS_RECORDS}."),
    snapshots: bool = Query(True, description="Include each record's snapshot as a data: URL."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    records = await access_log(
        request,
        caller,
        camera_id=camera_id,
        subject_id=subject_id,
        since_ms=parse_time_ms(since, "since"),
        until_ms=parse_time_ms(until, "until"),
        limit=limit,
        snapshots=snapshots,
    )
    return {"tenant": caller.tenant, "records": records}
