"""A resumed import on a real nats-server, with the test answering for the stack: a file
the killed import published, published again while the stack still works on its earlier
message, is reported a duplicate of that message; the resumed import then waits for the
earlier message's outcome instead of calling the file a duplicate and returning early."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from PIL import Image

from facepipe import bus, importlog
from facepipe.client import ImportOptions, _awaitable, ingest
from facepipe.importlog import FileState, ImportLog, Pending
from facepipe.storage.objects import LocalObjectStore
from facepipe.v1 import pipeline_pb2

TENANT = "family"


def photo(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (64, 48), colour).save(path)
    return path


def file_state(path: Path) -> FileState:
    st = path.stat()
    return FileState(st.st_size, st.st_mtime_ns)


async def answer_as_the_stack(url: str, in_flight_sha: str, finish_after_s: float, finished: list) -> None:
    """Answers every ingest message: the in-flight image's copy is a duplicate, and its
    earlier message (m0 of batch b0) finishes ``finish_after_s`` later; others are indexed."""
    nc = await bus.connect(url, "test")
    js = nc.jetstream()
    sub = await nc.subscribe(bus.SUBJECT_INGEST)
    later: list[asyncio.Task] = []

    async def finish_earlier(tenant: str) -> None:
        await asyncio.sleep(finish_after_s)
        earlier = pipeline_pb2.ImageDone(
            batch_id="b0",
            message_id="m0",
            tenant_id=tenant,
            image_sha256=in_flight_sha,
            status=pipeline_pb2.IMAGE_STATUS_INDEXED,
            faces_indexed=2,
        )
        await js.publish(f"{bus.SUBJECT_DONE}.b0", earlier.SerializeToString())
        finished.append(time.monotonic())

    try:
        async for msg in sub.messages:
            request = pipeline_pb2.IngestRequest()
            request.ParseFromString(msg.data)
            done = pipeline_pb2.ImageDone(
                batch_id=request.batch_id,
                message_id=request.message_id,
                tenant_id=request.tenant_id,
                url=request.url,
                image_sha256=request.image_sha256,
                status=pipeline_pb2.IMAGE_STATUS_INDEXED,
                faces_indexed=1,
            )
            if request.image_sha256 == in_flight_sha:
                done.status, done.faces_indexed = pipeline_pb2.IMAGE_STATUS_DUPLICATE, 0
            await js.publish(f"{bus.SUBJECT_DONE}.{request.batch_id}", done.SerializeToString())
            if request.image_sha256 == in_flight_sha:
                later.append(asyncio.create_task(finish_earlier(request.tenant_id)))
    finally:
        for task in later:
            task.cancel()
        await nc.close()


async def test_a_file_still_in_flight_from_the_killed_import_takes_its_earlier_outcome(
    nats_server, tmp_path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    in_flight = photo(folder / "a.png", (200, 30, 30))
    photo(folder / "b.png", (30, 200, 30))
    log = ImportLog(tmp_path / "import-log.sqlite")
    # What a killed import leaves: a.png published as m0 of batch b0, its outcome unseen.
    log.published(TENANT, str(in_flight.resolve()), file_state(in_flight), "b0", "m0")
    nc = await bus.connect(nats_server.url, "test")
    await bus.ensure_topology(nc.jetstream())
    await nc.close()

    finished: list[float] = []
    sha = hashlib.sha256(in_flight.read_bytes()).hexdigest()
    stack = asyncio.create_task(answer_as_the_stack(nats_server.url, sha, 1.5, finished))
    try:
        summary = await ingest(
            nats_server.url,
            LocalObjectStore(tmp_path / "objects"),
            [str(folder)],
            TENANT,
            wait=True,
            wait_s=30,
            options=ImportOptions(log=log),
        )
        returned = time.monotonic()
    finally:
        stack.cancel()
    assert finished and returned >= finished[0], "the import returned before the earlier message finished"
    assert (summary.images, summary.images_indexed, summary.duplicates, summary.pending) == (2, 2, 0, 0)
    assert summary.faces_indexed == 3  # b.png's 1 and the earlier message's 2
    assert log.counts(TENANT) == {importlog.INDEXED: 2}
    assert not log.pending(TENANT)


def test_an_earlier_message_older_than_the_events_kept_is_not_waited_for() -> None:
    now_s = 2_000_000_000.0
    state = FileState(10, 1)
    recent = Pending("/p/recent.jpg", state, "b1", "m1", int((now_s - 60) * 1000))
    old = Pending("/p/old.jpg", state, "b2", "m2", int((now_s - bus.EVENTS_MAX_AGE_S - 60) * 1000))
    unnamed = Pending("/p/bad.jpg", state, "", "m3", int(now_s * 1000))
    assert _awaitable([recent, old, unnamed], now_s) == {"/p/recent.jpg": recent}
