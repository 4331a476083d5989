"""facepipe.netfetch against a real HTTP server on 127.0.0.1: the address guard
on the first target and on every redirect hop, the redirect limit and loops,
and the streamed size cap (declared, streamed and compressed bodies)."""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from facepipe.netfetch import FetchError, GuardedClient, read_capped, redirect_target

CAP = 4096


class Site:
    """Redirect chains (/hop/N), a loop (/loop/a <-> /loop/b), a redirect that may
    flip the guard on its way out, and bodies of every kind of size."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.on_redirect = lambda: None
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                site.hits[path] += 1
                site.respond(self, path)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.origin + path

    def respond(self, h: BaseHTTPRequestHandler, path: str) -> None:
        if path.startswith("/hop/"):
            n = int(path.rsplit("/", 1)[1])
            return self.redirect(h, f"/hop/{n - 1}") if n > 0 else self.send(h, b"landed")
        if path == "/loop/a":
            return self.redirect(h, "/loop/b")
        if path == "/loop/b":
            return self.redirect(h, self.url("/loop/a"))
        if path == "/to-secret":
            self.on_redirect()
            return self.redirect(h, "/secret")
        if path == "/to-file":
            return self.redirect(h, "file:///etc/passwd")
        if path == "/secret":
            return self.send(h, b"internal")
        if path == "/exact":
            return self.send(h, b"x" * CAP)
        if path == "/declared":
            return self.send(h, b"x" * (CAP + 1))
        if path == "/streamed":
            # No Content-Length: the body runs until the connection closes.
            h.send_response(200)
            h.end_headers()
            for _ in range(8):
                h.wfile.write(b"y" * 1024)
            return None
        if path == "/bomb":
            body = gzip.compress(b"\0" * (CAP * 64))
            h.send_response(200)
            h.send_header("Content-Encoding", "gzip")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return None
        return self.send(h, b"not found", 404)

    @staticmethod
    def send(h: BaseHTTPRequestHandler, body: bytes, status: int = 200) -> None:
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    @staticmethod
    def redirect(h: BaseHTTPRequestHandler, location: str) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def guarded_client(allow_private: bool, max_redirects: int = 3) -> GuardedClient:
    return GuardedClient(
        user_agent="facepipe-test",
        accept="*/*",
        connect_timeout=2.0,
        read_timeout=5.0,
        allow_private=allow_private,
        max_redirects=max_redirects,
    )


@pytest.fixture
async def client() -> AsyncIterator[GuardedClient]:
    c = guarded_client(allow_private=True)
    yield c
    await c.aclose()


async def get(client: GuardedClient, url: str, max_bytes: int = CAP) -> tuple[bytes, list[str]]:
    """The body at the end of the redirects, and the URLs redirected from."""

    async def hop(target: str) -> bytes | str:
        response = await client.open(target)
        try:
            return redirect_target(response) or await read_capped(response, target, max_bytes)
        finally:
            await response.aclose()

    body, chain = await client.follow(url, hop, lambda got: got if isinstance(got, str) else None)
    assert isinstance(body, bytes)
    return body, chain


async def refusal(client: GuardedClient, url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        await get(client, url)
    return info.value


async def test_redirects_are_followed_up_to_the_limit(client, site) -> None:
    body, chain = await get(client, site.url("/hop/3"))  # exactly max_redirects
    assert body == b"landed" and chain == [site.url(f"/hop/{n}") for n in (3, 2, 1)]

    too_many = await refusal(client, site.url("/hop/4"))
    assert too_many.kind == "redirects" and too_many.url == site.url("/hop/4")
    assert site.hits["/hop/0"] == 1, "the hop past the limit is never requested"


async def test_a_redirect_loop_is_caught(client, site) -> None:
    loop = await refusal(client, site.url("/loop/a"))
    assert loop.kind == "redirect_loop"
    assert (
        str(loop) == f"redirect loop: {site.url('/loop/a')} -> {site.url('/loop/b')} -> {site.url('/loop/a')}"
    )
    assert site.hits == Counter({"/loop/a": 1, "/loop/b": 1})


async def test_private_targets_are_refused_before_any_request(site) -> None:
    strict = guarded_client(allow_private=False)
    try:
        refused = await refusal(strict, site.url("/hop/0"))
    finally:
        await strict.aclose()
    assert refused.kind == "blocked" and "loopback" in refused.message
    assert not site.hits


async def test_every_redirect_hop_goes_through_the_guard(client, site) -> None:
    # The guard tightens while the first response is on its way: the redirect's target is
    # checked on its own and refused, and never requested.
    site.on_redirect = lambda: setattr(client, "allow_private", False)
    refused = await refusal(client, site.url("/to-secret"))
    assert refused.kind == "blocked" and refused.url == site.url("/secret")
    assert "loopback" in refused.message
    assert site.hits["/to-secret"] == 1 and site.hits["/secret"] == 0


async def test_a_redirect_off_http_is_refused_even_with_private_networks_allowed(client, site) -> None:
    refused = await refusal(client, site.url("/to-file"))
    assert refused.kind == "blocked" and refused.url.startswith("file:") and "http(s)" in refused.message


async def test_bodies_are_capped(client, site) -> None:
    body, _ = await get(client, site.url("/exact"))
    assert len(body) == CAP

    declared = await refusal(client, site.url("/declared"))
    assert declared.kind == "too_large" and f"{CAP + 1} bytes" in declared.message
    streamed = await refusal(client, site.url("/streamed"))
    assert streamed.kind == "too_large"
    # The cap counts decoded bytes: a small compressed body that inflates past it is refused.
    bomb = await refusal(client, site.url("/bomb"))
    assert bomb.kind == "too_large"


async def test_the_head_check_sees_the_first_bytes_and_can_stop_the_read(client, site) -> None:
    seen: list[bytes] = []

    class NotWanted(Exception):
        pass

    def check(head: bytes) -> None:
        seen.append(head)
        raise NotWanted

    response = await client.open(site.url("/streamed"))
    try:
        with pytest.raises(NotWanted):
            await read_capped(response, site.url("/streamed"), 1 << 20, check, head_size=16)
    finally:
        await response.aclose()
    assert seen == [b"y" * 16]

    short: list[bytes] = []
    response = await client.open(site.url("/hop/0"))
    try:
        body = await read_capped(response, site.url("/hop/0"), CAP, short.append, head_size=64)
    finally:
        await response.aclose()
    assert body == b"landed" and short == [b"landed"], "a body shorter than the head is checked whole"
