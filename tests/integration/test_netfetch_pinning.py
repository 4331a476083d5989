"""Connections go to the address the guard checked, never to a second DNS answer.

A rebinding resolver answers a "public" address to the first lookup and loopback
to every later one. Two real HTTP servers listen on the same port: 127.0.0.2
plays the public site (the guard is told to count it as public) and 127.0.0.1
the internal service the attacker is after. Whatever the fetch path (the shared
GuardedClient, the extractor's ImageFetcher, the crawler's Fetcher with its
300 s cache), the internal server must never see a request. TLS keeps the URL's
name for SNI and the certificate check while dialling the pinned address."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from facepipe import netguard
from facepipe.bus import PermanentError
from facepipe.config import CrawlConfig
from facepipe.netfetch import FetchError, GuardedClient, PinnedAddresses, read_capped
from facepipe.netguard import IPAddress
from facepipe_services.crawler.fetch import GUARD_TTL, Fetcher
from facepipe_services.crawler.politeness import HostScheduler
from facepipe_services.crawler.render import Renderer, RenderUnavailable
from facepipe_services.extractor.fetch import ImageFetcher

PUBLIC = ipaddress.IPv4Address("127.0.0.2")
INTERNAL = ipaddress.IPv4Address("127.0.0.1")
NAME = "rebind.example"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


class Server:
    """An HTTP(S) server on one address that records each request's Host header and SNI."""

    def __init__(self, address: str, port: int, body: bytes, tls: ssl.SSLContext | None = None) -> None:
        self.hosts: list[str] = []
        self.sni: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hosts.append(self.headers.get("Host", ""))
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if body.startswith(b"<") else "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def server_pair(
    public_tls: ssl.SSLContext | None = None, internal_tls: ssl.SSLContext | None = None
) -> tuple[Server, Server]:
    """The public and the internal server, on the same free port."""
    for _ in range(20):
        public = Server(str(PUBLIC), 0, b"<html>public</html>", public_tls)
        try:
            return public, Server(str(INTERNAL), public.port, b"<html>internal</html>", internal_tls)
        except OSError:
            public.close()
    raise RuntimeError("no port free on both addresses")


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    public, internal = server_pair()
    yield public, internal
    public.close()
    internal.close()


class RebindingResolver:
    """Answers PUBLIC to the first lookup of a name and INTERNAL afterwards."""

    def __init__(self) -> None:
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        if host != NAME:
            raise netguard.UnresolvableTargetError(f"cannot resolve host {host!r}")
        self.lookups += 1
        return [PUBLIC if self.lookups == 1 else INTERNAL]


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> RebindingResolver:
    resolver = RebindingResolver()
    monkeypatch.setattr(netguard, "resolve_host", resolver)
    judged = netguard.address_problem
    # 127.0.0.2 stands in for a public address; everything else is judged as deployed.
    monkeypatch.setattr(netguard, "address_problem", lambda ip: None if ip == PUBLIC else judged(ip))
    return resolver


def guarded(check_ttl: float, ssl_context: ssl.SSLContext | None = None) -> GuardedClient:
    return GuardedClient(
        user_agent="facepipe-test",
        accept="*/*",
        connect_timeout=2.0,
        read_timeout=5.0,
        check_ttl=check_ttl,
        ssl_context=ssl_context,
    )


async def fetch_body(client: GuardedClient, url: str) -> bytes:
    await client.check(url)
    response = await client.open(url)
    try:
        return await read_capped(response, url, 1 << 16)
    finally:
        await response.aclose()


async def test_the_connection_goes_to_the_checked_address_with_the_host_header_kept(
    servers, rebinding
) -> None:
    public, internal = servers
    client = guarded(check_ttl=30.0)
    url = f"http://{NAME}:{public.port}/page"
    try:
        assert await fetch_body(client, url) == b"<html>public</html>"
        # DNS now says loopback; the pinned, checked address is still what gets dialled.
        assert await fetch_body(client, url) == b"<html>public</html>"
    finally:
        await client.aclose()
    assert public.hosts == [f"{NAME}:{public.port}"] * 2
    assert internal.hosts == []
    assert rebinding.lookups == 1, "one lookup: the check's answer is what the connection used"


async def test_without_reuse_the_connection_checks_its_own_lookup(servers, rebinding) -> None:
    public, internal = servers
    client = guarded(check_ttl=0.0)
    url = f"http://{NAME}:{public.port}/page"
    try:
        with pytest.raises(FetchError) as info:
            await fetch_body(client, url)
    finally:
        await client.aclose()
    # The check saw the public answer; the connection's own lookup saw loopback and stopped.
    assert info.value.kind == "blocked"
    assert f"target {NAME} (127.0.0.1) is a loopback address" in info.value.message
    assert rebinding.lookups == 2
    assert public.hosts == [] and internal.hosts == []


