"""URL normalisation, site identity and file-type guesses from paths."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters kept as they are; anything else (spaces, non-ASCII) is percent-encoded.
_SAFE = "/%:@!$&'()*+,;=-._~"

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".avif", ".bmp", ".tif", ".tiff", ".heic"}
)
# Links to these are never fetched as pages.
NON_PAGE_EXTENSIONS = IMAGE_EXTENSIONS | frozenset(
    {
        ".svg", ".svgz", ".ico", ".css", ".js", ".mjs", ".json", ".pdf", ".zip", ".gz", ".tgz",
        ".tar", ".rar", ".7z", ".exe", ".dmg", ".apk", ".iso", ".mp3", ".wav", ".ogg", ".flac",
        ".mp4", ".m4v", ".webm", ".avi", ".mov", ".mkv", ".woff", ".woff2", ".ttf", ".otf",
        ".eot", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".csv", ".rss", ".atom",
    }
)  # fmt: skip


def normalize_url(url: str, base: str | None = None) -> str | None:
    """Absolute, canonical form of ``url`` (resolved against ``base``), or None if it
    is not an http(s) URL. Lower-cases scheme and host, drops default ports and the
    fragment, resolves dot segments; query and path case are kept as they are."""
    url = url.strip()
    if base is not None:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in DEFAULT_PORTS or not host:
        return None
    host = host.rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = quote(_resolve_dots(parts.path or "/"), safe=_SAFE)
    query = quote(parts.query, safe=_SAFE + "?")
    return urlunsplit((scheme, netloc, path, query, ""))


def _resolve_dots(path: str) -> str:
    """RFC 3986 dot-segment removal; other segments (even empty ones) are kept."""
    if "." not in path:
        return path
    segments = path.split("/")
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out) or "/"


def host_key(url: str) -> str:
    """host[:port] of ``url``, the unit of politeness and robots.txt."""
    return urlsplit(url).netloc.lower()


def site_key(url: str) -> str:
    """The site a URL belongs to: its host without a leading ``www.``, plus any
    non-default port. http and https of one host are one site."""
    netloc = host_key(url)
    return netloc.removeprefix("www.")


def same_site(url: str, site: str) -> bool:
    return site_key(url) == site


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def extension(url: str) -> str:
    return posixpath.splitext(urlsplit(url).path.lower())[1]


def is_image_url(url: str) -> bool:
    return extension(url) in IMAGE_EXTENSIONS


def is_page_url(url: str) -> bool:
    return extension(url) not in NON_PAGE_EXTENSIONS


_WORDS = re.compile(r"[a-z]+")
_NOT_PHOTO_WORDS = frozenset(
    {"favicon", "icon", "icons", "sprite", "sprites", "logo", "logos", "tracker", "tracking", "beacon"}
)
_NOT_PHOTO_STEMS = frozenset({"pixel", "spacer", "blank", "transparent", "clear", "1x1", "dot", "px"})


def not_a_photo(url: str) -> str | None:
    """Why ``url`` is obviously not a photo (by scheme, extension or name), or None."""
    lowered = url[:16].lower()
    if lowered.startswith(("data:", "blob:", "javascript:")):
        return "inline data"
    ext = extension(url)
    if ext in (".svg", ".svgz"):
        return "vector image"
    if ext == ".ico":
        return "icon"
    path = urlsplit(url).path.lower()
    if _NOT_PHOTO_WORDS.intersection(_WORDS.findall(path)):
        return "icon, logo or sprite by name"
    stem = posixpath.splitext(posixpath.basename(path))[0]
    if stem in _NOT_PHOTO_STEMS:
        return "tracker or spacer by name"
    return None
