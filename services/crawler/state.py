"""Crawl state shared by crawler replicas: seen URLs, per-site strategy, job counters.

The engine only talks to :class:`CrawlState`; :class:`MemoryCrawlState` serves one
process, :class:`NatsCrawlState` (NATS KV) serves a fleet and lets a job resume
on another replica: every seen URL keeps what is needed to redo it (a page's
depth and site, an image's candidate) until it is marked done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

Strategy = Literal["static", "render"]
SeenKind = Literal["page", "image"]
STRATEGIES = ("static", "render")
# Compare-and-set attempts on a counter before giving up (only under heavy contention).
_CAS_ATTEMPTS = 50
# Seconds to list a job's keys; a scan that takes longer means NATS is in trouble.
_SCAN_TIMEOUT = 30.0


@dataclass
class SeenEntry:
    url: str
    done: bool
    record: dict[str, Any] = field(default_factory=dict)


class CrawlState(Protocol):
    async def add_seen(
        self, job_id: str, kind: SeenKind, url: str, record: dict[str, Any] | None = None
    ) -> bool:
        """Marks ``url`` seen for the job; True when it was not seen before.
        ``record`` is kept with it until :meth:`mark_done`, to redo the work on resume."""

    async def mark_done(self, job_id: str, kind: SeenKind, url: str) -> None:
        """The work for a seen ``url`` is finished; a resumed job does not redo it."""

    async def forget_seen(self, job_id: str, kind: SeenKind, url: str) -> None:
        """Undoes :meth:`add_seen`, for work that failed and must be done again."""

    async def entries(self, job_id: str, kind: SeenKind) -> list[SeenEntry]:
        """Everything seen for the job so far: where a resumed job picks up."""

    async def get_strategy(self, site: str) -> Strategy | None:
        """How pages of ``site`` are fetched, once learned."""

    async def set_strategy(self, site: str, strategy: Strategy) -> None: ...

    async def incr(self, job_id: str, counter: str, amount: int = 1) -> int:
        """Adds to a job counter and returns the new value."""

    async def counters(self, job_id: str) -> dict[str, int]: ...


class MemoryCrawlState:
    """In-process :class:`CrawlState`."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], dict[str, SeenEntry]] = {}
        self._strategies: dict[str, Strategy] = {}
        self._counters: dict[str, Counter[str]] = {}

    async def add_seen(
        self, job_id: str, kind: SeenKind, url: str, record: dict[str, Any] | None = None
    ) -> bool:
        seen = self._seen.setdefault((job_id, kind), {})
        if url in seen:
            return False
        seen[url] = SeenEntry(url, False, dict(record or {}))
        return True

    async def mark_done(self, job_id: str, kind: SeenKind, url: str) -> None:
        entry = self._seen.get((job_id, kind), {}).get(url)
        if entry is not None:
            entry.done = True

    async def forget_seen(self, job_id: str, kind: SeenKind, url: str) -> None:
        self._seen.get((job_id, kind), {}).pop(url, None)

    async def entries(self, job_id: str, kind: SeenKind) -> list[SeenEntry]:
        return list(self._seen.get((job_id, kind), {}).values())

    async def get_strategy(self, site: str) -> Strategy | None:
        return self._strategies.get(site)

    async def set_strategy(self, site: str, strategy: Strategy) -> None:
        _check_strategy(strategy)
        self._strategies[site] = strategy

    async def incr(self, job_id: str, counter: str, amount: int = 1) -> int:
        counts = self._counters.setdefault(job_id, Counter())
        counts[counter] += amount
        return counts[counter]

    async def counters(self, job_id: str) -> dict[str, int]:
        return dict(self._counters.get(job_id, {}))


