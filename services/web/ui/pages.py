"""The UI's pages. Each page is a server-rendered form whose POST carries the session's
CSRF token; the pages call the same functions as the REST API, with the session's key."""

from __future__ import annotations

import secrets
from typing import Any

import grpc
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from ..api.auth import Caller, check_tenant_name, session_of
from ..api.errors import error_text, http_status
from ..api.search import run_search
from ..sessions import CSRF_FIELD, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session

router = APIRouter()


def secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.app.state.deps.web.secure_cookies


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = context.pop("session", None) or session_of(request)
    return request.app.state.templates.TemplateResponse(
        request,
        template,
        {"session": session, "csrf": session.csrf if session else "", "active": template, **context},
        status_code=status,
    )


def render_error(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, message=message)


def ui_session(request: Request) -> Session:
    """The logged-in session, or 401 (which the UI answers with the login page)."""
    session = session_of(request)
    if session is None:
        raise HTTPException(401, "log in first")
    return session


async def form_session(request: Request) -> tuple[Session, Any]:
    """The session of a form POST and its fields; 403 without the session's CSRF token."""
    session = ui_session(request)
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if not session.csrf_ok(token if isinstance(token, str) else None):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return session, form


def caller_of(session: Session) -> Caller:
    return Caller(session.key, session.tenant, session)


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        request.app.state.sealer.seal(session),
        max_age=int(request.app.state.deps.web.session_max_age_s),
        httponly=True,
        secure=secure(request),
        samesite="strict",
        path="/",
    )


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse("/ui/search" if session_of(request) else "/login", status_code=303)


@router.get("/login")
async def login_page(request: Request, error: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        login_csrf=token,
        error=error,
        default_tenant=request.app.state.deps.web.default_tenant,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, secure=secure(request), samesite="strict"
    )
    return response


@router.post("/login")
async def login(
    request: Request, key: str = Form(""), tenant: str = Form(""), csrf: str = Form("")
) -> Response:
    """Checks the key against the tenant (the indexer answers as for any call), then
    opens a session; the key is kept only inside the sealed cookie."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the login page")
    deps = request.app.state.deps
    key, tenant = key.strip(), (tenant.strip() or deps.web.default_tenant)
    problem = ""
    if not key:
        problem = "enter an API key"
    else:
        try:
            check_tenant_name(tenant)
            await deps.confirm_access(key, tenant)
        except HTTPException as exc:
            problem = str(exc.detail)
        except grpc.aio.AioRpcError as exc:
            status = http_status(exc)
            problem = {401: "unknown, revoked or expired key", 403: error_text(exc)}.get(
                status, error_text(exc)
            )
    if problem:
        return render(
            request,
            "login.html",
            status=401,
            login_csrf=expected,
            error=problem,
            default_tenant=tenant or deps.web.default_tenant,
        )
    session = request.app.state.sealer.new(key, tenant)
    response = RedirectResponse("/ui/search", status_code=303)
    set_session_cookie(request, response, session)
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await form_session(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/ui/search")
async def search_page(request: Request) -> Response:
    session = ui_session(request)
    return render(request, "search.html", session=session, result=None)


@router.post("/ui/search")
async def search_submit(request: Request) -> Response:
    session, form = await form_session(request)
    upload = form.get("image")
    data = await upload.read() if isinstance(upload, UploadFile) else b""
    if not data:
        return render(
            request, "search.html", status=400, session=session, result=None, error="choose a photo"
        )
    try:
        top_k = int(form.get("top_k") or 20)
    except ValueError:
        top_k = 20
    result = await run_search(request, caller_of(session), data, top_k=top_k)
    return render(request, "search.html", session=session, result=result)
