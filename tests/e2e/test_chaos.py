"""Chaos: during an ingest of 500 images, each stage (extractor, detector, embedder,
indexer) and nats-server is SIGKILLed at a random moment (seeded). Afterwards every
image is done exactly once, no point is lost or doubled, the work queue is empty and
every component serves again. The stack is its own, and nothing of it outlives the test."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import pytest
from conftest import launch_stack, run_facepipe, stop_stacks
from stackfaults import (
    PIPELINE_STAGES,
    connect,
    distinct_photos,
    done_events,
    kill,
    points_by_face,
    queue_view,
    wait_all_serving,
    wait_queue_idle,
    wait_restarted,
)

from facepipe import bus
from facepipe.v1 import pipeline_pb2

pytestmark = pytest.mark.slow

IMAGES = 500
SEED = 9
TENANT = "chaos"


async def done_so_far(js, batch_id: str) -> int:
    info = await js.stream_info(bus.EVENTS_STREAM, subjects_filter=f"{bus.SUBJECT_DONE}.{batch_id}")
    return sum((info.state.subjects or {}).values())


async def kill_at_random_moments(stack: dict, batch_id: str, rng: random.Random) -> list[tuple]:
    """Kills each target once, in a random order, when a random share of the images is done."""
    targets = [*PIPELINE_STAGES, "nats"]
    rng.shuffle(targets)
    moments = sorted(rng.uniform(0.05, 0.75) for _ in targets)
    kills = []
    nc = await connect(stack)
    try:
        js = nc.jetstream()
        for target, share in zip(targets, moments, strict=True):
            deadline = time.monotonic() + 240
            while True:
                try:
                    done = await done_so_far(js, batch_id)
                except Exception:  # noqa: BLE001 - nats-server restarting after its own kill
                    done = -1
                if done >= share * IMAGES:
                    break
                assert time.monotonic() < deadline, f"stuck at {done} images before killing {target}"
                await asyncio.sleep(0.05)
            old = kill(stack, target)
            kills.append((target, round(share, 2), done))
            await asyncio.to_thread(wait_restarted, stack, target, old)
    finally:
        await nc.close()
    return kills


async def outcome(stack: dict, batch_id: str) -> tuple[list, object]:
    nc = await connect(stack)
    try:
        js = nc.jetstream()
        events = await done_events(js, batch_id, expected=IMAGES, within_s=300)
        await wait_queue_idle(js, within_s=120)
        # Orphans, if any, are requeued within two reconcile rounds of an idle queue.
        deadline = time.monotonic() + 60
        while True:
            queue = await queue_view(js)
            if not queue.messages or time.monotonic() > deadline:
                return events, queue
            await asyncio.sleep(1)
    finally:
        await nc.close()


@pytest.mark.timeout(900)
def test_chaos_nothing_lost_nothing_doubled(tmp_path, facepipe_home) -> None:
    started_at = time.monotonic()
    photos = distinct_photos(tmp_path / "photos", IMAGES, max_side=256, salt=TENANT)
    started: list[dict] = []
    try:
        stack = launch_stack(
            tmp_path / "stack", facepipe_home, started, FACEPIPE_STAGE_ACK_WAIT="3", FACEPIPE_DET_SIZE="320"
        )
        published = json.loads(
            run_facepipe(
                "ingest",
                str(tmp_path / "photos"),
                "--tenant",
                TENANT,
                "--json",
                "--data-dir",
                str(stack["dir"]),
                env=stack["env"],
            ).stdout
        )
        assert published["images"] == IMAGES and not published["errors"], published
        batch_id = published["batch_id"]
        kills = asyncio.run(kill_at_random_moments(stack, batch_id, random.Random(SEED)))
        events, queue = asyncio.run(outcome(stack, batch_id))

        per_image = Counter(e.message_id for e in events)
        assert len(per_image) == IMAGES, f"{IMAGES - len(per_image)} images never done; kills {kills}"
        assert set(per_image.values()) == {1}, [m for m, n in per_image.items() if n > 1]
        failed = [(e.url, e.reason, e.error) for e in events if e.status == pipeline_pb2.IMAGE_STATUS_FAILED]
        assert not failed, failed
        assert len({e.image_sha256 for e in events}) == len(photos)
        faces = points_by_face(stack, TENANT)
        assert set(faces.values()) == {1}  # one point per (sha256, face): nothing doubled
        assert sum(faces.values()) == sum(e.faces_indexed for e in events) > 0  # nothing lost
        indexed_shas = {sha for sha, _ in faces}
        assert indexed_shas == {e.image_sha256 for e in events if e.faces_indexed}
        assert queue.messages == 0, f"left in the work queue: {queue}"
        rows = wait_all_serving(stack)
        restarts = {r["name"]: r.get("restarts", 0) for r in rows}
        assert all(restarts[name] >= 1 for name in (*PIPELINE_STAGES, "nats")), restarts
    finally:
        stop_stacks(started)
    print(f"chaos: {IMAGES} images, kills {kills}, {time.monotonic() - started_at:.0f} s")