class NatsCrawlState:
    """:class:`CrawlState` in a NATS KV bucket (``facepipe-crawl``), shared by replicas.

    Keys (URLs and sites are hashed, so every key is a valid KV key)::

        seen.<job>.<kind>.<sha256(url)[:40]>   {"url", "done", "record"}
        count.<job>.<counter>                  decimal
        strategy.<sha256(site)[:40]>           {"site", "strategy"}

    ``add_seen`` is an atomic create, so replicas working on one job never both
    take a URL. Keys this process knows exist are answered locally.
    """

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str) -> None:
        self.js = js
        self.kv = kv
        self.bucket = bucket
        self._known: set[str] = set()
        self._records: dict[str, dict[str, Any]] = {}
        # Counter values and revisions this process wrote last: one write per incr when alone.
        self._counts: dict[str, tuple[int, int]] = {}
        self._render_sites: set[str] = set()

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str) -> NatsCrawlState:
        return cls(js, await js.key_value(bucket), bucket)

    @staticmethod
    def seen_key(job_id: str, kind: SeenKind, url: str) -> str:
        return f"seen.{job_id}.{kind}.{_digest(url)}"

    async def add_seen(
        self, job_id: str, kind: SeenKind, url: str, record: dict[str, Any] | None = None
    ) -> bool:
        key = self.seen_key(job_id, kind, url)
        if key in self._known:
            return False
        value = {"url": url, "done": False, "record": record or {}}
        try:
            await self.kv.create(key, _dump(value))
        except KeyWrongLastSequenceError:
            self._known.add(key)
            return False
        self._known.add(key)
        self._records[key] = value
        return True

    async def mark_done(self, job_id: str, kind: SeenKind, url: str) -> None:
        key = self.seen_key(job_id, kind, url)
        value = self._records.pop(key, None)
        if value is None:
            entry = await self._get(key)
            value = json.loads(entry.value) if entry else {"url": url, "record": {}}
        await self.kv.put(key, _dump({**value, "done": True}))
        self._known.add(key)

    async def forget_seen(self, job_id: str, kind: SeenKind, url: str) -> None:
        key = self.seen_key(job_id, kind, url)
        self._known.discard(key)
        self._records.pop(key, None)
        await self.kv.delete(key)

    async def entries(self, job_id: str, kind: SeenKind) -> list[SeenEntry]:
        out: list[SeenEntry] = []
        for key, data in await self._scan(f"seen.{job_id}.{kind}.*"):
            doc = json.loads(data)
            entry = SeenEntry(str(doc["url"]), bool(doc.get("done")), dict(doc.get("record") or {}))
            self._known.add(key)
            if not entry.done:
                self._records[key] = {"url": entry.url, "record": entry.record}
            out.append(entry)
        return out

    async def get_strategy(self, site: str) -> Strategy | None:
        if site in self._render_sites:  # a site that needs rendering never stops needing it
            return "render"
        entry = await self._get(f"strategy.{_digest(site)}")
        strategy = json.loads(entry.value).get("strategy") if entry else None
        if strategy == "render":
            self._render_sites.add(site)
        return strategy if strategy in STRATEGIES else None

    async def set_strategy(self, site: str, strategy: Strategy) -> None:
        _check_strategy(strategy)
        await self.kv.put(f"strategy.{_digest(site)}", _dump({"site": site, "strategy": strategy}))
        if strategy == "render":
            self._render_sites.add(site)

    async def incr(self, job_id: str, counter: str, amount: int = 1) -> int:
        key = f"count.{job_id}.{_check_counter(counter)}"
        for _ in range(_CAS_ATTEMPTS):
            cached = self._counts.get(key)
            if cached is None:
                entry = await self._get(key)
                cached = (int(entry.value), entry.revision) if entry else (0, 0)
            current, revision = cached
            data = str(current + amount).encode()
            try:
                if revision:
                    revision = await self.kv.update(key, data, last=revision)
                else:
                    revision = await self.kv.create(key, data)
            except KeyWrongLastSequenceError:
                self._counts.pop(key, None)  # another replica counted too: read it again
                continue
            self._counts[key] = (current + amount, revision)
            return current + amount
        raise RuntimeError(f"could not update {key}: too much contention")

    async def counters(self, job_id: str) -> dict[str, int]:
        prefix = f"count.{job_id}."
        return {key[len(prefix) :]: int(data) for key, data in await self._scan(prefix + "*")}

    async def purge_job(self, job_id: str) -> None:
        """Drops a finished job's seen URLs and counters (the job record keeps the totals)."""
        for prefix in ("seen", "count"):
            await self.js.purge_stream(f"KV_{self.bucket}", subject=f"$KV.{self.bucket}.{prefix}.{job_id}.>")
        self._known = {k for k in self._known if f".{job_id}." not in k}

    async def _get(self, key: str) -> KeyValue.Entry | None:
        try:
            return await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None

    async def _scan(self, pattern: str) -> list[tuple[str, bytes]]:
        """The current value of every key matching ``pattern`` (deleted keys left out)."""
        watcher = await self.kv.watch(pattern, ignore_deletes=True)
        found: dict[str, bytes] = {}
        try:
            async with asyncio.timeout(_SCAN_TIMEOUT):
                async for entry in watcher:
                    if entry is None:
                        break
                    found[entry.key] = entry.value
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
        return list(found.items())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")


def _check_counter(counter: str) -> str:
    if not counter.replace("_", "").isalnum():
        raise ValueError(f"invalid counter name {counter!r}")
    return counter
