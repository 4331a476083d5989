"""Crashes with work in flight, on a stack of its own with a short stage ack_wait:
nats-server killed and restarted by the supervisor, nothing left in the work queue
after it, a stage killed while it holds a message (redelivered, processed once) and
a stage stopped mid-message (acked before it exits, never redelivered)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import run_facepipe
from stackfaults import (
    GatedImages,
    components,
    connect,
    distinct_photos,
    done_events,
    kill,
    pid_of,
    points_by_face,
    process_state,
    publish_ingest,
    queue_view,
    wait_all_serving,
    wait_queue_idle,
    wait_restarted,
)

from facepipe.v1 import pipeline_pb2

pytestmark = pytest.mark.slow

ACK_WAIT_S = 3


@pytest.fixture(scope="module")
def stack(start_stack) -> dict:
    # Private networks: the gated images come from a server on 127.0.0.1.
    return start_stack("faults", FACEPIPE_STAGE_ACK_WAIT=str(ACK_WAIT_S), FACEPIPE_ALLOW_PRIVATE_NETWORKS="1")


def stats(stack: dict, service: str) -> dict:
    port = components(stack)[service]["http_port"]
    return httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()


def ingest_folder(stack: dict, folder: Path, tenant: str, wait: bool) -> dict:
    args = ["ingest", str(folder), "--tenant", tenant, "--json", "--data-dir", str(stack["dir"])]
    return json.loads(run_facepipe(*args, *(["--wait"] if wait else []), env=stack["env"]).stdout)


def test_stage_consumers_take_the_configured_ack_wait(stack) -> None:
    async def ack_waits() -> dict[str, float]:
        nc = await connect(stack)
        try:
            js = nc.jetstream()
            return {
                n: (await js.consumer_info("FACEPIPE", n)).config.ack_wait for n in ("detector", "indexer")
            }
        finally:
            await nc.close()

    assert asyncio.run(ack_waits()) == {"detector": ACK_WAIT_S, "indexer": ACK_WAIT_S}
    assert stats(stack, "embedder")["ack_wait_s"] == ACK_WAIT_S


def test_nats_server_sigkill_is_restarted_and_the_pipeline_resumes(stack, tmp_path) -> None:
    old = kill(stack, "nats")
    restarted = wait_restarted(stack, "nats", old)
    assert restarted["restarts"] >= 1
    wait_all_serving(stack)
    # The supervisor reaped it: no zombie left behind.
    deadline = time.monotonic() + 10
    while process_state(old) is not None:
        assert time.monotonic() < deadline, f"nats-server {old} left as {process_state(old)}"
        time.sleep(0.1)
    for service in ("extractor", "detector", "embedder", "indexer"):
        port = components(stack)[service]["http_port"]
        deadline = time.monotonic() + 30
        while (ready := httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json())["checks"].get(
            "nats"
        ) != "ok":
            assert time.monotonic() < deadline, (service, ready)
            time.sleep(0.3)
    summary = ingest_folder(stack, distinct_photos(tmp_path / "after", 4)[0].parent, "after-nats", wait=True)
    assert summary["pending"] == 0 and summary["errors"] == [], summary
    assert summary["faces_indexed"] >= 3


def test_nats_crash_mid_flight_leaves_nothing_in_the_work_queue(stack, tmp_path) -> None:
    """A batch in flight when nats-server is killed completes, every image once, and the
    work queue ends empty: no message left that no consumer would ever deliver."""
    tenant = "natscrash"
    photos = distinct_photos(tmp_path / "batch", 60, salt=tenant)
    published = ingest_folder(stack, photos[0].parent, tenant, wait=False)
    batch_id = published["batch_id"]

    async def crash_and_finish() -> tuple[list, object]:
        nc = await connect(stack)
        try:
            js = nc.jetstream()
            # Kill nats-server while every stage has work in flight.
            deadline = time.monotonic() + 120
            while (await done_count(js, batch_id)) < 10:
                assert time.monotonic() < deadline, "the batch never got going"
                await asyncio.sleep(0.1)
            old = kill(stack, "nats")
            await asyncio.to_thread(wait_restarted, stack, "nats", old)
            events = await done_events(js, batch_id, expected=len(photos))
            return events, await wait_queue_idle(js)
        finally:
            await nc.close()

    events, queue = asyncio.run(crash_and_finish())
    per_message = {}
    for e in events:
        per_message.setdefault(e.message_id, []).append(e)
    assert len(per_message) == len(photos), f"{len(per_message)} of {len(photos)} images done"
    assert all(len(v) == 1 for v in per_message.values())
    assert all(e.status != pipeline_pb2.IMAGE_STATUS_FAILED for e in events), [e.error for e in events]
    assert queue.messages == 0, f"left in the work queue: {queue}"
    indexed = sum(e.faces_indexed for e in events)
    faces = points_by_face(stack, tenant)
    assert sum(faces.values()) == indexed and set(faces.values()) <= {1}
    wait_all_serving(stack)


async def done_count(js, batch_id: str) -> int:
    from facepipe import bus

    info = await js.stream_info(bus.EVENTS_STREAM, subjects_filter=f"{bus.SUBJECT_DONE}.{batch_id}")
    return sum((info.state.subjects or {}).values())


def one_photo(tmp_path: Path, salt: str) -> bytes:
    return distinct_photos(tmp_path / salt, 1, salt=salt)[0].read_bytes()


def test_sigkill_while_holding_a_message_redelivers_it_once(stack, tmp_path) -> None:
    """The extractor is killed while it fetches the image of an unacked message; the
    message comes back after ack_wait and is processed by the restarted extractor, once."""
    tenant, batch = "heldkill", f"held-{uuid.uuid4().hex[:8]}"
    with GatedImages({"/held.jpg": one_photo(tmp_path, tenant)}, gated={"/held.jpg"}) as images:

        async def run() -> tuple[list, dict, dict]:
            nc = await connect(stack)
            try:
                js = nc.jetstream()
                before = (await queue_view(js)).consumers["extractor"]
                await publish_ingest(js, tenant, images.url("/held.jpg"), batch, "held-1")
                assert await asyncio.to_thread(images.arrived.wait, 60), "the extractor never fetched"
                held = (await queue_view(js)).consumers["extractor"]
                assert held["num_ack_pending"] == 1 and held["delivered"] == before["delivered"] + 1
                old = kill(stack, "extractor")
                images.release()  # the next fetch, by the restarted extractor, gets the image at once
                await asyncio.to_thread(wait_restarted, stack, "extractor", old)
                events = await done_events(js, batch, expected=1)
                after = (await wait_queue_idle(js)).consumers["extractor"]
                return events, before, after
            finally:
                await nc.close()

        events, before, after = asyncio.run(run())
    assert len(events) == 1 and events[0].status == pipeline_pb2.IMAGE_STATUS_INDEXED, events
    assert images.requests["/held.jpg"] == 2  # one fetch per delivery
    assert after["delivered"] == before["delivered"] + 2  # delivered to the dead one, then again
    assert stats(stack, "extractor")["msgs_acked"] == 1  # the restarted extractor handled it once
    faces = points_by_face(stack, tenant)
    assert sum(faces.values()) == events[0].faces_indexed >= 1 and set(faces.values()) == {1}


def test_sigterm_mid_message_acks_it_before_exit_and_stops_fetching(stack, tmp_path) -> None:
    tenant, batch = "drained", f"drain-{uuid.uuid4().hex[:8]}"
    images_by_path = {
        "/slow.jpg": one_photo(tmp_path, tenant),
        "/later.jpg": one_photo(tmp_path, tenant + "2"),
    }
    with GatedImages(images_by_path, gated={"/slow.jpg"}) as images:

        async def run() -> tuple[list, dict, dict, dict]:
            nc = await connect(stack)
            try:
                js = nc.jetstream()
                before = (await queue_view(js)).consumers["extractor"]
                await publish_ingest(js, tenant, images.url("/slow.jpg"), batch, "slow-1")
                assert await asyncio.to_thread(images.arrived.wait, 60), "the extractor never fetched"
                old = kill(stack, "extractor", signal.SIGTERM)
                # Fetching stops: no pull request left, and a new message is not delivered.
                deadline = time.monotonic() + 10
                while (await queue_view(js)).consumers["extractor"]["num_waiting"]:
                    assert time.monotonic() < deadline, "the draining extractor kept fetching"
                    await asyncio.sleep(0.1)
                await publish_ingest(js, tenant, images.url("/later.jpg"), batch, "later-1")
                await asyncio.sleep(1.5)
                draining = (await queue_view(js)).consumers["extractor"]
                assert process_state(old) not in (None, "Z"), "the extractor exited before its message"
                images.release()
                deadline = time.monotonic() + 30
                while process_state(old) not in (None, "Z"):
                    assert time.monotonic() < deadline, "the extractor did not exit after draining"
                    await asyncio.sleep(0.1)
                await asyncio.to_thread(wait_restarted, stack, "extractor", old)
                events = await done_events(js, batch, expected=2)
                after = (await wait_queue_idle(js)).consumers["extractor"]
                return events, before, draining, after
            finally:
                await nc.close()

        events, before, draining, after = asyncio.run(run())
    assert draining["delivered"] == before["delivered"] + 1 and draining["num_pending"] == 1, draining
    assert draining["num_ack_pending"] == 1
    by_message = {e.message_id: e for e in events}
    assert len(events) == 2 and set(by_message) == {"slow-1", "later-1"}, events
    assert all(e.status == pipeline_pb2.IMAGE_STATUS_INDEXED for e in events), events
    assert images.requests["/slow.jpg"] == 1  # acked by the draining extractor, never redelivered
    assert after["delivered"] == before["delivered"] + 2
    assert stats(stack, "extractor")["msgs_acked"] == 1  # the restarted one took only the later message
    assert pid_of(stack, "extractor") > 0


def orphans_counted(stack: dict, service: str) -> float:
    port = components(stack)[service]["http_port"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("facepipe_orphans_total{")
    )


def test_a_message_whose_deliveries_were_all_lost_is_requeued_and_done_once(stack, tmp_path) -> None:
    """Every delivery of an ingest message is lost, as to replicas killed holding it, until
    JetStream gives up on it: it stays in the work queue, never delivered again. The
    extractor's reconciler finds it, queues it again, and it is done once."""
    tenant, batch = "orphan", f"orphan-{uuid.uuid4().hex[:8]}"
    with GatedImages({"/orphan.jpg": one_photo(tmp_path, tenant)}, gated=set()) as images:

        async def run() -> tuple[list, dict, object]:
            nc = await connect(stack)
            extractor = pid_of(stack, "extractor")
            try:
                js = nc.jetstream()
                os.kill(extractor, signal.SIGSTOP)  # it takes no delivery while the test loses them
                try:
                    deadline = time.monotonic() + 10
                    while (await queue_view(js)).consumers["extractor"]["num_waiting"]:
                        assert time.monotonic() < deadline, "the stopped extractor's pulls never expired"
                        await asyncio.sleep(0.1)
                    await publish_ingest(js, tenant, images.url("/orphan.jpg"), batch, "orphan-1")
                    thief = await js.pull_subscribe_bind(durable="extractor", stream="FACEPIPE")
                    for _ in range(5):  # max_deliver of the stage
                        (await thief.fetch(1, timeout=ACK_WAIT_S + 10))[0]
                    with pytest.raises(TimeoutError):
                        await thief.fetch(1, timeout=ACK_WAIT_S + 1.5)
                    await thief.unsubscribe()
                    stuck = await queue_view(js)
                finally:
                    os.kill(extractor, signal.SIGCONT)
                events = await done_events(js, batch, expected=1, within_s=60)
                return events, stuck, await wait_queue_idle(js)
            finally:
                await nc.close()

        events, stuck, after = asyncio.run(run())
    # Before the reconciler, here it stayed: queued, yet nothing pending or awaiting an ack.
    assert stuck.subjects.get("facepipe.ingest") == 1, stuck
    assert stuck.consumers["extractor"]["num_pending"] == 0 == stuck.consumers["extractor"]["num_ack_pending"]
    assert len(events) == 1 and events[0].status == pipeline_pb2.IMAGE_STATUS_INDEXED, events
    assert images.requests["/orphan.jpg"] == 1
    assert after.messages == 0, after
    assert orphans_counted(stack, "extractor") == 1
