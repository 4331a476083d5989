"""The web service's REST API against the shared local stack: every endpoint answers
with success, 401 without a key, 403 for another tenant's key (or a weaker role) and
400 for bad input; the OpenAPI document validates and lists every endpoint; limits,
a service that is down, sessions, CSRF and keys kept out of URLs and logs."""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from functools import partial

import httpx
import pytest
from conftest import SHARED_FACES, WebLibrary, free_port, wait_indexed
from openapi_spec_validator import validate


@pytest.fixture(scope="module")
def lib(web_library: WebLibrary) -> WebLibrary:
    return web_library


def client(lib: WebLibrary, role: str | None = "admin", **kwargs) -> httpx.Client:
    """A client with the library tenant's key of ``role``; None: another tenant's admin
    key; "": no key."""
    key = lib.other_key if role is None else (lib.keys[role] if role else "")
    return lib.web.client(key, params={"tenant": lib.tenant}, **kwargs)


def photo(lib: WebLibrary, person: str = "") -> tuple[str, bytes, str]:
    path = lib.held_out[person or sorted(lib.held_out)[0]]
    return (path.name, path.read_bytes(), "image/jpeg")


def error_of(answer: httpx.Response, status: int) -> str:
    """The one-line error of a refused request, checked to have ``status``."""
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    body = answer.json()
    assert body["status"] == status and body["error"] and "\n" not in body["error"]
    assert "Traceback" not in answer.text
    return body["error"]


# -- search ----------------------------------------------------------------------


def test_search_finds_the_right_person_first(lib: WebLibrary) -> None:
    with client(lib, "reader") as c:
        for person, held_out in sorted(lib.held_out.items()):
            answer = c.post("/api/v1/search", files={"image": (held_out.name, held_out.read_bytes())})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            best = body["matches"][0]
            assert best["url"].startswith(f"upload:{person}/"), (person, best["url"], best["score"])
            assert best["score"] >= body["threshold"] > 0
            assert best["thumb_url"].startswith(f"/api/v1/objects/face-thumbs/{lib.tenant}/")


def test_search_refusals(lib: WebLibrary) -> None:
    files = {"image": photo(lib)}
    with client(lib, "") as c:
        assert "API key" in error_of(c.post("/api/v1/search", files=files), 401)
    with lib.web.client("fpk_notakey") as c:
        error_of(c.post("/api/v1/search", params={"tenant": lib.tenant}, files=files), 401)
    with client(lib, None) as c:
        assert lib.tenant in error_of(c.post("/api/v1/search", files=files), 403)
    with client(lib, "reader") as c:
        error_of(c.post("/api/v1/search", files={"image": ("x.jpg", b"not an image")}), 400)
        error_of(c.post("/api/v1/search"), 400)  # no image at all
        error_of(c.post("/api/v1/search", files=files, data={"top_k": "0"}), 400)
        error_of(c.post("/api/v1/search", files=files, params={"tenant": "no/such"}), 400)


# -- objects (thumbnails) ----------------------------------------------------------


