"""The crawler's stage: ``facepipe.crawl.jobs`` (CrawlJob) in, one IngestRequest per
image found out on ``facepipe.ingest``, progress in the job record.

A job is one message, kept with in-progress heartbeats while it runs. When the
replica dies the message comes back (after ack_wait) to any replica, which
resumes from the shared state in NATS KV; message ids derived from the job and
the image URL keep a resumed job from ingesting an image twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from facepipe import bus
from facepipe.config import CrawlConfig, CrawlerSettings
from facepipe.pipeline import Opened, Stage, StageOutput
from facepipe.runtime import metrics
from facepipe.v1 import crawler_pb2, pipeline_pb2

from .engine import MAX_ALT_CHARS, crawl
from .jobs import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    InvalidCrawl,
    JobRecord,
    JobStore,
    check_job,
    job_config,
    now_ms,
)
from .models import Candidate, CrawlReport
from .state import NatsCrawlState

log = logging.getLogger("facepipe.crawler")


class JobInterrupted(Exception):
    """The replica is shutting down; the job goes back to the queue and resumes elsewhere."""


def ingest_message_id(job_id: str, image_url: str) -> str:
    """The same for every run of a job, so a resumed job never ingests an image twice."""
    return hashlib.sha256(f"{job_id}\n{image_url}".encode()).hexdigest()


def ingest_request(job: crawler_pb2.CrawlJob, candidate: Candidate) -> pipeline_pb2.IngestRequest:
    return pipeline_pb2.IngestRequest(
        tenant_id=job.tenant_id,
        site=candidate.site,
        url=candidate.url,
        page_url=candidate.page_url,
        alt_text=candidate.alt[:MAX_ALT_CHARS],
        batch_id=job.job_id,
        message_id=ingest_message_id(job.job_id, candidate.url),
    )


@dataclass(frozen=True)
class CrawlerDeps:
    crawl_settings: CrawlerSettings
    # What a job does not set itself.
    defaults: CrawlConfig
    spec: bus.StageSpec
    # Job records and cancel flags in NATS KV; None without NATS (no job can run).
    jobs: JobStore | None
    output: StageOutput
    replica: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # The runs of this replica, by job id, and how its jobs ended.
    running: dict[str, JobRun] = field(default_factory=dict)
    job_counts: Counter[str] = field(default_factory=Counter)


def crawler_stage(crawl_settings: CrawlerSettings) -> Stage[CrawlerDeps]:
    """The stage, with this replica's ack_wait (FACEPIPE_CRAWL_ACK_WAIT)."""
    spec = dataclasses.replace(bus.STAGES["crawler"], ack_wait=crawl_settings.ack_wait)
    return Stage(spec, crawler_pb2.CrawlJob, handle, on_dead=on_dead, drain=interrupt_all)


async def open_deps(
    opened: Opened, crawl_settings: CrawlerSettings, defaults: CrawlConfig, spec: bus.StageSpec
) -> CrawlerDeps:
    js = opened.output.js
    jobs = None
    if js is None:
        log.warning("no FACEPIPE_NATS_URL: the crawler cannot queue or run jobs")
    else:
        await _apply_ack_wait(js, spec)
        jobs = await JobStore.open(js)
    return CrawlerDeps(crawl_settings, defaults, spec, jobs, opened.output)


async def _apply_ack_wait(js: JetStreamContext, spec: bus.StageSpec) -> None:
    """Sets the consumer's ack_wait to this replica's."""
    info = await js.consumer_info(bus.STREAM, spec.name)
    if info.config.ack_wait is not None and abs(info.config.ack_wait - spec.ack_wait) < 1e-3:
        return
    await js.add_consumer(bus.STREAM, bus.consumer_config(spec))
    log.info("crawl job ack_wait set", extra={"ack_wait_s": spec.ack_wait})


def stats(deps: CrawlerDeps) -> dict[str, Any]:
    running = {
        job_id: {
            "tenant_id": run.job.tenant_id,
            "pages_crawled": run.report.pages_crawled if run.report else 0,
            "candidates": len(run.report.candidates) if run.report else 0,
        }
        for job_id, run in deps.running.items()
    }
    defaults = deps.defaults
    return {
        "replica": deps.replica,
        "jobs_running": running,
        "jobs": dict(deps.job_counts),
        "max_jobs": deps.crawl_settings.max_jobs,
        "ack_wait_s": deps.spec.ack_wait,
        "browser": defaults.chromium_path if Path(defaults.chromium_path).exists() else "",
        "allow_private_networks": defaults.allow_private_networks,
    }


