"""Deduplication state in NATS JetStream key-value buckets, shared by every replica.

``ImageStates`` (bucket ``facepipe-images``) claims each image exactly once per
tenant by its sha256 and tracks it until indexed. ``FaceHashIndex`` (bucket
``facepipe-faces``) finds near-duplicate faces by the Hamming distance of their
64-bit perceptual hashes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import cv2
import imagehash
import numpy as np
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from PIL import Image

from facepipe import bus
from facepipe.echo import echo
from facepipe.pipeline import TENANT_RE

HASH_BITS = 64
_HEX64_RE = re.compile(r"^[0-9a-f]{16}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Attempts at a compare-and-set before giving up (only reached under heavy contention).
_CAS_ATTEMPTS = 10

STATE_PROCESSING = "processing"
STATE_INDEXED = "indexed"
STATE_FAILED = "failed"


def phash_hex(image: Image.Image | np.ndarray) -> str:
    """64-bit DCT perceptual hash as 16 hex digits; arrays are BGR, as OpenCV decodes them."""
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = Image.fromarray(image)
        else:
            image = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return str(imagehash.phash(image, hash_size=8))


def hamming(a_hex: str, b_hex: str) -> int:
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()


def _check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant or ""):
        raise ValueError(f"invalid tenant {echo(tenant)}: 1-64 letters, digits, '_' or '-'")
    return tenant


def _check_hash(phash: str) -> str:
    value = (phash or "").lower()
    if not _HEX64_RE.match(value):
        raise ValueError(f"invalid pHash {echo(phash)}: expected 16 hex digits")
    return value


def _check_sha(sha: str) -> str:
    value = (sha or "").lower()
    if not _SHA256_RE.match(value):
        raise ValueError(f"invalid sha256 {echo(sha)}: expected 64 hex digits")
    return value


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _kv_subject(bucket: str, key: str) -> str:
    return f"$KV.{bucket}.{key}"


# -- exact dedup: one claim per tenant and sha256 ------------------------------
@dataclass(frozen=True)
class ImageState:
    state: str  # processing | indexed | failed
    message_id: str
    faces: int = 0
    updated_at_ms: int = 0

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageState:
        try:
            doc = json.loads(data)
            return cls(
                state=str(doc.get("state", STATE_FAILED)),
                message_id=str(doc.get("message_id", "")),
                faces=int(doc.get("faces", 0)),
                updated_at_ms=int(doc.get("updated_at_ms", 0)),
            )
        except (ValueError, TypeError, AttributeError):
            # An unreadable entry helps nobody; treat it as failed so it can be taken over.
            return cls(state=STATE_FAILED, message_id="")

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "state": self.state,
                "message_id": self.message_id,
                "faces": self.faces,
                "updated_at_ms": self.updated_at_ms,
            }
        ).encode()


@dataclass(frozen=True)
class Claim:
    state: str  # new | mine | duplicate
    faces: int = 0  # faces indexed so far, for a duplicate; 0 if unknown
    owner: str = ""  # message id holding the image, for a duplicate


class ImageStates:
    """Per-tenant image state: the first message to claim a sha256 processes it.

    A claim still "processing" after ``stale_after_s`` belongs to a message that
    can no longer finish (its stage retries are long over), so it is taken over
    like a failed one; the work is idempotent, so a late finisher does no harm.
    """

    def __init__(self, js: JetStreamContext, kv: KeyValue, stale_after_s: float = 6 * 3600.0) -> None:
        self.js = js
        self.kv = kv
        self.stale_after_s = stale_after_s

    @classmethod
    async def open(cls, js: JetStreamContext, stale_after_s: float = 6 * 3600.0) -> ImageStates:
        return cls(js, await js.key_value(bus.IMAGES_KV), stale_after_s)

    @staticmethod
    def key(tenant: str, sha: str) -> str:
        return f"{_check_tenant(tenant)}.{_check_sha(sha)}"

    async def get(self, tenant: str, sha: str) -> ImageState | None:
        entry = await self._entry(self.key(tenant, sha))
        return ImageState.from_bytes(entry.value) if entry else None

    async def claim(self, tenant: str, sha: str, message_id: str) -> Claim:
        """Atomic across replicas: exactly one of concurrent claimants gets "new".

        The same message id again (a redelivery) gets "mine"; an image whose
        earlier processing failed, or went stale, is taken over and also gets "new".
        """
        key = self.key(tenant, sha)
        mine = ImageState(STATE_PROCESSING, message_id, 0, _now_ms()).to_bytes()
        for _ in range(_CAS_ATTEMPTS):
            try:
                await self.kv.create(key, mine)
                return Claim("new")
            except KeyWrongLastSequenceError:
                pass
            entry = await self._entry(key)
            if entry is None:  # forgotten in between: create again
                continue
            current = ImageState.from_bytes(entry.value)
            if current.message_id == message_id:
                return Claim("mine", faces=current.faces, owner=message_id)
            if not self._takeable(current):
                return Claim("duplicate", faces=current.faces, owner=current.message_id)
            try:
                await self.kv.update(key, mine, last=entry.revision)
                return Claim("new")
            except KeyWrongLastSequenceError:
                continue  # another replica took it over first
        raise RuntimeError(f"could not claim {key}: too much contention")

    def _takeable(self, state: ImageState) -> bool:
        if state.state == STATE_FAILED:
            return True
        age_s = (_now_ms() - state.updated_at_ms) / 1000
        return state.state == STATE_PROCESSING and age_s > self.stale_after_s

    async def mark_indexed(self, tenant: str, sha: str, faces: int) -> None:
        await self._modify(tenant, sha, lambda cur: ImageState(STATE_INDEXED, cur.message_id, faces))

    async def mark_failed(self, tenant: str, sha: str, message_id: str | None = None) -> bool:
        """Lets a later message take the image over. With ``message_id``, only an
        entry that message holds is changed. Returns whether an entry was marked."""

        def fail(cur: ImageState) -> ImageState | None:
            if message_id is not None and cur.message_id != message_id:
                return None
            return ImageState(STATE_FAILED, cur.message_id, cur.faces)

        return await self._modify(tenant, sha, fail, create=False)

    async def forget(self, tenant: str, sha: str) -> None:
        await self.kv.purge(self.key(tenant, sha))

    async def forget_tenant(self, tenant: str) -> None:
        subject = _kv_subject(bus.IMAGES_KV, f"{_check_tenant(tenant)}.>")
        await self.js.purge_stream(_kv_stream(bus.IMAGES_KV), subject=subject)

    async def _entry(self, key: str) -> KeyValue.Entry | None:
        try:
            return await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None

    async def _modify(self, tenant: str, sha: str, change, create: bool = True) -> bool:
        key = self.key(tenant, sha)
        for _ in range(_CAS_ATTEMPTS):
            entry = await self._entry(key)
            if entry is None and not create:
                return False
            current = ImageState.from_bytes(entry.value) if entry else ImageState(STATE_PROCESSING, "")
            new = change(current)
            if new is None:
                return False
            data = ImageState(new.state, new.message_id, new.faces, _now_ms()).to_bytes()
            try:
                if entry is None:
                    await self.kv.create(key, data)
                else:
                    await self.kv.update(key, data, last=entry.revision)
                return True
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"could not update {key}: too much contention")


# -- near-duplicate faces: pHashes within a Hamming distance -------------------
def block_sizes(nblocks: int) -> list[int]:
    base, extra = divmod(HASH_BITS, nblocks)
    return [base + 1 if i < extra else base for i in range(nblocks)]


def hash_blocks(phash: str, nblocks: int) -> list[str]:
    """Splits a 64-bit hash into ``nblocks`` contiguous bit blocks, each as hex."""
    value = int(phash, 16)
    out, shift = [], HASH_BITS
    for size in block_sizes(nblocks):
        shift -= size
        part = (value >> shift) & ((1 << size) - 1)
        out.append(f"{part:0{(size + 3) // 4}x}")
    return out


class FaceHashIndex:
    """Near-duplicate lookup of 64-bit face pHashes, scoped to a tenant.

    Pigeonhole: with the 64 bits split into d+1 blocks, two hashes within
    distance d agree on at least one whole block. Each hash is stored under one
    key per block, ``<tenant>.<nblocks>.<block_index>.<block_hex>.<hash_hex>``,
    so a lookup lists only the keys sharing a block with the query (d+1
    subject-filtered requests answered from the stream's subject index, never a
    scan of the bucket) and checks the true distance of those candidates.
    """

    def __init__(self, js: JetStreamContext, kv: KeyValue, max_hamming: int = 8) -> None:
        if not 0 <= max_hamming < HASH_BITS:
            raise ValueError(f"max_hamming must be in 0..{HASH_BITS - 1}, got {max_hamming}")
        self.js = js
        self.kv = kv
        self.max_hamming = max_hamming
        self.nblocks = max_hamming + 1

    @classmethod
    async def open(cls, js: JetStreamContext, max_hamming: int = 8) -> FaceHashIndex:
        return cls(js, await js.key_value(bus.FACES_KV), max_hamming)

    def keys(self, tenant: str, phash: str) -> list[str]:
        tenant, phash = _check_tenant(tenant), _check_hash(phash)
        blocks = hash_blocks(phash, self.nblocks)
        return [f"{tenant}.{self.nblocks}.{i}.{b}.{phash}" for i, b in enumerate(blocks)]

    async def add(self, tenant: str, phash: str, value: str) -> None:
        data = value.encode()
        await asyncio.gather(*(self.kv.put(key, data) for key in self.keys(tenant, phash)))

    async def find(self, tenant: str, phash: str, max_hamming: int | None = None) -> str | None:
        """The value stored with the nearest hash within ``max_hamming``, or None."""
        limit = self.max_hamming if max_hamming is None else max_hamming
        if limit > self.max_hamming:
            raise ValueError(f"max_hamming {limit} is over the index's {self.max_hamming}")
        phash = _check_hash(phash)
        prefixes = [key.rsplit(".", 1)[0] for key in self.keys(tenant, phash)]
        listed = await asyncio.gather(*(self._list(f"{p}.*") for p in prefixes))
        candidates: dict[str, str] = {}
        for keys in listed:
            for key in keys:
                candidates.setdefault(key.rsplit(".", 1)[1], key)
        near = sorted((hamming(phash, h), h) for h in candidates)
        for distance, other in near:
            if distance > limit:
                break
            try:
                entry = await self.kv.get(candidates[other])
            except (KeyNotFoundError, KeyDeletedError):
                continue  # forgotten since it was listed
            if entry.value:
                return entry.value.decode()
        return None

    async def forget(self, tenant: str, phash: str) -> None:
        """Removes a hash, stored under any block count."""
        key = f"{_check_tenant(tenant)}.*.*.*.{_check_hash(phash)}"
        await self._purge(key)

    async def forget_tenant(self, tenant: str) -> None:
        await self._purge(f"{_check_tenant(tenant)}.>")

    async def _list(self, key_filter: str) -> list[str]:
        """Keys matching a wildcard filter, from the stream's subject index.

        The server lists at most 100k subjects per filter: past ~10M faces in
        one tenant a lookup may miss candidates, never return a wrong one.
        """
        prefix = _kv_subject(bus.FACES_KV, "")
        try:
            info = await self.js.stream_info(
                _kv_stream(bus.FACES_KV), subjects_filter=_kv_subject(bus.FACES_KV, key_filter)
            )
        except NotFoundError:
            return []
        subjects: dict[str, Any] = info.state.subjects or {}
        return [s[len(prefix) :] for s in subjects]

    async def _purge(self, key_filter: str) -> None:
        # A stream purge by wildcard removes every matching key at once, leaving no tombstones.
        subject = _kv_subject(bus.FACES_KV, key_filter)
        await self.js.purge_stream(_kv_stream(bus.FACES_KV), subject=subject)


def _now_ms() -> int:
    return int(time.time() * 1000)
