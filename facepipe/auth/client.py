"""Channels that send an API key with every call (``authorization: Bearer <key>``).

Every gRPC channel facepipe opens is made here. A channel talks TLS when the TLS
settings say so (a CA, or ``FACEPIPE_TLS``), presenting the process's own
certificate when one is configured (mutual TLS)."""

from __future__ import annotations

import collections
from typing import Any

import grpc

from facepipe import tls as tls_files
from facepipe.config import TlsSettings

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


def _tls(tls: TlsSettings | None) -> TlsSettings:
    return TlsSettings.from_env() if tls is None else tls


def channel(
    addr: str, key: str | None, options: Options = None, tls: TlsSettings | None = None
) -> grpc.Channel:
    """A blocking channel to ``addr`` whose calls carry ``key`` (none: no key), with TLS
    when ``tls`` (default: the environment's TLS settings) asks for it."""
    tls = _tls(tls)
    if tls.client_tls:
        opts = [*(options or ()), *tls_files.channel_options(tls)]
        base = grpc.secure_channel(addr, tls_files.channel_credentials(tls), options=opts)
    else:
        base = grpc.insecure_channel(addr, options=options)
    return grpc.intercept_channel(base, _SyncKeyInterceptor(key)) if key else base


def _aio_details(d: grpc.aio.ClientCallDetails, metadata: tuple) -> grpc.aio.ClientCallDetails:
    merged = grpc.aio.Metadata(*(d.metadata or ()), *metadata)
    return grpc.aio.ClientCallDetails(d.method, d.timeout, merged, d.credentials, d.wait_for_ready)


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, key: str) -> None:
        self.metadata = key_metadata(key)

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_aio_details(details, self.metadata), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, key: str) -> None:
        self.metadata = key_metadata(key)

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(_aio_details(details, self.metadata), request)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, key: str) -> None:
        self.metadata = key_metadata(key)

    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(_aio_details(details, self.metadata), request_iterator)


def aio_channel(
    addr: str, key: str | None, options: Options = None, tls: TlsSettings | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to ``addr`` whose calls carry ``key`` (none: no key), with TLS
    when ``tls`` (default: the environment's TLS settings) asks for it."""
    tls = _tls(tls)
    interceptors = [_AioUnaryUnary(key), _AioUnaryStream(key), _AioStreamStream(key)] if key else None
    if tls.client_tls:
        opts = [*(options or ()), *tls_files.channel_options(tls)]
        creds = tls_files.channel_credentials(tls)
        return grpc.aio.secure_channel(addr, creds, options=opts, interceptors=interceptors)
    return grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)