def test_thumbnails_are_served_to_the_tenant_only(lib: WebLibrary) -> None:
    with client(lib, "reader") as c:
        match = c.post("/api/v1/search", files={"image": photo(lib)}).json()["matches"][0]
        image = c.get(match["thumb_url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"
        error_of(c.get(f"/api/v1/objects/face-thumbs/{lib.tenant}/nothing/0.jpg"), 404)
        error_of(c.get(f"/api/v1/objects/raw-images/{lib.tenant}/x.jpg"), 404)  # never the uploads
    with client(lib, "") as c:
        error_of(c.get(match["thumb_url"]), 401)
    with client(lib, None) as c:
        error_of(c.get(match["thumb_url"]), 403)


# -- ingest ------------------------------------------------------------------------


def test_ingest_refusals(lib: WebLibrary) -> None:
    files = [("files", photo(lib))]
    with client(lib, "") as c:
        error_of(c.post("/api/v1/ingest", files=files), 401)
    with client(lib, None) as c:
        error_of(c.post("/api/v1/ingest", files=files), 403)
    with client(lib, "reader") as c:
        assert "writer" in error_of(c.post("/api/v1/ingest", files=files), 403)
    with client(lib, "writer") as c:
        error_of(c.post("/api/v1/ingest", data={"site": "x"}), 400)
        bad = c.post("/api/v1/ingest", files=[("files", ("x.txt", b"not an image", "text/plain"))])
        assert bad.status_code == 200 and bad.json()["errors"][0]["source"] == "x.txt"
        assert not bad.json()["queued"]


def test_ingest_a_url(lib: WebLibrary, photo_site: str) -> None:
    with client(lib, "writer") as c:
        answer = c.post("/api/v1/ingest", data={"urls": [f"{photo_site}/face.jpg"], "site": "local"})
        assert answer.status_code == 200, answer.text
        [queued] = answer.json()["queued"]
        assert queued["source"] == f"{photo_site}/face.jpg" and queued["message_id"]
        refused = c.post("/api/v1/ingest", data={"urls": ["not a url"]})
        assert refused.status_code == 200 and refused.json()["errors"][0]["source"] == "not a url"


# -- stats, audit, system, erase ----------------------------------------------------------


def test_stats(lib: WebLibrary) -> None:
    with client(lib, "reader") as c:
        body = c.get("/api/v1/stats").json()
        assert body["tenant"] == lib.tenant and int(body["images"]) >= lib.images and body["dim"] > 0
        error_of(c.get("/api/v1/stats", params={"tenant": "a" * 65}), 400)
    with client(lib, "") as c:
        error_of(c.get("/api/v1/stats"), 401)
    with client(lib, None) as c:
        error_of(c.get("/api/v1/stats"), 403)


def test_audit_log(lib: WebLibrary) -> None:
    with client(lib, "admin") as c:
        records = c.get("/api/v1/audit", params={"action": "search", "limit": 1000}).json()["records"]
        assert records and all(r["action"] == "search" and r["tenant_id"] == lib.tenant for r in records)
        times = [int(r["time_ms"]) for r in records]
        assert times == sorted(times, reverse=True), "newest first"
        error_of(c.get("/api/v1/audit", params={"limit": 0}), 400)
        error_of(c.get("/api/v1/audit", params={"since_ms": "yesterday"}), 400)
    with client(lib, "") as c:
        error_of(c.get("/api/v1/audit"), 401)
    with client(lib, None) as c:
        error_of(c.get("/api/v1/audit"), 403)
    with client(lib, "writer") as c:
        assert "admin" in error_of(c.get("/api/v1/audit"), 403)


def test_system(lib: WebLibrary) -> None:
    with client(lib, "reader") as c:
        services = {s["service"]: s for s in c.get("/api/v1/system").json()["services"]}
        assert set(services) >= {"extractor", "detector", "embedder", "indexer", "crawler"}
        assert all(s["healthy"] for s in services.values()), services
        assert services["indexer"]["dead_letters"] == 0
        assert services["indexer"]["acked"] >= lib.images
        error_of(c.get("/api/v1/system", params={"tenant": "bad tenant"}), 400)
    with client(lib, "") as c:
        error_of(c.get("/api/v1/system"), 401)
    with client(lib, None) as c:
        error_of(c.get("/api/v1/system"), 403)


def test_erase(lib: WebLibrary) -> None:
    """In a tenant of its own: one photo ingested, then erased by its hash."""
    web = lib.web
    from conftest import create_key

    tenant = "erase" + uuid.uuid4().hex[:8]
    key = create_key(web.stack, tenant, "admin")
    path = sorted(lib.held_out.values())[0]
    with web.client(key, params={"tenant": tenant}) as c:
        queued = c.post("/api/v1/ingest", files=[("files", (path.name, path.read_bytes()))]).json()["queued"]
        wait_indexed(c, tenant, 1)
        sha = queued[0]["image_sha256"]
        error_of(c.post("/api/v1/erase", json={"image_sha256": sha, "site": "x"}), 400)
        error_of(c.post("/api/v1/erase", json={}), 400)
        error_of(c.post("/api/v1/erase", json={"all": "maybe"}), 400)
        with web.client("", params={"tenant": tenant}) as anonymous:
            error_of(anonymous.post("/api/v1/erase", json={"image_sha256": sha}), 401)
        with client(lib, None) as other:
            error_of(other.post("/api/v1/erase", params={"tenant": tenant}, json={"image_sha256": sha}), 403)
        erased = c.post("/api/v1/erase", json={"image_sha256": sha})
        assert erased.status_code == 200, erased.text
        assert int(erased.json()["points_deleted"]) >= 1
        assert int(c.get("/api/v1/stats").json()["points"]) == 0


# -- crawls ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_site(tmp_path_factory) -> Iterator[str]:
    """A small site on loopback: a page with one face photo."""
    root = tmp_path_factory.mktemp("site")
    face = sorted(p for p in SHARED_FACES.glob("*/*.jpg"))[0]
    (root / "face.jpg").write_bytes(face.read_bytes())
    (root / "index.html").write_text('<html><body><img src="face.jpg" alt="a face"></body></html>')
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_crawl_start_status_cancel(lib: WebLibrary, photo_site: str) -> None:
    with client(lib, "writer") as c:
        started = c.post("/api/v1/crawls", json={"seeds": [photo_site], "max_pages": 5})
        assert started.status_code == 200, started.text
        job_id = started.json()["job_id"]
        status = c.get(f"/api/v1/crawls/{job_id}")
        assert status.status_code == 200 and status.json()["tenant_id"] == lib.tenant
        assert status.json()["status"] in ("queued", "running", "done")
        cancelled = c.post(f"/api/v1/crawls/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["job_id"] == job_id
        error_of(c.post("/api/v1/crawls", json={"seeds": []}), 400)
        error_of(c.post("/api/v1/crawls", json={"seeds": [photo_site], "render": "sometimes"}), 400)
        error_of(c.post("/api/v1/crawls", json={"seeds": [photo_site], "max_pages": -1}), 400)
        error_of(c.get("/api/v1/crawls/nosuchjob"), 404)
    with client(lib, "") as c:
        error_of(c.post("/api/v1/crawls", json={"seeds": [photo_site]}), 401)
        error_of(c.get(f"/api/v1/crawls/{job_id}"), 401)
        error_of(c.post(f"/api/v1/crawls/{job_id}/cancel"), 401)
    with client(lib, None) as c:
        error_of(c.post("/api/v1/crawls", json={"seeds": [photo_site]}), 403)
        error_of(c.get(f"/api/v1/crawls/{job_id}"), 403)
        error_of(c.post(f"/api/v1/crawls/{job_id}/cancel"), 403)
    with client(lib, "reader") as c:
        error_of(c.post("/api/v1/crawls", json={"seeds": [photo_site]}), 403)


# -- persons -------------------------------------------------------------------------


def test_persons_need_the_persons_service(lib: WebLibrary) -> None:
    """Without a persons service in the stack, its endpoints say which service is down."""
    if "persons" in lib.web.stack["state"]["components"]:
        pytest.skip("the stack runs the persons service: tests/e2e/test_web_persons.py covers it")
    with client(lib, "reader") as c:
        assert "persons service" in error_of(c.get("/api/v1/persons"), 503)
    with client(lib, "") as c:
        error_of(c.get("/api/v1/persons"), 401)


# -- the OpenAPI document --------------------------------------------------------------------


def test_openapi_document_validates_and_lists_every_endpoint(lib: WebLibrary) -> None:
    doc = httpx.get(f"{lib.web.url}/api/v1/openapi.json").json()
    validate(doc)
    listed = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    expected = {
        ("POST", "/api/v1/search"),
        ("GET", "/api/v1/persons"),
        ("GET", "/api/v1/persons/{person_id}"),
        ("POST", "/api/v1/persons/{person_id}/rename"),
        ("POST", "/api/v1/persons/merge"),
        ("POST", "/api/v1/persons/{person_id}/split"),
        ("POST", "/api/v1/persons/{person_id}/hide"),
        ("POST", "/api/v1/ingest"),
        ("POST", "/api/v1/crawls"),
        ("GET", "/api/v1/crawls/{job_id}"),
        ("POST", "/api/v1/crawls/{job_id}/cancel"),
        ("POST", "/api/v1/erase"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/system"),
        ("GET", "/api/v1/objects/{bucket}/{key}"),
    }
    assert expected <= listed, expected - listed
    assert all(path.startswith("/api/v1/") for _, path in listed), "the UI is not part of the API"
    schemes = doc["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("security"), f"{method} {path} names no authentication"
            assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"


# -- limits and a service that is down -------------------------------------------------------------


def test_rate_limit_per_key(lib: WebLibrary, start_web) -> None:
    web = start_web(lib.web.stack, FACEPIPE_WEB_RATE_LIMIT_PER_MINUTE="3")
    with web.client(lib.keys["reader"], params={"tenant": lib.tenant}) as c:
        answers = [c.get("/api/v1/stats").status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = c.get("/api/v1/stats")
        assert "rate limit" in error_of(limited, 429) and int(limited.headers["retry-after"]) >= 1
    with web.client(lib.keys["writer"], params={"tenant": lib.tenant}) as c:
        assert c.get("/api/v1/stats").status_code == 200, "each key has its own budget"
    with login(web.url, lib.keys["reader"], lib.tenant) as browser:
        assert browser.get("/api/v1/stats").status_code == 429, "a session spends its key's budget"


def test_upload_limit_and_timeout(lib: WebLibrary, start_web) -> None:
    web = start_web(lib.web.stack, FACEPIPE_WEB_MAX_UPLOAD_BYTES="2000")
    with web.client(lib.keys["reader"], params={"tenant": lib.tenant}) as c:
        assert "2000 bytes" in error_of(c.post("/api/v1/search", files={"image": photo(lib)}), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b"x" * 1500
            yield b"x" * 1500

        error_of(c.post("/api/v1/search", content=chunks(), headers={"content-type": "text/plain"}), 413)
    # An indexer that accepts connections and never answers: the request times out.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        backends = f"indexer=127.0.0.1:{silent.getsockname()[1]}"
        slow = start_web(lib.web.stack, FACEPIPE_WEB_BACKENDS=backends, FACEPIPE_WEB_REQUEST_TIMEOUT_S="1")
        with slow.client(lib.keys["reader"], params={"tenant": lib.tenant}) as c:
            error_of(c.get("/api/v1/stats"), 504)
    finally:
        silent.close()


def test_a_service_that_is_down_is_503(lib: WebLibrary, start_web) -> None:
    web = start_web(lib.web.stack, FACEPIPE_WEB_BACKENDS=f"indexer=127.0.0.1:{free_port()}")
    with web.client(lib.keys["reader"], params={"tenant": lib.tenant}) as c:
        assert "indexer service is unavailable" in error_of(c.get("/api/v1/stats"), 503)
    assert httpx.get(f"{web.url}/readyz").status_code == 503
    assert httpx.get(f"{web.url}/healthz").status_code == 200


# -- sessions, CSRF and keys ------------------------------------------------------------------


@contextlib.contextmanager
def login(web_url: str, key: str, tenant: str) -> Iterator[httpx.Client]:
    """A browser-like client logged in through the login form."""
    with httpx.Client(base_url=web_url, follow_redirects=False, timeout=60) as c:
        page = c.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        answer = c.post("/login", data={"key": key, "tenant": tenant, "csrf": token})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/search", answer.text[:300]
        yield c


def test_session_cookie_flags_and_csrf(lib: WebLibrary) -> None:
    with login(lib.web.url, lib.keys["admin"], lib.tenant) as c:
        cookie = next(h for h in c.cookies.jar if h.name == "facepipe_session")
        assert cookie.has_nonstandard_attr("HttpOnly") and not cookie.secure
        raw = [v for k, v in c.get("/ui/search").request.headers.items() if k == "cookie"]
        assert raw and lib.keys["admin"] not in raw[0], "the key is sealed in the cookie"
        page = c.get("/ui/search")
        assert page.status_code == 200 and lib.keys["admin"] not in page.text
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        # The session authenticates the API too, but a change needs the CSRF token.
        assert c.get("/api/v1/stats").status_code == 200
        assert "CSRF" in error_of(c.post("/api/v1/crawls", json={"seeds": ["https://example.org"]}), 403)
        # A form posted without its token, or with another session's, is refused.
        refused = c.post("/logout", data={})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert c.post("/logout", data={"csrf": token + "x"}).status_code == 403
        assert c.post("/logout", data={"csrf": token}).status_code == 303
    set_cookie = login_headers(lib.web.url, lib.keys["admin"], lib.tenant, {"x-forwarded-proto": "https"})
    assert "secure" in set_cookie.lower() and "httponly" in set_cookie.lower()
    assert "samesite=strict" in set_cookie.lower()


def login_headers(web_url: str, key: str, tenant: str, headers: dict[str, str]) -> str:
    """The Set-Cookie of a login made as if over TLS (a proxy's X-Forwarded-Proto); the
    login form's own cookie is Secure too, so it is sent back by hand over plain HTTP."""
    with httpx.Client(base_url=web_url, headers=headers, timeout=60) as c:
        page = c.get("/login")
        form_cookie = page.headers["set-cookie"]
        assert "secure" in form_cookie.lower() and "httponly" in form_cookie.lower()
        value = re.search(r"facepipe_login_csrf=([^;]+)", form_cookie).group(1)
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        answer = c.post(
            "/login",
            data={"key": key, "tenant": tenant, "csrf": token},
            headers={"cookie": f"facepipe_login_csrf={value}"},
        )
        assert answer.status_code == 303, answer.text[:300]
        return next(
            v for k, v in answer.headers.multi_items() if k == "set-cookie" and "facepipe_session" in v
        )


def test_login_refusals(lib: WebLibrary) -> None:
    with httpx.Client(base_url=lib.web.url, timeout=60) as c:
        # No login form token: refused before the key is even looked at.
        assert c.post("/login", data={"key": lib.keys["admin"], "tenant": lib.tenant}).status_code == 403
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
        wrong = c.post("/login", data={"key": "fpk_wrong", "tenant": lib.tenant, "csrf": token})
        assert wrong.status_code == 401 and "unknown" in wrong.text and "fpk_wrong" not in wrong.text
        other = c.post("/login", data={"key": lib.other_key, "tenant": lib.tenant, "csrf": token})
        assert other.status_code == 401 and lib.tenant in other.text
        assert c.get("/ui/persons", follow_redirects=False).headers["location"] == "/login"


def test_keys_never_reach_urls_or_logs(lib: WebLibrary) -> None:
    """Run last in this module: everything above went through the stack's web service."""
    log = lib.web.log()
    assert "/api/v1/search" in log, "the access log is there"
    for key in (*lib.keys.values(), lib.other_key):
        assert key not in log and key[-43:] not in log  # neither the key nor its secret part
    assert not re.search(r"[?&](key|api_key|apikey|token)=", log, re.IGNORECASE)


def test_pages_are_our_own(lib: WebLibrary) -> None:
    """Every asset is served by the service; headers forbid other origins."""
    with login(lib.web.url, lib.keys["reader"], lib.tenant) as c:
        page = c.get("/ui/search")
        assert "content-security-policy" in page.headers
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert asset.startswith(("/", "#")), asset
            if asset.startswith("/static/"):
                assert c.get(asset).status_code == 200, asset
