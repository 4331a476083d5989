"""Crawl state shared by crawler replicas: seen URLs, per-site strategy, job counters.

The engine only talks to :class:`CrawlState`; :class:`MemoryCrawlState` serves one
process, :class:`NatsCrawlState` (NATS KV) serves a fleet and lets a job resume
on another replica: every seen URL keeps what is needed to redo it (a page's
depth and site, an image's candidate) until it is marked done.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from facepipe.bus.kvwatch import scan_kv

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

    async def add_seen_many(
        self, job_id: str, kind: SeenKind, items: Sequence[tuple[str, dict[str, Any] | None]]
    ) -> list[bool]:
        """:meth:`add_seen` for each ``(url, record)``, all written before it returns;
        one flag per item (a URL twice in ``items`` is new at most once)."""

    async def mark_done(self, job_id: str, kind: SeenKind, url: str) -> None:
        """The work for a seen ``url`` is finished; a resumed job does not redo it."""

    async def mark_done_many(self, job_id: str, kind: SeenKind, urls: Sequence[str]) -> None:
        """:meth:`mark_done` for each URL, all written before it returns."""

    async def forget_seen(self, job_id: str, kind: SeenKind, url: str) -> None:
        """Undoes :meth:`add_seen`, for work that failed and must be done again."""

    async def forget_seen_many(self, job_id: str, kind: SeenKind, urls: Sequence[str]) -> None:
        """:meth:`forget_seen` for each URL."""

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

    async def add_seen_many(
        self, job_id: str, kind: SeenKind, items: Sequence[tuple[str, dict[str, Any] | None]]
    ) -> list[bool]:
        return [await self.add_seen(job_id, kind, url, record) for url, record in items]

    async def mark_done(self, job_id: str, kind: SeenKind, url: str) -> None:
        entry = self._seen.get((job_id, kind), {}).get(url)
        if entry is not None:
            entry.done = True

    async def mark_done_many(self, job_id: str, kind: SeenKind, urls: Sequence[str]) -> None:
        for url in urls:
            await self.mark_done(job_id, kind, url)

    async def forget_seen(self, job_id: str, kind: SeenKind, url: str) -> None:
        self._seen.get((job_id, kind), {}).pop(url, None)

    async def forget_seen_many(self, job_id: str, kind: SeenKind, urls: Sequence[str]) -> None:
        for url in urls:
            await self.forget_seen(job_id, kind, url)

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
        done.<job>.<kind>.<sha256(batch)[:40]> {"keys": [<sha256(url)[:40]>, ...]}
        count.<job>.<counter>                  decimal
        strategy.<sha256(site)[:40]>           {"site", "strategy"}

    ``add_seen`` is an atomic create, so replicas working on one job never both
    take a URL. Keys this process knows exist are answered locally. The ``*_many``
    calls send their writes together and wait for all the acknowledgements at once:
    one round trip for a page's images instead of one per image; ``mark_done_many``
    writes one ``done`` key for the whole batch, which :meth:`entries` reads along
    with the ``seen`` keys. Counter increments made while a write of the same
    counter is in flight go out together in the next.
    """

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str) -> None:
        self.js = js
        self.kv = kv
        self.bucket = bucket
        self._known: set[str] = set()
        self._records: dict[str, dict[str, Any]] = {}
        # Counter values and revisions this process wrote last: one write per incr when alone.
        self._counts: dict[str, tuple[int, int]] = {}
        # Increments not yet written, and one lock per counter so this process's own
        # writes never race each other's compare-and-set.
        self._pending_counts: Counter[str] = Counter()
        self._count_locks: dict[str, asyncio.Lock] = {}
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

    async def add_seen_many(
        self, job_id: str, kind: SeenKind, items: Sequence[tuple[str, dict[str, Any] | None]]
    ) -> list[bool]:
        first: dict[str, int] = {}
        for i, (url, _) in enumerate(items):
            first.setdefault(url, i)
        taken = await _gather_all(*(self.add_seen(job_id, kind, *items[i]) for i in first.values()))
        fresh = dict(zip(first, taken, strict=True))
        return [fresh[url] and first[url] == i for i, (url, _) in enumerate(items)]

    async def mark_done_many(self, job_id: str, kind: SeenKind, urls: Sequence[str]) -> None:
        unique = list(dict.fromkeys(urls))
        if len(unique) <= 1:
            for url in unique:
                await self.mark_done(job_id, kind, url)
            return
        keys = [self.seen_key(job_id, kind, url) for url in unique]
        digests = [key.rsplit(".", 1)[1] for key in keys]
        batch = _digest("\n".join(sorted(digests)))
        await self.kv.put(f"done.{job_id}.{kind}.{batch}", _dump({"keys": digests}))
        for key in keys:
            self._records.pop(key, None)
            self._known.add(key)

    async def forget_seen_many(self, job_id: str, kind: SeenKind, urls: Sequence[str]) -> None:
        await _gather_all(*(self.forget_seen(job_id, kind, url) for url in dict.fromkeys(urls)))

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
        done: set[str] = set()
        for _, data in await self._scan(f"done.{job_id}.{kind}.*"):
            done.update(json.loads(data)["keys"])
        out: list[SeenEntry] = []
        for key, data in await self._scan(f"seen.{job_id}.{kind}.*"):
            doc = json.loads(data)
            finished = bool(doc.get("done")) or key.rsplit(".", 1)[1] in done
            entry = SeenEntry(str(doc["url"]), finished, dict(doc.get("record") or {}))
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
        self._pending_counts[key] += amount
        async with self._count_locks.setdefault(key, asyncio.Lock()):
            # An earlier holder may have written this increment along with its own.
            pending = self._pending_counts.pop(key, 0)
            if pending or key not in self._counts:
                try:
                    await self._add_count(key, pending)
                except BaseException:
                    self._pending_counts[key] += pending  # the next caller tries again
                    raise
            return self._counts[key][0]

    async def _add_count(self, key: str, amount: int) -> None:
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
            return
        raise RuntimeError(f"could not update {key}: too much contention")

    async def counters(self, job_id: str) -> dict[str, int]:
        prefix = f"count.{job_id}."
        return {key[len(prefix) :]: int(data) for key, data in await self._scan(prefix + "*")}

    async def purge_job(self, job_id: str) -> None:
        """Drops a finished job's seen URLs and counters (the job record keeps the totals)."""
        for prefix in ("seen", "done", "count"):
            await self.js.purge_stream(f"KV_{self.bucket}", subject=f"$KV.{self.bucket}.{prefix}.{job_id}.>")
        self._known = {k for k in self._known if f".{job_id}." not in k}

    async def _get(self, key: str) -> KeyValue.Entry | None:
        try:
            return await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None

    async def _scan(self, pattern: str) -> list[tuple[str, bytes]]:
        """The current value of every key matching ``pattern`` (deleted keys left out)."""
        return list((await scan_kv(self.js, self.kv, self.bucket, pattern, within_s=_SCAN_TIMEOUT)).items())


async def _gather_all(*writes: Awaitable[Any]) -> list[Any]:
    """Awaits the writes together; all of them end before the first error is raised."""
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


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
