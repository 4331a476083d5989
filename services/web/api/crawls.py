"""/api/v1/crawls: start a crawl of sites for the tenant, follow it, cancel it
(facepipe.v1.Crawler)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from facepipe.v1 import crawler_pb2

from .auth import Caller, CallerDep
from .convert import as_dict
from .errors import ERROR_RESPONSES, bad_request

router = APIRouter(prefix="/crawls", tags=["crawls"], responses=ERROR_RESPONSES)
RENDER_MODES = {
    "auto": crawler_pb2.RENDER_MODE_AUTO,
    "never": crawler_pb2.RENDER_MODE_NEVER,
    "always": crawler_pb2.RENDER_MODE_ALWAYS,
}


class CrawlBody(BaseModel):
    seeds: list[str] = Field(..., description="http(s) URLs, one site each.", min_length=1)
    max_pages: int = Field(0, description="Pages per site; 0: the server default.", ge=0)
    max_depth: int | None = Field(None, description="Link depth from the seed; null: the default.", ge=0)
    render: str = Field("auto", description="Render pages in a browser: auto, never or always.")
    same_site: bool = Field(True, description="Stay on each seed's site.")


def crawl_dict(resp: Any) -> dict[str, Any]:
    out = as_dict(resp)
    out["status"] = crawler_pb2.CrawlStatus.Name(resp.status).removeprefix("CRAWL_STATUS_").lower()
    return out


async def start_crawl(request: Request, caller: Caller, body: CrawlBody) -> dict[str, Any]:
    deps = request.app.state.deps
    seeds = [s.strip() for s in body.seeds if s.strip()]
    if not seeds:
        raise bad_request("give at least one seed URL")
    if body.render not in RENDER_MODES:
        raise bad_request(f"render must be one of {', '.join(RENDER_MODES)}")
    req = crawler_pb2.StartCrawlRequest(
        seeds=seeds,
        tenant_id=caller.tenant,
        max_pages=body.max_pages,
        render_mode=RENDER_MODES[body.render],
        same_site=body.same_site,
    )
    if body.max_depth is not None:
        req.max_depth = body.max_depth
    resp = await deps.crawler().StartCrawl(req, **deps.call_options(caller.key))
    status = crawler_pb2.CrawlStatus.Name(resp.status).removeprefix("CRAWL_STATUS_").lower()
    return {"job_id": resp.job_id, "status": status}


async def get_crawl(request: Request, caller: Caller, job_id: str, max_candidates: int = 20) -> dict:
    deps = request.app.state.deps
    req = crawler_pb2.GetCrawlRequest(job_id=job_id, max_candidates=max_candidates)
    return crawl_dict(await deps.crawler().GetCrawl(req, **deps.call_options(caller.key)))


async def cancel_crawl(request: Request, caller: Caller, job_id: str) -> dict[str, Any]:
    deps = request.app.state.deps
    resp = await deps.crawler().CancelCrawl(
        crawler_pb2.CancelCrawlRequest(job_id=job_id), **deps.call_options(caller.key)
    )
    status = crawler_pb2.CrawlStatus.Name(resp.status).removeprefix("CRAWL_STATUS_").lower()
    return {"job_id": resp.job_id, "status": status}


@router.post("", summary="Start a crawl")
async def start(request: Request, body: CrawlBody, caller: Caller = CallerDep) -> dict[str, Any]:
    """Queues a crawl of the seeds' sites; every image found is ingested for the tenant."""
    return await start_crawl(request, caller, body)


@router.get("/{job_id}", summary="A crawl's progress")
async def status(request: Request, job_id: str, caller: Caller = CallerDep) -> dict[str, Any]:
    return await get_crawl(request, caller, job_id)


@router.post("/{job_id}/cancel", summary="Cancel a crawl")
async def cancel(request: Request, job_id: str, caller: Caller = CallerDep) -> dict[str, Any]:
    return await cancel_crawl(request, caller, job_id)
