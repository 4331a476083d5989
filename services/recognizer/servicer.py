"""facepipe.v1.Recognizer over gRPC: subjects (enrol, list, show, update, remove faces,
delete), Verify and Recognize, each scoped to one tenant. Changes and erasure are
audited by the server runtime; the handlers add what they affected (facepipe.audit.note).
RecognizeStream and ListAccessLog are served by their own modules."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re

import grpc
import numpy as np

from facepipe import audit, auth
from facepipe.echo import echo
from facepipe.faces import NoFace
from facepipe.imaging import ImageError
from facepipe.pipeline import TENANT_RE, Loaded
from facepipe.protoconv import face_to_proto
from facepipe.recognition.gallery import (
    GalleryFace,
    NewFace,
    SubjectRecord,
    new_subject_id,
    now_ms,
)
from facepipe.storage.objects import FACE_CROPS_BUCKET, FACE_THUMBS_BUCKET
from facepipe.v1 import common_pb2, recognizer_pb2, recognizer_pb2_grpc

from . import accesslog, stream
from .stage import RecognizerDeps, decode, new_face, recognize_image, recognize_problem, verify_face

log = logging.getLogger("facepipe.recognizer")

SUBJECT_ID_RE = re.compile(r"^[0-9a-f]{32}$")
FACE_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_NAME_CHARS = 200
MAX_EXTERNAL_ID_CHARS = 200
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_PERSON_FACES = 10
MAX_PERSON_FACES = 100
MAX_REMOVE_FACES = 1000


class RecognizerServicer(recognizer_pb2_grpc.RecognizerServicer):
    def __init__(self, loaded: Loaded[RecognizerDeps]) -> None:
        self.loaded = loaded

    # --- subjects ---

    async def EnrolSubject(
        self, request: recognizer_pb2.EnrolSubjectRequest, context
    ) -> recognizer_pb2.EnrolSubjectResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        limit = deps.settings.recognizer.max_enrol_images
        if len(request.images) > limit:
            await _invalid(context, f"at most {limit} images per enrolment, got {len(request.images)}")
        # A new subject may start without faces (they are added later); adding takes some.
        if not request.images and not request.from_person_id and request.subject_id:
            await _invalid(context, "give the photos to enrol (images) or a person (from_person_id)")
        if request.max_person_faces < 0 or request.max_person_faces > MAX_PERSON_FACES:
            await _invalid(
                context,
                f"max_person_faces must be between 0 and {MAX_PERSON_FACES}, got {request.max_person_faces}",
            )
        await _check_details(context, request.external_id, request.metadata)
        if request.subject_id:
            record = await self._record(deps, tenant, request.subject_id, context)
            if request.name or request.external_id or request.metadata:
                await _invalid(
                    context,
                    "adding faces to a subject takes no name, external_id or metadata: use UpdateSubject",
                )
        else:
            name = await _name(request.name, context)
            now = now_ms()
            record = SubjectRecord(
                new_subject_id(), tenant, name, request.external_id, dict(request.metadata), now, now
            )
        new_faces: list[NewFace] = []
        problems: list[recognizer_pb2.EnrolProblem] = []
        # The photos go through the models together, so their faces share batches.
        results = await asyncio.gather(
            *(
                new_face(deps, data, request.aligned, f"image:{hashlib.sha256(data).hexdigest()}")
                for data in request.images
            ),
            return_exceptions=True,
        )
        for index, result in enumerate(results):
            if isinstance(result, NewFace):
                new_faces.append(result)
            elif isinstance(result, ImageError):
                problems.append(
                    recognizer_pb2.EnrolProblem(image_index=index, message=f"not a readable image: {result}")
                )
            elif isinstance(result, NoFace):
                problems.append(recognizer_pb2.EnrolProblem(image_index=index, message="no face found"))
            elif isinstance(result, ValueError):
                problems.append(recognizer_pb2.EnrolProblem(image_index=index, message=str(result)))
            else:
                raise result
        if request.from_person_id:
            new_faces += await self._person_faces(deps, tenant, request, context)
        if not new_faces and (request.images or request.from_person_id):
            reasons = "; ".join(f"image {p.image_index}: {p.message}" for p in problems)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"no face to enrol ({reasons or 'the person has no faces'})"
            )
        if not request.subject_id:
            await asyncio.to_thread(deps.gallery.put_record, record)
        added = (
            await asyncio.to_thread(deps.gallery.add_faces, tenant, record.subject_id, new_faces)
            if new_faces
            else []
        )
        if request.subject_id:
            record.updated_at_ms = now_ms()
            await asyncio.to_thread(deps.gallery.put_record, record)
        audit.detail(subject_id=record.subject_id)
        audit.note(faces_added=len(added))
        subject = await self._subject(deps, record, with_faces=True)
        log.info(
            "subject enrolled",
            extra={"tenant_id": tenant, "subject_id": record.subject_id, "faces": len(added)},
        )
        return recognizer_pb2.EnrolSubjectResponse(subject=subject, faces_added=len(added), problems=problems)

    async def _person_faces(
        self, deps: RecognizerDeps, tenant: str, request: recognizer_pb2.EnrolSubjectRequest, context
    ) -> list[NewFace]:
        """The best faces of a person (Persons/GetPerson), enrolled from their aligned crops."""
        if not deps.persons_addr:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "enrolment from a person needs the Persons service: set FACEPIPE_RECOGNIZER_PERSONS_ADDR",
            )
        from facepipe.auth import service_key
        from facepipe.auth.client import aio_channel
        from facepipe.v1 import persons_pb2, persons_pb2_grpc

        wanted = request.max_person_faces or DEFAULT_PERSON_FACES
        faces = []
        token = ""
        try:
            async with aio_channel(
                deps.persons_addr, service_key(deps.settings), tls=deps.settings.tls
            ) as channel:
                stub = persons_pb2_grpc.PersonsStub(channel)
                while True:
                    response = await stub.GetPerson(
                        persons_pb2.GetPersonRequest(
                            tenant_id=tenant,
                            person_id=request.from_person_id,
                            page_size=MAX_PAGE_SIZE,
                            page_token=token,
                        ),
                        timeout=30,
                    )
                    faces += list(response.person.faces)
                    token = response.next_page_token
                    if not token:
                        break
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                await context.abort(exc.code(), f"person {echo(request.from_person_id)}: {exc.details()}")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the Persons service failed: {exc.details()}")
        best = sorted(faces, key=lambda f: -f.quality)[:wanted]
        out: list[NewFace] = []
        for face in best:
            # The person's face crops are the recognizer's aligned input; only the tenant's own objects.
            if not face.crop.key.startswith(f"{tenant}/"):
                continue
            try:
                data = await asyncio.to_thread(
                    deps.objects.get, face.crop.bucket or FACE_CROPS_BUCKET, face.crop.key
                )
                out.append(
                    await new_face(deps, data, True, f"person:{request.from_person_id}/{face.point_id}")
                )
            except Exception as exc:  # noqa: BLE001 - a missing or broken crop skips that face
                log.warning("person face skipped", extra={"point_id": face.point_id, "error": str(exc)})
        return out

    async def ListSubjects(
        self, request: recognizer_pb2.ListSubjectsRequest, context
    ) -> recognizer_pb2.ListSubjectsResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            await _invalid(
                context, f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {request.page_size}"
            )
        start = 0
        if request.page_token:
            if not request.page_token.isdigit():
                await _invalid(context, f"page_token {echo(request.page_token)} is not one this service gave")
            start = int(request.page_token)
        records = await asyncio.to_thread(deps.gallery.records, tenant)
        if request.name_contains:
            wanted = request.name_contains.lower()
            records = [r for r in records if wanted in r.name.lower()]
        counts = await asyncio.to_thread(deps.gallery.face_counts, tenant)
        page = records[start : start + page_size]
        response = recognizer_pb2.ListSubjectsResponse(
            subjects=[_subject_proto(r, counts.get(r.subject_id, 0), []) for r in page]
        )
        if start + page_size < len(records):
            response.next_page_token = str(start + page_size)
        return response

    async def GetSubject(
        self, request: recognizer_pb2.GetSubjectRequest, context
    ) -> recognizer_pb2.SubjectResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        record = await self._record(deps, tenant, request.subject_id, context)
        return recognizer_pb2.SubjectResponse(subject=await self._subject(deps, record, with_faces=True))

    async def UpdateSubject(
        self, request: recognizer_pb2.UpdateSubjectRequest, context
    ) -> recognizer_pb2.SubjectResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        if not (
            request.HasField("name")
            or request.HasField("external_id")
            or request.metadata
            or request.replace_metadata
        ):
            await _invalid(context, "nothing to change: give name, external_id or metadata")
        await _check_details(context, request.external_id, request.metadata)
        name = await _name(request.name, context) if request.HasField("name") else None
        record = await self._record(deps, tenant, request.subject_id, context)
        if name is not None:
            record.name = name
        if request.HasField("external_id"):
            record.external_id = request.external_id
        if request.replace_metadata:
            record.metadata = dict(request.metadata)
        else:
            record.metadata.update(request.metadata)
        if len(record.metadata) > MAX_METADATA_ENTRIES:
            await _invalid(context, f"a subject holds at most {MAX_METADATA_ENTRIES} metadata entries")
        record.updated_at_ms = now_ms()
        await asyncio.to_thread(deps.gallery.put_record, record)
        audit.detail(subject_id=record.subject_id)
        return recognizer_pb2.SubjectResponse(subject=await self._subject(deps, record, with_faces=False))

    async def RemoveSubjectFaces(
        self, request: recognizer_pb2.RemoveSubjectFacesRequest, context
    ) -> recognizer_pb2.SubjectResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        if not request.face_ids:
            await _invalid(context, "give the face_ids to remove (from GetSubject)")
        if len(request.face_ids) > MAX_REMOVE_FACES:
            await _invalid(
                context, f"at most {MAX_REMOVE_FACES} face_ids per call, got {len(request.face_ids)}"
            )
        for face_id in request.face_ids:
            if not FACE_ID_RE.match(face_id):
                await _invalid(context, f"face_id {echo(face_id)} is not a face id (a UUID from GetSubject)")
        record = await self._record(deps, tenant, request.subject_id, context)
        known = {f.face_id for f in await asyncio.to_thread(deps.gallery.faces, tenant, record.subject_id)}
        missing = [f for f in request.face_ids if f not in known]
        if missing:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"subject {record.subject_id} has no face {echo(missing[0])}"
            )
        removed = await asyncio.to_thread(
            deps.gallery.remove_faces, tenant, record.subject_id, list(request.face_ids)
        )
        record.updated_at_ms = now_ms()
        await asyncio.to_thread(deps.gallery.put_record, record)
        audit.detail(subject_id=record.subject_id)
        audit.note(faces_deleted=removed.faces, objects_deleted=removed.objects)
        return recognizer_pb2.SubjectResponse(subject=await self._subject(deps, record, with_faces=True))

    async def DeleteSubject(
        self, request: recognizer_pb2.DeleteSubjectRequest, context
    ) -> recognizer_pb2.DeleteSubjectResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        if request.all_subjects:
            if request.subject_id:
                await _invalid(context, "give a subject_id or all_subjects, not both")
            removed = await asyncio.to_thread(deps.gallery.delete_tenant, tenant)
            audit.detail(selector="all")
        else:
            record = await self._record(deps, tenant, request.subject_id, context)
            removed = await asyncio.to_thread(deps.gallery.delete_subject, tenant, record.subject_id)
            audit.detail(subject_id=record.subject_id)
        audit.note(
            subjects_deleted=removed.subjects, faces_deleted=removed.faces, objects_deleted=removed.objects
        )
        log.info(
            "subjects deleted",
            extra={
                "tenant_id": tenant,
                "subjects": removed.subjects,
                "faces": removed.faces,
                "objects": removed.objects,
            },
        )
        return recognizer_pb2.DeleteSubjectResponse(
            faces_deleted=removed.faces, objects_deleted=removed.objects, subjects_deleted=removed.subjects
        )

    # --- verify and recognize ---

    async def Verify(self, request: recognizer_pb2.VerifyRequest, context) -> recognizer_pb2.VerifyResponse:
        deps = await self._deps(context)
        # Nothing of the tenant is read: a caller for every tenant (a '*' key, or auth off)
        # may leave it empty; a tenant's key has it filled in by its access rule.
        if request.tenant_id or not auth.is_all_tenants():
            await _tenant(request.tenant_id, context)
        found = []
        for which, data in (("image_a", request.image_a), ("image_b", request.image_b)):
            if not data:
                await _invalid(context, f"{which} is empty: give two encoded images")
            try:
                found.append(await verify_face(deps, data, request.aligned))
            except ImageError as exc:
                await _invalid(context, f"{which} is not a readable image: {exc}")
            except NoFace:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"no face found in {which}")
            except ValueError as exc:
                await _invalid(context, f"{which}: {exc}")
        a, b = found
        # Embeddings are L2-normalised: the dot product is the cosine similarity.
        similarity = float(np.dot(a.vector, b.vector))
        response = recognizer_pb2.VerifyResponse(
            verified=similarity >= deps.threshold,
            similarity=similarity,
            threshold=deps.threshold,
            model=deps.model,
            faces_a=a.faces,
            faces_b=b.faces,
        )
        if a.face is not None:
            response.face_a.CopyFrom(face_to_proto(a.face))
        if b.face is not None:
            response.face_b.CopyFrom(face_to_proto(b.face))
        return response

    async def Recognize(
        self, request: recognizer_pb2.RecognizeRequest, context
    ) -> recognizer_pb2.RecognizeResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        problem = recognize_problem(request.options)
        if problem:
            await _invalid(context, problem)
        if not request.image:
            await _invalid(context, "image is empty: give an encoded image")
        try:
            image = await asyncio.to_thread(decode, deps.settings, request.image)
        except ImageError as exc:
            await _invalid(context, f"image is not a readable image: {exc}")
        return await asyncio.to_thread(recognize_image, deps, tenant, image.bgr, request.options)

    async def RecognizeStream(self, request_iterator, context):
        deps = await self._deps(context)
        async for result in stream.recognize_stream(deps, request_iterator, context):
            yield result

    async def ListAccessLog(
        self, request: recognizer_pb2.ListAccessLogRequest, context
    ) -> recognizer_pb2.ListAccessLogResponse:
        deps = await self._deps(context)
        return await accesslog.list_access_log(deps, request, context)

    # --- helpers ---

    async def _deps(self, context) -> RecognizerDeps:
        return await self.loaded.require(context, "models are still loading")

    async def _record(self, deps: RecognizerDeps, tenant: str, subject_id: str, context) -> SubjectRecord:
        if not SUBJECT_ID_RE.match(subject_id or ""):
            await _invalid(context, f"subject_id {echo(subject_id)} is not a subject id (32 hex digits)")
        record = await asyncio.to_thread(deps.gallery.record, tenant, subject_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no subject {subject_id} in tenant {tenant}")
        assert record is not None  # abort raises
        return record

    async def _subject(
        self, deps: RecognizerDeps, record: SubjectRecord, with_faces: bool
    ) -> recognizer_pb2.Subject:
        faces = await asyncio.to_thread(deps.gallery.faces, record.tenant, record.subject_id)
        return _subject_proto(record, len(faces), faces if with_faces else [])


def _subject_proto(
    record: SubjectRecord, face_count: int, faces: list[GalleryFace]
) -> recognizer_pb2.Subject:
    return recognizer_pb2.Subject(
        subject_id=record.subject_id,
        tenant_id=record.tenant,
        name=record.name,
        external_id=record.external_id,
        metadata=record.metadata,
        face_count=face_count,
        faces=[
            recognizer_pb2.SubjectFace(
                face_id=f.face_id,
                crop=common_pb2.ObjectRef(bucket=FACE_CROPS_BUCKET, key=f.crop_key),
                thumb=common_pb2.ObjectRef(bucket=FACE_THUMBS_BUCKET, key=f.thumb_key),
                quality=f.quality,
                source=f.source,
                added_at_ms=f.added_at_ms,
            )
            for f in faces
        ],
        created_at_ms=record.created_at_ms,
        updated_at_ms=record.updated_at_ms,
    )


async def _tenant(tenant_id: str, context) -> str:
    if not TENANT_RE.match(tenant_id or ""):
        await _invalid(context, f"tenant_id {echo(tenant_id)} is required: 1-64 letters, digits, '_' or '-'")
    return tenant_id


async def _name(name: str, context) -> str:
    name = name.strip()
    if not name:
        await _invalid(context, "a subject needs a name")
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        await _invalid(context, f"name {echo(name)} must be at most {MAX_NAME_CHARS} printable characters")
    return name


async def _check_details(context, external_id: str, metadata) -> None:
    if len(external_id) > MAX_EXTERNAL_ID_CHARS or not external_id.isprintable():
        await _invalid(
            context,
            f"external_id {echo(external_id)} must be at most {MAX_EXTERNAL_ID_CHARS} printable characters",
        )
    if len(metadata) > MAX_METADATA_ENTRIES:
        await _invalid(context, f"at most {MAX_METADATA_ENTRIES} metadata entries, got {len(metadata)}")
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            await _invalid(
                context, f"metadata key {echo(key)} must be 1 to {MAX_METADATA_KEY_CHARS} characters"
            )
        if len(value) > MAX_METADATA_VALUE_CHARS:
            await _invalid(
                context, f"metadata {echo(key)}: a value holds at most {MAX_METADATA_VALUE_CHARS} characters"
            )


async def _invalid(context, message: str) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def register(server: grpc.aio.Server, loaded: Loaded[RecognizerDeps]) -> list[str]:
    recognizer_pb2_grpc.add_RecognizerServicer_to_server(RecognizerServicer(loaded), server)
    return [recognizer_pb2.DESCRIPTOR.services_by_name["Recognizer"].full_name]
