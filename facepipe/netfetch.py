"""Guarded HTTP fetching of user-supplied URLs.

Redirects are followed by hand, so the address of every hop is checked by
:mod:`facepipe.netguard` before anything is sent to it; the chain is bounded
and loops are caught. Bodies are read streamed under a size cap that counts
decoded bytes, so a small compressed bomb is cut off too.

Callers keep what is theirs: the crawler its politeness, retries and HTML
handling, the extractor its content sniffing. Every request goes out through
:meth:`GuardedClient.open`, right after its target was checked: the one place
to pin the connection to the checked address.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

from facepipe.netguard import NetGuardError, UnresolvableTargetError, check_public_target

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

T = TypeVar("T")


class FetchError(Exception):
    """A fetch that failed or was refused. ``kind`` says why; the guard and the limits
    use ``blocked`` (a non-public address or a non-http(s) URL), ``dns``, ``redirects``
    (too many), ``redirect_loop`` and ``too_large``."""

    def __init__(self, url: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.url = url
        self.kind = kind
        self.message = message


def redirect_target(response: httpx.Response) -> str | None:
    """The absolute URL a redirect response points to, or None when it is no redirect."""
    location = response.headers.get("location")
    if response.status_code in REDIRECT_STATUSES and location:
        return str(response.url.join(location))
    return None


class GuardedClient:
    """One HTTP client whose requests only go where the address guard allows.

    ``allow_private`` is the caller's ``NetGuardSettings.allow_private_networks``.
    ``check_ttl`` reuses a host's verdict for that many seconds (0: check
    every hop afresh)."""

    def __init__(
        self,
        *,
        user_agent: str,
        accept: str,
        connect_timeout: float,
        read_timeout: float,
        allow_private: bool = False,
        max_redirects: int = 5,
        check_ttl: float = 0.0,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.max_redirects = max_redirects
        self.check_ttl = check_ttl
        self._verdicts: dict[str, tuple[float, FetchError | None]] = {}
        self.http = httpx.AsyncClient(
            follow_redirects=False,
            headers={"User-Agent": user_agent, "Accept": accept},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=limits or httpx.Limits(),
            # Environment proxies would hide the real target from the address guard.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def check(self, url: str) -> None:
        """Raises FetchError (``blocked`` or ``dns``) unless ``url`` may be fetched."""
        parts = urlsplit(url)
        # The verdict depends on the scheme and the host only.
        host = f"{parts.scheme}://{parts.netloc}" if self.check_ttl else ""
        now = time.monotonic()
        cached = self._verdicts.get(host) if host else None
        if cached is None or cached[0] < now:
            refusal: FetchError | None = None
            try:
                await check_public_target(url, allow_private=self.allow_private)
            except UnresolvableTargetError as exc:
                refusal = FetchError(url, "dns", str(exc))
            except NetGuardError as exc:
                refusal = FetchError(url, "blocked", str(exc))
            cached = (now + self.check_ttl, refusal)
            if host:
                self._verdicts[host] = cached
        if cached[1] is not None:
            raise FetchError(url, cached[1].kind, cached[1].message)

    async def open(self, url: str) -> httpx.Response:
        """GETs ``url`` with the body left unread; the caller closes the response."""
        return await self.http.send(self.http.build_request("GET", url), stream=True)

    async def follow(
        self,
        url: str,
        hop: Callable[[str], Awaitable[T]],
        next_url: Callable[[T], str | None],
        before_redirect: Callable[[str], Awaitable[None]] | None = None,
    ) -> tuple[T, list[str]]:
        """Runs ``hop`` on ``url``, then on each redirect target ``next_url`` gives, every
        target checked first; returns the last hop's result and the URLs redirected from.
        ``before_redirect`` may refuse a redirect target by raising."""
        chain: list[str] = []
        current = url
        while True:
            await self.check(current)
            if chain and before_redirect is not None:
                await before_redirect(current)
            result = await hop(current)
            target = next_url(result)
            if target is None:
                return result, chain
            chain.append(current)
            if target in chain:
                raise FetchError(url, "redirect_loop", f"redirect loop: {' -> '.join([*chain, target])}")
            if len(chain) > self.max_redirects:
                raise FetchError(
                    url,
                    "redirects",
                    f"more than {self.max_redirects} redirects from {url}: {' -> '.join(chain)}",
                )
            current = target


async def read_capped(
    response: httpx.Response,
    url: str,
    max_bytes: int,
    check_head: Callable[[bytes], None] | None = None,
    head_size: int = 0,
) -> bytes:
    """The body, refused (``too_large``) once it passes ``max_bytes``. ``check_head``
    sees the first ``head_size`` bytes (or the whole shorter body) as soon as they
    arrive, and may stop the read by raising."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(url, "too_large", f"{url} is {declared} bytes, over the {max_bytes}-byte limit")
    body = bytearray()
    head_checked = check_head is None
    # aiter_bytes undoes Content-Encoding, so the cap counts what a decoder would get.
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(url, "too_large", f"{url} is over the {max_bytes}-byte limit")
        if not head_checked and len(body) >= head_size:
            head_checked = True
            check_head(bytes(body[:head_size]))
    if not head_checked:
        check_head(bytes(body))
    return bytes(body)
