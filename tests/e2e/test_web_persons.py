"""The persons endpoints of the REST API against the shared stack's persons service, in
a tenant of their own: list, show, rename, merge, split and hide, each also refused
without a key (401), for another tenant or a reader (403) and on bad input (400)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from conftest import SHARED_FACES, Web, create_key, wait_grouped, wait_indexed

PEOPLE = ("brad_pitt", "nicole_kidman", "sarah_paulson")
NO_SUCH_PERSON = "0" * 32  # well formed, never made


def error_of(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    body = answer.json()
    assert body["status"] == status and body["error"] and "\n" not in body["error"]
    return body["error"]


@pytest.fixture(scope="module")
def tenant(web_stack: Web) -> dict:
    if "persons" not in web_stack.stack["state"]["components"]:
        pytest.skip("the stack runs no persons service")
    name = "wp" + uuid.uuid4().hex[:10]
    keys = {role: create_key(web_stack.stack, name, role) for role in ("reader", "writer")}
    photos = [p for person in PEOPLE for p in sorted((SHARED_FACES / person).glob("*.jpg"))]
    files = [("files", (f"{p.parent.name}/{p.name}", p.read_bytes(), "image/jpeg")) for p in photos]
    with web_stack.client(keys["writer"], params={"tenant": name}) as c:
        assert c.post("/api/v1/ingest", files=files).status_code == 200
        wait_indexed(c, name, len(files))
        wait_grouped(c, name)
    other = create_key(web_stack.stack, "wpother" + uuid.uuid4().hex[:6], "admin")
    return {"name": name, "keys": keys, "other": other, "web": web_stack}


def client(t: dict, role: str | None) -> httpx.Client:
    key = t["other"] if role is None else (t["keys"][role] if role else "")
    return t["web"].client(key, params={"tenant": t["name"]})


def persons(t: dict, **params) -> list[dict]:
    with client(t, "reader") as c:
        answer = c.get("/api/v1/persons", params={"page_size": 1000, **params})
        assert answer.status_code == 200, answer.text
        return answer.json()["persons"]


def test_list_and_show(tenant: dict) -> None:
    listed = persons(tenant)
    # How well faces are grouped is the persons service's own test; here: they are listed.
    assert len(listed) >= 2 and sum(int(p["face_count"]) for p in listed) >= len(PEOPLE)
    counts = [int(p["face_count"]) for p in listed]
    assert counts == sorted(counts, reverse=True), "biggest first"
    assert all(p["thumb_url"].startswith("/api/v1/objects/") for p in listed)
    with client(tenant, "reader") as c:
        shown = c.get(f"/api/v1/persons/{listed[0]['person_id']}").json()["person"]
        assert len(shown["faces"]) == int(listed[0]["face_count"])
        assert c.get(shown["faces"][0]["thumb_url"]).status_code == 200
        error_of(c.get(f"/api/v1/persons/{NO_SUCH_PERSON}"), 404)
        error_of(c.get("/api/v1/persons/not-a-person-id"), 400)
        error_of(c.get("/api/v1/persons", params={"page_size": 5000}), 400)
        error_of(c.get("/api/v1/persons", params={"min_faces": -1}), 400)
    with client(tenant, "") as c:
        error_of(c.get("/api/v1/persons"), 401)
        error_of(c.get(f"/api/v1/persons/{listed[0]['person_id']}"), 401)
    with client(tenant, None) as c:
        error_of(c.get("/api/v1/persons"), 403)
        error_of(c.get(f"/api/v1/persons/{listed[0]['person_id']}"), 403)


def test_rename_and_hide(tenant: dict) -> None:
    target = persons(tenant)[0]["person_id"]
    with client(tenant, "writer") as c:
        renamed = c.post(f"/api/v1/persons/{target}/rename", json={"name": "Ada"})
        assert renamed.status_code == 200 and renamed.json()["person"]["name"] == "Ada"
        error_of(c.post(f"/api/v1/persons/{target}/rename", json={}), 400)
        error_of(c.post(f"/api/v1/persons/{target}/rename", json={"name": "x" * 201}), 400)
        error_of(c.post(f"/api/v1/persons/{NO_SUCH_PERSON}/rename", json={"name": "Ada"}), 404)
        hidden = c.post(f"/api/v1/persons/{target}/hide", json={"hidden": True})
        assert hidden.status_code == 200 and hidden.json()["person"]["hidden"] is True
        error_of(c.post(f"/api/v1/persons/{target}/hide", json={"hidden": "perhaps"}), 400)
    assert target not in {p["person_id"] for p in persons(tenant)}
    assert target in {p["person_id"] for p in persons(tenant, include_hidden=True)}
    with client(tenant, "writer") as c:
        assert c.post(f"/api/v1/persons/{target}/hide", json={"hidden": False}).status_code == 200
    for role, status in (("", 401), (None, 403), ("reader", 403)):
        with client(tenant, role) as c:
            error_of(c.post(f"/api/v1/persons/{target}/rename", json={"name": "Eve"}), status)
            error_of(c.post(f"/api/v1/persons/{target}/hide", json={"hidden": True}), status)


def test_split_and_merge(tenant: dict) -> None:
    big = persons(tenant)[0]
    with client(tenant, "reader") as c:
        faces = c.get(f"/api/v1/persons/{big['person_id']}").json()["person"]["faces"]
    assert len(faces) >= 2
    moved = [faces[-1]["point_id"]]
    for role, status in (("", 401), (None, 403), ("reader", 403)):
        with client(tenant, role) as c:
            error_of(c.post(f"/api/v1/persons/{big['person_id']}/split", json={"point_ids": moved}), status)
            body = {"into_person_id": big["person_id"], "person_ids": ["x"]}
            error_of(c.post("/api/v1/persons/merge", json=body), status)
    with client(tenant, "writer") as c:
        error_of(c.post(f"/api/v1/persons/{big['person_id']}/split", json={"point_ids": []}), 400)
        split = c.post(
            f"/api/v1/persons/{big['person_id']}/split", json={"point_ids": moved, "name": "Split off"}
        )
        assert split.status_code == 200, split.text
        new = split.json()["to_person"]
        assert new["name"] == "Split off" and int(new["face_count"]) == 1
        assert int(split.json()["from_person"]["face_count"]) == int(big["face_count"]) - 1
        error_of(
            c.post("/api/v1/persons/merge", json={"into_person_id": big["person_id"], "person_ids": []}), 400
        )
        error_of(c.post("/api/v1/persons/merge", json={"person_ids": [new["person_id"]]}), 400)
        merged = c.post(
            "/api/v1/persons/merge",
            json={"into_person_id": big["person_id"], "person_ids": [new["person_id"]]},
        )
        assert merged.status_code == 200, merged.text
        assert int(merged.json()["person"]["face_count"]) == int(big["face_count"])
    assert new["person_id"] not in {p["person_id"] for p in persons(tenant, include_hidden=True)}
