"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def ordered_map(
    source: AsyncIterator[T], fn: Callable[[T], Awaitable[R]], max_inflight: int = 4
) -> AsyncIterator[R]:
    """Runs ``fn`` on up to ``max_inflight`` items at once and yields results in input order."""
    pending: asyncio.Queue[asyncio.Task | None] = asyncio.Queue(maxsize=max_inflight)

    async def feed() -> None:
        try:
            async for item in source:
                await pending.put(asyncio.create_task(fn(item)))
        finally:
            await pending.put(None)

    feeder = asyncio.create_task(feed())
    try:
        while (task := await pending.get()) is not None:
            yield await task
        await feeder  # surface errors from reading the source
    finally:
        feeder.cancel()
        while not pending.empty():
            task = pending.get_nowait()
            if task is not None:
                task.cancel()
