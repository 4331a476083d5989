"""The persons pages: the gallery (select several to merge) and a person's page
(rename, hide, select faces to split off)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..api import persons as api
from .pages import caller_of, form_session, render, ui_session

router = APIRouter()


def back_to(path: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={quote(done)}", status_code=303)


@router.get("/ui/persons")
async def gallery(request: Request, hidden: bool = False, page_token: str = "", done: str = "") -> Response:
    session = ui_session(request)
    listing = await api.list_persons(
        request, caller_of(session), include_hidden=hidden, page_size=200, page_token=page_token
    )
    return render(request, "persons.html", session=session, listing=listing, show_hidden=hidden, done=done)


@router.post("/ui/persons/merge")
async def merge(request: Request) -> Response:
    session, form = await form_session(request)
    chosen = [v for v in form.getlist("person_ids") if isinstance(v, str) and v]
    into = form.get("into") or (chosen[0] if chosen else "")
    result = await api.merge_persons(request, caller_of(session), str(into), chosen)
    person = result["person"]
    return back_to("/ui/persons", f"merged {len(chosen)} persons into {person.get('name') or 'one'}")


@router.get("/ui/persons/{person_id}")
async def person_page(request: Request, person_id: str, page_token: str = "", done: str = "") -> Response:
    session = ui_session(request)
    shown = await api.get_person(request, caller_of(session), person_id, page_size=500, page_token=page_token)
    return render(request, "person.html", session=session, shown=shown, done=done)


@router.post("/ui/persons/{person_id}/rename")
async def rename(request: Request, person_id: str) -> Response:
    session, form = await form_session(request)
    name = str(form.get("name") or "")
    await api.rename_person(request, caller_of(session), person_id, name)
    return back_to(
        f"/ui/persons/{quote(person_id)}", f"renamed to {name}" if name.strip() else "name cleared"
    )


@router.post("/ui/persons/{person_id}/hide")
async def hide(request: Request, person_id: str) -> Response:
    session, form = await form_session(request)
    hidden = form.get("hidden") == "1"
    await api.hide_person(request, caller_of(session), person_id, hidden)
    return back_to(f"/ui/persons/{quote(person_id)}", "hidden" if hidden else "shown again")


@router.post("/ui/persons/{person_id}/split")
async def split(request: Request, person_id: str) -> Response:
    session, form = await form_session(request)
    faces = [v for v in form.getlist("point_ids") if isinstance(v, str) and v]
    result = await api.split_person(
        request, caller_of(session), person_id, faces, "", str(form.get("name") or "")
    )
    new_id = result["to_person"].get("person_id", "")
    return back_to(f"/ui/persons/{quote(new_id or person_id)}", f"split {len(faces)} faces off")