async def test_the_extractor_never_fetches_from_the_rebound_address(servers, rebinding) -> None:
    public, internal = servers
    fetcher = ImageFetcher(max_bytes=1 << 16, allow_private=False)
    url = f"http://{NAME}:{public.port}/face.png"
    try:
        for _ in range(2):
            with pytest.raises(PermanentError, match="is not an image"):
                await fetcher.fetch(url)  # reached the public server, which served HTML
    finally:
        await fetcher.aclose()
    assert len(public.hosts) == 2 and internal.hosts == []


async def test_the_crawlers_cached_verdict_lets_no_new_dns_answer_in(servers, rebinding) -> None:
    public, internal = servers
    fetcher = Fetcher(CrawlConfig(retries=0), HostScheduler(2, 0.0))
    url = f"http://{NAME}:{public.port}/"
    try:
        assert GUARD_TTL >= 300
        first = await fetcher.fetch(url, max_bytes=1 << 16)
        # Within the cache's lifetime DNS turns to loopback: the crawl still dials the checked address.
        second = await fetcher.fetch(f"http://{NAME}:{public.port}/other", max_bytes=1 << 16)
    finally:
        await fetcher.aclose()
    assert first.body == second.body == b"<html>public</html>"
    assert internal.hosts == [] and len(public.hosts) == 2


async def test_a_rendered_page_is_fetched_through_the_pinned_client(servers, rebinding) -> None:
    """Chromium never connects or resolves a name itself: every request of the page goes
    through the crawler's pinned client (Chromium could not even resolve this name)."""
    public, internal = servers
    config = CrawlConfig(retries=0, render_mode="always", render_timeout=20.0)
    fetcher = Fetcher(config, HostScheduler(2, 0.0))
    renderer = Renderer(config, fetcher.render_request)
    try:
        first = await renderer.render(f"http://{NAME}:{public.port}/")
        # DNS has turned to loopback since: the next page still goes to the checked address.
        second = await renderer.render(f"http://{NAME}:{public.port}/other")
    except RenderUnavailable as exc:
        pytest.fail(f"Chromium is needed for this test: {exc}")
    finally:
        await renderer.aclose()
        await fetcher.aclose()
    assert "public" in first.html and "public" in second.html
    assert internal.hosts == [] and len(public.hosts) == 2


def make_tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for NAME only, and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_tls_names_the_host_for_sni_and_the_certificate_while_dialling_the_pin(
    tmp_path, rebinding
) -> None:
    server_tls, client_tls = make_tls(tmp_path)
    public, internal = server_pair(public_tls=server_tls)
    client = guarded(check_ttl=30.0, ssl_context=client_tls)
    try:
        body = await fetch_body(client, f"https://{NAME}:{public.port}/secure")
    finally:
        await client.aclose()
        public.close()
        internal.close()
    # The certificate is for NAME only: verification passing means it was checked against NAME.
    assert body == b"<html>public</html>"
    assert public.sni == [NAME] and public.hosts == [f"{NAME}:{public.port}"]
    assert internal.hosts == []


async def test_a_failed_lookup_is_not_remembered(monkeypatch) -> None:
    answers: list[list[IPAddress] | None] = [None, [PUBLIC]]

    async def flaky(host: str, port: int) -> list[IPAddress]:
        answer = answers.pop(0)
        if answer is None:
            raise netguard.UnresolvableTargetError(f"cannot resolve host {host!r}: try again")
        return answer

    monkeypatch.setattr(netguard, "resolve_host", flaky)
    judged = netguard.address_problem
    monkeypatch.setattr(netguard, "address_problem", lambda ip: None if ip == PUBLIC else judged(ip))
    client = guarded(check_ttl=300.0)
    try:
        with pytest.raises(FetchError) as info:
            await client.check(f"http://{NAME}/")
        assert info.value.kind == "dns"
        await client.check(f"http://{NAME}/")  # the next lookup is made, and passes
    finally:
        await client.aclose()
    assert answers == []


async def test_the_pinned_hosts_are_bounded(monkeypatch) -> None:
    async def public(host: str, port: int) -> list[IPAddress]:
        return [PUBLIC]

    monkeypatch.setattr(netguard, "resolve_host", public)
    judged = netguard.address_problem
    monkeypatch.setattr(netguard, "address_problem", lambda ip: None if ip == PUBLIC else judged(ip))
    pins = PinnedAddresses(ttl=300.0)
    pins.MAX_HOSTS = 8
    for n in range(30):
        assert await pins.lookup(f"host{n}.example", 80) == [PUBLIC]
        assert len(pins._entries) <= 8
    assert ("host29.example", 80) in pins._entries, "the newest host is kept"
