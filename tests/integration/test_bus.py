"""The JetStream layer against a real nats-server: topology, acks, retries,
dead letters with reasons, and in-progress heartbeats."""

from __future__ import annotations

import asyncio

from nats.js import api as js_api

from facepipe import bus
from facepipe.bus import worker as bus_worker


async def _setup(url: str, stage: bus.StageSpec | None = None):
    nc = await bus.connect(url, "test")
    js = nc.jetstream()
    await bus.ensure_topology(js)
    if stage is not None:
        await js.add_consumer(
            bus.STREAM,
            js_api.ConsumerConfig(
                durable_name=stage.name,
                filter_subject=stage.subject,
                ack_policy=js_api.AckPolicy.EXPLICIT,
                ack_wait=stage.ack_wait,
                max_deliver=stage.max_deliver,
            ),
        )
    return nc, js


async def _dlq_messages(js, stage: str, expected: int, wait_s: float = 10.0) -> list:
    sub = await js.subscribe(f"{bus.SUBJECT_DLQ}.{stage}", stream=bus.DLQ_STREAM, ordered_consumer=True)
    out = []
    try:
        while len(out) < expected:
            out.append(await sub.next_msg(timeout=wait_s))
    finally:
        await sub.unsubscribe()
    return out


async def test_topology_is_idempotent(nats_server) -> None:
    nc, js = await _setup(nats_server.url)
    await bus.ensure_topology(js)  # second run, as every replica does at start-up
    streams = {s.config.name for s in await js.streams_info()}
    assert {bus.STREAM, bus.DLQ_STREAM, bus.EVENTS_STREAM} <= streams
    info = await js.stream_info(bus.STREAM)
    assert info.config.retention == js_api.RetentionPolicy.WORK_QUEUE
    for name, spec in bus.STAGES.items():
        ci = await js.consumer_info(bus.STREAM, name)
        filters = set(ci.config.filter_subjects or ()) | {ci.config.filter_subject} - {None}
        assert filters == set(spec.subjects)
        assert ci.config.ack_policy == js_api.AckPolicy.EXPLICIT
        assert ci.config.max_deliver == spec.max_deliver
    await js.key_value(bus.IMAGES_KV)
    await js.key_value(bus.FACES_KV)
    await nc.close()


async def test_ack_retry_and_dead_letters(nats_server) -> None:
    stage = bus.StageSpec("teststage", "facepipe.images.test", ack_wait=5, max_deliver=3)
    nc, js = await _setup(nats_server.url, stage)
    handled: dict[str, int] = {}

    def decode(msg):
        if msg.data.startswith(b"bad"):
            raise bus.PermanentError("malformed payload", reason="malformed")
        return msg.data.decode()

    async def handler(d: bus.Delivery) -> None:
        handled[d.payload] = handled.get(d.payload, 0) + 1
        if d.payload == "flaky" and d.deliveries < 2:
            raise RuntimeError("temporary failure")
        if d.payload == "poison":
            raise RuntimeError("always fails")

    dead: list[tuple] = []

    async def on_dead(msg, payload, error, reason):
        dead.append((payload, reason))

    worker = bus.StageWorker(nc, stage, decode, handler, on_dead=on_dead, max_inflight=4)
    await worker.start()
    for body in (b"ok", b"flaky", b"bad json", b"poison"):
        await bus.publish(js, stage.subject, body)

    dlq = await _dlq_messages(js, stage.name, expected=2, wait_s=15)
    by_reason = {m.headers[bus.HDR_REASON]: m for m in dlq}
    assert set(by_reason) == {"malformed", "max_deliver"}
    malformed = by_reason["malformed"]
    assert malformed.data == b"bad json"
    assert malformed.headers[bus.HDR_STAGE] == stage.name
    assert malformed.headers[bus.HDR_DELIVERIES] == "1"
    assert "malformed payload" in malformed.headers[bus.HDR_ERROR]
    poison = by_reason["max_deliver"]
    assert poison.data == b"poison" and poison.headers[bus.HDR_DELIVERIES] == "3"
    assert "always fails" in poison.headers[bus.HDR_ERROR]
    assert handled["ok"] == 1 and handled["flaky"] == 2 and handled["poison"] == 3
    await worker.drain(grace=5)
    assert worker.stats.counters["msgs_dlq"] == 2
    assert worker.stats.counters["msgs_acked"] == 2
    assert sorted(r for _, r in dead) == ["malformed", "max_deliver"]
    # Work-queue retention: acked and terminated messages are gone from the stream.
    ci = await js.consumer_info(bus.STREAM, stage.name)
    assert ci.num_pending == 0 and ci.num_ack_pending == 0
    await nc.close()


