"""The private-network guard: which addresses count as non-public, how URLs are
checked (literal IPv4 and IPv6 hosts, hostnames resolved through the system
resolver, IPv4-mapped IPv6), what it raises, and the setting that lifts it."""

from __future__ import annotations

import ipaddress
import re

import pytest

from facepipe.config import NetGuardSettings
from facepipe.netguard import (
    BlockedTargetError,
    InvalidTargetError,
    NetGuardError,
    UnresolvableTargetError,
    address_problem,
    check_public_target,
    resolve_host,
    valid_host,
)

ALLOW_SETTING = "FACEPIPE_ALLOW_PRIVATE_NETWORKS"


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The guard as deployed: the allow setting is unset."""
    monkeypatch.delenv(ALLOW_SETTING, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.10.20.30", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),  # IPv6 unique local
        ("fd12:3456::1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata endpoint
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("100.64.0.1", "a non-global address"),  # carrier-grade NAT
        # IPv4-mapped IPv6 is judged by the IPv4 address inside it.
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:10.1.2.3", "a private address"),
        ("::ffff:169.254.169.254", "a link-local address"),
    ],
)
def test_non_public_addresses_name_their_kind(address: str, problem: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        # 6to4 (2002::/16): the IPv4 address is bits 16-47.
        ("2002:7f00:1::", "a 6to4 form of a loopback address (127.0.0.1)"),
        ("2002:a00:1::5", "a 6to4 form of a private address (10.0.0.1)"),
        ("2002:a9fe:a9fe::1", "a 6to4 form of a link-local address (169.254.169.254)"),
        ("2002:c0a8:101::", "a 6to4 form of a private address (192.168.1.1)"),
        # Well-known NAT64 (64:ff9b::/96): the IPv4 address is the last 32 bits.
        ("64:ff9b::7f00:1", "a NAT64 form of a loopback address (127.0.0.1)"),
        ("64:ff9b::10.0.0.1", "a NAT64 form of a private address (10.0.0.1)"),
        ("64:ff9b::169.254.169.254", "a NAT64 form of a link-local address (169.254.169.254)"),
        # Local-use NAT64 (64:ff9b:1::/48) embeds at an operator-chosen length: all refused.
        ("64:ff9b:1::a00:1", "a local-use NAT64 address"),
        ("64:ff9b:1:7f00:1::", "a local-use NAT64 address"),
        ("64:ff9b:1::8.8.8.8", "a local-use NAT64 address"),
        # Teredo (2001::/32): the client IPv4 is stored XOR 0xffffffff in the last 32 bits.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a Teredo form of a loopback address (127.0.0.1)"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "a Teredo form of a private address (10.0.0.1)"),
        # ... and a private server address in bits 32-63 is refused too.
        ("2001:0:a00:1:8000:63bf:a2b9:ddcb", "a Teredo form of a private address (10.0.0.1)"),
    ],
)
def test_transition_forms_are_judged_by_the_ipv4_inside(address: str, problem: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


async def test_a_6to4_literal_of_loopback_is_blocked(guarded) -> None:
    with pytest.raises(BlockedTargetError, match=r"^target 2002:7f00:1:: is a 6to4 form of a loopback"):
        await check_public_target("http://[2002:7f00:1::]/", allow_private=False)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::8.8.8.8"],
)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/", "target 127.0.0.1 is a loopback address"),
        ("https://10.0.0.7:8443/admin", "target 10.0.0.7 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "target 169.254.169.254 is a link-local address"),
        ("http://[::1]:8080/", "target ::1 is a loopback address"),
        ("http://[fe80::1]/", "target fe80::1 is a link-local address"),
        ("http://[::ffff:127.0.0.1]/", "target ::ffff:127.0.0.1 (::ffff:7f00:1) is a loopback address"),
    ],
)
async def test_literal_private_hosts_are_blocked(guarded, url: str, message: str) -> None:
    with pytest.raises(BlockedTargetError) as info:
        await check_public_target(url, allow_private=False)
    assert str(info.value) == f"{message}; set {ALLOW_SETTING}=1 to allow it"
    assert isinstance(info.value, NetGuardError)


async def test_hostname_resolving_to_loopback_is_blocked(guarded) -> None:
    with pytest.raises(BlockedTargetError, match=r"^target localhost \((127\.0\.0\.1|::1)\) is a loopback"):
        await check_public_target("http://localhost:9000/", allow_private=False)


async def test_public_literal_passes(guarded) -> None:
    assert await check_public_target("https://8.8.8.8/photo.jpg", allow_private=False) is None
    assert await check_public_target("http://[2001:4860:4860::8888]:8080/", allow_private=False) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "is not an http(s) URL"),
        ("ftp://8.8.8.8/x.jpg", "is not an http(s) URL"),
        ("gopher://127.0.0.1/", "is not an http(s) URL"),
        ("http:///no-host", "has no host"),
    ],
)
async def test_non_http_urls_and_missing_hosts_are_blocked_even_when_allowed(url: str, message: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(BlockedTargetError, match=re.escape(message)):
            await check_public_target(url, allow_private=allow_private)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "is not a valid URL: Invalid IPv6 URL"),
        ("http://exa mple.com/", "is not a valid URL: bad host name 'exa mple.com'"),
        ("http://a..b/x.jpg", "bad host name 'a..b'"),
        ("http://-dash-.example/", "bad host name '-dash-.example'"),
        ("http://" + "a" * 64 + ".example/", "bad host name"),
        ("http://evil\x00.example/", "holds control characters"),
        ("http://example.com/" + "a" * 9000, "is over the 8192-character URL limit"),
    ],
)
async def test_malformed_urls_are_their_own_refusal(url: str, message: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(InvalidTargetError, match=re.escape(message)) as info:
            await check_public_target(url, allow_private=allow_private)
        assert isinstance(info.value, BlockedTargetError)
        assert len(str(info.value)) < 400, "the URL is echoed cut short"


@pytest.mark.parametrize("host", ["münchen.de", "x_y.example", "example.com.", "1.2.3.4", "2001:db8::1"])
def test_valid_host_names_pass(host: str) -> None:
    assert valid_host(host)


async def test_bad_port_is_blocked(guarded) -> None:
    with pytest.raises(BlockedTargetError, match="has a bad port"):
        await check_public_target("http://8.8.8.8:99999/", allow_private=False)


async def test_unresolvable_host_is_its_own_error(guarded) -> None:
    with pytest.raises(UnresolvableTargetError, match="cannot resolve host 'no-such-host.invalid'") as info:
        await check_public_target("http://no-such-host.invalid/", allow_private=False)
    assert isinstance(info.value, NetGuardError)
    assert not isinstance(info.value, BlockedTargetError)


async def test_allowing_private_networks_skips_the_check_and_the_lookup(guarded) -> None:
    for url in ("http://127.0.0.1/", "http://[::1]/", "http://localhost/", "http://10.0.0.1:8080/"):
        assert await check_public_target(url, allow_private=True) is None
    # No lookup is made: a name that does not resolve passes too.
    assert await check_public_target("http://no-such-host.invalid/", allow_private=True) is None


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
async def test_allow_setting_lifts_the_guard(monkeypatch, value: str) -> None:
    monkeypatch.setenv(ALLOW_SETTING, value)
    allowed = NetGuardSettings.from_env().allow_private_networks
    assert allowed is True
    assert await check_public_target("http://127.0.0.1/", allow_private=allowed) is None


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
async def test_allow_setting_off_keeps_the_guard(monkeypatch, value: str) -> None:
    monkeypatch.setenv(ALLOW_SETTING, value)
    allowed = NetGuardSettings.from_env().allow_private_networks
    assert allowed is False
    with pytest.raises(BlockedTargetError, match="loopback"):
        await check_public_target("http://127.0.0.1/", allow_private=allowed)


def test_a_bad_allow_setting_names_its_variable(monkeypatch) -> None:
    monkeypatch.setenv(ALLOW_SETTING, "maybe")
    with pytest.raises(ValueError, match=ALLOW_SETTING):
        NetGuardSettings.from_env()


async def test_resolve_host_returns_every_address_without_scope_ids() -> None:
    assert await resolve_host("127.0.0.1", 80) == [ipaddress.IPv4Address("127.0.0.1")]
    assert await resolve_host("fe80::1%lo", 80) == [ipaddress.IPv6Address("fe80::1")]
    localhost = await resolve_host("localhost", 80)
    assert localhost and all(ip.is_loopback for ip in localhost)
