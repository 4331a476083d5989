"""Keeping a local copy of a NATS KV bucket current: the key store and the opt-out
registry both mirror a bucket this way, so that a change applies at once everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nats.js.kv import KeyValue

log = logging.getLogger("facepipe.bus")


async def mirror_kv(
    kv: KeyValue,
    apply: Callable[[str, bytes | None], None],
    loaded: asyncio.Event,
    what: str,
    retry_seconds: float = 1.0,
) -> None:
    """Watches every key of ``kv`` for ever: ``apply(key, value)`` for each value, with
    None for a deleted key; ``loaded`` is set once the initial values are in. A value
    ``apply`` cannot read (ValueError, TypeError, KeyError) is logged and skipped; when
    NATS goes away the last copy stays and the watch starts again."""
    while True:
        watcher: Any = None
        try:
            watcher = await kv.watchall()
            async for entry in watcher:
                if entry is None:  # the initial values are in
                    loaded.set()
                    continue
                deleted = entry.operation in ("DEL", "PURGE") or not entry.value
                try:
                    apply(entry.key, None if deleted else entry.value)
                except (ValueError, TypeError, KeyError):
                    log.warning(f"unreadable {what}", extra={"key": entry.key})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - NATS away: keep the last copy, watch again
            log.warning(f"{what} watch failed; retrying", extra={"error": str(exc)})
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.stop()
        await asyncio.sleep(retry_seconds)