async def test_long_work_keeps_its_message(nats_server) -> None:
    """Work longer than ack_wait is not redelivered thanks to in-progress heartbeats."""
    # Heartbeats come every second, well within ack_wait; the work takes longer than ack_wait.
    stage = bus.StageSpec("slowstage", "facepipe.images.slow", ack_wait=3, max_deliver=5)
    nc, js = await _setup(nats_server.url, stage)
    calls = []

    async def handler(d: bus.Delivery) -> None:
        calls.append(d.deliveries)
        await asyncio.sleep(4)

    worker = bus.StageWorker(nc, stage, lambda m: m.data, handler)
    await worker.start()
    await bus.publish(js, stage.subject, b"slow")
    deadline = asyncio.get_running_loop().time() + 60
    while not worker.stats.counters["msgs_acked"]:
        assert asyncio.get_running_loop().time() < deadline, "the message was never acked"
        await asyncio.sleep(0.1)
    await worker.drain(grace=5)
    await nc.flush()  # the ack has reached the server
    assert calls == [1]
    assert worker.stats.counters["msgs_acked"] == 1
    # The server saw one delivery, acked, and nothing redelivered or left waiting.
    ci = await js.consumer_info(bus.STREAM, stage.name)
    assert ci.delivered.consumer_seq == ci.ack_floor.consumer_seq == 1
    assert ci.delivered.stream_seq == ci.ack_floor.stream_seq >= 1
    assert ci.num_redelivered == 0 and ci.num_ack_pending == 0 and ci.num_pending == 0
    assert (await js.stream_info(bus.STREAM)).state.messages == 0  # work queue: acked means gone
    await nc.close()


async def test_publish_msg_id_is_idempotent(nats_server) -> None:
    nc, js = await _setup(nats_server.url)
    for _ in range(3):
        await bus.publish(js, bus.SUBJECT_DONE + ".b1", b"x", msg_id="same-id")
    info = await js.stream_info(bus.EVENTS_STREAM)
    assert info.state.messages == 1
    await nc.close()


async def _lose_every_delivery(
    js, stage: bus.StageSpec, then_publish: tuple[bytes, dict], subject: str = ""
) -> None:
    """Publishes a message, takes each of its deliveries and never acks them, as replicas
    killed holding it would, until JetStream stops delivering it (max_deliver)."""
    # No pull of a drained worker may still be waiting on the server to take one of them.
    deadline = asyncio.get_running_loop().time() + 10
    while (await js.consumer_info(bus.STREAM, stage.name)).num_waiting:
        assert asyncio.get_running_loop().time() < deadline, "a pull request never expired"
        await asyncio.sleep(0.1)
    thief = await js.pull_subscribe_bind(durable=stage.name, stream=bus.STREAM)
    data, headers = then_publish
    await js.publish(subject or stage.subject, data, headers=headers)
    for _ in range(stage.max_deliver):
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                (await thief.fetch(1, timeout=1))[0]
                break
            except TimeoutError:
                assert asyncio.get_running_loop().time() < deadline, "no redelivery"
    # Past the last ack_wait, a pull finds nothing: the server gave up on the message.
    try:
        await thief.fetch(1, timeout=stage.ack_wait_s + 1.5)
        raise AssertionError("delivered past max_deliver")
    except TimeoutError:
        pass
    await thief.unsubscribe()


