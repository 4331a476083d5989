"""The knobs of one crawl and the crawler service's settings (all overridable
through ``FACEPIPE_CRAWL_*``); seed URLs and sites files are checked in facepipe.crawl."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from facepipe.netguard import allow_private_from_env

RENDER_MODES = ("auto", "never", "always")
ENV_PREFIX = "FACEPIPE_CRAWL_"


@dataclass
class CrawlConfig:
    # Bounds, per site (one seed = one site).
    max_pages: int = 1000
    max_depth: int = 5
    same_site: bool = True
    user_agent: str = "facepipe-crawler/0.1 (+https://github.com/facepipe)"
    # Politeness, per site: requests in flight and seconds between request starts.
    per_domain_concurrency: int = 2
    per_domain_delay: float = 1.0
    # robots.txt Crawl-delay raises the delay, up to this cap.
    max_crawl_delay: float = 30.0
    max_parallel_sites: int = 4
    # Seconds.
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    request_timeout: float = 60.0
    max_redirects: int = 5
    max_html_bytes: int = 5 * 1024 * 1024
    retries: int = 3
    backoff_base: float = 1.0
    # A Retry-After longer than this is not waited for; the URL is recorded as an error.
    max_retry_after: float = 120.0
    allow_private_networks: bool = field(default_factory=allow_private_from_env)
    # JavaScript rendering: "auto" renders when static HTML has no images or the
    # site is known to need it; "never" and "always" do what they say.
    render_mode: str = "auto"
    render_contexts: int = 2
    render_timeout: float = 30.0
    # Seconds to let scripts settle after load and after scrolling.
    render_settle: float = 1.0
    render_max_scrolls: int = 20
    chromium_path: str = "/usr/bin/chromium"
    # Images whose declared width or height is below this are icons, not photos.
    min_image_side: int = 64
    sitemaps: bool = True
    max_sitemap_documents: int = 20

    def __post_init__(self) -> None:
        if self.render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {self.render_mode!r}")
        for name in ("max_pages", "per_domain_concurrency", "max_parallel_sites", "render_contexts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_depth", "max_redirects", "retries", "max_html_bytes", "min_image_side"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.per_domain_delay < 0 or self.backoff_base < 0:
            raise ValueError("per_domain_delay and backoff_base must not be negative")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> CrawlConfig:
        """Defaults with ``FACEPIPE_CRAWL_<FIELD>`` applied, e.g. FACEPIPE_CRAWL_PER_DOMAIN_DELAY=0.5.
        The private-network switch stays FACEPIPE_ALLOW_PRIVATE_NETWORKS."""
        values = _from_env(cls, os.environ if env is None else env, skip={"allow_private_networks"})
        return cls(**{**values, **overrides})


@dataclass(frozen=True)
class CrawlerSettings:
    """The crawler service's own knobs, from ``FACEPIPE_CRAWL_<FIELD>``."""

    # Crawl jobs one replica runs at once.
    max_jobs: int = 4
    # Seconds a job's message stays with a replica without a heartbeat; after a
    # crash the job resumes elsewhere this much later. Set it alike on every replica.
    ack_wait: float = 300.0
    # Seconds between progress writes to the job record and cancel checks.
    progress_interval: float = 1.0
    # Bounds of StartCrawl.
    max_seeds: int = 1000
    max_pages_limit: int = 100_000
    max_depth_limit: int = 50

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> CrawlerSettings:
        return cls(**{**_from_env(cls, os.environ if env is None else env), **overrides})


def _from_env(cls: type, env: Mapping[str, str], skip: frozenset[str] | set[str] = frozenset()) -> dict:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = env.get(ENV_PREFIX + f.name.upper(), "").strip()
        if not raw or f.name in skip:
            continue
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        try:
            if kind == "bool":
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
            elif kind in ("int", "float"):
                values[f.name] = int(raw) if kind == "int" else float(raw)
            else:
                values[f.name] = raw
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind}") from None
    return values
