"""Exact and near-duplicate dedup state in NATS KV, against a real nats-server,
and pHash robustness on real face crops."""

from __future__ import annotations

import asyncio
import hashlib
import random

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image

from facepipe import bus
from facepipe.dedup import FaceHashIndex, ImageStates, block_sizes, hamming, hash_blocks, phash_hex


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def flip(phash: str, bits: list[int]) -> str:
    value = int(phash, 16)
    for b in bits:
        value ^= 1 << b
    return f"{value:016x}"


async def connect(url: str):
    nc = await bus.connect(url, "test-dedup")
    js = nc.jetstream()
    await bus.ensure_topology(js, dedup_ttl=3600)
    return nc, js


async def test_claim_lifecycle(nats_server) -> None:
    nc, js = await connect(nats_server.url)
    states = await ImageStates.open(js)
    a = sha("a")

    assert (await states.claim("t1", a, "m1")).state == "new"
    assert (await states.claim("t1", a, "m1")).state == "mine"  # a redelivery keeps going
    dup = await states.claim("t1", a, "m2")
    assert (dup.state, dup.faces, dup.owner) == ("duplicate", 0, "m1")
    assert (await states.claim("t2", a, "m2")).state == "new"  # other tenant, own state

    await states.mark_indexed("t1", a, faces=3)
    state = await states.get("t1", a)
    assert (state.state, state.faces, state.message_id) == ("indexed", 3, "m1")
    dup = await states.claim("t1", a, "m3")
    assert (dup.state, dup.faces) == ("duplicate", 3)

    # Only the holder's failure releases the image; then the next message takes it over.
    assert not await states.mark_failed("t1", a, message_id="m9")
    assert (await states.get("t1", a)).state == "indexed"
    assert await states.mark_failed("t1", a, message_id="m1")
    assert (await states.claim("t1", a, "m4")).state == "new"
    assert (await states.claim("t1", a, "m1")).state == "duplicate"
    assert (await states.get("t1", a)).message_id == "m4"
    assert not await states.mark_failed("t1", sha("never seen"))

    await states.forget("t1", a)
    assert await states.get("t1", a) is None
    assert (await states.claim("t1", a, "m5")).state == "new"

    for i in range(5):
        await states.claim("t1", sha(f"x{i}"), f"x{i}")
    await states.forget_tenant("t1")
    assert await states.get("t1", a) is None
    assert await states.get("t1", sha("x3")) is None
    assert (await states.get("t2", a)).message_id == "m2"  # other tenants untouched

    with pytest.raises(ValueError, match="tenant"):
        await states.claim("bad tenant", a, "m1")
    with pytest.raises(ValueError, match="sha256"):
        await states.claim("t1", "abc", "m1")
    await nc.close()


async def test_concurrent_claims_have_one_winner(nats_server) -> None:
    # Two connections stand for two replicas.
    conns = [await connect(nats_server.url) for _ in range(2)]
    replicas = [await ImageStates.open(js) for _, js in conns]
    for n in range(5):
        key = sha(f"race{n}")
        claims = await asyncio.gather(*(replicas[i % 2].claim("t1", key, f"msg-{n}-{i}") for i in range(8)))
        assert sorted(c.state for c in claims).count("new") == 1
        assert {c.state for c in claims} == {"new", "duplicate"}
        winner = next(i for i, c in enumerate(claims) if c.state == "new")
        assert (await replicas[0].get("t1", key)).message_id == f"msg-{n}-{winner}"

    # Taking over a failed image is a race too.
    key = sha("race0")
    await replicas[0].mark_failed("t1", key)
    claims = await asyncio.gather(*(replicas[i % 2].claim("t1", key, f"again-{i}") for i in range(6)))
    assert [c.state for c in claims].count("new") == 1
    for nc, _ in conns:
        await nc.close()


async def test_stale_processing_claim_is_taken_over(nats_server) -> None:
    nc, js = await connect(nats_server.url)
    key = sha("stale")
    quick = await ImageStates.open(js, stale_after_s=0.5)
    assert (await quick.claim("t1", key, "m1")).state == "new"
    assert (await quick.claim("t1", key, "m2")).state == "duplicate"
    await quick.mark_indexed("t1", key, faces=1)
    await asyncio.sleep(0.6)
    assert (await quick.claim("t1", key, "m2")).state == "duplicate"  # indexed never goes stale
    await quick.forget("t1", key)
    assert (await quick.claim("t1", key, "m1")).state == "new"
    await asyncio.sleep(0.6)
    assert (await quick.claim("t1", key, "m2")).state == "new"
    assert (await quick.get("t1", key)).message_id == "m2"
    await nc.close()


def test_hash_blocks_cover_all_bits() -> None:
    for nblocks in (1, 5, 9, 17, 64):
        sizes = block_sizes(nblocks)
        assert sum(sizes) == 64 and max(sizes) - min(sizes) <= 1
    h = "f0e1d2c3b4a59687"
    blocks = hash_blocks(h, 9)
    assert len(blocks) == 9
    bits = "".join(f"{int(b, 16):0{s}b}" for b, s in zip(blocks, block_sizes(9), strict=True))
    assert int(bits, 2) == int(h, 16)
    assert hamming("0000000000000000", "ffffffffffffffff") == 64
    assert hamming(h, flip(h, [0, 17, 63])) == 3


