"""The crawler's HTTP fetching: per-site scheduling, retries with backoff that
honour Retry-After, timeouts, content types and HTML decoding, on top of the
guarded fetch of facepipe.netfetch (private-network refusal on every redirect
hop, a redirect limit, a streamed size cap)."""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC

import httpx

from facepipe.config import CrawlConfig
from facepipe.netfetch import REDIRECT_STATUSES, FetchError, GuardedClient, read_capped

from .politeness import HostScheduler
from .urls import normalize_url, site_key

# FetchError and REDIRECT_STATUSES are the crawler's too; the engine and the renderer import them here.
__all__ = [
    "REDIRECT_STATUSES",
    "FetchError",
    "FetchResult",
    "Fetcher",
    "RenderedResponse",
    "decode_html",
    "parse_retry_after",
]

HTML_TYPES = ("text/html", "application/xhtml+xml")
# How long a host's address check is trusted.
GUARD_TTL = 300.0

# Raises FetchError to refuse a redirect target.
HopCheck = Callable[[str], Awaitable[None]]


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


@dataclass
class FetchResult:
    url: str
    status: int
    headers: httpx.Headers
    # None when the body was not wanted (another content type, an error status).
    body: bytes | None
    redirects: list[str] = field(default_factory=list)
    location: str | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        match = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", self.headers.get("content-type", ""), re.I)
        return match.group(1) if match else None

    @property
    def is_html(self) -> bool:
        return self.content_type in HTML_TYPES or self.content_type == ""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
# The HTML standard reads these labels as windows-1252.
_AS_CP1252 = frozenset({"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "ascii", "us-ascii"})


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().lower()
    if label in _AS_CP1252:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_html(body: bytes, header_charset: str | None = None) -> str:
    """Text of an HTML document: BOM, then the Content-Type charset, then
    ``<meta charset>``, then UTF-8 if it decodes cleanly, else windows-1252."""
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if body.startswith(bom):
            return body.decode(name, errors="replace").lstrip("\ufeff")
    meta = _META_CHARSET.search(body[:4096])
    for label in (header_charset, meta.group(1).decode("ascii", "ignore") if meta else None):
        name = _codec(label)
        if name:
            return body.decode(name, errors="replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


@dataclass
class RenderedResponse:
    """A response handed back to the browser in place of its own request."""

    status: int
    headers: dict[str, str]
    body: bytes


# Hop-by-hop headers, and those httpx sets itself or that no longer fit the decoded body.
_NOT_REPLAYED = frozenset({"host", "connection", "content-length", "transfer-encoding", "keep-alive"})
_NOT_FULFILLED = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection"})


def _replayable(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _NOT_REPLAYED}


def _fulfillable(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _NOT_FULFILLED}


class Fetcher:
    """GETs URLs under the crawl's guards; one per crawl."""

    def __init__(self, config: CrawlConfig, scheduler: HostScheduler) -> None:
        self.config = config
        self.scheduler = scheduler
        self.guarded = GuardedClient(
            user_agent=config.user_agent,
            accept="text/html,application/xhtml+xml,*/*;q=0.8",
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            allow_private=config.allow_private_networks,
            max_redirects=config.max_redirects,
            check_ttl=GUARD_TTL,
        )

    async def aclose(self) -> None:
        await self.guarded.aclose()

    async def render_request(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None
    ) -> RenderedResponse:
        """One request of a page being rendered, sent through the pinned client (Chromium's
        own DNS is never used), redirects not followed; the body is capped like HTML."""
        response = await self.guarded.send(method, url, _replayable(headers), content)
        try:
            body = await read_capped(response, url, self.config.max_html_bytes)
        finally:
            await response.aclose()
        return RenderedResponse(response.status_code, _fulfillable(response.headers), body)

    async def fetch(
        self,
        url: str,
        *,
        max_bytes: int,
        want: tuple[str, ...] | None = HTML_TYPES,
        hop_check: HopCheck | None = None,
    ) -> FetchResult:
        """GET ``url``, following redirects by hand so each hop is checked.

        Bodies are read for 2xx responses whose content type is in ``want`` (or
        is missing; None reads any type), up to ``max_bytes``.
        """

        def next_url(result: FetchResult) -> str | None:
            if result.location is None:
                return None
            target = normalize_url(result.location, result.url)
            if target is None:
                raise FetchError(result.url, "redirect", f"redirect to a non-http(s) URL {result.location!r}")
            return target

        result, chain = await self.guarded.follow(
            url, lambda hop: self._request(hop, max_bytes, want), next_url, hop_check
        )
        result.redirects = chain
        return result

    async def _request(self, url: str, max_bytes: int, want: tuple[str, ...] | None) -> FetchResult:
        config = self.config
        key = site_key(url)
        last: _Retryable | None = None
        for attempt in range(config.retries + 1):
            try:
                async with self.scheduler.slot(key), asyncio.timeout(config.request_timeout):
                    return await self._send(url, max_bytes, want)
            except TimeoutError:
                last = _Retryable("timeout", f"no complete response within {config.request_timeout:g}s")
            except httpx.TimeoutException as exc:
                last = _Retryable("timeout", f"timed out ({type(exc).__name__})")
            except httpx.TransportError as exc:
                last = _Retryable("network", f"{type(exc).__name__}: {exc}")
            except _Retryable as exc:
                last = exc
            if attempt == config.retries:
                break
            if last.retry_after is not None:
                if last.retry_after > config.max_retry_after:
                    raise FetchError(
                        url,
                        last.kind,
                        f"{last.message}; Retry-After {last.retry_after:g}s is over the "
                        f"{config.max_retry_after:g}s limit",
                    )
                # The server asked the whole host to wait, not just this URL.
                self.scheduler.defer(key, last.retry_after)
            else:
                await asyncio.sleep(config.backoff_base * 2**attempt)
        assert last is not None
        raise FetchError(url, last.kind, f"{last.message} (after {config.retries + 1} attempts)")

    async def _send(self, url: str, max_bytes: int, want: tuple[str, ...] | None) -> FetchResult:
        response = await self.guarded.open(url)
        try:
            status = response.status_code
            if status == 429 or status >= 500:
                kind = "rate_limited" if status == 429 else "server"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                raise _Retryable(kind, f"HTTP {status}", retry_after)
            result = FetchResult(url=url, status=status, headers=response.headers, body=None)
            if status in REDIRECT_STATUSES and response.headers.get("location"):
                result.location = response.headers["location"]
            elif 200 <= status < 300 and (
                want is None or result.content_type in want or not result.content_type
            ):
                result.body = await read_capped(response, url, max_bytes)
            return result
        finally:
            await response.aclose()
