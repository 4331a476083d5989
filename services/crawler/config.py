"""Crawl job input: the sites file and the knobs of one crawl."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from facepipe.netguard import allow_private_from_env

RENDER_MODES = ("auto", "never", "always")
_COMMENT = re.compile(r"(^|\s)#.*")


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
        url = line if "://" in line else f"https://{line}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            problems.append(f"line {number}: {line!r} is not an http(s) URL")
        elif not parts.hostname or " " in line or not _valid_port(parts):
            problems.append(f"line {number}: {line!r} has no valid host")
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
