"""Crawler service entrypoint: ``facepipe serve crawler``.

Serves facepipe.v1.Crawler (start, inspect, cancel jobs) and runs the jobs of
the ``facepipe.crawl.jobs`` stage; every replica does both. Chromium is started
only when a page needs rendering, so readiness does not depend on it.
"""

from __future__ import annotations

import dataclasses
import functools

from facepipe.config import CrawlConfig, CrawlerSettings, Settings
from facepipe.pipeline import StageService
from facepipe.runtime.server import run_service

from . import stage
from .servicer import register
from .stage import CrawlerDeps


def build(
    settings: Settings, crawl_settings: CrawlerSettings | None = None, defaults: CrawlConfig | None = None
) -> StageService[CrawlerDeps]:
    crawl_settings = crawl_settings or settings.crawler
    defaults = defaults or settings.crawl
    crawl_stage = stage.crawler_stage(crawl_settings)
    return StageService(
        "crawler",
        # A crawl is one message: the stage's in-flight limit is the job limit.
        dataclasses.replace(settings, max_inflight=crawl_settings.max_jobs),
        open_deps=functools.partial(
            stage.open_deps, crawl_settings=crawl_settings, defaults=defaults, spec=crawl_stage.spec
        ),
        register=register,
        stage=crawl_stage,
        stats=stage.stats,
    )


def main(settings: Settings) -> None:
    run_service(build(settings), settings)
