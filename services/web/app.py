"""The web service's logic: ``create_app(deps)`` builds the FastAPI application (REST
API under /api/v1/, browser UI, static assets, health), and ``serve`` runs it under
uvicorn. This is the web service's counterpart of the other services' servicer.py
and stage.py: it serves HTTP, not gRPC, and consumes no stage."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.datastructures import MutableHeaders

from facepipe import __version__
from facepipe.config import Settings

from .api import api_router
from .api.errors import error_text, http_status
from .backends import WebDeps
from .limits import LimitsMiddleware
from .sessions import Sealer
from .ui import ui_router

log = logging.getLogger("facepipe.web")

HERE = Path(__file__).resolve().parent
API_PREFIX = "/api/v1"
# Every asset is this service's own; no inline script, no other origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
REQUESTS = Counter("facepipe_web_requests_total", "HTTP requests answered", ["route", "status"])
LATENCY = Histogram("facepipe_web_request_seconds", "HTTP request latency", ["route"])


def utc_time(seconds: float) -> str:
    """A Unix time as the pages show it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


class HeadersAndMetrics:
    """Security headers on every response, and the request counter and latency by route
    (plain ASGI: no copy of the body on the way)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        private = path.startswith((API_PREFIX, "/ui", "/login"))
        status = 500

        async def with_headers(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if private:
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            REQUESTS.labels(route, str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - started)


def create_app(deps: WebDeps) -> FastAPI:
    """The application over ``deps``; closing it closes them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await deps.close()

    app = FastAPI(
        title="facepipe",
        version=__version__,
        description="Face search, persons, ingest, crawls and administration of facepipe over "
        "REST/JSON. Authenticate with a facepipe API key: `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>`. Every call is forwarded to the gRPC services with that key, so the "
        "same roles and tenant binding apply.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # the interactive docs would load assets from another site
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.deps = deps
    app.state.sealer = Sealer(deps.web.session_secret, deps.web.session_max_age_s)
    app.state.templates = templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["datetime"] = utc_time

    @app.exception_handler(grpc.aio.AioRpcError)
    async def grpc_error(request: Request, exc: grpc.aio.AioRpcError) -> Response:
        status = http_status(exc)
        if status >= 500:
            log.warning("backend call failed", extra={"path": request.url.path, "code": exc.code().name})
        names = {deps.web.backend(name): name for name in (*deps.web.services(), "persons")}
        return error_response(request, status, error_text(exc, names), exc.code().name)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(request, exc.status_code, str(exc.detail), None, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return error_response(request, 400, problems or "bad request", None)

    app.add_middleware(HeadersAndMetrics)
    app.add_middleware(LimitsMiddleware, settings=deps.web, sealer=app.state.sealer)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        """Ready when the indexer (search, the first page anyone opens) answers health."""
        try:
            resp = await health_pb2_grpc.HealthStub(deps.channel("indexer")).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
            ok = resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            ok = False
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api_router, prefix=API_PREFIX)
    app.include_router(ui_router)
    return app


def error_response(
    request: Request, status: int, message: str, grpc_status: str | None, headers: dict | None = None
) -> Response:
    """JSON for the API; for the UI a page (or the login page when the session is gone)."""
    if wants_json(request):
        body = {"error": message, "status": status}
        if grpc_status:
            body["grpc_status"] = grpc_status
        return JSONResponse(body, status_code=status, headers=headers)
    if status == 401:
        return RedirectResponse("/login", status_code=303)
    from .ui.pages import render_error

    return render_error(request, status, message)


def serve(app: FastAPI, settings: Settings) -> None:
    """Runs ``app`` on the service's port until SIGTERM/SIGINT (uvicorn drains open requests)."""
    tls = settings.tls
    config = uvicorn.Config(
        app,
        host=settings.grpc_host,
        port=settings.grpc_port,
        log_config=None,  # the process's JSON logging
        access_log=True,
        proxy_headers=True,
        # grpc.aio shares this loop: the plain asyncio one; httptools parses HTTP when installed.
        loop="asyncio",
        timeout_graceful_shutdown=int(settings.drain_seconds) or None,
        ssl_certfile=str(tls.cert) if tls.serves_tls else None,
        ssl_keyfile=str(tls.key) if tls.serves_tls else None,
    )
    scheme = "https" if tls.serves_tls else "http"
    log.info("web service listening", extra={"url": f"{scheme}://{settings.grpc_host}:{settings.grpc_port}/"})
    uvicorn.Server(config).run()