async def test_messages_whose_deliveries_were_lost_are_requeued(nats_server) -> None:
    """A message whose every delivery was lost stays in the work queue, delivered no more
    (the orphans a crash leaves); the worker's reconciler puts it back, and it is handled
    once. One put back too often is dead-lettered as orphaned."""
    stage = bus.StageSpec("orphanstage", "facepipe.images.orphan", ack_wait=1, max_deliver=2)
    nc, js = await _setup(nats_server.url, stage)
    await _lose_every_delivery(js, stage, then_publish=(b"lost", {}))
    ci = await js.consumer_info(bus.STREAM, stage.name)
    assert ci.num_pending == 0 and ci.num_ack_pending == 0
    info = await js.stream_info(bus.STREAM, subjects_filter=stage.subject)
    assert info.state.subjects == {stage.subject: 1}  # the orphan: queued, never delivered again

    handled: list[bytes] = []

    async def handler(d: bus.Delivery) -> None:
        handled.append(d.payload)

    worker = bus.StageWorker(nc, stage, lambda m: m.data, handler)
    orphans = await worker.find_orphans()
    assert len(orphans) == 1
    assert await worker.reconcile() == 0  # seen once: only a suspect
    assert await worker.reconcile() == 1
    await worker.start()
    deadline = asyncio.get_running_loop().time() + 30
    while not worker.stats.counters["msgs_acked"]:
        assert asyncio.get_running_loop().time() < deadline, "the orphan was never handled"
        await asyncio.sleep(0.1)
    await worker.drain(grace=5)
    assert handled == [b"lost"] and worker.stats.counters["msgs_orphaned"] == 1
    info = await js.stream_info(bus.STREAM, subjects_filter=stage.subject)
    assert not info.state.subjects  # nothing left in the work queue

    # Put back MAX_ORPHAN_REDELIVERIES times already: dead-lettered, with the reason.
    headers = {bus.HDR_ORPHANED: str(bus_worker.MAX_ORPHAN_REDELIVERIES)}
    await _lose_every_delivery(js, stage, then_publish=(b"hopeless", headers))
    idle = bus.StageWorker(nc, stage, lambda m: m.data, handler)
    await idle.reconcile()
    assert await idle.reconcile() == 1
    (dead,) = await _dlq_messages(js, stage.name, expected=1)
    assert dead.data == b"hopeless" and dead.headers[bus.HDR_REASON] == "orphaned"
    info = await js.stream_info(bus.STREAM, subjects_filter=stage.subject)
    assert not info.state.subjects
    await nc.close()


async def test_an_orphan_on_a_stage_s_second_subject_is_requeued_there(nats_server) -> None:
    """A stage with more than one subject (the extractor: facepipe.ingest and
    facepipe.ingest.<tenant>) finds orphans on each, and puts them back on their own
    subject, whose tenant the stage reads."""
    stage = bus.StageSpec(
        "orphantenant",
        "facepipe.images.orphan2",
        ack_wait=1,
        max_deliver=2,
        extra_subjects=("facepipe.images.orphan2.*",),
    )
    nc, js = await _setup(nats_server.url)
    await js.add_consumer(bus.STREAM, bus.consumer_config(stage))
    await _lose_every_delivery(js, stage, (b"lost", {}), subject="facepipe.images.orphan2.acme")

    handled: list[str] = []

    async def handler(d: bus.Delivery) -> None:
        handled.append(d.msg.subject)

    worker = bus.StageWorker(nc, stage, lambda m: m.data, handler)
    assert len(await worker.find_orphans()) == 1
    await worker.reconcile()
    assert await worker.reconcile() == 1
    await worker.start()
    deadline = asyncio.get_running_loop().time() + 30
    while not handled:
        assert asyncio.get_running_loop().time() < deadline, "the orphan was never handled"
        await asyncio.sleep(0.1)
    await worker.drain(grace=5)
    assert handled == ["facepipe.images.orphan2.acme"]
    await nc.close()


async def test_a_stage_sets_its_ack_wait_and_the_topology_keeps_it(nats_server) -> None:
    """Each stage applies its own ack_wait to its consumer; a replica of another stage
    running the topology at start-up leaves it as it is."""
    nc, js = await _setup(nats_server.url)
    assert (await js.consumer_info(bus.STREAM, "detector")).config.ack_wait == bus.DEFAULT_ACK_WAIT
    stage = bus.StageSpec("detector", bus.SUBJECT_STORED, ack_wait=4)
    worker = bus.StageWorker(nc, stage, lambda m: m.data, lambda d: asyncio.sleep(0))
    await worker.start()
    assert (await js.consumer_info(bus.STREAM, "detector")).config.ack_wait == 4
    await bus.ensure_topology(js)
    assert (await js.consumer_info(bus.STREAM, "detector")).config.ack_wait == 4
    await worker.drain(grace=1)
    await nc.close()
