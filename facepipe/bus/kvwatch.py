"""Reading a NATS KV bucket's keys: keeping a local copy current (the key store and the
opt-out registry mirror a bucket this way, so that a change applies at once everywhere),
and scanning the keys under a pattern once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger("facepipe.bus")

_CATCH_UP_SECONDS = 2.0
# A scan's consumer is gone this long after the scan (the watcher's own default, five
# minutes, let frequent scans reach the server's limit on consumers).
_SCAN_CONSUMER_IDLE_S = 2.0


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
    NATS goes away the last copy stays and the watch starts again.

    The watcher's end-of-initial-values marker can come before values already on their
    way (the server's count of pending messages runs ahead of the client), so ``loaded``
    also waits for the newest revision stored when the watch began."""
    while True:
        watcher: Any = None
        try:
            stored_to = (await kv.status()).stream_info.state.last_seq
            newest, marked = 0, False
            watcher = await kv.watchall()
            async for entry in watcher:
                if entry is None:  # the watcher thinks the initial values are in
                    marked = True
                    if newest >= stored_to:
                        loaded.set()
                    else:  # the last value stored may have gone since: do not wait for ever
                        asyncio.get_running_loop().call_later(_CATCH_UP_SECONDS, loaded.set)
                    continue
                newest = max(newest, entry.revision or 0)
                deleted = entry.operation in ("DEL", "PURGE") or not entry.value
                try:
                    apply(entry.key, None if deleted else entry.value)
                except (ValueError, TypeError, KeyError):
                    log.warning(f"unreadable {what}", extra={"key": entry.key})
                if marked and newest >= stored_to:
                    loaded.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - NATS away: keep the last copy, watch again
            log.warning(f"{what} watch failed; retrying", extra={"error": str(exc)})
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.stop()
        await asyncio.sleep(retry_seconds)


async def scan_kv(
    js: JetStreamContext, kv: KeyValue, bucket: str, pattern: str, within_s: float = 30.0
) -> dict[str, bytes]:
    """The current value of every key of ``bucket`` under ``pattern`` (removed keys left
    out).

    A watcher alone can miss a key rewritten while it reads (the old message goes as the
    new one is stored). The stream's subjects are a snapshot taken under the stream's
    lock, so any key there that the watcher did not see is read on its own. The server
    lists up to 100,000 subjects at a time; past that the watcher's pass stands alone."""
    found: dict[str, bytes] = {}
    seen: set[str] = set()  # removed keys too: their markers are still stored
    watcher = await kv.watch(pattern, inactive_threshold=_SCAN_CONSUMER_IDLE_S)
    try:
        async with asyncio.timeout(within_s):
            async for entry in watcher:
                if entry is None:  # the end of what is stored now
                    break
                seen.add(entry.key)
                if entry.value and entry.operation not in ("DEL", "PURGE"):
                    found[entry.key] = entry.value
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=prefix + pattern)
    missing = [s[len(prefix) :] for s in info.state.subjects or {} if s[len(prefix) :] not in seen]

    async def value(key: str) -> bytes | None:
        try:
            return (await kv.get(key)).value or None
        except (KeyNotFoundError, KeyDeletedError):
            return None

    for key, data in zip(missing, await asyncio.gather(*(value(k) for k in missing)), strict=True):
        if data:
            found[key] = data
    return found
