"""facepipe.v1.Persons over gRPC: list, show and correct a tenant's persons, and
rebuild them (Recluster). Every call is scoped to one tenant; the changing ones are
audited by the server runtime."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import grpc

from facepipe import audit
from facepipe.echo import echo
from facepipe.persons.records import BestFace, PersonRecord
from facepipe.pipeline import TENANT_RE, Loaded
from facepipe.v1 import common_pb2, indexer_pb2, persons_pb2, persons_pb2_grpc

from .people import NotFound, Refused
from .recluster import FAILED, RUNNING, ReclusterJob
from .stage import PersonsDeps

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_NAME_CHARS = 200
MAX_FACES_PER_CALL = 10_000
PERSON_ID_RE = re.compile(r"^[0-9a-f]{32}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class PersonsServicer(persons_pb2_grpc.PersonsServicer):
    def __init__(self, loaded: Loaded[PersonsDeps]) -> None:
        self.loaded = loaded

    async def ListPersons(
        self, request: persons_pb2.ListPersonsRequest, context
    ) -> persons_pb2.ListPersonsResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        page_size = await _page_size(request.page_size, context)
        start = await _page_token(request.page_token, context)
        if request.min_faces < 0:
            await _invalid(context, f"min_faces must be 0 or more, got {request.min_faces}")
        min_faces = request.min_faces or 1
        records = await deps.people.book.list(tenant)
        shown = [r for r in records if r.face_count >= min_faces and (request.include_hidden or not r.hidden)]
        shown.sort(key=lambda r: (-r.face_count, r.person_id))
        page = shown[start : start + page_size]
        faces_of: dict[str, list[indexer_pb2.SearchMatch]] = {}
        pinned: set[str] = set()
        if request.with_faces and page:
            listed, pinned = await _call(context, deps.people.faces.listing(tenant))
            for match in listed:
                if match.person_id:
                    faces_of.setdefault(match.person_id, []).append(match)
        response = persons_pb2.ListPersonsResponse(
            persons=[_person(r, _ordered(faces_of.get(r.person_id, [])), pinned) for r in page]
        )
        if start + page_size < len(shown):
            response.next_page_token = str(start + page_size)
        audit.note(results=len(page))
        return response

    async def GetPerson(
        self, request: persons_pb2.GetPersonRequest, context
    ) -> persons_pb2.GetPersonResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        person_id = await _person_id(request.person_id, context, "person_id")
        page_size = await _page_size(request.page_size, context)
        start = await _page_token(request.page_token, context)
        record = await _found(context, deps.people.require(tenant, person_id))
        listed, pinned = await _call(context, deps.people.faces.listing(tenant, person_id=person_id))
        faces = _ordered(listed)
        response = persons_pb2.GetPersonResponse(
            person=_person(record, faces[start : start + page_size], pinned)
        )
        response.person.face_count = len(faces)
        if start + page_size < len(faces):
            response.next_page_token = str(start + page_size)
        return response

    async def RenamePerson(
        self, request: persons_pb2.RenamePersonRequest, context
    ) -> persons_pb2.PersonResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        person_id = await _person_id(request.person_id, context, "person_id")
        name = await _name(request.name, context)
        audit.detail(person_id=person_id)
        record = await _found(context, deps.people.rename(tenant, person_id, name))
        audit.note(persons_changed=1)
        return persons_pb2.PersonResponse(person=_person(record))

    async def MergePersons(
        self, request: persons_pb2.MergePersonsRequest, context
    ) -> persons_pb2.PersonResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        into = await _person_id(request.into_person_id, context, "into_person_id")
        if not request.person_ids:
            await _invalid(context, "give person_ids: the persons to merge into into_person_id")
        others = [await _person_id(p, context, "person_ids") for p in request.person_ids]
        audit.detail(person_id=into, merged=",".join(others)[:500])
        record = await _found(context, deps.people.merge(tenant, into, others))
        audit.note(persons_removed=len(set(others) - {into}))
        return persons_pb2.PersonResponse(person=_person(record))

    async def SplitPerson(
        self, request: persons_pb2.SplitPersonRequest, context
    ) -> persons_pb2.SplitPersonResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        person_id = await _person_id(request.person_id, context, "person_id")
        if not request.point_ids:
            await _invalid(context, "give point_ids: at least one face of the person to move")
        if len(request.point_ids) > MAX_FACES_PER_CALL:
            await _invalid(context, f"at most {MAX_FACES_PER_CALL} point_ids, got {len(request.point_ids)}")
        points = [await _point(p, context) for p in request.point_ids]
        to_person = (
            await _person_id(request.to_person_id, context, "to_person_id") if request.to_person_id else ""
        )
        name = await _name(request.name, context)
        audit.detail(person_id=person_id, to_person_id=to_person)
        source, target = await _found(context, deps.people.split(tenant, person_id, points, to_person, name))
        audit.note(faces_moved=len(set(points)))
        response = persons_pb2.SplitPersonResponse(to_person=_person(target))
        if source is not None:
            response.from_person.CopyFrom(_person(source))
        return response

    async def HidePerson(self, request: persons_pb2.HidePersonRequest, context) -> persons_pb2.PersonResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        person_id = await _person_id(request.person_id, context, "person_id")
        audit.detail(person_id=person_id, hidden=str(request.hidden).lower())
        record = await _found(context, deps.people.hide(tenant, person_id, request.hidden))
        audit.note(persons_changed=1)
        return persons_pb2.PersonResponse(person=_person(record))

    async def UnassignFace(
        self, request: persons_pb2.UnassignFaceRequest, context
    ) -> persons_pb2.UnassignFaceResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        point = await _point(request.point_id, context)
        audit.detail(point_id=point)
        person, removed = await _found(context, deps.people.unassign(tenant, point))
        audit.note(faces_moved=1 if person else 0)
        return persons_pb2.UnassignFaceResponse(person_id=person, person_removed=removed)

    async def Recluster(
        self, request: persons_pb2.ReclusterRequest, context
    ) -> persons_pb2.ReclusterResponse:
        deps = await self._deps(context)
        tenant = await _tenant(request.tenant_id, context)
        if request.status_only:
            audit.detail(status_only=True)
            latest = await deps.reclusterer.latest(tenant)
            if latest is None:
                return persons_pb2.ReclusterResponse()
            job = latest
        else:
            job = await deps.reclusterer.start(tenant)
        if request.wait and job.state == RUNNING:
            job = await deps.reclusterer.wait(tenant, job)
        audit.note(faces_moved=job.faces_moved)
        return _recluster(job)

    async def _deps(self, context) -> PersonsDeps:
        return await self.loaded.require(context, "the persons service is still starting")


def register(server: grpc.aio.Server, loaded: Loaded[PersonsDeps]) -> list[str]:
    persons_pb2_grpc.add_PersonsServicer_to_server(PersonsServicer(loaded), server)
    return [persons_pb2.DESCRIPTOR.services_by_name["Persons"].full_name]


def _recluster(job: ReclusterJob) -> persons_pb2.ReclusterResponse:
    return persons_pb2.ReclusterResponse(
        state=job.state,
        faces=job.faces,
        persons_before=job.persons_before,
        persons_after=job.persons_after,
        faces_moved=job.faces_moved,
        seconds=job.seconds,
        error=job.error if job.state == FAILED else "",
        started_at_ms=job.started_at_ms,
        automatic=job.automatic,
    )


def _ordered(faces: Sequence[indexer_pb2.SearchMatch]) -> list[indexer_pb2.SearchMatch]:
    """By capture time (unknown last), then indexing time, then point id."""
    return sorted(
        faces,
        key=lambda m: (m.photo.taken_at_ms == 0, m.photo.taken_at_ms, m.indexed_at_ms, m.point_id),
    )


def _best(best: BestFace) -> persons_pb2.PersonFace:
    return persons_pb2.PersonFace(
        point_id=best.point_id,
        image_sha256=best.image_sha256,
        face_index=best.face_index,
        url=best.url,
        thumb=common_pb2.ObjectRef(bucket=best.thumb_bucket, key=best.thumb_key),
        quality=best.quality,
    )


def _face(match: indexer_pb2.SearchMatch, pinned: set[str]) -> persons_pb2.PersonFace:
    return persons_pb2.PersonFace(
        point_id=match.point_id,
        image_sha256=match.image_sha256,
        face_index=match.face_index,
        url=match.url,
        site=match.site,
        bbox=match.bbox,
        crop=match.crop,
        thumb=match.thumb,
        quality=match.quality,
        taken_at_ms=match.photo.taken_at_ms,
        indexed_at_ms=match.indexed_at_ms,
        pinned=match.point_id in pinned,
    )


def _person(
    record: PersonRecord, faces: Sequence[indexer_pb2.SearchMatch] = (), pinned: set[str] | None = None
) -> persons_pb2.Person:
    person = persons_pb2.Person(
        person_id=record.person_id,
        tenant_id=record.tenant,
        name=record.name,
        face_count=record.face_count,
        hidden=record.hidden,
        created_at_ms=record.created_at_ms,
        updated_at_ms=record.updated_at_ms,
        faces=[_face(m, pinned or set()) for m in faces],
    )
    if record.best is not None:
        person.best_face.CopyFrom(_best(record.best))
    return person


async def _found(context, operation):
    """Runs an operation of People; its refusals become NOT_FOUND / INVALID_ARGUMENT."""
    try:
        return await operation
    except NotFound as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except Refused as exc:
        await _invalid(context, str(exc))
    except grpc.aio.AioRpcError as exc:
        await _indexer_failed(context, exc)
    except TimeoutError as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))


async def _call(context, awaitable):
    try:
        return await awaitable
    except grpc.aio.AioRpcError as exc:
        await _indexer_failed(context, exc)


async def _indexer_failed(context, exc: grpc.aio.AioRpcError) -> None:
    code = exc.code()
    if code not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
        code = grpc.StatusCode.UNAVAILABLE
    await context.abort(code, f"the indexer: {exc.details()}")


async def _tenant(tenant_id: str, context) -> str:
    if not TENANT_RE.match(tenant_id or ""):
        await _invalid(context, f"tenant_id {echo(tenant_id)} is required: 1-64 letters, digits, '_' or '-'")
    return tenant_id


async def _person_id(value: str, context, field: str) -> str:
    if not PERSON_ID_RE.match(value or ""):
        await _invalid(context, f"{field} {echo(value)} is not a person id (32 lowercase hex digits)")
    return value


async def _point(value: str, context) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        await _invalid(context, f"point id {echo(value)} is not a face's point id (a UUID)")
    raise AssertionError("unreachable")


async def _name(value: str, context) -> str:
    name = value.strip()
    if len(name) > MAX_NAME_CHARS:
        await _invalid(context, f"name is {len(name)} characters long; at most {MAX_NAME_CHARS}")
    if CONTROL_RE.search(name):
        await _invalid(context, "name must not contain control characters")
    return name


async def _page_size(value: int, context) -> int:
    size = value or DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        await _invalid(context, f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {value}")
    return size


async def _page_token(token: str, context) -> int:
    if token and not token.isdigit():
        await _invalid(context, f"page_token {echo(token)} is not one this service gave")
    return int(token) if token else 0


async def _invalid(context, message: str) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
