"""Fetches image URLs for the extractor: timeouts, transient versus permanent
failures, and content sniffing from the magic bytes, whatever the server's
Content-Type says; the redirect chain, the private-network guard at every hop
and the size cap are facepipe.netfetch's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from facepipe import __version__
from facepipe.bus import PermanentError
from facepipe.netfetch import FetchError, GuardedClient, read_capped, redirect_target

# Worth retrying: the server may recover.
TRANSIENT_STATUSES = (408, 425, 429)
SNIFF_BYTES = 32
# PermanentError reasons for the guarded fetch's refusals; "dns" is transient.
REFUSAL_REASONS = {
    "blocked": "blocked_target",
    "invalid_url": "invalid_url",
    "redirects": "too_many_redirects",
    "redirect_loop": "redirect_loop",
    "too_large": "too_large",
}


class TransientFetchError(Exception):
    """A fetch that may succeed later: timeouts, connection errors, 429 and 5xx."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    url: str  # after redirects
    content_type: str  # sniffed from the bytes
    declared_type: str  # what the server said


def sniff_image(head: bytes) -> str | None:
    """The image MIME type the leading bytes show, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "image/avif"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"heif", b"mif1", b"msf1"):
        return "image/heic"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "image/x-icon"
    return None


def describe_content(head: bytes) -> str:
    """A short name for what non-image bytes look like, for error messages."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head:
        return "an empty body"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if text.startswith((b"<svg", b"<?xml")):
        return "SVG/XML (vector images are not supported)"
    if text.startswith((b"{", b"[")):
        return "JSON"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b")):
        return "an archive"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return "text" if printable >= 0.9 * len(head) else "unrecognised binary data"


class ImageFetcher:
    """One shared HTTP client; ``fetch`` raises PermanentError or TransientFetchError."""

    def __init__(
        self,
        max_bytes: int,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        total_timeout: float = 120.0,
        max_redirects: int = 5,
        allow_private: bool = False,
    ) -> None:
        self.max_bytes = max_bytes
        self.total_timeout = total_timeout
        # NetGuardSettings.allow_private_networks (FACEPIPE_ALLOW_PRIVATE_NETWORKS).
        self.guarded = GuardedClient(
            user_agent=f"facepipe-extractor/{__version__}",
            accept="image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.1",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            allow_private=allow_private,
            max_redirects=max_redirects,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        await self.guarded.aclose()

    async def fetch(self, url: str) -> Fetched:
        try:
            async with asyncio.timeout(self.total_timeout):
                fetched, _ = await self.guarded.follow(url, self._get, _redirect_url)
                return fetched
        except TimeoutError:
            raise TransientFetchError(f"fetching {url} took over {self.total_timeout:g}s") from None
        except FetchError as exc:
            if exc.kind not in REFUSAL_REASONS:
                raise TransientFetchError(str(exc)) from exc  # DNS trouble can pass
            message = str(exc)
            if exc.kind == "too_large":
                message += " (FACEPIPE_MAX_IMAGE_BYTES)"
            raise PermanentError(message, reason=REFUSAL_REASONS[exc.kind]) from exc

    async def _get(self, url: str) -> Fetched | str:
        """The image, or the URL a redirect points to."""
        try:
            resp = await self.guarded.open(url)
            try:
                status = resp.status_code
                target = redirect_target(resp)
                if target is not None:
                    return target
                if status in TRANSIENT_STATUSES or status >= 500:
                    raise TransientFetchError(f"HTTP {status} {resp.reason_phrase} from {url}")
                if not 200 <= status < 300:
                    raise PermanentError(
                        f"HTTP {status} {resp.reason_phrase} from {url}", reason="fetch_failed"
                    )
                return await self._read(url, resp)
            finally:
                await resp.aclose()
        except httpx.TimeoutException as exc:
            raise TransientFetchError(f"timed out fetching {url}: {type(exc).__name__}") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentError(f"invalid URL {url!r}: {exc}", reason="invalid_url") from exc
        except httpx.DecodingError as exc:
            raise PermanentError(
                f"undecodable response body from {url}: {exc}", reason="fetch_failed"
            ) from exc
        except httpx.TransportError as exc:
            raise TransientFetchError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc

    async def _read(self, url: str, resp: httpx.Response) -> Fetched:
        declared = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        # The type is checked on the first bytes, so a large non-image is never read whole.
        body = await read_capped(
            resp, url, self.max_bytes, lambda head: _sniff(url, head, declared), SNIFF_BYTES
        )
        return Fetched(body, str(resp.url), _sniff(url, body[:SNIFF_BYTES], declared), declared)


def _redirect_url(got: Fetched | str) -> str | None:
    return got if isinstance(got, str) else None


def _sniff(url: str, head: bytes, declared: str) -> str:
    kind = sniff_image(head)
    if kind is None:
        said = f" (Content-Type: {declared})" if declared else ""
        raise PermanentError(
            f"{url} is not an image: it looks like {describe_content(head)}{said}",
            reason="not_an_image",
        )
    return kind
