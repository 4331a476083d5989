"""What the web service reaches: the gRPC services (one shared channel per address,
every call carrying the caller's key as metadata), the object store (thumbnails and
uploads), and the HTTP side ports of the services for the system page."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx

from facepipe.auth.client import aio_channel, key_metadata
from facepipe.config import Settings, WebSettings
from facepipe.models.registry import pack_thresholds
from facepipe.runtime.server import GRPC_OPTIONS
from facepipe.storage import open_object_store
from facepipe.v1 import (
    crawler_pb2_grpc,
    extractor_pb2_grpc,
    indexer_pb2,
    indexer_pb2_grpc,
    persons_pb2_grpc,
)

# How long a key's access to a tenant, once confirmed by the indexer, is trusted for
# serving stored objects (thumbnails) without asking again.
ACCESS_CACHE_S = 30.0


@dataclass
class WebDeps:
    """Everything a request handler needs; made once per process."""

    settings: Settings
    objects: Any  # facepipe.storage ObjectStore
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    http: httpx.AsyncClient | None = None
    # sha256(key) + tenant -> monotonic time the indexer last confirmed the access.
    confirmed: dict[str, float] = field(default_factory=dict)
    # The model pack's thresholds (search_min_score, ...), when the pack is here to read.
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def web(self) -> WebSettings:
        return self.settings.web

    def channel(self, service: str) -> grpc.aio.Channel:
        """The shared channel to ``service``; it sends no key of its own."""
        addr = self.web.backend(service)
        if addr not in self.channels:
            self.channels[addr] = aio_channel(addr, None, GRPC_OPTIONS, self.settings.tls)
        return self.channels[addr]

    def indexer(self) -> indexer_pb2_grpc.IndexerStub:
        return indexer_pb2_grpc.IndexerStub(self.channel("indexer"))

    def extractor(self) -> extractor_pb2_grpc.ExtractorStub:
        return extractor_pb2_grpc.ExtractorStub(self.channel("extractor"))

    def crawler(self) -> crawler_pb2_grpc.CrawlerStub:
        return crawler_pb2_grpc.CrawlerStub(self.channel("crawler"))

    def persons(self) -> persons_pb2_grpc.PersonsStub:
        return persons_pb2_grpc.PersonsStub(self.channel("persons"))

    def call_options(self, key: str) -> dict[str, Any]:
        """The keyword arguments of every gRPC call made for the holder of ``key``."""
        return {"metadata": key_metadata(key), "timeout": self.web.request_timeout_s}

    async def confirm_access(self, key: str, tenant: str) -> None:
        """Raises grpc.aio.AioRpcError unless ``key`` may read ``tenant`` (the indexer
        decides, as for a search); a confirmation is reused for ACCESS_CACHE_S."""
        token = hashlib.sha256(f"{key}\0{tenant}".encode()).hexdigest()
        now = time.monotonic()
        if now - self.confirmed.get(token, -ACCESS_CACHE_S) < ACCESS_CACHE_S:
            return
        await self.indexer().GetStats(indexer_pb2.GetStatsRequest(tenant_id=tenant), **self.call_options(key))
        if len(self.confirmed) > 10_000:  # bounded: forget the oldest half
            for old in sorted(self.confirmed, key=self.confirmed.__getitem__)[:5_000]:
                del self.confirmed[old]
        self.confirmed[token] = now

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()
        self.channels.clear()
        if self.http is not None:
            await self.http.aclose()


def open_deps(settings: Settings) -> WebDeps:
    return WebDeps(
        settings=settings,
        objects=open_object_store(settings.objects),
        http=httpx.AsyncClient(timeout=2.0),
        thresholds=pack_thresholds(settings.resolved_models_dir),
    )


async def to_thread(fn, *args):
    """Blocking object-store work off the event loop."""
    return await asyncio.to_thread(fn, *args)
