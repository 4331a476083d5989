"""The stored forms of what a user names on the command line.

Ingest stores a local file's URL as the ``file://`` URL of its resolved path,
and the crawler stores a site as its host without ``www.`` plus any non-default
port. These helpers turn a plain path, a URL as the user typed it, a host or a
``host:port`` into those stored forms, so selections match what was stored.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

WEB_SCHEMES = ("http://", "https://")


def stored_file_url(path: str | Path) -> str:
    """The ``file://`` URL ingest stores for a local path (symlinks resolved)."""
    return Path(path).expanduser().resolve().as_uri()


def url_forms(value: str) -> list[str]:
    """Stored forms an image URL may have, the most likely first: a web URL as
    given; a path or ``file://`` URL as its resolved ``file://`` URL, then as given."""
    if value.startswith(WEB_SCHEMES):
        return [value]
    path = unquote(urlsplit(value).path) if value.startswith("file://") else value
    forms = [stored_file_url(path)]
    if value.startswith("file://") and value not in forms:
        forms.append(value)
    return forms


def site_forms(value: str) -> tuple[list[str], str]:
    """Exact stored forms of a site given as host, host:port or URL, and the bare
    host when no port was given (then every port of that host is meant)."""
    given = value.strip()
    netloc = urlsplit(given).netloc if "://" in given else given.split("/", 1)[0]
    key = netloc.lower().removeprefix("www.")
    forms = [key] + ([given] if given != key else [])
    host_only = key if key and ":" not in key else ""
    return forms, host_only


def site_host(site: str) -> str:
    """The host part of a stored site key."""
    return site.rsplit(":", 1)[0] if site.count(":") == 1 else site
