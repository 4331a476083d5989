"""Fetches image URLs for the extractor: timeouts, a size cap, manual redirects
re-checked against the private-network guard at every hop, and content sniffing
from the magic bytes, whatever the server's Content-Type says."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from facepipe import __version__
from facepipe.bus import PermanentError
from facepipe.netguard import NetGuardError, UnresolvableTargetError, check_public_target

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# Worth retrying: the server may recover.
TRANSIENT_STATUSES = (408, 425, 429)
SNIFF_BYTES = 32


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
        self.max_redirects = max_redirects
        # NetGuardSettings.allow_private_networks (FACEPIPE_ALLOW_PRIVATE_NETWORKS).
        self.allow_private = allow_private
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={
                "User-Agent": f"facepipe-extractor/{__version__}",
                "Accept": "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.1",
            },
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(self, url: str) -> Fetched:
        try:
            async with asyncio.timeout(self.total_timeout):
                return await self._follow(url)
        except TimeoutError:
            raise TransientFetchError(f"fetching {url} took over {self.total_timeout:g}s") from None

    async def _follow(self, url: str) -> Fetched:
        chain = [url]
        while True:
            await self._check(chain[-1])
            target = await self._get(chain[-1])
            if isinstance(target, Fetched):
                return target
            if target in chain:
                raise PermanentError(
                    f"redirect loop: {' -> '.join([*chain, target])}", reason="redirect_loop"
                )
            if len(chain) > self.max_redirects:
                raise PermanentError(
                    f"more than {self.max_redirects} redirects from {url}: {' -> '.join(chain)}",
                    reason="too_many_redirects",
                )
            chain.append(target)

    async def _check(self, url: str) -> None:
        try:
            await check_public_target(url, allow_private=self.allow_private)
        except UnresolvableTargetError as exc:
            raise TransientFetchError(str(exc)) from exc  # DNS trouble can pass
        except NetGuardError as exc:
            raise PermanentError(str(exc), reason="blocked_target") from exc

    async def _get(self, url: str) -> Fetched | str:
        """The image, or the URL a redirect points to."""
        try:
            async with self.client.stream("GET", url) as resp:
                status = resp.status_code
                if status in REDIRECT_STATUSES and "location" in resp.headers:
                    return str(resp.url.join(resp.headers["location"]))
                if status in TRANSIENT_STATUSES or status >= 500:
                    raise TransientFetchError(f"HTTP {status} {resp.reason_phrase} from {url}")
                if not 200 <= status < 300:
                    raise PermanentError(
                        f"HTTP {status} {resp.reason_phrase} from {url}", reason="fetch_failed"
                    )
                return await self._read(url, resp)
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
        length = resp.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise self._too_large(url, f"{length} bytes")
        body = bytearray()
        sniffed = None
        # aiter_bytes undoes Content-Encoding, so the cap also stops compression bombs.
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large(url, f"over {self.max_bytes} bytes")
            if sniffed is None and len(body) >= SNIFF_BYTES:
                sniffed = self._sniff(url, bytes(body[:SNIFF_BYTES]), declared)
        if sniffed is None:
            sniffed = self._sniff(url, bytes(body), declared)
        return Fetched(bytes(body), str(resp.url), sniffed, declared)

    def _too_large(self, url: str, size: str) -> PermanentError:
        return PermanentError(
            f"{url} is {size}, over the {self.max_bytes}-byte limit (FACEPIPE_MAX_IMAGE_BYTES)",
            reason="too_large",
        )

    @staticmethod
    def _sniff(url: str, head: bytes, declared: str) -> str:
        kind = sniff_image(head)
        if kind is None:
            said = f" (Content-Type: {declared})" if declared else ""
            raise PermanentError(
                f"{url} is not an image: it looks like {describe_content(head)}{said}",
                reason="not_an_image",
            )
        return kind
