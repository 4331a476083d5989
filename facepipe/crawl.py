"""Client side of facepipe.v1.Crawler (``facepipe crawl``, bench): the gRPC
client, a job's JSON summary and live progress, and the checks of seed URLs and
sites files that the CLI and the crawler service share."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import SplitResult, urlsplit

from facepipe.config import TlsSettings
from facepipe.echo import echo
from facepipe.v1 import crawler_pb2, crawler_pb2_grpc

MAX_SEED_CHARS = 2048
_COMMENT = re.compile(r"(^|\s)#.*")

RENDER_MODES = {
    "auto": crawler_pb2.RENDER_MODE_AUTO,
    "never": crawler_pb2.RENDER_MODE_NEVER,
    "always": crawler_pb2.RENDER_MODE_ALWAYS,
}
FINISHED = frozenset(
    {crawler_pb2.CRAWL_STATUS_DONE, crawler_pb2.CRAWL_STATUS_CANCELLED, crawler_pb2.CRAWL_STATUS_FAILED}
)


def status_name(status: int) -> str:
    return crawler_pb2.CrawlStatus.Name(status).removeprefix("CRAWL_STATUS_").lower()


class CrawlClient:
    def __init__(
        self, addr: str, rpc_timeout: float = 30.0, key: str | None = None, tls: TlsSettings | None = None
    ) -> None:
        from facepipe.auth.client import channel

        self.addr = addr
        self.rpc_timeout = rpc_timeout
        self.channel = channel(addr, key, tls=tls)
        self.stub = crawler_pb2_grpc.CrawlerStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CrawlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self,
        seeds: list[str],
        tenant_id: str,
        max_pages: int = 0,
        max_depth: int | None = None,
        render: str = "auto",
        same_site: bool | None = None,
    ) -> str:
        request = crawler_pb2.StartCrawlRequest(
            seeds=seeds,
            tenant_id=tenant_id,
            max_pages=max_pages,
            max_depth=max_depth,
            render_mode=RENDER_MODES[render],
            same_site=same_site,
        )
        return self.stub.StartCrawl(request, timeout=self.rpc_timeout).job_id

    def get(self, job_id: str, max_candidates: int = 0) -> crawler_pb2.GetCrawlResponse:
        request = crawler_pb2.GetCrawlRequest(job_id=job_id, max_candidates=max_candidates)
        return self.stub.GetCrawl(request, timeout=self.rpc_timeout)

    def cancel(self, job_id: str) -> int:
        request = crawler_pb2.CancelCrawlRequest(job_id=job_id)
        return self.stub.CancelCrawl(request, timeout=self.rpc_timeout).status

    def wait(
        self,
        job_id: str,
        timeout: float,
        progress: Callable[[crawler_pb2.GetCrawlResponse], None] | None = None,
        poll_s: float = 0.5,
    ) -> crawler_pb2.GetCrawlResponse:
        """Polls until the job finishes or ``timeout`` seconds pass; returns the last state."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if progress is not None:
                progress(job)
            if job.status in FINISHED or time.monotonic() >= deadline:
                return job
            time.sleep(poll_s)


def crawl_summary(job: crawler_pb2.GetCrawlResponse) -> dict[str, Any]:
    """The job as one JSON-ready object."""
    seconds = 0.0
    if job.started_at_ms:
        end = job.finished_at_ms or int(time.time() * 1000)
        seconds = round((end - job.started_at_ms) / 1000, 2)
    return {
        "job_id": job.job_id,
        "tenant_id": job.tenant_id,
        "status": status_name(job.status),
        "seeds": list(job.seeds),
        "pages_crawled": job.pages_crawled,
        "pages_rendered": job.pages_rendered,
        "candidates": list(job.candidates),
        "candidates_count": job.candidates_count,
        "skipped_robots": job.skipped_robots,
        "skipped_robots_urls": list(job.skipped_robots_urls),
        "errors": [{"url": e.url, "kind": e.kind, "message": e.message} for e in job.errors],
        "errors_count": job.errors_count,
        "error": job.error,
        "attempts": job.attempts,
        "batch_id": job.job_id,
        "seconds": seconds,
    }


def progress_printer(stream: TextIO = sys.stderr) -> Callable[[crawler_pb2.GetCrawlResponse], None]:
    """Live progress: one rewritten line on a terminal, a line per change otherwise."""
    last: list[str] = [""]
    tty = stream.isatty()

    def show(job: crawler_pb2.GetCrawlResponse) -> None:
        line = (
            f"crawl {job.job_id[:8]}: {status_name(job.status):9} pages {job.pages_crawled}  "
            f"candidates {job.candidates_count}  errors {job.errors_count}"
        )
        if line == last[0]:
            return
        last[0] = line
        finished = job.status in FINISHED
        if tty:
            stream.write(f"\r{line}" + ("\n" if finished else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    return show


def check_seed(seed: str) -> tuple[str | None, str | None]:
    """The seed as a URL (a bare host is taken as https), or None and what is wrong with it."""
    line = seed.strip()
    if not line:
        return None, "is empty"
    if len(line) > MAX_SEED_CHARS:
        return None, f"is longer than {MAX_SEED_CHARS} characters"
    url = line if "://" in line else f"https://{line}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None, "is not an http(s) URL"
    if not parts.hostname or " " in line or not _valid_port(parts):
        return None, "has no valid host"
    return url, None


def parse_sites_file(text: str) -> list[str]:
    """One URL per line; ``#`` starts a comment; blank lines are ignored.

    A bare host (``example.com/path``) is taken as https. Raises ValueError naming
    every bad line, so a long list is fixed in one go.
    """
    sites: list[str] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        # "#" opens a comment at line start or after a space; in a URL it is a fragment.
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        url, problem = check_seed(line)
        if problem:
            problems.append(f"line {number}: {echo(line)} {problem}")
        elif url not in sites:
            sites.append(url)
    if problems:
        raise ValueError("bad sites file:\n" + "\n".join(problems))
    return sites


def _valid_port(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return True