async def test_face_hash_index(nats_server) -> None:
    nc, js = await connect(nats_server.url)
    index = await FaceHashIndex.open(js, max_hamming=8)
    base = "9c3a5f00e1d27b46"
    await index.add("t1", base, "point-base")

    assert await index.find("t1", base) == "point-base"
    # 8 flipped bits spread over 8 of the 9 blocks: the pigeonhole's worst case still hits.
    starts = np.cumsum([0, *block_sizes(9)])[:-1]
    worst = flip(base, [int(63 - s) for s in starts[:8]])
    assert hamming(base, worst) == 8
    assert await index.find("t1", worst) == "point-base"
    assert await index.find("t1", flip(base, [1, 2, 3])) == "point-base"
    # Beyond d: even when a block is shared, the true distance decides.
    far = flip(base, list(range(9)))
    assert hamming(base, far) == 9
    assert await index.find("t1", far) is None
    assert await index.find("t1", flip(base, [1, 2, 3]), max_hamming=2) is None
    with pytest.raises(ValueError):
        await index.find("t1", base, max_hamming=9)

    # The nearest of several matches wins.
    await index.add("t1", flip(base, [40, 41, 42, 43, 44]), "point-five")
    await index.add("t1", flip(base, [40, 41]), "point-two")
    assert await index.find("t1", flip(base, [40, 41, 42])) == "point-two"

    # Tenants are isolated.
    assert await index.find("t2", base) is None
    await index.add("t2", base, "point-t2")
    assert await index.find("t2", base) == "point-t2"

    await index.forget("t1", base)
    assert await index.find("t1", base) == "point-two"  # the next nearest is still there
    await index.forget_tenant("t1")
    assert await index.find("t1", base) is None
    assert await index.find("t2", base) == "point-t2"
    with pytest.raises(ValueError, match="pHash"):
        await index.find("t1", "xyz")
    await nc.close()


async def test_face_hash_index_matches_brute_force(nats_server) -> None:
    nc, js = await connect(nats_server.url)
    index = await FaceHashIndex.open(js, max_hamming=8)
    rng = random.Random(7)
    stored: dict[str, str] = {}
    for i in range(60):
        h = f"{rng.getrandbits(64):016x}"
        stored[h] = f"p{i}"
    # Near-duplicates of some of them, so that lookups have several candidates.
    for i, h in enumerate(list(stored)[:20]):
        stored[flip(h, rng.sample(range(64), rng.randint(3, 10)))] = f"n{i}"
    await asyncio.gather(*(index.add("t1", h, v) for h, v in stored.items()))

    for _ in range(60):
        target = rng.choice(list(stored))
        query = flip(target, rng.sample(range(64), rng.randint(0, 12)))
        best = min(stored, key=lambda h: (hamming(query, h), h))
        expected = stored[best] if hamming(query, best) <= 8 else None
        assert await index.find("t1", query) == expected, query
    await nc.close()


async def test_phash_survives_resize_and_recompression(facepipe_home, face_files) -> None:
    from facepipe.config import Settings
    from facepipe.faces import FaceEngine
    from facepipe.imaging import decode_image

    people = {}
    for path in face_files:
        people.setdefault(path.parent.name, path)  # one photo per person
    settings = Settings.from_env("detector", home=facepipe_home)
    engine = FaceEngine.load(settings, "test", detector=True, embedder=False)
    crops: dict[str, np.ndarray] = {}
    try:
        for person, path in sorted(people.items()):
            image = decode_image(path.read_bytes())
            faces = await engine.detector.detect(image, engine.detector.params())
            if faces:
                from facepipe.models.align import align_face

                best = max(faces, key=lambda f: f.score)
                crops[person] = align_face(image.bgr, best.landmarks, 112)
    finally:
        await engine.close()
    assert len(crops) >= 6

    hashes = {person: phash_hex(crop) for person, crop in crops.items()}
    for person, crop in crops.items():
        rgb = Image.fromarray(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        assert hashes[person] == str(imagehash.phash(rgb, hash_size=8))  # imagehash's own 64-bit pHash
        assert phash_hex(rgb) == hashes[person]  # PIL and BGR inputs agree
        ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 60])
        copies = [
            cv2.resize(crop, (224, 224), interpolation=cv2.INTER_CUBIC),
            cv2.resize(crop, (80, 80), interpolation=cv2.INTER_AREA),
            cv2.imdecode(jpeg, cv2.IMREAD_COLOR),
        ]
        for copy in copies:
            assert hamming(hashes[person], phash_hex(copy)) <= 8, person

    names = sorted(hashes)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    far = [hamming(hashes[a], hashes[b]) > 8 for a, b in pairs]
    assert sum(far) >= 0.9 * len(pairs)
    assert hamming(hashes["barack_obama"], hashes["joe_biden"]) > 8
