"""The limits of the web service, as ASGI middleware: request body size (413), a
rate limit per API key (429) and a timeout on every request (504)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable

from facepipe.config import WebSettings

from .sessions import SESSION_COOKIE, Sealer

Scope = dict
Receive = Callable
Send = Callable


async def _json(send: Send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TokenBuckets:
    """``per_minute`` requests per minute per caller, with a burst of as many."""

    def __init__(self, per_minute: int, max_callers: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_callers = max_callers
        self.buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, time)

    def take(self, caller: str) -> float:
        """0 when the request may go on, else the seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, then = self.buckets.get(caller, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - then) * rate)
        if tokens < 1.0:
            self.buckets[caller] = (tokens, now)
            return (1.0 - tokens) / rate
        if len(self.buckets) >= self.max_callers and caller not in self.buckets:
            self.buckets.clear()  # bounded memory: a flood of distinct keys resets the table
        self.buckets[caller] = (tokens - 1.0, now)
        return 0.0


def caller_of(scope: Scope, sealer: Sealer | None = None) -> str | None:
    """A stable, non-reversible name of the API key a request carries (never the key
    itself): from the headers, or from inside the session cookie, so that logging in
    again does not buy a new budget."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    credential = headers.get("x-api-key", "")
    auth = headers.get("authorization", "")
    if not credential and auth.lower().startswith("bearer "):
        credential = auth[7:].strip()
    if not credential:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE:
                session = sealer.open(value.strip('"')) if sealer else None
                credential = session.key if session else value
    return hashlib.sha256(credential.encode()).hexdigest()[:32] if credential else None


class LimitsMiddleware:
    """Wraps the app: refuses oversized bodies, rate-limits each key, times requests out.
    Health and static files are exempt from the rate limit."""

    EXEMPT = ("/healthz", "/readyz", "/metrics", "/static/")

    def __init__(self, app, settings: WebSettings, sealer: Sealer | None = None) -> None:
        self.app = app
        self.sealer = sealer
        self.max_body = settings.max_upload_bytes
        self.timeout_s = settings.request_timeout_s
        self.buckets = TokenBuckets(settings.rate_limit_per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _json(send, 413, f"the request body is larger than {self.max_body} bytes")
            return
        caller = caller_of(scope, self.sealer)
        if caller and not path.startswith(self.EXEMPT):
            wait = self.buckets.take(caller)
            if wait > 0:
                retry = str(max(1, round(wait))).encode()
                await _json(send, 429, "rate limit of this key exceeded", [(b"retry-after", retry)])
                return

        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # No declared length (chunked): read the body here, bounded, and replay it.
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                body += message.get("body", b"")
                if len(body) > self.max_body:
                    await _json(send, 413, f"the request body is larger than {self.max_body} bytes")
                    return
                if not message.get("more_body", False):
                    break
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}

            receive = replay

        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, tracked_send)
        except TimeoutError:
            if not started:
                await _json(send, 504, f"the request took longer than {self.timeout_s:g}s")
