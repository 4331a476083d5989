"""Erasure, the audit log, statistics and the system's health:
/api/v1/erase, /api/v1/audit, /api/v1/stats, /api/v1/system."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
from fastapi import APIRouter, Query, Request
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel, Field

from facepipe.v1 import indexer_pb2

from .auth import Caller, CallerDep
from .convert import as_dict
from .errors import ERROR_RESPONSES, bad_request

router = APIRouter(tags=["admin"], responses=ERROR_RESPONSES)
MAX_AUDIT_RECORDS = 10_000


class EraseRequest(BaseModel):
    """Exactly one selector: what to erase of the tenant's faces and stored objects."""

    image_sha256: str = Field("", description="Every face of this image.")
    url: str = Field("", description="Every face of the image at this URL.")
    site: str = Field("", description="Every face found on this site.")
    all: bool = Field(False, description="Everything of the tenant.")


@router.post("/erase", summary="Erase faces")
async def erase(request: Request, body: EraseRequest, caller: Caller = CallerDep) -> dict[str, Any]:
    """Deletes the selected faces with their crops and thumbnails (role admin; audited)."""
    deps = request.app.state.deps
    chosen = {k: v for k, v in body.model_dump().items() if v}
    if len(chosen) != 1:
        raise bad_request("give exactly one of image_sha256, url, site or all")
    req = indexer_pb2.DeleteFacesRequest(tenant_id=caller.tenant, **chosen)
    resp = await deps.indexer().DeleteFaces(req, **deps.call_options(caller.key))
    return {"tenant": caller.tenant, **as_dict(resp)}


async def audit_records(
    request: Request,
    caller: Caller,
    since_ms: int = 0,
    limit: int = 100,
    action: str = "",
    outcome: str = "",
    key_id: str = "",
) -> list[dict[str, Any]]:
    """The newest audit records of the tenant, newest first, filtered."""
    deps = request.app.state.deps
    if not 1 <= limit <= MAX_AUDIT_RECORDS:
        raise bad_request(f"limit must be 1-{MAX_AUDIT_RECORDS}")
    if since_ms < 0:
        raise bad_request("since_ms must not be negative")
    req = indexer_pb2.ListAuditRecordsRequest(tenant_id=caller.tenant, since_ms=since_ms, limit=limit)
    resp = await deps.indexer().ListAuditRecords(req, **deps.call_options(caller.key))
    records = [
        as_dict(r)
        for r in reversed(resp.records)
        if (not action or r.action == action)
        and (not outcome or r.outcome == outcome)
        and (not key_id or r.key_id == key_id)
    ]
    return records


@router.get("/audit", summary="Audit log")
async def audit(
    request: Request,
    since_ms: int = Query(0, description="Only records at or after this time (Unix ms)."),
    limit: int = Query(100, description=f"The newest this many records, 1-{MAX_AUDIT_RECORDS}."),
    action: str = Query("", description="Only this action (search, erase, ...)."),
    outcome: str = Query("", description="Only this outcome (OK, PERMISSION_DENIED, ...)."),
    key_id: str = Query("", description="Only calls made with this key id."),
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    """Who did what in the tenant, newest first (role admin)."""
    records = await audit_records(request, caller, since_ms, limit, action, outcome, key_id)
    return {"tenant": caller.tenant, "records": records}


@router.get("/stats", summary="Index statistics")
async def stats(request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    """Faces and images indexed for the tenant, the model and the stores."""
    deps = request.app.state.deps
    req = indexer_pb2.GetStatsRequest(tenant_id=caller.tenant, count_images=True)
    resp = await deps.indexer().GetStats(req, **deps.call_options(caller.key))
    return {"tenant": caller.tenant, **as_dict(resp)}


async def service_status(deps, name: str) -> dict[str, Any]:
    """One service's health (gRPC health check) and its /stats counters."""
    row: dict[str, Any] = {"service": name, "address": deps.web.backend(name)}
    try:
        resp = await health_pb2_grpc.HealthStub(deps.channel(name)).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
        row["status"] = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    except grpc.aio.AioRpcError as exc:
        row["status"] = f"DOWN ({exc.code().name})"
    row["healthy"] = row["status"] == "SERVING"
    stats: dict[str, Any] = {}
    try:
        answer = await deps.http.get(f"http://{deps.web.status_addr(name)}/stats")
        if answer.status_code == 200:
            stats = answer.json()
    except (httpx.HTTPError, ValueError):  # a service without /stats (or unreachable) shows none
        stats = {}
    row["queue_pending"] = stats.get("queue_pending")
    row["dead_letters"] = stats.get("msgs_dlq")
    row["in_flight"] = stats.get("queue_ack_pending")
    row["acked"] = stats.get("msgs_acked")
    row["retried"] = stats.get("msgs_retried")
    return row


async def system_rows(request: Request, caller: Caller) -> list[dict[str, Any]]:
    deps = request.app.state.deps
    # The caller must be a known key: the tenant's stats answer that, as they would a search.
    await deps.confirm_access(caller.key, caller.tenant)
    return list(await asyncio.gather(*(service_status(deps, name) for name in deps.web.services())))


@router.get("/system", summary="Services' health")
async def system(request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    """Each service's health, queue depth, in-flight messages and dead letters."""
    return {"services": await system_rows(request, caller)}
