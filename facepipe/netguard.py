"""Refuses fetches that would reach private networks.

A crawler or an image fetcher driven by user-supplied URLs must not become a
way into the cluster (metadata endpoints, internal services). Hosts are checked
after DNS resolution, every returned address, so a public name that resolves to
a private address is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from facepipe.config import ALLOW_PRIVATE_NETWORKS_ENV as ALLOW_ENV
from facepipe.echo import echo

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetGuardError(Exception):
    """A target that may not be fetched."""


class BlockedTargetError(NetGuardError):
    """The target resolves to a non-public address."""


class UnresolvableTargetError(NetGuardError):
    """The target's host does not resolve."""


class InvalidTargetError(BlockedTargetError):
    """The target is no well-formed URL: it can never be fetched."""


# RFC 6052 well-known NAT64 prefix: the IPv4 address is the last 32 bits.
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 8215 local-use NAT64: where the IPv4 address sits depends on the operator's
# prefix length, so the whole range is refused.
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """The name of the transition form ``ip`` is in and the IPv4 addresses it carries, or None."""
    if ip.sixtofour is not None:
        return "6to4", [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo  # the client address comes de-obfuscated
        return "Teredo", [client, server]
    if ip in NAT64_WELL_KNOWN:
        return "NAT64", [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_problem(ip.ipv4_mapped)
        if ip in NAT64_LOCAL_USE:
            return "a local-use NAT64 address"
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            form, carried = embedded
            for inner in carried:
                problem = address_problem(inner)
                if problem:
                    return f"a {form} form of {problem} ({inner})"
            if form == "NAT64":
                # Judged by the public IPv4 it reaches (the prefix itself reads as reserved).
                return None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    )
    for name, hit in checks:
        if hit:
            return f"{'an' if name[0] in 'aeiou' else 'a'} {name} address"
    if not ip.is_global:
        return "a non-global address"
    return None


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (through the system resolver)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnresolvableTargetError(f"cannot resolve host {echo(host)}: {exc.strerror}") from exc
    # Scope ids ("fe80::1%eth0") are not part of the address.
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


async def check_public_target(url: str, *, allow_private: bool) -> None:
    """Raises :class:`NetGuardError` unless every address of ``url``'s host is public.

    ``allow_private`` is the caller's ``NetGuardSettings.allow_private_networks``
    (``FACEPIPE_ALLOW_PRIVATE_NETWORKS``); when allowed, no lookup is made at all.
    """
    host, port = target_host(url)
    if not allow_private:
        await public_addresses(host, port)


# Longer URLs are refused by most servers and browsers alike.
MAX_URL_CHARS = 8192
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def valid_host(host: str) -> bool:
    """Whether ``host`` (as urlsplit gives it, lower-cased) is an IP address or a DNS name
    whose IDNA form has valid labels; anything else can only ever fail to resolve."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:  # empty or overlong labels, characters IDNA refuses
        return False
    labels = ascii_host.removesuffix(".").split(".")
    return len(ascii_host) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


def target_host(url: str) -> tuple[str, int]:
    """The host and port an http(s) ``url`` connects to; raises :class:`BlockedTargetError`
    for any other scheme and :class:`InvalidTargetError` for a URL that is not well formed."""
    shown = echo(url)
    if len(url) > MAX_URL_CHARS:
        raise InvalidTargetError(f"target {shown} is over the {MAX_URL_CHARS}-character URL limit")
    if not url.isprintable():
        raise InvalidTargetError(f"target {shown} is not a valid URL: it holds control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "http://[::1" and the like
        raise InvalidTargetError(f"target {shown} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise BlockedTargetError(f"target {shown} is not an http(s) URL")
    host = parts.hostname
    if not host:
        raise BlockedTargetError(f"target {shown} has no host")
    if not valid_host(host):
        raise InvalidTargetError(f"target {shown} is not a valid URL: bad host name {echo(host)}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BlockedTargetError(f"target {shown} has a bad port") from exc
    return host, port


async def public_addresses(host: str, port: int) -> list[IPAddress]:
    """``host``'s addresses, resolved once; raises :class:`BlockedTargetError` unless
    every one is public. Connections must go to these addresses, not to a second lookup."""
    addresses = await resolve_host(host, port)
    if not addresses:
        raise UnresolvableTargetError(f"host {echo(host)} resolves to no address")
    for ip in addresses:
        problem = address_problem(ip)
        if problem:
            shown = str(ip) if host.strip("[]") == str(ip) else f"{host} ({ip})"
            raise BlockedTargetError(f"target {shown} is {problem}; set {ALLOW_ENV}=1 to allow it")
    return addresses
