"""facepipe.v1.Crawler over gRPC: start, inspect and cancel crawl jobs.

StartCrawl only validates, records the job and queues it; any replica runs it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import NoReturn

import grpc

from facepipe import auth, bus
from facepipe.echo import echo
from facepipe.pipeline import Loaded
from facepipe.v1 import crawler_pb2, crawler_pb2_grpc

from .jobs import (
    CANCELLED,
    FAILED,
    QUEUED,
    STATUS_TO_PROTO,
    InvalidCrawl,
    JobRecord,
    JobStore,
    build_job,
    now_ms,
)
from .stage import CrawlerDeps

log = logging.getLogger("facepipe.crawler")


class CrawlerServicer(crawler_pb2_grpc.CrawlerServicer):
    def __init__(self, loaded: Loaded[CrawlerDeps]) -> None:
        self.loaded = loaded

    async def StartCrawl(
        self, request: crawler_pb2.StartCrawlRequest, context
    ) -> crawler_pb2.StartCrawlResponse:
        deps = await self._deps(context)
        jobs = await _jobs(deps, context)
        job_id = uuid.uuid4().hex
        try:
            job = build_job(request, deps.crawl_settings, deps.defaults, job_id)
        except InvalidCrawl as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            await jobs.create(JobRecord.from_job(job))
        except Exception as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"could not record the crawl job: {exc}")
        try:
            await deps.output.publish(
                bus.SUBJECT_CRAWL_JOBS, job.SerializeToString(), msg_id=f"crawl.{job_id}"
            )
        except Exception as exc:
            problem = f"could not queue the crawl job: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await jobs.update(job_id, lambda r: _fail(r, problem))
            await _abort(context, grpc.StatusCode.UNAVAILABLE, problem)
        log.info(
            "crawl queued",
            extra={
                "job_id": job_id,
                "tenant": job.tenant_id,
                "seeds": len(job.seeds),
                "max_pages": job.max_pages,
            },
        )
        return crawler_pb2.StartCrawlResponse(job_id=job_id, status=crawler_pb2.CRAWL_STATUS_QUEUED)

    async def GetCrawl(self, request: crawler_pb2.GetCrawlRequest, context) -> crawler_pb2.GetCrawlResponse:
        jobs = await _jobs(await self._deps(context), context)
        record = await _record(jobs, request.job_id, context)
        auth.require_tenant(record.tenant_id, "read crawls of")
        return record.to_proto(max(0, request.max_candidates))

    async def CancelCrawl(
        self, request: crawler_pb2.CancelCrawlRequest, context
    ) -> crawler_pb2.CancelCrawlResponse:
        jobs = await _jobs(await self._deps(context), context)
        record = await _record(jobs, request.job_id, context)
        auth.require_tenant(record.tenant_id, "cancel crawls of")
        if not record.finished:
            # The flag first: a replica taking the job right now sees it either way.
            await jobs.request_cancel(record.job_id)
            record = await jobs.update(record.job_id, _cancel) or record
            log.info("crawl cancel requested", extra={"job_id": record.job_id, "status": record.status})
        return crawler_pb2.CancelCrawlResponse(job_id=record.job_id, status=STATUS_TO_PROTO[record.status])

    async def _deps(self, context) -> CrawlerDeps:
        return await self.loaded.require(context, "the crawler is still starting")


def register(server: grpc.aio.Server, loaded: Loaded[CrawlerDeps]) -> list[str]:
    crawler_pb2_grpc.add_CrawlerServicer_to_server(CrawlerServicer(loaded), server)
    return [crawler_pb2.DESCRIPTOR.services_by_name["Crawler"].full_name]


async def _jobs(deps: CrawlerDeps, context) -> JobStore:
    if deps.jobs is None:
        await _abort(
            context,
            grpc.StatusCode.FAILED_PRECONDITION,
            "crawl jobs need NATS: this crawler runs without FACEPIPE_NATS_URL",
        )
    return deps.jobs


async def _record(jobs: JobStore, job_id: str, context) -> JobRecord:
    try:
        record = await jobs.get(job_id)
    except InvalidCrawl as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if record is None:
        await _abort(context, grpc.StatusCode.NOT_FOUND, f"no crawl job {echo(job_id)}")
    return record


def _cancel(record: JobRecord) -> bool:
    if record.finished:
        return False
    if record.status == QUEUED:
        record.status = CANCELLED
        record.finished_at_ms = now_ms()
    record.cancel_requested = True
    return True


def _fail(record: JobRecord, error: str) -> bool:
    record.status, record.error, record.finished_at_ms = FAILED, error, now_ms()
    return True


async def _abort(context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises
