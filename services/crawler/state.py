"""Crawl state shared by crawler replicas: seen URLs, per-site strategy, job counters.

The engine only talks to :class:`CrawlState`; :class:`MemoryCrawlState` serves one
process, a NATS KV implementation serves a fleet.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, Protocol

Strategy = Literal["static", "render"]
SeenKind = Literal["page", "image"]


class CrawlState(Protocol):
    async def add_seen(self, job_id: str, kind: SeenKind, url: str) -> bool:
        """Marks ``url`` seen for the job; True when it was not seen before."""

    async def forget_seen(self, job_id: str, kind: SeenKind, url: str) -> None:
        """Undoes :meth:`add_seen`, for work that failed and must be done again."""

    async def get_strategy(self, site: str) -> Strategy | None:
        """How pages of ``site`` are fetched, once learned."""

    async def set_strategy(self, site: str, strategy: Strategy) -> None: ...

    async def incr(self, job_id: str, counter: str, amount: int = 1) -> int:
        """Adds to a job counter and returns the new value."""

    async def counters(self, job_id: str) -> dict[str, int]: ...


class MemoryCrawlState:
    """In-process :class:`CrawlState`."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._strategies: dict[str, Strategy] = {}
        self._counters: dict[str, Counter[str]] = {}

    async def add_seen(self, job_id: str, kind: SeenKind, url: str) -> bool:
        seen = self._seen.setdefault((job_id, kind), set())
        if url in seen:
            return False
        seen.add(url)
        return True

    async def forget_seen(self, job_id: str, kind: SeenKind, url: str) -> None:
        self._seen.get((job_id, kind), set()).discard(url)

    async def get_strategy(self, site: str) -> Strategy | None:
        return self._strategies.get(site)

    async def set_strategy(self, site: str, strategy: Strategy) -> None:
        if strategy not in ("static", "render"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self._strategies[site] = strategy

    async def incr(self, job_id: str, counter: str, amount: int = 1) -> int:
        counts = self._counters.setdefault(job_id, Counter())
        counts[counter] += amount
        return counts[counter]

    async def counters(self, job_id: str) -> dict[str, int]:
        return dict(self._counters.get(job_id, {}))
