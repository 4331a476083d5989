"""API keys: random secrets shown once, stored only as hashes, each bound to a
tenant (or ``*``) and a role, with a creation time and an optional expiry.

The records live in the NATS KV bucket ``facepipe-keys`` (one entry per key id),
so every replica of every service sees the same keys; each service watches the
bucket, so a revocation (the entry deleted) takes effect within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass

import nats
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, KeyDeletedError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from facepipe.bus.kvwatch import mirror_kv, scan_kv

log = logging.getLogger("facepipe.auth")

KEYS_KV = "facepipe-keys"
ANY_TENANT = "*"
# Roles in rising order; each may do what the ones before it may. ``service`` is the
# deployment's own credential: services send it to each other (inference nodes).
ROLES = ("reader", "writer", "admin", "service")
KEY_PREFIX = "fpk"
# The watch brings changes at once; a full re-read this often also covers a watch that
# silently stopped (e.g. across a NATS restart), bounding how long a revoked key could live.
RESYNC_SECONDS = 30.0
KEY_RE = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")


def role_rank(role: str) -> int:
    return ROLES.index(role)


def hash_key(key: str) -> str:
    # A plain sha256 is enough: keys carry 256 random bits, so no guessing attack on a
    # leaked hash is feasible, and a slow password hash would cost every call milliseconds.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key id, key); the id is part of the key, so a lookup needs no scan."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id inside a well-formed key, else None."""
    match = KEY_RE.match(key)
    return match.group(1) if match else None


@dataclass(frozen=True)
class KeyRecord:
    """What is stored about a key: never the key itself."""

    key_id: str
    key_sha256: str
    tenant: str
    role: str
    created_at: float
    expires_at: float = 0.0  # 0: never
    note: str = ""

    def expired(self, now: float | None = None) -> bool:
        return bool(self.expires_at) and (now or time.time()) >= self.expires_at

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.key_sha256, hash_key(key))

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRecord:
        doc = json.loads(data)
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})

    def public(self) -> dict:
        """The record as ``keys list`` shows it: no hash."""
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "role": self.role,
            "created_at": self.created_at,
            "expires_at": self.expires_at or None,
            "note": self.note,
        }


def make_record(key: str, tenant: str, role: str, expires_at: float = 0.0, note: str = "") -> KeyRecord:
    key_id = key_id_of(key)
    if key_id is None:
        raise ValueError("not a facepipe API key")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return KeyRecord(key_id, hash_key(key), tenant, role, time.time(), expires_at, note)


async def open_keys_kv(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(KEYS_KV)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        with contextlib.suppress(BadRequestError):  # another process created it first
            await js.create_key_value(
                js_api.KeyValueConfig(bucket=KEYS_KV, history=1, storage=js_api.StorageType.FILE)
            )
        return await js.key_value(KEYS_KV)


class KeyStore:
    """The key records of a deployment, kept current by a watch on the bucket."""

    def __init__(self, kv: KeyValue, js: JetStreamContext, resync_seconds: float = RESYNC_SECONDS) -> None:
        self.kv = kv
        self.js = js
        self.resync_seconds = resync_seconds
        self.records: dict[str, KeyRecord] = {}
        self._tasks: list[asyncio.Task] = []
        self._loaded = asyncio.Event()

    @classmethod
    async def open(cls, js: JetStreamContext, resync_seconds: float = RESYNC_SECONDS) -> KeyStore:
        return cls(await open_keys_kv(js), js, resync_seconds)

    # -- management --------------------------------------------------------------
    async def create(
        self, tenant: str, role: str, expires_at: float = 0.0, note: str = ""
    ) -> tuple[str, KeyRecord]:
        """A new key (returned once, never stored) and its record."""
        _, key = new_key()
        record = make_record(key, tenant, role, expires_at, note)
        await self.put(record)
        return key, record

    async def put(self, record: KeyRecord) -> None:
        await self.kv.put(record.key_id, record.to_bytes())
        self.records[record.key_id] = record

    async def revoke(self, key_id: str) -> bool:
        if await self.get(key_id) is None:
            return False
        await self.kv.delete(key_id)
        self.records.pop(key_id, None)
        return True

    async def get(self, key_id: str) -> KeyRecord | None:
        try:
            entry = await self.kv.get(key_id)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return KeyRecord.from_bytes(entry.value) if entry.value else None

    async def list(self) -> list[KeyRecord]:
        found = await scan_kv(self.js, self.kv, KEYS_KV, ">")
        return sorted((KeyRecord.from_bytes(v) for v in found.values()), key=lambda r: r.created_at)

    # -- lookup ------------------------------------------------------------------
    async def lookup(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id``: from the watched copy, else (a key made a moment
        ago that the watch has not brought yet) from the bucket."""
        record = self.records.get(key_id)
        if record is None and self._loaded.is_set():
            record = await self.get(key_id)
        return record

    async def start_watch(self, load_seconds: float = 10.0) -> None:
        """Loads every record and keeps following changes until ``stop``."""
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._resync())]
        await asyncio.wait_for(self._loaded.wait(), load_seconds)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            try:
                self.records = {r.key_id: r for r in await self.list()}
            except Exception as exc:  # noqa: BLE001 - NATS away: keep the last copy
                log.warning("key re-read failed", extra={"error": str(exc)})

    async def _watch(self) -> None:
        await mirror_kv(self.kv, self._apply, self._loaded, "key record")

    def _apply(self, key_id: str, value: bytes | None) -> None:
        if value is None:
            self.records.pop(key_id, None)
        else:
            self.records[key_id] = KeyRecord.from_bytes(value)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
