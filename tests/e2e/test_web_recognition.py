"""The recognition REST API (subjects, recognize, verify, access log) and the
CompreFace-compatible routes through the web service of a running stack: each endpoint
answers with a key of the tenant, 401 without a key, 403 for another tenant's key or a
reader's key where a writer's is needed, and 400 for bad input, with the API's error
body; every endpoint is in the OpenAPI document."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import EVAL_FACES, EVAL_LFW, create_key, stack_web
from openapi_spec_validator import validate
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

SESSION_COOKIE = "facepipe_session"

SUBJECT_PHOTOS = sorted((EVAL_FACES / EVAL_LFW[0]).glob("*.jpg"))
OTHER_PHOTOS = sorted((EVAL_FACES / EVAL_LFW[1]).glob("*.jpg"))


def photo(path: Path, field: str = "image") -> tuple[str, tuple[str, bytes, str]]:
    return field, (path.name, path.read_bytes(), "image/jpeg")


@pytest.fixture(scope="module")
def env(shared_stack) -> dict:
    web = stack_web(shared_stack)
    tenant, other = f"rw-{uuid.uuid4().hex[:8]}", f"ro-{uuid.uuid4().hex[:8]}"
    keys = {
        "writer": create_key(shared_stack, tenant, "writer"),
        "reader": create_key(shared_stack, tenant, "reader"),
        "other": create_key(shared_stack, other, "writer"),
    }
    with web.client(keys["writer"], params={"tenant": tenant}) as http:
        created = http.post(
            "/api/v1/subjects",
            data={"name": "Subject One", "external_id": "E-1"},
            files=[photo(p, "images") for p in SUBJECT_PHOTOS[:3]],
        )
    assert created.status_code == 201, created.text
    return {"web": web, "tenant": tenant, "other": other, "keys": keys, "subject": created.json()["subject"]}


def test_enrol_show_list_rename_and_remove(env) -> None:
    web, subject = env["web"], env["subject"]
    assert subject["name"] == "Subject One" and subject["external_id"] == "E-1"
    assert subject["face_count"] == 3 and all(
        f["thumb_url"].startswith("/api/v1/objects/") for f in subject["faces"]
    )
    with web.client(env["keys"]["writer"], params={"tenant": env["tenant"]}) as http:
        sid = subject["subject_id"]
        listed = http.get("/api/v1/subjects").json()
        assert listed["tenant"] == env["tenant"] and [s["subject_id"] for s in listed["subjects"]] == [sid]
        shown = http.get(f"/api/v1/subjects/{sid}").json()
        assert len(shown["faces"]) == 3
        thumb = http.get(shown["faces"][0]["thumb_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        added = http.post(f"/api/v1/subjects/{sid}/faces", files=[photo(SUBJECT_PHOTOS[3], "images")]).json()
        assert added["faces_added"] == 1 and added["subject"]["face_count"] == 4
        renamed = http.patch(f"/api/v1/subjects/{sid}", data={"name": "Subject 1"}).json()
        assert renamed["name"] == "Subject 1"
        face_id = added["subject"]["faces"][-1]["face_id"]
        removed = http.delete(f"/api/v1/subjects/{sid}/faces/{face_id}").json()
        assert removed["face_count"] == 3


def test_recognize_and_verify(env) -> None:
    with env["web"].client(env["keys"]["reader"], params={"tenant": env["tenant"]}) as http:
        known = http.post("/api/v1/recognize", files=[photo(SUBJECT_PHOTOS[6])], data={"candidates": "1"})
        assert known.status_code == 200, known.text
        doc = known.json()
        assert doc["threshold"] > 0 and doc["faces"]
        best = max(doc["faces"], key=lambda f: f["similarity"])
        assert best["subject"] == "Subject 1" or best["subject"] == "Subject One"
        assert set(best["face"]["box"]) == {"x1", "y1", "x2", "y2"}
        stranger = http.post("/api/v1/recognize", files=[photo(OTHER_PHOTOS[0])]).json()
        assert all(f["subject"] is None for f in stranger["faces"])
        same = http.post(
            "/api/v1/verify", files=[photo(SUBJECT_PHOTOS[6], "image_a"), photo(SUBJECT_PHOTOS[7], "image_b")]
        ).json()
        differ = http.post(
            "/api/v1/verify", files=[photo(SUBJECT_PHOTOS[6], "image_a"), photo(OTHER_PHOTOS[0], "image_b")]
        ).json()
        assert same["verified"] and not differ["verified"] and same["threshold"] == differ["threshold"]


def test_access_log_answers_and_filters(env) -> None:
    with env["web"].client(env["keys"]["reader"], params={"tenant": env["tenant"]}) as http:
        doc = http.get("/api/v1/access-log", params={"camera_id": "door", "since": "2020-01-01T00:00:00"})
        assert doc.status_code == 200, doc.text
        assert doc.json() == {"tenant": env["tenant"], "records": []}


# --- the browser side: forms and the camera's WebSocket --------------------------------------


def log_in(web, key: str, tenant: str) -> httpx.Client:
    """A client holding a session cookie, logged in through the login form (the caller
    closes it)."""
    client = httpx.Client(base_url=web.url, timeout=60)
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    done = client.post("/login", data={"key": key, "tenant": tenant, "csrf": token})
    assert done.status_code == 303 and SESSION_COOKIE in client.cookies
    return client


def camera_socket(web, cookie: str | None, origin: str | None):
    headers = {}
    if cookie is not None:
        headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    if origin is not None:
        headers["Origin"] = origin
    return connect(
        web.url.replace("http://", "ws://") + "/ui/camera/ws", additional_headers=headers, open_timeout=10
    )


def test_the_pages_refuse_a_form_without_the_csrf_token(env) -> None:
    browser = log_in(env["web"], env["keys"]["writer"], env["tenant"])
    with contextlib.closing(browser):
        refused = browser.post("/ui/subjects", data={"name": "x"}, files=[photo(SUBJECT_PHOTOS[0], "images")])
        assert refused.status_code == 403
        sid = env["subject"]["subject_id"]
        assert browser.post(f"/ui/subjects/{sid}/delete", data={"csrf": "wrong"}).status_code == 403
        assert browser.get("/ui/subjects").status_code == 200
        assert browser.get("/ui/access").status_code == 200


def test_the_camera_socket_needs_the_session_its_origin_and_the_csrf_token(env) -> None:
    web = env["web"]
    browser = log_in(web, env["keys"]["writer"], env["tenant"])
    with contextlib.closing(browser):
        cookie = browser.cookies[SESSION_COOKIE]
        csrf = re.search(r'data-csrf="([^"]+)"', browser.get("/ui/camera").text).group(1)
    for bad_cookie, origin in ((None, web.url), (cookie, "http://elsewhere.example"), (cookie, None)):
        with pytest.raises(InvalidStatus) as refused:
            camera_socket(web, bad_cookie, origin)
        assert refused.value.response.status_code == 403
    with camera_socket(web, cookie, web.url) as socket:
        socket.send(json.dumps({"csrf": "wrong", "camera_id": "door"}))
        assert "CSRF" in json.loads(socket.recv(10))["fatal"]
        with pytest.raises(ConnectionClosed):
            socket.recv(10)
    with camera_socket(web, cookie, web.url) as socket:
        socket.send(json.dumps({"csrf": csrf, "camera_id": "bad camera!"}))
        assert "camera id" in json.loads(socket.recv(10))["fatal"]
    with camera_socket(web, cookie, web.url) as socket:
        socket.send(json.dumps({"csrf": csrf, "camera_id": "socket-test"}))
        socket.send(SUBJECT_PHOTOS[7].read_bytes())
        result = json.loads(socket.recv(30))
        assert result["processed"] == 1 and result["faces"], result
        named = [f for f in result["faces"] if f["name"]]
        assert named and named[0]["name"].startswith("Subject") and len(named[0]["box"]) == 4
        socket.send(b"not a jpeg")
        assert json.loads(socket.recv(30))["error"]


# Each endpoint: (method, path, request kwargs, bad-input kwargs, the role it needs).
def endpoints(env) -> list[tuple[str, str, dict, dict, str]]:
    sid = env["subject"]["subject_id"]
    face = env["subject"]["faces"][0]["face_id"]
    img = [photo(SUBJECT_PHOTOS[8])]
    return [
        (
            "POST",
            "/api/v1/subjects",
            {"data": {"name": "x"}, "files": [photo(SUBJECT_PHOTOS[8], "images")]},
            {"data": {"name": "  "}, "files": [photo(SUBJECT_PHOTOS[8], "images")]},
            "writer",
        ),
        (
            "POST",
            f"/api/v1/subjects/{sid}/faces",
            {"files": [photo(SUBJECT_PHOTOS[8], "images")]},
            {"files": [("images", ("x.jpg", b"not an image", "image/jpeg"))]},
            "writer",
        ),
        ("GET", "/api/v1/subjects", {}, {"params": {"tenant": "bad tenant!"}}, "reader"),
        ("GET", f"/api/v1/subjects/{sid}", {}, {"path": "/api/v1/subjects/not-an-id"}, "reader"),
        ("PATCH", f"/api/v1/subjects/{sid}", {"data": {"external_id": "E-2"}}, {"data": {}}, "writer"),
        (
            "DELETE",
            f"/api/v1/subjects/{sid}/faces/{face}",
            None,
            {"path": f"/api/v1/subjects/{sid}/faces/not-a-face"},
            "writer",
        ),
        ("DELETE", f"/api/v1/subjects/{sid}", None, {"path": "/api/v1/subjects/zz"}, "writer"),
        ("POST", "/api/v1/recognize", {"files": img}, {"files": img, "data": {"candidates": "-1"}}, "reader"),
        (
            "POST",
            "/api/v1/verify",
            {"files": [photo(SUBJECT_PHOTOS[8], "image_a"), photo(SUBJECT_PHOTOS[9], "image_b")]},
            {"files": [photo(SUBJECT_PHOTOS[8], "image_a")]},
            "reader",
        ),
        ("GET", "/api/v1/access-log", {}, {"params": {"since": "yesterday-ish"}}, "reader"),
        ("GET", "/api/v1/recognition/subjects", {}, {"params": {"tenant": "bad tenant!"}}, "reader"),
        (
            "POST",
            "/api/v1/recognition/recognize",
            {"files": [photo(SUBJECT_PHOTOS[8], "file")]},
            {"files": [photo(SUBJECT_PHOTOS[8], "file")], "params": {"det_prob_threshold": "2"}},
            "reader",
        ),
        (
            "POST",
            "/api/v1/detection/detect",
            {"files": [photo(SUBJECT_PHOTOS[8], "file")]},
            {"files": [photo(SUBJECT_PHOTOS[8], "wrong_field")]},
            "reader",
        ),
        (
            "POST",
            "/api/v1/verification/verify",
            {"files": [photo(SUBJECT_PHOTOS[8], "source_image"), photo(SUBJECT_PHOTOS[9], "target_image")]},
            {"files": [photo(SUBJECT_PHOTOS[8], "source_image")]},
            "reader",
        ),
        (
            "POST",
            "/api/v1/recognition/subjects",
            {"json": {"subject": "cf"}},
            {"json": {"name": "cf"}},
            "writer",
        ),
        ("GET", "/api/v1/recognition/faces", {}, {"params": {"size": "0"}}, "reader"),
    ]


def call(http, method: str, path: str, kwargs: dict | None, tenant: str | None = None):
    kwargs = dict(kwargs or {})
    path = kwargs.pop("path", path)
    params = dict(kwargs.pop("params", {}))
    if tenant:
        params["tenant"] = tenant
    return http.request(method, path, params=params, **kwargs)


def error_of(response) -> str:
    body = response.json()
    return body.get("error") or body.get("message") or ""


def test_every_endpoint_refuses_no_key_another_tenant_and_a_weaker_role(env) -> None:
    web = env["web"]
    for method, path, kwargs, _, role in endpoints(env):
        with web.client("") as http:
            response = call(http, method, path, kwargs)
            assert response.status_code == 401, (method, path, response.text)
            assert error_of(response)
        with web.client(env["keys"]["other"]) as http:
            response = call(http, method, path, kwargs, tenant=env["tenant"])
            assert response.status_code == 403, (method, path, response.text)
            assert "may not" in error_of(response)
        if role == "writer":
            with web.client(env["keys"]["reader"], params={"tenant": env["tenant"]}) as http:
                response = call(http, method, path, kwargs)
                assert response.status_code == 403, (method, path, response.text)


def test_every_endpoint_answers_bad_input_with_400(env) -> None:
    with env["web"].client(env["keys"]["writer"], params={"tenant": env["tenant"]}) as http:
        for method, path, _, bad, _ in endpoints(env):
            response = call(http, method, path, bad)
            assert response.status_code == 400, (method, path, response.text)
            assert error_of(response) and "Traceback" not in response.text


def test_every_endpoint_answers_with_the_tenants_key(env) -> None:
    with env["web"].client(env["keys"]["writer"], params={"tenant": env["tenant"]}) as http:
        for method, path, kwargs, _, _ in endpoints(env):
            if path.startswith("/api/v1/subjects/") and method == "DELETE":
                continue  # run last, below
            response = call(http, method, path, kwargs)
            assert response.status_code in (200, 201), (method, path, response.text)
        sid = env["subject"]["subject_id"]
        assert http.delete(f"/api/v1/subjects/{sid}").json()["faces_deleted"] >= 3
        assert http.get(f"/api/v1/subjects/{sid}").status_code == 404


def test_the_openapi_document_lists_every_endpoint(env) -> None:
    with env["web"].client("") as http:
        doc = http.get("/api/v1/openapi.json").json()
    validate(doc)
    paths = doc["paths"]
    ids = {env["subject"]["subject_id"]: "{subject_id}", env["subject"]["faces"][0]["face_id"]: "{face_id}"}
    for method, path, *_ in endpoints(env):
        for value, name in ids.items():
            path = path.replace(value, name)
        assert method.lower() in paths.get(path, {}), (method, path)
    for extra in (
        "/api/v1/recognition/faces/{image_id}",
        "/api/v1/recognition/faces/{image_id}/verify",
        "/api/v1/recognition/subjects/{subject}",
    ):
        assert extra in paths
