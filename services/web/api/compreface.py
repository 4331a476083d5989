"""CompreFace-compatible REST endpoints, so that a CompreFace client switches to facepipe
by changing its URL: recognition (``/recognition/recognize``, ``/recognition/faces``,
``/recognition/subjects``), verification (``/verification/verify``) and detection
(``/detection/detect``), with CompreFace's ``x-api-key`` header and its request and
response shapes. Each call maps onto Recognizer RPCs made with the caller's key.

A CompreFace subject is a facepipe subject of the key's tenant, named by its name; an
example face's ``image_id`` is the facepipe face id. What maps and what does not is in
the README (Web, CompreFace compatibility); in short: ``limit`` and ``det_prob_threshold``
become the detector's ``max_faces`` and ``score_threshold``, ``prediction_count`` the
number of subjects per face, the ``landmarks`` plugin the five landmarks, ``status`` the
timing and model fields; the age, gender, mask and calculator plugins have no
counterpart and are accepted and ignored. Errors have CompreFace's body,
``{"message": ..., "code": ...}``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from facepipe.natsauth import TENANT_RE
from facepipe.v1 import common_pb2, detector_pb2, recognizer_pb2, recognizer_pb2_grpc

from .errors import error_responses, error_text, http_status

# CompreFace's error code for an image without a face; other errors carry their HTTP status.
NO_FACE_CODE = 28
NO_FACE_MESSAGE = "No face is found in the given image"
FACE_PLUGINS = ("age", "gender", "landmarks", "mask", "calculator", "pose")
PAGE_SIZE = 1000  # ListSubjects' largest page
MAX_CANDIDATES = 100  # RecognizeOptions.candidates' largest value
DEFAULT_FACES_PAGE_SIZE = 20

COMPREFACE_KEY = APIKeyHeader(
    name="x-api-key", auto_error=False, description="A facepipe API key (CompreFace's service API key)."
)
BEARER = HTTPBearer(auto_error=False, description="A facepipe API key as a bearer token.")

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "description": "The image, base64."}},
                    "required": ["file"],
                }
            },
        },
    }
}
TWO_IMAGES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "source_image": {"type": "string", "format": "binary"},
                        "target_image": {"type": "string", "format": "binary"},
                    },
                    "required": ["source_image", "target_image"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "source_image": {"type": "string", "description": "base64"},
                        "target_image": {"type": "string", "description": "base64"},
                    },
                    "required": ["source_image", "target_image"],
                }
            },
        },
    }
}
SUBJECT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"subject": {"type": "string"}},
                    "required": ["subject"],
                }
            }
        },
    }
}
IDS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}},
    }
}


class CompreFaceError(Exception):
    """An error answered with CompreFace's body."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code if code is not None else status


def error_body(status: int, message: str, code: int | None = None) -> JSONResponse:
    return JSONResponse(
        {"message": message, "code": code if code is not None else status}, status_code=status
    )


class CompreFaceRoute(APIRoute):
    """Every error of these routes (the key check included) in CompreFace's body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except CompreFaceError as exc:
                return error_body(exc.status, exc.message, exc.code)
            except HTTPException as exc:
                return error_body(exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', '')}"
                    for e in exc.errors()
                )
                return error_body(400, problems or "bad request")
            except grpc.aio.AioRpcError as exc:
                return error_body(http_status(exc), error_text(exc))

        return answer


class CompreFaceErrorBody(BaseModel):
    """CompreFace's error shape: a message and its numeric code."""

    message: str
    code: int


# The error responses of every CompreFace route, in CompreFace's shape, for the OpenAPI document.
COMPREFACE_ERROR_RESPONSES = error_responses(
    CompreFaceErrorBody, {400: "Bad input, or no face in the photo", 404: "No such subject or face"}
)
router = APIRouter(tags=["compreface"], route_class=CompreFaceRoute, responses=COMPREFACE_ERROR_RESPONSES)


@dataclass
class KeyCaller:
    """A CompreFace caller: its key, and the tenant it names ("" leaves it to the key:
    a key bound to one tenant works in that tenant)."""

    key: str
    tenant: str


