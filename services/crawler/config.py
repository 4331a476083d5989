"""Crawl job input: the sites file and seed checks. The knobs of one crawl
(:class:`CrawlConfig`) and the crawler service's settings (:class:`CrawlerSettings`)
are declared, and read from ``FACEPIPE_CRAWL_*``, in :mod:`facepipe.config`."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from facepipe.config import RENDER_MODES, CrawlConfig, CrawlerSettings

__all__ = ["RENDER_MODES", "CrawlConfig", "CrawlerSettings", "check_seed", "parse_sites_file"]

MAX_SEED_CHARS = 2048
_COMMENT = re.compile(r"(^|\s)#.*")


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
            problems.append(f"line {number}: {line!r} {problem}")
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
