"""/api/v1/persons: the tenant's persons (facepipe.v1.Persons): list, show, rename,
merge, split and hide."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from facepipe.v1 import persons_pb2

from .auth import Caller, CallerDep
from .convert import person_dict
from .errors import ERROR_RESPONSES, bad_request

router = APIRouter(prefix="/persons", tags=["persons"], responses=ERROR_RESPONSES)
MAX_PAGE = 1000


class RenameBody(BaseModel):
    name: str = Field(..., description="The new name; empty clears it.", max_length=200)


class MergeBody(BaseModel):
    into_person_id: str = Field(..., description="The person that remains.")
    person_ids: list[str] = Field(..., description="The persons merged into it.", min_length=1)


class SplitBody(BaseModel):
    point_ids: list[str] = Field(..., description="Faces of the person to move.", min_length=1)
    to_person_id: str = Field("", description="Move them to this person; empty: a new one.")
    name: str = Field("", description="Name of the new person.", max_length=200)


class HideBody(BaseModel):
    hidden: bool = Field(True, description="Hide (true) or show again (false).")


def check_page(page_size: int) -> None:
    if not 0 <= page_size <= MAX_PAGE:
        raise bad_request(f"page_size must be 0-{MAX_PAGE} (0: the default)")


async def list_persons(
    request: Request,
    caller: Caller,
    include_hidden: bool = False,
    min_faces: int = 0,
    page_size: int = 0,
    page_token: str = "",
) -> dict[str, Any]:
    deps = request.app.state.deps
    check_page(page_size)
    if min_faces < 0:
        raise bad_request("min_faces must not be negative")
    req = persons_pb2.ListPersonsRequest(
        tenant_id=caller.tenant,
        include_hidden=include_hidden,
        min_faces=min_faces,
        page_size=page_size,
        page_token=page_token,
    )
    resp = await deps.persons().ListPersons(req, **deps.call_options(caller.key))
    return {
        "tenant": caller.tenant,
        "persons": [person_dict(p) for p in resp.persons],
        "next_page_token": resp.next_page_token,
    }


async def get_person(
    request: Request, caller: Caller, person_id: str, page_size: int = 0, page_token: str = ""
) -> dict[str, Any]:
    deps = request.app.state.deps
    check_page(page_size)
    req = persons_pb2.GetPersonRequest(
        tenant_id=caller.tenant, person_id=person_id, page_size=page_size, page_token=page_token
    )
    resp = await deps.persons().GetPerson(req, **deps.call_options(caller.key))
    return {"person": person_dict(resp.person), "next_page_token": resp.next_page_token}


async def rename_person(request: Request, caller: Caller, person_id: str, name: str) -> dict[str, Any]:
    deps = request.app.state.deps
    req = persons_pb2.RenamePersonRequest(tenant_id=caller.tenant, person_id=person_id, name=name.strip())
    resp = await deps.persons().RenamePerson(req, **deps.call_options(caller.key))
    return {"person": person_dict(resp.person)}


async def merge_persons(
    request: Request, caller: Caller, into_person_id: str, person_ids: list[str]
) -> dict[str, Any]:
    deps = request.app.state.deps
    others = [p for p in dict.fromkeys(person_ids) if p and p != into_person_id]
    if not into_person_id or not others:
        raise bad_request("choose the person to keep and at least one other person")
    req = persons_pb2.MergePersonsRequest(
        tenant_id=caller.tenant, into_person_id=into_person_id, person_ids=others
    )
    resp = await deps.persons().MergePersons(req, **deps.call_options(caller.key))
    return {"person": person_dict(resp.person)}


async def split_person(
    request: Request, caller: Caller, person_id: str, point_ids: list[str], to_person_id: str, name: str
) -> dict[str, Any]:
    deps = request.app.state.deps
    if not point_ids:
        raise bad_request("choose at least one face to split off")
    req = persons_pb2.SplitPersonRequest(
        tenant_id=caller.tenant,
        person_id=person_id,
        point_ids=point_ids,
        to_person_id=to_person_id,
        name=name.strip(),
    )
    resp = await deps.persons().SplitPerson(req, **deps.call_options(caller.key))
    return {"from_person": person_dict(resp.from_person), "to_person": person_dict(resp.to_person)}


async def hide_person(request: Request, caller: Caller, person_id: str, hidden: bool) -> dict[str, Any]:
    deps = request.app.state.deps
    req = persons_pb2.HidePersonRequest(tenant_id=caller.tenant, person_id=person_id, hidden=hidden)
    resp = await deps.persons().HidePerson(req, **deps.call_options(caller.key))
    return {"person": person_dict(resp.person)}


@router.get("", summary="List persons")
async def persons(
    request: Request,
    include_hidden: bool = Query(False, description="Also list hidden persons."),
    min_faces: int = Query(0, description="Only persons with at least this many faces (0: 1)."),
    page_size: int = Query(0, description=f"Persons per page, at most {MAX_PAGE} (0: 100)."),
    page_token: str = Query("", description="next_page_token of the previous page."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    """The tenant's persons, biggest first, each with its best face."""
    return await list_persons(request, caller, include_hidden, min_faces, page_size, page_token)


@router.get("/{person_id}", summary="Show a person")
async def person(
    request: Request,
    person_id: str,
    page_size: int = Query(0, description=f"Faces per page, at most {MAX_PAGE} (0: 100)."),
    page_token: str = Query("", description="next_page_token of the previous page."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    """One person with their faces, ordered by capture time."""
    return await get_person(request, caller, person_id, page_size, page_token)


@router.post("/{person_id}/rename", summary="Rename a person")
async def rename(request: Request, person_id: str, body: RenameBody, caller: Caller = CallerDep) -> dict:
    return await rename_person(request, caller, person_id, body.name)


@router.post("/merge", summary="Merge persons")
async def merge(request: Request, body: MergeBody, caller: Caller = CallerDep) -> dict:
    """Moves every face of ``person_ids`` into ``into_person_id``; the others disappear."""
    return await merge_persons(request, caller, body.into_person_id, body.person_ids)


@router.post("/{person_id}/split", summary="Split faces off a person")
async def split(request: Request, person_id: str, body: SplitBody, caller: Caller = CallerDep) -> dict:
    """Moves the chosen faces to a new person (or to ``to_person_id``)."""
    return await split_person(request, caller, person_id, body.point_ids, body.to_person_id, body.name)


@router.post("/{person_id}/hide", summary="Hide or show a person")
async def hide(request: Request, person_id: str, body: HideBody, caller: Caller = CallerDep) -> dict:
    return await hide_person(request, caller, person_id, body.hidden)
