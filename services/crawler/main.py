"""Crawler service entrypoint: ``facepipe serve crawler``.

Serves facepipe.v1.Crawler (start, inspect, cancel jobs) and runs the jobs of
the ``facepipe.crawl.jobs`` stage; every replica does both. Chromium is started
only when a page needs rendering, so readiness does not depend on it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from facepipe import bus
from facepipe.config import Settings
from facepipe.pipeline import StageService
from facepipe.runtime.server import run_service
from facepipe.v1 import crawler_pb2, crawler_pb2_grpc
from services.crawler.config import CrawlConfig, CrawlerSettings
from services.crawler.consumer import JobConsumer
from services.crawler.jobs import JobStore
from services.crawler.servicer import CrawlerServicer

log = logging.getLogger("facepipe.crawler")


class CrawlerService(StageService):
    name = "crawler"
    stage = "crawler"
    message_type = crawler_pb2.CrawlJob

    def __init__(
        self,
        settings: Settings,
        crawl_settings: CrawlerSettings | None = None,
        defaults: CrawlConfig | None = None,
    ) -> None:
        self.crawl_settings = crawl_settings or settings.crawler
        # A crawl is one message: the stage's in-flight limit is the job limit.
        super().__init__(dataclasses.replace(settings, max_inflight=self.crawl_settings.max_jobs))
        self.defaults = defaults or settings.crawl
        self._spec = dataclasses.replace(bus.STAGES[self.stage], ack_wait=self.crawl_settings.ack_wait)
        self.jobs: JobStore | None = None
        self.consumer = JobConsumer(self)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.job_counts: Counter[str] = Counter()

    @property
    def spec(self) -> bus.StageSpec:
        return self._spec

    def register(self, server) -> list[str]:
        crawler_pb2_grpc.add_CrawlerServicer_to_server(CrawlerServicer(self), server)
        return [crawler_pb2.DESCRIPTOR.services_by_name["Crawler"].full_name]

    async def start(self, runtime) -> None:
        if not self.settings.nats_url:
            log.warning("no FACEPIPE_NATS_URL: the crawler cannot queue or run jobs")
            return
        await super().start(runtime)

    async def connected(self) -> None:
        await self._apply_ack_wait()
        self.jobs = await JobStore.open(self.js)

    async def _apply_ack_wait(self) -> None:
        """Sets the consumer's ack_wait to this replica's (FACEPIPE_CRAWL_ACK_WAIT)."""
        info = await self.js.consumer_info(bus.STREAM, self.spec.name)
        if info.config.ack_wait is not None and abs(info.config.ack_wait - self.spec.ack_wait) < 1e-3:
            return
        await self.js.add_consumer(bus.STREAM, bus.consumer_config(self.spec))
        log.info("crawl job ack_wait set", extra={"ack_wait_s": self.spec.ack_wait})

    async def drain(self) -> None:
        # Running crawls stop at once and go back to the queue; another replica resumes them.
        self.consumer.interrupt_all()
        await super().drain()

    async def handle(self, delivery: bus.Delivery) -> None:
        await self.consumer.handle(delivery)

    async def on_dead(self, msg: Msg, payload: Any, error: str, reason: str) -> None:
        await self.consumer.on_dead(payload, error)

    def count_job(self, outcome: str) -> None:
        self.job_counts[outcome] += 1

    def stats(self) -> dict[str, Any]:
        running = {
            job_id: {
                "tenant_id": run.job.tenant_id,
                "pages_crawled": run.report.pages_crawled if run.report else 0,
                "candidates": len(run.report.candidates) if run.report else 0,
            }
            for job_id, run in self.consumer.running.items()
        }
        return {
            **super().stats(),
            "replica": self.replica,
            "jobs_running": running,
            "jobs": dict(self.job_counts),
            "max_jobs": self.crawl_settings.max_jobs,
            "ack_wait_s": self.spec.ack_wait,
            "browser": self.defaults.chromium_path if Path(self.defaults.chromium_path).exists() else "",
            "allow_private_networks": self.defaults.allow_private_networks,
        }


def main(settings: Settings) -> None:
    run_service(CrawlerService(settings), settings)
