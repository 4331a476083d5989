"""What a crawl hands out: image candidates, errors and the final report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    """An image URL found on a page; not downloaded by the crawler."""

    url: str
    page_url: str
    alt: str
    # The technique that found it: "img-src", "img-srcset", "og:image", "css-inline", ...
    source: str
    site: str


@dataclass(frozen=True)
class CrawlError:
    url: str
    # "blocked", "dns", "timeout", "network", "server", "rate_limited", "http",
    # "too_large", "redirects", "redirect", "offsite", "robots", "render", "sitemap".
    kind: str
    message: str


@dataclass
class CrawlReport:
    job_id: str
    pages_crawled: int = 0
    pages_rendered: int = 0
    # Image URLs handed to the sink, deduplicated, in the order found.
    candidates: list[str] = field(default_factory=list)
    # URLs not fetched (pages) or not handed out (images) because robots.txt disallows them.
    skipped_robots: list[str] = field(default_factory=list)
    errors: list[CrawlError] = field(default_factory=list)
    # Seconds: "total", and time spent in "fetch", "render" and "mine" (summed over tasks).
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False

    def add_time(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds
