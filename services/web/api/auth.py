"""Who calls: the API key from ``Authorization: Bearer``, ``X-API-Key`` or the session
cookie, and the tenant the request works in. The web service never judges a key
itself: it forwards it with every gRPC call, and the services apply the same roles
and tenant binding as to any gRPC caller. A cookie-authenticated request that
changes something must carry the session's CSRF token."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from facepipe.natsauth import TENANT_RE

from ..sessions import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Session

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="A facepipe API key.")
BEARER = HTTPBearer(auto_error=False, description="A facepipe API key as a bearer token.")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Caller:
    """The credential of one request and the tenant it works in."""

    key: str
    tenant: str
    session: Session | None = None


def check_tenant_name(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise HTTPException(400, "invalid tenant: 1-64 letters, digits, '_' or '-'")
    return tenant


def session_of(request: Request) -> Session | None:
    return request.app.state.sealer.open(request.cookies.get(SESSION_COOKIE))


async def caller(
    request: Request,
    tenant: str | None = Query(
        None, description="Tenant to work in; default: the session's, else the service's default tenant."
    ),
    api_key: str | None = Depends(API_KEY_HEADER),
    bearer: HTTPAuthorizationCredentials | None = Depends(BEARER),
) -> Caller:
    """The caller of an API request; 401 without a credential, 403 on a missing CSRF token."""
    key = (api_key or "").strip() or (bearer.credentials.strip() if bearer else "")
    session = None
    if not key:
        session = session_of(request)
        if session is None:
            raise HTTPException(401, "an API key is needed: Authorization: Bearer <key> or X-API-Key")
        if request.method not in SAFE_METHODS:
            token = request.headers.get(CSRF_HEADER)
            if token is None and "form" in request.headers.get("content-type", ""):
                token = (await request.form()).get(CSRF_FIELD)
            if not session.csrf_ok(token if isinstance(token, str) else None):
                raise HTTPException(403, "missing or wrong CSRF token")
        key = session.key
    chosen = tenant or (session.tenant if session else request.app.state.deps.web.default_tenant)
    return Caller(key, check_tenant_name(chosen), session)


CallerDep = Depends(caller)
