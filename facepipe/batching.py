"""Dynamic batching: items from concurrent callers are grouped into batches of
at most ``max_batch`` within ``max_wait_ms``. When the backend fails on a batch
(a provider error such as out of memory) the batch limit halves and the items
are retried in smaller batches; after a run of good batches it doubles again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from facepipe.runtime import metrics

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("facepipe.batching")


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        concurrency: int = 2,
        recover_after: int = 20,
        name: str = "model",
        service: str = "facepipe",
    ) -> None:
        self.process = process
        self.max_batch = max(1, max_batch)
        self.limit = self.max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.recover_after = recover_after
        self.name, self.service = name, service
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._good_batches = 0
        self._task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self.backoffs = 0
        metrics.BATCH_LIMIT.labels(service, name).set(self.limit)
        metrics.BACKOFFS.labels(service, name)  # exported at 0, so increase() sees the first backoff

    async def submit(self, item: T) -> R:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._collect(), name=f"batcher-{self.name}")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def submit_many(self, items: list[T]) -> list[R]:
        return list(await asyncio.gather(*(self.submit(i) for i in items)))

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        for task in list(self._inflight):
            await asyncio.gather(task, return_exceptions=True)

    async def _collect(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            await self._slots.acquire()
            task = asyncio.create_task(self._run(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            await self._run_with_backoff(batch)
        except Exception as exc:  # noqa: BLE001 - e.g. a wrong result count; callers must not wait forever
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            self._slots.release()

    async def _run_with_backoff(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        # A backoff elsewhere may have lowered the limit since this batch was formed.
        if len(batch) > self.limit:
            # One step for all chunks: the limit can drop again while they run.
            step = self.limit
            for i in range(0, len(batch), step):
                await self._run_with_backoff(batch[i : i + step])
            return
        items = [item for item, _ in batch]
        try:
            results = await self.process(items)
        except Exception as exc:  # noqa: BLE001 - provider errors trigger the backoff
            if len(batch) > 1:
                self._back_off(len(batch), exc)
                await self._run_with_backoff(batch)
                return
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        if len(results) != len(batch):
            raise ValueError(f"{self.name}: {len(results)} results for a batch of {len(batch)}")
        metrics.BATCH_SIZE.labels(self.service, self.name).observe(len(batch))
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)
        self._recover()

    def _back_off(self, size: int, exc: Exception) -> None:
        new_limit = max(1, min(self.limit, size) // 2)
        self.limit = new_limit
        self._good_batches = 0
        self.backoffs += 1
        metrics.BACKOFFS.labels(self.service, self.name).inc()
        metrics.BATCH_LIMIT.labels(self.service, self.name).set(self.limit)
        log.warning(
            "batch failed, halving batch size",
            extra={"model": self.name, "limit": new_limit, "error": str(exc)},
        )

    def _recover(self) -> None:
        if self.limit >= self.max_batch:
            return
        self._good_batches += 1
        if self._good_batches >= self.recover_after:
            self.limit = min(self.max_batch, self.limit * 2)
            self._good_batches = 0
            metrics.BATCH_LIMIT.labels(self.service, self.name).set(self.limit)
            log.info("batch size recovered", extra={"model": self.name, "limit": self.limit})
