"""The opt-out registry on a real nats-server: what one process registers, another
process's watched copy matches at once, per tenant, and forgets once removed."""

from __future__ import annotations

import asyncio
import time

import nats
import numpy as np

from facepipe.optout import OptOut, OptOutRegistry, new_id


def unit(values: list[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


async def eventually(condition, wait_s: float = 5.0) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_registered_people_are_matched_per_tenant_until_removed(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        writer = await OptOutRegistry.open(nc.jetstream())
        watcher = await OptOutRegistry.open(nc.jetstream())
        await watcher.start_watch()
        person = unit([1.0, 0.2, 0.0, 0.0])
        entry = OptOut(new_id(), "acme", [person.tolist()], "m.onnx", note="req-1")
        await writer.add(entry)
        close = unit([1.0, 0.25, 0.05, 0.0])
        other = unit([0.0, 0.0, 1.0, 0.3])
        await eventually(lambda: watcher.match("acme", close, 0.9, "m.onnx") == entry.optout_id)
        assert watcher.match("acme", other, 0.9, "m.onnx") is None
        assert watcher.match("other", close, 0.9, "m.onnx") is None  # another tenant
        assert watcher.match("acme", close, 0.9, "another.onnx") is None  # another model's space
        assert [e.optout_id for e in await writer.list("acme")] == [entry.optout_id]
        assert await writer.list("other") == []
        assert await writer.remove("acme", entry.optout_id)
        assert not await writer.remove("acme", entry.optout_id)
        await eventually(lambda: watcher.match("acme", close, 0.9, "m.onnx") is None)
        await watcher.stop()
    finally:
        await nc.close()


async def test_opt_outs_of_two_models_each_match_their_own_faces(nats_server) -> None:
    """After a switch of model packs a tenant holds opt-outs of both models, whose
    embeddings may differ in size: each matches only faces of its own model."""
    nc = await nats.connect(nats_server.url)
    try:
        registry = await OptOutRegistry.open(nc.jetstream())
        old_person = unit([1.0, 0.2, 0.0, 0.0])
        new_person = unit([0.0, 0.0, 0.0, 0.0, 1.0, 0.1])
        old = OptOut(new_id(), "acme", [old_person.tolist()], "old.onnx")
        new = OptOut(new_id(), "acme", [new_person.tolist()], "new.onnx")
        await registry.add(old)
        await registry.add(new)
        assert registry.match("acme", new_person, 0.9, "new.onnx") == new.optout_id
        assert registry.match("acme", old_person, 0.9, "old.onnx") == old.optout_id
        # A 4-d face of the new model (same size as the old's) never matches the old opt-out.
        assert registry.match("acme", old_person, 0.9, "new.onnx") is None
        assert registry.match("acme", unit([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), 0.9, "new.onnx") is None
    finally:
        await nc.close()


async def test_a_fresh_process_sees_every_opt_out_at_once(nats_server) -> None:
    """What a new process lists, and what its watched copy holds once loaded, is every
    opt-out stored. A watcher's end-of-values marker can arrive before the values that
    are on their way, which once made ``optout list`` say "no opt-outs" now and then
    (about one fresh connection in 300 here), and could let a starting embedder miss an
    opt-out for a moment."""
    nc = await nats.connect(nats_server.url)
    try:
        writer = await OptOutRegistry.open(nc.jetstream())
        stored = []
        for i in range(12):
            entry = OptOut(new_id(), "acme" if i % 3 else "other", [unit([1.0, i, 0.0]).tolist()], "m.onnx")
            await writer.add(entry)
            stored.append(entry)
        gone = stored.pop(1)
        await writer.remove(gone.tenant, gone.optout_id)
        acme = sorted(e.optout_id for e in stored if e.tenant == "acme")
        # Each pass is a new connection, as each `facepipe optout list` is. The server holds
        # at most 1,000 consumers on a stream, and a watched copy's consumer stays five
        # minutes after its process goes, so only every third pass starts one.
        for n in range(900):
            fresh_nc = await nats.connect(nats_server.url)
            try:
                fresh = await OptOutRegistry.open(fresh_nc.jetstream())
                assert sorted(e.optout_id for e in await fresh.list("acme")) == acme
                if n % 3 == 0:
                    await fresh.start_watch()
                    held = sorted(e.optout_id for e in fresh.entries.values() if e.tenant == "acme")
                    await fresh.stop()
                    assert held == acme
            finally:
                await fresh_nc.close()
    finally:
        await nc.close()
