"""Channels that send an API key with every call (``authorization: Bearer <key>``).

Every gRPC channel facepipe opens is made here, so that TLS can later be added in
one place."""

from __future__ import annotations

import collections
from typing import Any

import grpc

Options = list[tuple[str, Any]] | None


def key_metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()


class _Details(
    collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _SyncKeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, key: str) -> None:
        self.metadata = key_metadata(key)

    def _details(self, d: grpc.ClientCallDetails) -> _Details:
        return _Details(
            d.method,
            d.timeout,
            [*(d.metadata or ()), *self.metadata],
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def channel(addr: str, key: str | None, options: Options = None) -> grpc.Channel:
    """A blocking channel to ``addr`` whose calls carry ``key`` (none: no key)."""
    plain = grpc.insecure_channel(addr, options=options)
    return grpc.intercept_channel(plain, _SyncKeyInterceptor(key)) if key else plain


def _aio_details(d: grpc.aio.ClientCallDetails, metadata: tuple) -> grpc.aio.ClientCallDetails:
    merged = grpc.aio.Metadata(*(d.metadata or ()), *metadata)
    return grpc.aio.ClientCallDetails(d.method, d.timeout, merged, d.credentials, d.wait_for_ready)


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, key: str) -> None:
        self.metadata = key_metadata(key)

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_aio_details(details, self.metadata), request)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, key: str) -> None:
        self.metadata = key_metadata(key)

    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(_aio_details(details, self.metadata), request_iterator)


def aio_channel(addr: str, key: str | None, options: Options = None) -> grpc.aio.Channel:
    """An asyncio channel to ``addr`` whose calls carry ``key`` (none: no key)."""
    interceptors = [_AioUnaryUnary(key), _AioStreamStream(key)] if key else None
    return grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)
