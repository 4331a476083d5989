"""The access log on a real nats-server: writes land on per-tenant, camera and subject
subjects, queries filter by them and by time, newest first, and the stream drops records
older than its max age."""

from __future__ import annotations

import asyncio

import nats
import pytest

from facepipe import bus
from facepipe.config import PrivacySettings
from facepipe.recognition.accesslog import AccessLog, AccessQuery, filter_subject, record_subject
from facepipe.recognition.tracking import AccessEvent

BASE_MS = 1_780_000_000_000


def event(camera: str, subject: str, first_s: float, last_s: float, track: int = 1) -> AccessEvent:
    return AccessEvent(
        camera_id=camera,
        track_id=track,
        subject_id=subject,
        subject_name=subject.title(),
        external_id="",
        first_seen_ms=BASE_MS + int(first_s * 1000),
        last_seen_ms=BASE_MS + int(last_s * 1000),
        best_similarity=0.5,
        frames=10,
        snapshot_jpeg=b"\xff\xd8jpeg",
    )


async def _connect(url: str):
    nc = await nats.connect(url)
    return nc, nc.jetstream()


async def test_queries_filter_by_camera_subject_and_time_newest_first(nats_server) -> None:
    nc, js = await _connect(nats_server.url)
    try:
        log = await AccessLog.attach(js, max_age_s=3600)
        await log.write("acme", event("door", "alice", 0, 5, track=1))
        await log.write("acme", event("door", "", 10, 12, track=2))
        await log.write("acme", event("gate", "bob", 20, 30, track=1))
        await log.write("acme", event("door", "alice", 40, 41, track=3))
        await log.write("other", event("door", "alice", 50, 60, track=1))

        async def ids(**filters) -> list[tuple[str, str, int]]:
            records = await log.query(AccessQuery(tenant=filters.pop("tenant", "acme"), **filters))
            return [(r.camera_id, r.subject_id or "?", r.track_id) for r in records]

        assert await ids() == [
            ("door", "alice", 3),
            ("gate", "bob", 1),
            ("door", "?", 2),
            ("door", "alice", 1),
        ]
        assert await ids(camera_id="door") == [("door", "alice", 3), ("door", "?", 2), ("door", "alice", 1)]
        assert await ids(subject_id="alice") == [("door", "alice", 3), ("door", "alice", 1)]
        assert await ids(subject_id="unknown") == [("door", "?", 2)]
        assert await ids(camera_id="gate", subject_id="alice") == []
        assert await ids(tenant="other") == [("door", "alice", 1)]
        assert await ids(tenant="nobody") == []
        # a record overlapping the range counts; since/until are capture times
        assert await ids(since_ms=BASE_MS + 11_000, until_ms=BASE_MS + 25_000) == [
            ("gate", "bob", 1),
            ("door", "?", 2),
        ]
        assert await ids(since_ms=BASE_MS + 35_000) == [("door", "alice", 3)]
        assert await ids(until_ms=BASE_MS + 4_000) == [("door", "alice", 1)]
        assert await ids(limit=2) == [("door", "alice", 3), ("gate", "bob", 1)]

        (first,) = await log.query(AccessQuery(tenant="acme", subject_id="bob"))
        assert first.subject_name == "Bob" and first.snapshot_jpeg == b"\xff\xd8jpeg" and first.frames == 10
        assert first.record_id and first.tenant_id == "acme"
        (bare,) = await log.query(AccessQuery(tenant="acme", subject_id="bob", with_snapshots=False))
        assert bare.snapshot_jpeg == b"" and bare.record_id == first.record_id
    finally:
        await nc.close()


async def test_records_older_than_the_max_age_are_dropped(nats_server) -> None:
    nc, js = await _connect(nats_server.url)
    try:
        log = await AccessLog.attach(js, max_age_s=1.0)
        await log.write("acme", event("door", "alice", 0, 1))
        assert len(await log.query(AccessQuery(tenant="acme"))) == 1
        await asyncio.sleep(2.5)
        assert await log.query(AccessQuery(tenant="acme")) == []
        # a service starting with another setting applies it to the existing stream
        await AccessLog.attach(js, max_age_s=PrivacySettings(access_log_max_age_days=2).access_log_max_age_s)
        assert (await js.stream_info(bus.ACCESS_STREAM)).config.max_age == 2 * 24 * 3600
    finally:
        await nc.close()


async def test_a_query_before_any_record_is_empty(nats_server) -> None:
    nc, js = await _connect(nats_server.url)
    try:
        assert await AccessLog(js).query(AccessQuery(tenant="acme")) == []
    finally:
        await nc.close()


def test_subjects_and_bad_values() -> None:
    assert record_subject("acme", "door", "") == "facepipe.access.acme.door.unknown"
    assert record_subject("acme", "door", "s1") == "facepipe.access.acme.door.s1"
    assert filter_subject("acme") == "facepipe.access.acme.*.*"
    assert filter_subject("acme", subject_id="unknown") == "facepipe.access.acme.*.unknown"
    with pytest.raises(ValueError, match="camera id"):
        record_subject("acme", "front door", "")
    with pytest.raises(ValueError, match="tenant"):
        AccessQuery(tenant="a.b")
    with pytest.raises(ValueError, match="limit"):
        AccessQuery(tenant="acme", limit=0)
    with pytest.raises(ValueError, match="until is before since"):
        AccessQuery(tenant="acme", since_ms=10, until_ms=5)
