"""Guarded HTTP fetching of user-supplied URLs.

Redirects are followed by hand, so the address of every hop is checked by
:mod:`facepipe.netguard` before anything is sent to it; the chain is bounded
and loops are caught. Bodies are read streamed under a size cap that counts
decoded bytes, so a small compressed bomb is cut off too.

Connections are pinned: a host is resolved once, every address it resolves to
is checked, and the socket is opened to one of those checked addresses, never
to a second lookup's answer (a rebinding resolver that answers a public
address to the check and loopback to the connection gets nowhere). The URL's
host still goes in the Host header and in TLS SNI and certificate checks.
A host's checked addresses are reused for ``check_ttl`` seconds; since they are
what connections dial, a changed DNS answer cannot slip past a cached verdict.

Callers keep what is theirs: the crawler its politeness, retries and HTML
handling, the extractor its content sniffing. Every request goes out through
:meth:`GuardedClient.open`.
"""

from __future__ import annotations

import ssl
import time
import typing
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpcore
import httpx

from facepipe import netguard
from facepipe.netguard import (
    InvalidTargetError,
    IPAddress,
    NetGuardError,
    UnresolvableTargetError,
    target_host,
)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

T = TypeVar("T")


class FetchError(Exception):
    """A fetch that failed or was refused. ``kind`` says why; the guard and the limits
    use ``blocked`` (a non-public address or a non-http(s) URL), ``invalid_url`` (not a
    well-formed URL), ``dns``, ``redirects`` (too many), ``redirect_loop`` and ``too_large``."""

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


def refusal(url: str, exc: NetGuardError) -> FetchError:
    """The FetchError for a guard refusal."""
    if isinstance(exc, UnresolvableTargetError):
        return FetchError(url, "dns", str(exc))
    if isinstance(exc, InvalidTargetError):
        return FetchError(url, "invalid_url", str(exc))
    return FetchError(url, "blocked", str(exc))


class PinnedAddresses:
    """Each host's checked addresses, resolved once and kept for ``ttl`` seconds (a
    refusal too, but not a failed lookup, which may pass). What :meth:`lookup` returns
    is the only thing connections dial."""

    # Hosts remembered at most; a long crawl meets many.
    MAX_HOSTS = 4096

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, int], tuple[float, list[IPAddress] | NetGuardError]] = {}

    async def lookup(self, host: str, port: int) -> list[IPAddress]:
        """``host``'s public addresses; raises NetGuardError when any address is not public."""
        key = (host.lower(), port)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or entry[0] < now:
            found: list[IPAddress] | NetGuardError
            try:
                found = await netguard.public_addresses(host, port)
            except UnresolvableTargetError:
                raise  # DNS trouble can pass: the next lookup tries again
            except NetGuardError as exc:
                found = exc
            entry = (now + self.ttl, found)
            if self.ttl > 0:
                self._remember(key, entry, now)
        if isinstance(entry[1], NetGuardError):
            raise entry[1]
        return entry[1]

    def _remember(
        self, key: tuple[str, int], entry: tuple[float, list[IPAddress] | NetGuardError], now: float
    ) -> None:
        self._entries.pop(key, None)
        self._entries[key] = entry
        if len(self._entries) > self.MAX_HOSTS:
            fresh = [(k, e) for k, e in self._entries.items() if e[0] >= now]
            # Insertion order is age order: keep the newer half when all are fresh.
            self._entries = dict(fresh[-self.MAX_HOSTS // 2 :])


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Dials the addresses :class:`PinnedAddresses` checked instead of resolving the host
    again; TLS still names the URL's host (httpcore passes it as ``server_hostname``).
    While ``allow_private()`` is true it connects like any client."""

    def __init__(self, pins: PinnedAddresses, allow_private: Callable[[], bool]) -> None:
        self.pins = pins
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.allow_private():
            return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        last: Exception | None = None
        for ip in await self.pins.lookup(host, port):
            try:
                return await self.inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc  # try the next checked address
        if last is None:  # public_addresses refuses an empty answer; this is a guard only
            raise UnresolvableTargetError(f"no address to connect to for {host!r}")
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise NetGuardError("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def pinned_transport(
    backend: PinnedBackend, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncHTTPTransport:
    """httpx's transport with its connection pool dialling through ``backend``;
    ``ssl_context`` defaults to httpx's (the certifi roots)."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    # httpx takes no network backend; its pool is rebuilt with the same settings and ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    return transport


class GuardedClient:
    """One HTTP client whose requests only go where the address guard allows.

    ``allow_private`` is the caller's ``NetGuardSettings.allow_private_networks``.
    ``check_ttl`` reuses a host's checked addresses (or its refusal) for that many
    seconds; connections dial those addresses, so the reuse lets no new DNS answer in
    (0: resolve and check afresh for every check and every connection). ``ssl_context``
    replaces the default trust roots (the certifi bundle)."""

    def __init__(
        self,
        *,
        user_agent: str,
        accept: str,
        connect_timeout: float,
        read_timeout: float,
        allow_private: bool = False,
        max_redirects: int = 5,
        check_ttl: float = 30.0,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.max_redirects = max_redirects
        self.pins = PinnedAddresses(check_ttl)
        limits = limits or httpx.Limits()
        backend = PinnedBackend(self.pins, lambda: self.allow_private)
        self.http = httpx.AsyncClient(
            transport=pinned_transport(backend, limits, ssl_context),
            follow_redirects=False,
            headers={"User-Agent": user_agent, "Accept": accept},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            # Environment proxies would hide the real target from the address guard.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def check(self, url: str) -> None:
        """Raises FetchError (``blocked``, ``invalid_url`` or ``dns``) unless ``url`` may
        be fetched. The addresses checked are the ones :meth:`open` connects to."""
        try:
            host, port = target_host(url)
            if not self.allow_private:
                await self.pins.lookup(host, port)
        except NetGuardError as exc:
            raise refusal(url, exc) from exc

    async def send(
        self, method: str, url: str, headers: dict[str, str] | None = None, content: bytes | None = None
    ) -> httpx.Response:
        """Any request (a browser's, replayed), with the body left unread; like :meth:`open`,
        the connection goes to a checked address of the host."""
        try:
            request = self.http.build_request(method, url, headers=headers, content=content)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise FetchError(url, "invalid_url", f"not a valid URL: {exc}") from exc
        try:
            return await self.http.send(request, stream=True)
        except NetGuardError as exc:
            raise refusal(url, exc) from exc

    async def open(self, url: str) -> httpx.Response:
        """GETs ``url`` with the body left unread; the caller closes the response.
        The connection goes to a checked address of the host (FetchError otherwise)."""
        try:
            request = self.http.build_request("GET", url)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise FetchError(url, "invalid_url", f"not a valid URL: {exc}") from exc
        try:
            return await self.http.send(request, stream=True)
        except NetGuardError as exc:
            raise refusal(url, exc) from exc

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