async def key_caller(
    tenant: str | None = Query(
        None,
        description="Tenant to work in; only for a key of all tenants. Default: the key's own tenant.",
    ),
    api_key: str | None = Depends(COMPREFACE_KEY),
    bearer: HTTPAuthorizationCredentials | None = Depends(BEARER),
) -> KeyCaller:
    key = (api_key or "").strip() or (bearer.credentials.strip() if bearer else "")
    if not key:
        raise CompreFaceError(401, "Missing header: x-api-key")
    if tenant is not None and not TENANT_RE.match(tenant):
        raise CompreFaceError(400, "invalid tenant: 1-64 letters, digits, '_' or '-'")
    return KeyCaller(key, tenant or "")


KeyCallerDep = Depends(key_caller)


# sha256(key) -> (whether the key is one of all tenants, monotonic time it was learnt).
KEY_SCOPES: dict[str, tuple[bool, float]] = {}
KEY_SCOPE_TTL_S = 30.0


class Backend:
    """The Recognizer, called with one caller's key, in the caller's tenant: the one the
    request names, else the key's own; a key of all tenants works in the web service's
    default tenant."""

    def __init__(self, request: Request, caller: KeyCaller) -> None:
        self.deps = request.app.state.deps
        self.caller = caller
        self.stub = recognizer_pb2_grpc.RecognizerStub(self.deps.channel("recognizer"))
        self.options = self.deps.call_options(caller.key)
        self.tenant = caller.tenant

    @classmethod
    async def open(cls, request: Request, caller: KeyCaller) -> Backend:
        backend = cls(request, caller)
        if not backend.tenant and await backend.key_of_all_tenants():
            backend.tenant = backend.deps.web.default_tenant
        return backend

    async def key_of_all_tenants(self) -> bool:
        """Whether the key is bound to no one tenant: the service then cannot fill in an
        empty tenant_id and refuses it. Learnt with one call, then remembered a while."""
        token = hashlib.sha256(self.caller.key.encode()).hexdigest()
        known = KEY_SCOPES.get(token)
        if known is not None and time.monotonic() - known[1] < KEY_SCOPE_TTL_S:
            return known[0]
        try:
            await self.stub.ListSubjects(recognizer_pb2.ListSubjectsRequest(page_size=1), **self.options)
            all_tenants = False
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT or "tenant_id" not in (exc.details() or ""):
                raise
            all_tenants = True
        if len(KEY_SCOPES) > 10_000:  # bounded: start over
            KEY_SCOPES.clear()
        KEY_SCOPES[token] = (all_tenants, time.monotonic())
        return all_tenants

    async def subjects(self) -> list[recognizer_pb2.Subject]:
        """Every subject of the tenant (without faces), in the service's order."""
        out: list[recognizer_pb2.Subject] = []
        token = ""
        while True:
            page = await self.stub.ListSubjects(
                recognizer_pb2.ListSubjectsRequest(
                    tenant_id=self.tenant, page_size=PAGE_SIZE, page_token=token
                ),
                **self.options,
            )
            out += page.subjects
            token = page.next_page_token
            if not token:
                return out

    async def subject_named(self, name: str) -> recognizer_pb2.Subject | None:
        """The tenant's subject with exactly this name (the oldest when several)."""
        token = ""
        found: list[recognizer_pb2.Subject] = []
        while True:
            page = await self.stub.ListSubjects(
                recognizer_pb2.ListSubjectsRequest(
                    tenant_id=self.tenant, page_size=PAGE_SIZE, page_token=token, name_contains=name
                ),
                **self.options,
            )
            found += [s for s in page.subjects if s.name == name]
            token = page.next_page_token
            if not token:
                break
        return min(found, key=lambda s: s.created_at_ms) if found else None

    async def require_subject(self, name: str) -> recognizer_pb2.Subject:
        subject = await self.subject_named(name)
        if subject is None:
            raise CompreFaceError(404, f"Subject {name!r} not found")
        return subject

    async def with_faces(self, subject_id: str) -> recognizer_pb2.Subject:
        response = await self.stub.GetSubject(
            recognizer_pb2.GetSubjectRequest(tenant_id=self.tenant, subject_id=subject_id), **self.options
        )
        return response.subject

    async def all_with_faces(self) -> list[recognizer_pb2.Subject]:
        subjects = await self.subjects()
        return list(await asyncio.gather(*(self.with_faces(s.subject_id) for s in subjects)))

    async def owner_of(self, image_id: str) -> tuple[recognizer_pb2.Subject, recognizer_pb2.SubjectFace]:
        for subject in await self.all_with_faces():
            for face in subject.faces:
                if face.face_id == image_id:
                    return subject, face
        raise CompreFaceError(404, f"Image with id {image_id!r} not found")

    async def enrol(
        self, image: bytes, subject_id: str = "", name: str = ""
    ) -> recognizer_pb2.EnrolSubjectResponse:
        try:
            return await self.stub.EnrolSubject(
                recognizer_pb2.EnrolSubjectRequest(
                    tenant_id=self.tenant, subject_id=subject_id, name=name, images=[image] if image else []
                ),
                **self.options,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "no face found" in (exc.details() or ""):
                raise CompreFaceError(400, NO_FACE_MESSAGE, NO_FACE_CODE) from None
            raise

    async def recognize(
        self, image: bytes, options: RecognizeParams, candidates: int
    ) -> recognizer_pb2.RecognizeResponse:
        return await self.stub.Recognize(
            recognizer_pb2.RecognizeRequest(
                tenant_id=self.tenant,
                image=image,
                options=recognizer_pb2.RecognizeOptions(
                    candidates=candidates,
                    detect=detector_pb2.DetectOptions(
                        max_faces=options.limit, score_threshold=options.det_prob_threshold
                    ),
                ),
            ),
            **self.options,
        )


# --- request parsing ---------------------------------------------------------------------------


@dataclass
class RecognizeParams:
    """CompreFace's query options, as far as they map."""

    limit: int = 0
    det_prob_threshold: float = 0.0
    prediction_count: int = 1
    landmarks: bool = False
    status: bool = False


def parse_params(
    limit: str | None,
    det_prob_threshold: str | None,
    prediction_count: str | None,
    face_plugins: str | None,
    status: str | None,
) -> RecognizeParams:
    params = RecognizeParams()
    if limit not in (None, ""):
        params.limit = _int(limit, "limit")
    if prediction_count not in (None, ""):
        params.prediction_count = _int(prediction_count, "prediction_count")
    if det_prob_threshold not in (None, ""):
        try:
            value = float(det_prob_threshold)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise CompreFaceError(400, "det_prob_threshold must be between 0.0 and 1.0")
        params.det_prob_threshold = value
    plugins = [p.strip() for p in (face_plugins or "").split(",") if p.strip()]
    unknown = [p for p in plugins if p not in FACE_PLUGINS]
    if unknown:
        raise CompreFaceError(400, f"unknown face plugin {unknown[0]!r}; known: {', '.join(FACE_PLUGINS)}")
    params.landmarks = "landmarks" in plugins
    if status not in (None, ""):
        if status.lower() not in ("true", "false"):
            raise CompreFaceError(400, "status must be true or false")
        params.status = status.lower() == "true"
    return params


def _int(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise CompreFaceError(400, f"{name} must be a whole number, got {value[:32]!r}") from None
    if number < 0:
        raise CompreFaceError(400, f"{name} must be greater or equal zero")
    return number


def params_dep(
    limit: str | None = Query(None, description="Most faces to return, largest first; 0: all."),
    det_prob_threshold: str | None = Query(
        None, description="Lowest detector score, 0.0-1.0 (facepipe's score_threshold); empty: the pack's."
    ),
    prediction_count: str | None = Query(None, description="Subjects per face, best first (default 1)."),
    face_plugins: str | None = Query(
        None, description="Comma-separated plugins; only `landmarks` has an effect (five points)."
    ),
    status: str | None = Query(None, description="true: add execution_time and plugins_versions."),
) -> RecognizeParams:
    return parse_params(limit, det_prob_threshold, prediction_count, face_plugins, status)


async def image_fields(request: Request, *names: str) -> list[bytes]:
    """The named images of a multipart form, or of a JSON body as base64 strings."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            raise CompreFaceError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise CompreFaceError(400, f"the JSON body must be an object with {', '.join(names)}")
        out = []
        for name in names:
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise CompreFaceError(400, f"{name} is missing: give the image as base64")
            try:
                out.append(base64.b64decode(value.split(",", 1)[-1], validate=True))
            except (binascii.Error, ValueError):
                raise CompreFaceError(400, f"{name} is not base64") from None
        return out
    if not content_type.startswith("multipart/form-data"):
        raise CompreFaceError(400, "send the image as multipart/form-data (or JSON with base64)")
    form = await request.form()
    out = []
    for name in names:
        upload = form.get(name)
        if upload is None or isinstance(upload, str):
            raise CompreFaceError(400, f"{name} is missing: upload the image as the form field {name!r}")
        data = await upload.read()
        if not data:
            raise CompreFaceError(400, f"{name} is empty")
        out.append(data)
    return out


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        raise CompreFaceError(400, "the body is not JSON") from None


def subject_name(body: Any) -> str:
    name = body.get("subject") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise CompreFaceError(400, 'subject is missing: send {"subject": "<name>"}')
    return name.strip()


# --- response shapes ---------------------------------------------------------------------------


def box_dict(face: common_pb2.Face) -> dict[str, Any]:
    box = face.box
    return {
        "probability": round(float(face.score), 5),
        "x_max": int(round(box.x2)),
        "y_max": int(round(box.y2)),
        "x_min": int(round(box.x1)),
        "y_min": int(round(box.y1)),
    }


def face_dict(face: common_pb2.Face, params: RecognizeParams, elapsed_ms: float) -> dict[str, Any]:
    out: dict[str, Any] = {"box": box_dict(face)}
    if params.landmarks:
        out["landmarks"] = [[int(round(p.x)), int(round(p.y))] for p in face.landmarks]
    if params.status:
        out["execution_time"] = {"detector": round(elapsed_ms, 1), "calculator": 0.0}
    return out


def similarity(value: float) -> float:
    """CompreFace's similarity is in [0, 1]: the cosine similarity, below zero as zero."""
    return round(max(0.0, float(value)), 5)


def predictions(face: recognizer_pb2.RecognizedFace, count: int) -> list[dict[str, Any]]:
    """The ``count`` nearest subjects, best first, whether or not above the threshold
    (CompreFace leaves the threshold to the client)."""
    found = []
    if face.subject_id:
        found.append({"subject": face.subject_name, "similarity": similarity(face.similarity)})
    found += [{"subject": c.name, "similarity": similarity(c.similarity)} for c in face.candidates]
    return found[:count]


def versions(model: str, params: RecognizeParams) -> dict[str, Any]:
    return {"plugins_versions": {"calculator": model}} if params.status else {}


# --- recognition: recognize ------------------------------------------------------------------------


@router.post(
    "/recognition/recognize",
    summary="Recognize the faces of a photo (CompreFace)",
    openapi_extra=IMAGE_BODY,
)
async def recognize(
    request: Request, params: RecognizeParams = Depends(params_dep), caller: KeyCaller = KeyCallerDep
) -> dict[str, Any]:
    """Each face's box and its ``prediction_count`` nearest subjects with similarities."""
    (image,) = await image_fields(request, "file")
    backend = await Backend.open(request, caller)
    started = time.perf_counter()
    response = await backend.recognize(image, params, min(MAX_CANDIDATES, params.prediction_count))
    elapsed = (time.perf_counter() - started) * 1000
    if not response.faces:
        raise CompreFaceError(400, NO_FACE_MESSAGE, NO_FACE_CODE)
    result = []
    for face in response.faces:
        item = face_dict(face.face, params, elapsed)
        item["subjects"] = predictions(face, params.prediction_count)
        result.append(item)
    return {"result": result, **versions(response.model, params)}


# --- recognition: subjects ----------------------------------------------------------------------------


@router.post("/recognition/subjects", summary="Add a subject (CompreFace)", openapi_extra=SUBJECT_BODY)
async def add_subject(request: Request, caller: KeyCaller = KeyCallerDep) -> dict[str, Any]:
    name = subject_name(await json_body(request))
    backend = await Backend.open(request, caller)
    if await backend.subject_named(name) is not None:
        raise CompreFaceError(400, f"Subject {name!r} already exists")
    await backend.enrol(b"", name=name)
    return {"subject": name}


@router.get("/recognition/subjects", summary="List subjects (CompreFace)")
@router.get("/recognition/subjects/", include_in_schema=False)
async def list_subjects(request: Request, caller: KeyCaller = KeyCallerDep) -> dict[str, Any]:
    return {"subjects": [s.name for s in await (await Backend.open(request, caller)).subjects()]}


@router.put(
    "/recognition/subjects/{subject}", summary="Rename a subject (CompreFace)", openapi_extra=SUBJECT_BODY
)
async def rename_subject(subject: str, request: Request, caller: KeyCaller = KeyCallerDep) -> dict[str, Any]:
    """Renames; when the new name is taken, the subjects are merged: the old one's faces
    move to the other, and the old one is deleted."""
    new_name = subject_name(await json_body(request))
    backend = await Backend.open(request, caller)
    old = await backend.require_subject(subject)
    if new_name == old.name:
        return {"updated": True}
    target = await backend.subject_named(new_name)
    if target is None:
        await backend.stub.UpdateSubject(
            recognizer_pb2.UpdateSubjectRequest(
                tenant_id=backend.tenant, subject_id=old.subject_id, name=new_name
            ),
            **backend.options,
        )
        return {"updated": True}
    await merge_subjects(backend, old.subject_id, target.subject_id)
    return {"updated": True}


async def merge_subjects(backend: Backend, source_id: str, target_id: str) -> None:
    """Moves the faces of ``source_id`` to ``target_id`` (re-enrolled from their stored
    aligned crops, which GetSubject names) and deletes ``source_id``."""
    source = await backend.with_faces(source_id)
    crops = []
    for face in source.faces:
        crops.append(await asyncio.to_thread(backend.deps.objects.get, face.crop.bucket, face.crop.key))
    if crops:
        await backend.stub.EnrolSubject(
            recognizer_pb2.EnrolSubjectRequest(
                tenant_id=backend.tenant, subject_id=target_id, images=crops, aligned=True
            ),
            **backend.options,
        )
    await backend.stub.DeleteSubject(
        recognizer_pb2.DeleteSubjectRequest(tenant_id=backend.tenant, subject_id=source_id), **backend.options
    )


@router.delete("/recognition/subjects/{subject}", summary="Delete a subject and its faces (CompreFace)")
async def delete_subject(subject: str, request: Request, caller: KeyCaller = KeyCallerDep) -> dict[str, Any]:
    backend = await Backend.open(request, caller)
    found = await backend.require_subject(subject)
    await backend.stub.DeleteSubject(
        recognizer_pb2.DeleteSubjectRequest(tenant_id=backend.tenant, subject_id=found.subject_id),
        **backend.options,
    )
    return {"subject": found.name}


@router.delete("/recognition/subjects", summary="Delete every subject (CompreFace)")
async def delete_all_subjects(request: Request, caller: KeyCaller = KeyCallerDep) -> dict[str, Any]:
    backend = await Backend.open(request, caller)
    response = await backend.stub.DeleteSubject(
        recognizer_pb2.DeleteSubjectRequest(tenant_id=backend.tenant, all_subjects=True), **backend.options
    )
    return {"deleted": response.subjects_deleted}


# --- recognition: example faces ----------------------------------------------------------------------


@router.post(
    "/recognition/faces", summary="Add an example face of a subject (CompreFace)", openapi_extra=IMAGE_BODY
)
async def add_face(
    request: Request,
    subject: str = Query(..., description="The subject's name; a new subject when there is none."),
    det_prob_threshold: str | None = Query(
        None, description="Accepted; enrolment uses the pack's detector score."
    ),
    caller: KeyCaller = KeyCallerDep,
) -> dict[str, Any]:
    """Enrols the face nearest the centre of the photo; answers its ``image_id``."""
    name = subject.strip()
    if not name:
        raise CompreFaceError(400, "subject is missing")
    parse_params(None, det_prob_threshold, None, None, None)
    (image,) = await image_fields(request, "file")
    backend = await Backend.open(request, caller)
    found = await backend.subject_named(name)
    response = await backend.enrol(
        image, subject_id=found.subject_id if found else "", name="" if found else name
    )
    source = f"image:{hashlib.sha256(image).hexdigest()}"
    added = [f for f in response.subject.faces if f.source == source] or list(response.subject.faces)
    newest = max(added, key=lambda f: f.added_at_ms)
    return {"image_id": newest.face_id, "subject": response.subject.name}


async def _subjects_with_faces(backend: Backend, subject: str | None) -> list[recognizer_pb2.Subject]:
    """The named subject with its faces (none when there is no such subject), or every subject."""
    if not subject:
        return await backend.all_with_faces()
    found = await backend.subject_named(subject)
    return [await backend.with_faces(found.subject_id)] if found else []


@router.get("/recognition/faces", summary="List example faces (CompreFace)")
async def list_faces(
    request: Request,
    page: int = Query(0, ge=0, description="Page number, from 0."),
    size: int = Query(DEFAULT_FACES_PAGE_SIZE, ge=1, le=PAGE_SIZE, description="Faces per page."),
    subject: str | None = Query(None, description="Only this subject's faces."),
    caller: KeyCaller = KeyCallerDep,
) -> dict[str, Any]:
    backend = await Backend.open(request, caller)
    subjects = await _subjects_with_faces(backend, subject)
    faces = [{"image_id": f.face_id, "subject": s.name} for s in subjects for f in s.faces]
    return {
        "faces": faces[page * size : (page + 1) * size],
        "page_number": page,
        "page_size": size,
        "total_pages": math.ceil(len(faces) / size),
        "total_elements": len(faces),
    }


@router.delete("/recognition/faces", summary="Delete the example faces of a subject, or all (CompreFace)")
async def delete_faces(
    request: Request,
    subject: str | None = Query(None, description="The subject whose faces go; absent: every subject's."),
    caller: KeyCaller = KeyCallerDep,
) -> dict[str, Any]:
    """Removes faces and keeps the subjects, as CompreFace does."""
    backend = await Backend.open(request, caller)
    subjects = await _subjects_with_faces(backend, subject)
    deleted = 0
    for s in subjects:
        if s.faces:
            await backend.stub.RemoveSubjectFaces(
                recognizer_pb2.RemoveSubjectFacesRequest(
                    tenant_id=backend.tenant, subject_id=s.subject_id, face_ids=[f.face_id for f in s.faces]
                ),
                **backend.options,
            )
            deleted += len(s.faces)
    return {"deleted": deleted}


@router.post(
    "/recognition/faces/delete", summary="Delete example faces by id (CompreFace)", openapi_extra=IDS_BODY
)
async def delete_faces_by_ids(request: Request, caller: KeyCaller = KeyCallerDep) -> list[dict[str, Any]]:
    """The faces that were found and deleted; unknown ids are skipped."""
    ids = await json_body(request)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CompreFaceError(400, "send a JSON list of image ids")
    backend = await Backend.open(request, caller)
    wanted = set(ids)
    out = []
    for s in await backend.all_with_faces():
        mine = [f.face_id for f in s.faces if f.face_id in wanted]
        if mine:
            await backend.stub.RemoveSubjectFaces(
                recognizer_pb2.RemoveSubjectFacesRequest(
                    tenant_id=backend.tenant, subject_id=s.subject_id, face_ids=mine
                ),
                **backend.options,
            )
            out += [{"image_id": i, "subject": s.name} for i in mine]
    return out


@router.delete("/recognition/faces/{image_id}", summary="Delete an example face (CompreFace)")
async def delete_face(image_id: str, request: Request, caller: KeyCaller = KeyCallerDep) -> dict[str, Any]:
    backend = await Backend.open(request, caller)
    subject, face = await backend.owner_of(image_id)
    await backend.stub.RemoveSubjectFaces(
        recognizer_pb2.RemoveSubjectFacesRequest(
            tenant_id=backend.tenant, subject_id=subject.subject_id, face_ids=[face.face_id]
        ),
        **backend.options,
    )
    return {"image_id": face.face_id, "subject": subject.name}


@router.get("/recognition/faces/{image_id}/img", summary="Download an example face (CompreFace)")
async def face_image(image_id: str, request: Request, caller: KeyCaller = KeyCallerDep) -> Response:
    """The stored aligned crop of the face (JPEG), not the uploaded photo."""
    backend = await Backend.open(request, caller)
    _, face = await backend.owner_of(image_id)
    data = await asyncio.to_thread(backend.deps.objects.get, face.crop.bucket, face.crop.key)
    return Response(data, media_type="image/jpeg")


@router.post(
    "/recognition/faces/{image_id}/verify",
    summary="Compare the faces of a photo with an example face (CompreFace)",
    openapi_extra=IMAGE_BODY,
)
async def verify_with_face(
    image_id: str,
    request: Request,
    params: RecognizeParams = Depends(params_dep),
    caller: KeyCaller = KeyCallerDep,
) -> dict[str, Any]:
    """Each face of the photo with its similarity to the example's subject (its nearest
    example face)."""
    (image,) = await image_fields(request, "file")
    backend = await Backend.open(request, caller)
    subject, _ = await backend.owner_of(image_id)
    started = time.perf_counter()
    response = await backend.recognize(image, params, MAX_CANDIDATES)
    elapsed = (time.perf_counter() - started) * 1000
    if not response.faces:
        raise CompreFaceError(400, NO_FACE_MESSAGE, NO_FACE_CODE)
    result = []
    for face in response.faces:
        scores = {c.subject_id: c.similarity for c in face.candidates}
        if face.subject_id:
            scores[face.subject_id] = face.similarity
        item = face_dict(face.face, params, elapsed)
        item["similarity"] = similarity(scores.get(subject.subject_id, 0.0))
        result.append(item)
    return {"result": result, **versions(response.model, params)}


# --- verification and detection --------------------------------------------------------------------


@router.post(
    "/verification/verify",
    summary="Compare the faces of two photos (CompreFace)",
    openapi_extra=TWO_IMAGES_BODY,
)
async def verify(
    request: Request, params: RecognizeParams = Depends(params_dep), caller: KeyCaller = KeyCallerDep
) -> dict[str, Any]:
    """The face nearest the centre of ``source_image`` against the face nearest the centre
    of ``target_image`` (facepipe's Verify): one match with its similarity."""
    source, target = await image_fields(request, "source_image", "target_image")
    backend = await Backend.open(request, caller)
    started = time.perf_counter()
    try:
        response = await backend.stub.Verify(
            recognizer_pb2.VerifyRequest(tenant_id=backend.tenant, image_a=source, image_b=target),
            **backend.options,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "no face" in (exc.details() or ""):
            raise CompreFaceError(400, NO_FACE_MESSAGE, NO_FACE_CODE) from None
        raise
    elapsed = (time.perf_counter() - started) * 1000
    match = face_dict(response.face_b, params, elapsed)
    match["similarity"] = similarity(response.similarity)
    return {
        "result": [
            {
                "source_image_face": face_dict(response.face_a, params, elapsed),
                "face_matches": [match],
                **versions(response.model, params),
            }
        ]
    }


@router.post(
    "/detection/detect", summary="Detect the faces of a photo (CompreFace)", openapi_extra=IMAGE_BODY
)
async def detect(
    request: Request, params: RecognizeParams = Depends(params_dep), caller: KeyCaller = KeyCallerDep
) -> dict[str, Any]:
    (image,) = await image_fields(request, "file")
    backend = await Backend.open(request, caller)
    started = time.perf_counter()
    response = await backend.recognize(image, params, 0)
    elapsed = (time.perf_counter() - started) * 1000
    if not response.faces:
        raise CompreFaceError(400, NO_FACE_MESSAGE, NO_FACE_CODE)
    return {
        "result": [face_dict(f.face, params, elapsed) for f in response.faces],
        **versions(response.model, params),
    }
