"""Per-site request scheduling: bounded concurrency and a delay between request starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Host:
    slots: asyncio.Semaphore
    delay: float
    next_start: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class HostScheduler:
    """At most ``concurrency`` requests in flight per key, and request starts at
    least ``delay`` seconds apart. :meth:`defer` pushes a key's next start back,
    e.g. for a server's Retry-After."""

    def __init__(self, concurrency: int, delay: float) -> None:
        self.concurrency = concurrency
        self.delay = delay
        self._hosts: dict[str, _Host] = {}

    def _host(self, key: str) -> _Host:
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(asyncio.Semaphore(self.concurrency), self.delay)
        return host

    def set_delay(self, key: str, delay: float) -> None:
        self._host(key).delay = max(self.delay, delay)

    def defer(self, key: str, seconds: float) -> None:
        host = self._host(key)
        host.next_start = max(host.next_start, asyncio.get_running_loop().time() + seconds)

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        host = self._host(key)
        loop = asyncio.get_running_loop()
        async with host.slots:
            async with host.lock:
                # Loop: a defer() may land while we sleep.
                while (wait := host.next_start - loop.time()) > 0:  # noqa: ASYNC110
                    await asyncio.sleep(wait)
                host.next_start = loop.time() + host.delay
            yield
