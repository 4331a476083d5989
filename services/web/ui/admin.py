"""The crawls, audit log and system pages."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from urllib.parse import quote

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..api import admin as admin_api
from ..api import crawls as crawls_api
from ..sessions import MAX_REMEMBERED_CRAWLS
from .pages import caller_of, form_session, render, set_session_cookie, ui_session

router = APIRouter()
RUNNING = ("queued", "running")


@router.get("/ui/crawls")
async def crawls_page(request: Request, done: str = "") -> Response:
    session = ui_session(request)
    jobs = []
    for job_id in reversed(session.crawls):
        with contextlib.suppress(grpc.aio.AioRpcError):  # a job the crawler forgot: not listed
            jobs.append(await crawls_api.get_crawl(request, caller_of(session), job_id, max_candidates=0))
    refresh = 3 if any(j["status"] in RUNNING for j in jobs) else 0
    return render(request, "crawls.html", session=session, jobs=jobs, done=done, refresh=refresh)


@router.post("/ui/crawls")
async def start_crawl(request: Request) -> Response:
    session, form = await form_session(request)
    seeds = str(form.get("seeds") or "").split()
    try:
        max_pages = int(form.get("max_pages") or 0)
        depth_field = str(form.get("max_depth") or "").strip()
        max_depth = int(depth_field) if depth_field else None
    except ValueError:
        return render(request, "crawls.html", status=400, session=session, jobs=[], error="numbers only")
    body = crawls_api.CrawlBody.model_construct(
        seeds=seeds,
        max_pages=max(0, max_pages),
        max_depth=max_depth,
        render=str(form.get("render") or "auto"),
        same_site=form.get("same_site") == "1",
    )
    started = await crawls_api.start_crawl(request, caller_of(session), body)
    session.crawls = [*session.crawls, started["job_id"]][-MAX_REMEMBERED_CRAWLS:]
    response = RedirectResponse(f"/ui/crawls/{quote(started['job_id'])}", status_code=303)
    set_session_cookie(request, response, session)
    return response


@router.get("/ui/crawls/{job_id}")
async def crawl_page(request: Request, job_id: str, done: str = "") -> Response:
    session = ui_session(request)
    job = await crawls_api.get_crawl(request, caller_of(session), job_id)
    refresh = 2 if job["status"] in RUNNING else 0
    return render(request, "crawl.html", session=session, job=job, done=done, refresh=refresh)


@router.post("/ui/crawls/{job_id}/cancel")
async def cancel(request: Request, job_id: str) -> Response:
    session, _ = await form_session(request)
    await crawls_api.cancel_crawl(request, caller_of(session), job_id)
    return RedirectResponse(f"/ui/crawls/{quote(job_id)}?done=cancel+requested", status_code=303)


def parse_since(text: str) -> int:
    """A datetime-local value (read as UTC) as Unix milliseconds; 0 when empty or bad."""
    try:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000) if text else 0
    except ValueError:
        return 0


@router.get("/ui/audit")
async def audit_page(
    request: Request, action: str = "", outcome: str = "", key_id: str = "", since: str = "", limit: int = 200
) -> Response:
    session = ui_session(request)
    records = await admin_api.audit_records(
        request, caller_of(session), parse_since(since), max(1, min(limit, 10_000)), action, outcome, key_id
    )
    for r in records:
        r["when"] = datetime.fromtimestamp(int(r.get("time_ms", 0)) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    filters = {"action": action, "outcome": outcome, "key_id": key_id, "since": since, "limit": limit}
    return render(request, "audit.html", session=session, records=records, filters=filters)


@router.get("/ui/system")
async def system_page(request: Request) -> Response:
    session = ui_session(request)
    rows = await admin_api.system_rows(request, caller_of(session))
    return render(request, "system.html", session=session, rows=rows, refresh=10)
