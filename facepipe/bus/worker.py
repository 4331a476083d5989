"""The durable stage worker: pulls a stage's messages, handles them concurrently,
retries transient failures with a growing delay and dead-letters the rest.

Messages that fail ``max_deliver`` times, and malformed ones at once, go to
``facepipe.dlq.<stage>`` with headers naming the stage, the error and the
delivery count.

The worker also reconciles its consumer with the work queue. A delivery that no
handler finishes (the replica was killed holding it, nats-server crashed with it
in flight, its ack was lost) still counts against ``max_deliver``; when the last
one is lost that way, JetStream stops delivering the message but, with work-queue
retention, keeps it in the stream for ever, and nobody dead-letters it. Such
orphans (in the stream, at or below what the consumer delivered, not awaiting an
ack) are published again as new messages, ``MAX_ORPHAN_REDELIVERIES`` times at
most, then dead-lettered with reason ``orphaned``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from facepipe.bus.topology import (
    HDR_DELIVERIES,
    HDR_ERROR,
    HDR_ORPHANED,
    HDR_REASON,
    HDR_STAGE,
    HDR_SUBJECT,
    STREAM,
    SUBJECT_DLQ,
    StageSpec,
    ensure_consumer,
)
from facepipe.runtime import metrics
from facepipe.runtime.tracing import extract, tracer

log = logging.getLogger("facepipe.bus")

MAX_ORPHAN_REDELIVERIES = 3
RECONCILE_INTERVAL_S = 5.0
# Orphans handled per round, so that a huge backlog never stalls the loop.
MAX_ORPHANS_PER_ROUND = 256


class PermanentError(Exception):
    """A message that can never succeed (malformed, invalid): dead-lettered at once."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class StageStats:
    """Counters and timings for /stats."""

    counters: dict[str, int] = field(
        default_factory=lambda: {
            "msgs_acked": 0,
            "msgs_retried": 0,
            "msgs_dlq": 0,
            "msgs_orphaned": 0,
            "faces_processed": 0,
            "faces_rejected": 0,
            "faces_dup_skipped": 0,
        }
    )
    _timings: deque = field(default_factory=lambda: deque(maxlen=2048))

    def add(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def observe(self, seconds: float) -> None:
        self._timings.append(seconds)

    def snapshot(self) -> dict[str, Any]:
        t = sorted(self._timings)

        def pct(q: float) -> float:
            return round(t[min(len(t) - 1, int(q * len(t)))] * 1000, 2) if t else 0.0

        timing = {"count": len(t), "p50_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}
        return {**self.counters, "timings": timing}


@dataclass
class Delivery:
    msg: Msg
    payload: Any
    deliveries: int


Decoder = Callable[[Msg], Any]
Handler = Callable[[Delivery], Awaitable[None]]
DeadHandler = Callable[[Msg, Any, str, str], Awaitable[None]]


class StageWorker:
    """Pulls from a stage's durable consumer and handles messages concurrently.

    ``handler`` raising :class:`PermanentError` dead-letters the message at once;
    any other exception is retried with a growing delay until ``max_deliver``,
    then dead-lettered. Long work keeps its message with in-progress heartbeats.
    """

    def __init__(
        self,
        nc: NATS,
        stage: StageSpec,
        decode: Decoder,
        handler: Handler,
        on_dead: DeadHandler | None = None,
        max_inflight: int = 16,
        service: str | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.stage = stage
        self.decode = decode
        self.handler = handler
        self.on_dead = on_dead
        self.max_inflight = max_inflight
        self.service = service or stage.name
        self.stats = StageStats()
        self._sub = None
        self._task: asyncio.Task | None = None
        self._lag_task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        # Orphans seen in the previous round: acted on only when seen twice, since the
        # server removes an acked message from the stream a moment after the ack.
        self._suspects: set[int] = set()

    async def start(self) -> None:
        await ensure_consumer(self.js, self.stage)
        self._sub = await self.js.pull_subscribe_bind(durable=self.stage.name, stream=STREAM)
        self._task = asyncio.create_task(self._run(), name=f"stage-{self.stage.name}")
        self._lag_task = asyncio.create_task(self._watch_lag())

    async def drain(self, grace: float = 30.0) -> None:
        """Stops fetching and waits for in-flight messages to be acked or nak'ed."""
        self._stopping.set()
        if self._task:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=5)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace)
        if self._lag_task:
            self._lag_task.cancel()
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            free = self.max_inflight - len(self._inflight)
            if free <= 0:
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await self._sub.fetch(free, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:  # noqa: BLE001 - connection trouble: back off and retry
                if self._stopping.is_set():
                    break
                log.warning("fetch failed", extra={"stage": self.stage.name, "error": str(exc)})
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._process(msg))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _process(self, msg: Msg) -> None:
        start = time.perf_counter()
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        payload = None
        span_name = f"{self.stage.name} {msg.subject}"
        try:
            with tracer().start_as_current_span(span_name, context=extract(msg.headers or {})) as span:
                span.set_attribute("messaging.delivery_count", deliveries)
                try:
                    payload = self.decode(msg)
                    await self.handler(Delivery(msg=msg, payload=payload, deliveries=deliveries))
                except PermanentError as exc:
                    await self._dead_letter(msg, payload, str(exc), exc.reason, deliveries)
                    return
                except Exception as exc:  # noqa: BLE001 - transient until max_deliver
                    if deliveries >= self.stage.max_deliver:
                        await self._dead_letter(
                            msg, payload, f"{type(exc).__name__}: {exc}", "max_deliver", deliveries
                        )
                    else:
                        log.warning(
                            "retrying message",
                            extra={"stage": self.stage.name, "deliveries": deliveries, "error": str(exc)},
                        )
                        self.stats.add("msgs_retried")
                        metrics.MESSAGES.labels(self.service, self.stage.name, "retried").inc()
                        await msg.nak(delay=min(30.0, 0.5 * 2 ** (deliveries - 1)))
                    return
                await msg.ack_sync()
                self.stats.add("msgs_acked")
                metrics.MESSAGES.labels(self.service, self.stage.name, "acked").inc()
                elapsed = time.perf_counter() - start
                self.stats.observe(elapsed)
                metrics.STAGE_LATENCY.labels(self.service, self.stage.name).observe(elapsed)
        except Exception:  # noqa: BLE001 - an ack/nak that failed is redelivered by JetStream
            log.exception("message handling failed", extra={"stage": self.stage.name})
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, msg: Msg) -> None:
        interval = max(1.0, self.stage.ack_wait_s / 3)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            while True:
                await asyncio.sleep(interval)
                await msg.in_progress()

    async def _dead_letter(self, msg: Msg, payload: Any, error: str, reason: str, deliveries: int) -> None:
        headers = {k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"}
        headers.update(
            {
                HDR_STAGE: self.stage.name,
                HDR_ERROR: error[:1000].replace("\r", " ").replace("\n", " "),
                HDR_REASON: reason,
                HDR_DELIVERIES: str(deliveries),
                HDR_SUBJECT: msg.subject,
            }
        )
        await self.js.publish(f"{SUBJECT_DLQ}.{self.stage.name}", msg.data, headers=headers)
        await msg.term()
        self.stats.add("msgs_dlq")
        metrics.MESSAGES.labels(self.service, self.stage.name, "dead_lettered").inc()
        metrics.DLQ.labels(self.service, self.stage.name, reason).inc()
        log.error(
            "dead-lettered",
            extra={"stage": self.stage.name, "reason": reason, "error": error, "deliveries": deliveries},
        )
        if self.on_dead is not None:
            with contextlib.suppress(Exception):
                await self.on_dead(msg, payload, error, reason)

    async def _watch_lag(self) -> None:
        while True:
            try:
                info = await self.js.consumer_info(STREAM, self.stage.name)
                metrics.CONSUMER_PENDING.labels(self.service, self.stage.name).set(info.num_pending or 0)
                metrics.CONSUMER_ACK_PENDING.labels(self.service, self.stage.name).set(
                    info.num_ack_pending or 0
                )
                # Queue depth for /stats (the web service's system page), as of this round.
                self.stats.counters["queue_pending"] = info.num_pending or 0
                self.stats.counters["queue_ack_pending"] = info.num_ack_pending or 0
                if not self._stopping.is_set():
                    await self.reconcile(info)
            except Exception as exc:  # noqa: BLE001 - NATS may be away; next round
                log.debug("reconcile failed", extra={"stage": self.stage.name, "error": str(exc)})
            await asyncio.sleep(RECONCILE_INTERVAL_S)

    async def find_orphans(self, info: js_api.ConsumerInfo | None = None) -> set[int]:
        """Stream sequences of the stage's messages that its consumer will never deliver:
        at or below its ack floor, or below what it delivered when nothing awaits an ack."""
        info = info or await self.js.consumer_info(STREAM, self.stage.name)
        queued, first_seq = 0, 0
        for subject in self.stage.subjects:
            stream = await self.js.stream_info(STREAM, subjects_filter=subject)
            queued += sum((stream.state.subjects or {}).values())
            first_seq = stream.state.first_seq or 1
        if queued <= (info.num_pending or 0) + (info.num_ack_pending or 0):
            return set()
        limit = info.ack_floor.stream_seq or 0
        if not info.num_ack_pending:
            limit = max(limit, info.delivered.stream_seq or 0)
        found: set[int] = set()
        for subject in self.stage.subjects:
            seq = first_seq
            while seq <= limit and len(found) < MAX_ORPHANS_PER_ROUND:
                try:
                    msg = await self.js.get_msg(STREAM, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    break
                if msg.seq is None or msg.seq > limit:
                    break
                found.add(msg.seq)
                seq = msg.seq + 1
        return found

    async def reconcile(self, info: js_api.ConsumerInfo | None = None) -> int:
        """One round: orphans seen in the previous round too are put back in the queue
        (or dead-lettered); returns how many."""
        found = await self.find_orphans(info)
        confirmed, self._suspects = found & self._suspects, found - self._suspects
        for seq in sorted(confirmed):
            await self._requeue_orphan(seq)
        return len(confirmed)

    async def _requeue_orphan(self, seq: int) -> None:
        try:
            msg = await self.js.get_msg(STREAM, seq=seq)
        except NotFoundError:
            return  # acked or removed meanwhile
        headers = {k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"}
        times = int(headers.get(HDR_ORPHANED, "0") or 0) + 1
        subject = msg.subject or self.stage.subject
        if times > MAX_ORPHAN_REDELIVERIES:
            action = "dead_lettered"
            headers.update(
                {
                    HDR_STAGE: self.stage.name,
                    HDR_ERROR: f"its deliveries were lost {times - 1} times over",
                    HDR_REASON: "orphaned",
                    HDR_DELIVERIES: str(self.stage.max_deliver),
                    HDR_SUBJECT: subject,
                }
            )
            await self.js.publish(f"{SUBJECT_DLQ}.{self.stage.name}", msg.data or b"", headers=headers)
            metrics.DLQ.labels(self.service, self.stage.name, "orphaned").inc()
            self.stats.add("msgs_dlq")
        else:
            action = "redelivered"
            # A message id of its own: replicas reconciling at once publish it once.
            headers.update({HDR_ORPHANED: str(times), "Nats-Msg-Id": f"orphan-{seq}-{times}"})
            await self.js.publish(subject, msg.data or b"", headers=headers)
        with contextlib.suppress(NotFoundError):
            await self.js.delete_msg(STREAM, seq)
        self.stats.add("msgs_orphaned")
        metrics.ORPHANS.labels(self.service, self.stage.name, action).inc()
        log.warning(
            "orphaned stage message requeued"
            if action == "redelivered"
            else "orphaned stage message dead-lettered",
            extra={"stage": self.stage.name, "seq": seq, "times": times},
        )