class JobRun:
    """One attempt at one job on this replica."""

    def __init__(self, deps: CrawlerDeps, job: crawler_pb2.CrawlJob, state: NatsCrawlState) -> None:
        self.deps = deps
        self.job = job
        self.state = state
        self.initial = JobRecord.from_job(job)
        self.stop = asyncio.Event()
        self.finished = asyncio.Event()
        self.interrupted = False
        self.cancelled = False
        self.report: CrawlReport | None = None
        # How much of the report is already in the job record.
        self._sent = {"candidates": 0, "skipped": 0, "errors": 0}
        self._last_flush_pages = -1

    def interrupt(self) -> None:
        self.interrupted = True
        self.stop.set()

    def _jobs(self) -> JobStore:
        assert self.deps.jobs is not None  # jobs only run with NATS
        return self.deps.jobs

    async def sink(self, candidate: Candidate) -> None:
        request = ingest_request(self.job, candidate)
        await self.deps.output.publish(
            bus.SUBJECT_INGEST, request.SerializeToString(), msg_id=f"ingest.{request.message_id}"
        )

    def on_progress(self, report: CrawlReport) -> None:
        self.report = report

    async def execute(self) -> None:
        config = job_config(self.job, self.deps.defaults)
        watcher = asyncio.create_task(self._watch())
        try:
            report = await crawl(
                list(self.job.seeds),
                config,
                self.sink,
                self.state,
                self.on_progress,
                job_id=self.job.job_id,
                cancel=self.stop,
                service=self.deps.output.service,
            )
        except Exception as exc:
            # Transient (the bus, KV): the job is retried and resumes where it stopped.
            with contextlib.suppress(Exception):
                await self._flush(
                    status=QUEUED, error=f"attempt failed, retrying: {type(exc).__name__}: {exc}"
                )
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self.report = report
        if self.interrupted:
            await self._flush(status=QUEUED, error="interrupted by a replica shutdown; resuming")
            raise JobInterrupted(f"crawl {self.job.job_id} interrupted by shutdown")
        counters = await self.state.counters(self.job.job_id)
        # Every image the job handed out, earlier attempts included (their last
        # progress write may have died with their replica).
        handed_out = [e.url for e in await self.state.entries(self.job.job_id, "image") if e.done]
        if self.cancelled:
            status, error = CANCELLED, ""
        elif not counters.get("pages") and (report.errors or report.skipped_robots):
            status, error = FAILED, _why_nothing_crawled(report)
        else:
            status, error = DONE, ""
        await self._flush(status=status, error=error, finished=True, counters=counters, extra=handed_out)
        await self.state.purge_job(self.job.job_id)
        self.deps.job_counts[status] += 1
        log.info(
            "crawl finished",
            extra={
                "job_id": self.job.job_id,
                "status": status,
                "pages": counters.get("pages", 0),
                "candidates": counters.get("candidates", 0),
                "errors": counters.get("errors", 0),
            },
        )

    async def _watch(self) -> None:
        """Polls the cancel flag and writes progress to the job record."""
        interval = self.deps.crawl_settings.progress_interval
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._jobs().cancel_requested(self.job.job_id):
                    self.cancelled = True
                    self.stop.set()
                    return
                pages = self.report.pages_crawled if self.report else 0
                if pages != self._last_flush_pages or self._unsent():
                    await self._flush()
            except Exception as exc:  # noqa: BLE001 - progress is best effort; the final flush is not
                log.warning("progress update failed", extra={"job_id": self.job.job_id, "error": str(exc)})

    def _unsent(self) -> bool:
        report = self.report
        return bool(
            report
            and (
                len(report.candidates) > self._sent["candidates"]
                or len(report.errors) > self._sent["errors"]
                or len(report.skipped_robots) > self._sent["skipped"]
            )
        )

    async def _flush(
        self,
        status: str | None = None,
        error: str | None = None,
        finished: bool = False,
        counters: dict[str, int] | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        if counters is None:
            counters = await self.state.counters(self.job.job_id)
        report = self.report or CrawlReport(job_id=self.job.job_id)
        candidates = report.candidates[self._sent["candidates"] :]
        skipped = report.skipped_robots[self._sent["skipped"] :]
        errors = [
            {"url": e.url, "kind": e.kind, "message": e.message}
            for e in report.errors[self._sent["errors"] :]
        ]

        def change(record: JobRecord) -> bool:
            if record.finished:
                return False  # cancelled while queued, or finished by another replica
            record.pages_crawled = counters.get("pages", 0)
            record.pages_rendered = counters.get("rendered", 0)
            record.candidates_count = counters.get("candidates", 0)
            record.skipped_robots = counters.get("skipped_robots", 0)
            record.errors_count = counters.get("errors", 0)
            record.add_candidates(candidates)
            record.add_candidates(extra)
            record.add_skipped(skipped)
            record.add_errors(errors)
            if status is not None:
                record.status = status
            if error is not None:
                record.error = error
            if finished:
                record.finished_at_ms = now_ms()
            return True

        await self._jobs().update(self.job.job_id, change, self.initial)
        self._sent = {"candidates": len(report.candidates), "skipped": len(report.skipped_robots)}
        self._sent["errors"] = len(report.errors)
        self._last_flush_pages = report.pages_crawled


def _why_nothing_crawled(report: CrawlReport) -> str:
    if report.errors:
        first = report.errors[0]
        reason = first.message if first.message.startswith(first.url) else f"{first.url}: {first.message}"
        more = f" (and {len(report.errors) - 1} more error(s))" if len(report.errors) > 1 else ""
        return f"no page could be crawled: {reason}{more}"
    return f"no page could be crawled: robots.txt disallows {report.skipped_robots[0]}"


async def handle(deps: CrawlerDeps, delivery: bus.Delivery) -> None:
    job: crawler_pb2.CrawlJob = delivery.payload
    try:
        check_job(job)
    except InvalidCrawl as exc:
        raise bus.PermanentError(str(exc), reason="invalid_job") from exc
    jobs = deps.jobs
    assert jobs is not None  # the stage only runs with NATS
    current = deps.running.get(job.job_id)
    if current is not None:
        # Redelivered while still running here (a missed heartbeat): this delivery
        # is the live one now, so it is acked only once the run has finished the job.
        await current.finished.wait()
        record = await jobs.get(job.job_id)
        if record is None or not record.finished:
            raise JobInterrupted(f"crawl {job.job_id} did not finish on this replica; retrying")
        return
    initial = JobRecord.from_job(job)
    record = await jobs.get(job.job_id)
    if record is not None and record.finished:
        log.info("job already finished", extra={"job_id": job.job_id, "status": record.status})
        await (await _state(deps)).purge_job(job.job_id)
        return
    if await jobs.cancel_requested(job.job_id):
        await jobs.update(job.job_id, _mark(CANCELLED), initial)
        deps.job_counts[CANCELLED] += 1
        return

    def start(r: JobRecord) -> bool:
        if r.finished:
            return False
        r.status = RUNNING
        r.attempts += 1
        r.started_at_ms = r.started_at_ms or now_ms()
        r.worker = deps.replica
        r.error = ""
        return True

    record = await jobs.update(job.job_id, start, initial)
    if record is None or record.finished:
        return
    if record.attempts > 1:
        log.info("resuming crawl job", extra={"job_id": job.job_id, "attempt": record.attempts})
    run = JobRun(deps, job, await _state(deps))
    deps.running[job.job_id] = run
    service = deps.output.service
    metrics.CRAWL_JOBS.labels(service).inc()
    deps.job_counts["started"] += 1
    try:
        await run.execute()
    finally:
        metrics.CRAWL_JOBS.labels(service).dec()
        del deps.running[job.job_id]
        run.finished.set()


async def _state(deps: CrawlerDeps) -> NatsCrawlState:
    assert deps.output.js is not None
    return await NatsCrawlState.open(deps.output.js, bus.CRAWL_KV)


async def on_dead(deps: CrawlerDeps, msg: Msg, payload: Any, error: str, reason: str) -> None:
    """A job that can never run, or failed every attempt, is marked failed."""
    if not isinstance(payload, crawler_pb2.CrawlJob) or deps.jobs is None:
        return
    try:
        check_job(payload)
    except InvalidCrawl:
        return  # no valid id: no record to mark
    await deps.jobs.update(payload.job_id, _mark(FAILED, error), JobRecord.from_job(payload))
    await (await _state(deps)).purge_job(payload.job_id)
    deps.job_counts[FAILED] += 1


def interrupt_all(deps: CrawlerDeps) -> None:
    """Running crawls stop at once and go back to the queue; another replica resumes them."""
    for run in deps.running.values():
        run.interrupt()


def _mark(status: str, error: str = ""):
    def change(record: JobRecord) -> bool:
        if record.finished:
            return False
        record.status = status
        record.error = error or record.error
        record.finished_at_ms = now_ms()
        return True

    return change
