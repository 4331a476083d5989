"""Crawl jobs: validation of StartCrawl, the job record in NATS KV (``job.<id>``
in ``facepipe-crawl``) and the cancel flag (``cancel.<id>``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from facepipe import bus
from facepipe.config import CrawlConfig, CrawlerSettings
from facepipe.crawl import check_seed
from facepipe.echo import echo
from facepipe.pipeline import TENANT_RE
from facepipe.v1 import crawler_pb2

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
FINISHED = frozenset({DONE, CANCELLED, FAILED})
STATUS_TO_PROTO = {
    QUEUED: crawler_pb2.CRAWL_STATUS_QUEUED,
    RUNNING: crawler_pb2.CRAWL_STATUS_RUNNING,
    DONE: crawler_pb2.CRAWL_STATUS_DONE,
    CANCELLED: crawler_pb2.CRAWL_STATUS_CANCELLED,
    FAILED: crawler_pb2.CRAWL_STATUS_FAILED,
}
RENDER_TO_PROTO = {
    "auto": crawler_pb2.RENDER_MODE_AUTO,
    "never": crawler_pb2.RENDER_MODE_NEVER,
    "always": crawler_pb2.RENDER_MODE_ALWAYS,
}
RENDER_FROM_PROTO = {v: k for k, v in RENDER_TO_PROTO.items()}
# Job ids become KV keys and the batch_id subject token of the ingested images.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Lists kept in the job record; the counters have the totals. Keeps a record
# well under NATS's default 1 MiB message limit.
MAX_RECORD_CANDIDATES = 2000
MAX_RECORD_SKIPPED = 200
MAX_RECORD_ERRORS = 200
_CAS_ATTEMPTS = 20


class InvalidCrawl(ValueError):
    """A StartCrawl request or CrawlJob message that can never run."""


def now_ms() -> int:
    return int(time.time() * 1000)


def build_job(
    request: crawler_pb2.StartCrawlRequest, settings: CrawlerSettings, defaults: CrawlConfig, job_id: str
) -> crawler_pb2.CrawlJob:
    """Validates a StartCrawl request and resolves its defaults; raises InvalidCrawl."""
    if not TENANT_RE.match(request.tenant_id):
        raise InvalidCrawl(f"invalid tenant_id {echo(request.tenant_id)}: 1-64 letters, digits, '_' or '-'")
    if not request.seeds:
        raise InvalidCrawl("no seeds: give at least one http(s) URL")
    if len(request.seeds) > settings.max_seeds:
        raise InvalidCrawl(
            f"{len(request.seeds)} seeds is over the limit of {settings.max_seeds} per job; split the list"
        )
    seeds, problems = [], []
    for seed in request.seeds:
        url, problem = check_seed(seed)
        if problem:
            problems.append(f"seed {echo(seed)} {problem}")
        elif url not in seeds:
            seeds.append(url)
    if problems:
        raise InvalidCrawl("; ".join(problems[:20]))
    if not 0 <= request.max_pages <= settings.max_pages_limit:
        raise InvalidCrawl(f"max_pages must be between 1 and {settings.max_pages_limit} (0: server default)")
    max_depth = request.max_depth if request.HasField("max_depth") else defaults.max_depth
    if not 0 <= max_depth <= settings.max_depth_limit:
        raise InvalidCrawl(f"max_depth must be between 0 and {settings.max_depth_limit}")
    render = RENDER_FROM_PROTO.get(request.render_mode, defaults.render_mode)
    if request.render_mode and request.render_mode not in RENDER_FROM_PROTO:
        raise InvalidCrawl(f"unknown render_mode {request.render_mode}")
    return crawler_pb2.CrawlJob(
        job_id=job_id,
        tenant_id=request.tenant_id,
        seeds=seeds,
        max_pages=request.max_pages or defaults.max_pages,
        max_depth=max_depth,
        render_mode=RENDER_TO_PROTO[render],
        same_site=request.same_site if request.HasField("same_site") else defaults.same_site,
        created_at_ms=now_ms(),
    )


def check_job(job: crawler_pb2.CrawlJob) -> None:
    """What the stage checks before running a message; raises InvalidCrawl."""
    missing = [name for name in ("job_id", "tenant_id", "seeds") if not getattr(job, name)]
    if missing:
        raise InvalidCrawl(f"CrawlJob is missing {', '.join(missing)}")
    if not JOB_ID_RE.match(job.job_id):
        raise InvalidCrawl(f"invalid job_id {echo(job.job_id)}: 1-64 letters, digits, '_' or '-'")
    if not TENANT_RE.match(job.tenant_id):
        raise InvalidCrawl(f"invalid tenant_id {echo(job.tenant_id)}")
    for seed in job.seeds:
        _, problem = check_seed(seed)
        if problem:
            raise InvalidCrawl(f"seed {echo(seed)} {problem}")
    if job.max_pages < 1 or job.max_depth < 0 or job.render_mode not in RENDER_FROM_PROTO:
        raise InvalidCrawl("CrawlJob options are out of range (max_pages >= 1, max_depth >= 0, render_mode)")


def job_config(job: crawler_pb2.CrawlJob, defaults: CrawlConfig) -> CrawlConfig:
    return CrawlConfig(
        **{
            **asdict(defaults),
            "max_pages": job.max_pages,
            "max_depth": job.max_depth,
            "render_mode": RENDER_FROM_PROTO[job.render_mode],
            "same_site": job.same_site,
        }
    )


@dataclass
class JobRecord:
    """What GetCrawl reports; written by StartCrawl, the replica running the job and CancelCrawl."""

    job_id: str
    tenant_id: str
    seeds: list[str]
    max_pages: int
    max_depth: int
    render_mode: str
    same_site: bool
    status: str = QUEUED
    created_at_ms: int = 0
    started_at_ms: int = 0
    finished_at_ms: int = 0
    updated_at_ms: int = 0
    pages_crawled: int = 0
    pages_rendered: int = 0
    candidates_count: int = 0
    candidates: list[str] = field(default_factory=list)
    skipped_robots: int = 0
    skipped_robots_urls: list[str] = field(default_factory=list)
    errors_count: int = 0
    # {"url", "kind", "message"}
    errors: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    attempts: int = 0
    worker: str = ""
    cancel_requested: bool = False

    @classmethod
    def from_job(cls, job: crawler_pb2.CrawlJob) -> JobRecord:
        return cls(
            job_id=job.job_id,
            tenant_id=job.tenant_id,
            seeds=list(job.seeds),
            max_pages=job.max_pages,
            max_depth=job.max_depth,
            render_mode=RENDER_FROM_PROTO.get(job.render_mode, "auto"),
            same_site=job.same_site,
            created_at_ms=job.created_at_ms or now_ms(),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> JobRecord:
        doc = json.loads(data)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def add_candidates(self, urls: list[str]) -> None:
        _extend_unique(self.candidates, urls, MAX_RECORD_CANDIDATES)

    def add_skipped(self, urls: list[str]) -> None:
        _extend_unique(self.skipped_robots_urls, urls, MAX_RECORD_SKIPPED)

    def add_errors(self, errors: list[dict[str, str]]) -> None:
        seen = {(e["url"], e["kind"], e["message"]) for e in self.errors}
        for e in errors:
            key = (e["url"], e["kind"], e["message"])
            if key not in seen and len(self.errors) < MAX_RECORD_ERRORS:
                seen.add(key)
                self.errors.append(e)

    def to_proto(self, max_candidates: int = 0) -> crawler_pb2.GetCrawlResponse:
        candidates = self.candidates[:max_candidates] if max_candidates > 0 else self.candidates
        return crawler_pb2.GetCrawlResponse(
            job_id=self.job_id,
            tenant_id=self.tenant_id,
            status=STATUS_TO_PROTO.get(self.status, crawler_pb2.CRAWL_STATUS_UNSPECIFIED),
            seeds=self.seeds,
            pages_crawled=self.pages_crawled,
            pages_rendered=self.pages_rendered,
            candidates_count=self.candidates_count,
            candidates=candidates,
            skipped_robots=self.skipped_robots,
            skipped_robots_urls=self.skipped_robots_urls,
            errors_count=self.errors_count,
            errors=[crawler_pb2.CrawlError(**e) for e in self.errors],
            error=self.error,
            created_at_ms=self.created_at_ms,
            started_at_ms=self.started_at_ms,
            finished_at_ms=self.finished_at_ms,
            attempts=self.attempts,
            cancel_requested=self.cancel_requested,
            max_pages=self.max_pages,
            max_depth=self.max_depth,
            render_mode=RENDER_TO_PROTO.get(self.render_mode, crawler_pb2.RENDER_MODE_UNSPECIFIED),
            same_site=self.same_site,
        )


def _extend_unique(target: list[str], items: list[str], limit: int) -> None:
    present = set(target)
    for item in items:
        if len(target) >= limit:
            return
        if item not in present:
            present.add(item)
            target.append(item)


class JobStore:
    """Job records and cancel flags in the ``facepipe-crawl`` bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> JobStore:
        return cls(await js.key_value(bus.CRAWL_KV))

    @staticmethod
    def key(job_id: str) -> str:
        if not JOB_ID_RE.match(job_id or ""):
            raise InvalidCrawl(f"invalid job id {echo(job_id)}")
        return f"job.{job_id}"

    async def create(self, record: JobRecord) -> None:
        record.updated_at_ms = now_ms()
        await self.kv.create(self.key(record.job_id), record.to_bytes())

    async def get(self, job_id: str) -> JobRecord | None:
        entry = await self._entry(self.key(job_id))
        return JobRecord.from_bytes(entry.value) if entry else None

    async def update(
        self, job_id: str, change: Callable[[JobRecord], bool | None], initial: JobRecord | None = None
    ) -> JobRecord | None:
        """Applies ``change`` with compare-and-set; ``change`` edits the record in place and
        returns False to leave it unwritten. A missing record starts from ``initial``."""
        key = self.key(job_id)
        for _ in range(_CAS_ATTEMPTS):
            entry = await self._entry(key)
            if entry is None and initial is None:
                return None
            record = JobRecord.from_bytes(entry.value) if entry else JobRecord.from_bytes(initial.to_bytes())
            if change(record) is False:
                return record
            record.updated_at_ms = now_ms()
            try:
                if entry is None:
                    await self.kv.create(key, record.to_bytes())
                else:
                    await self.kv.update(key, record.to_bytes(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return record
        raise RuntimeError(f"could not update {key}: too much contention")

    async def request_cancel(self, job_id: str) -> None:
        await self.kv.put(f"cancel.{job_id}", b"1")

    async def cancel_requested(self, job_id: str) -> bool:
        return await self._entry(f"cancel.{job_id}") is not None

    async def _entry(self, key: str) -> KeyValue.Entry | None:
        try:
            return await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
