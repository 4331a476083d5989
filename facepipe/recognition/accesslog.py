"""The access log: one record per camera track and decision, in the JetStream stream
``FACEPIPE_ACCESS``.

A record is a serialized :class:`facepipe.v1.recognizer_pb2.AccessRecord` published on
``facepipe.access.<tenant>.<camera>.<subject_id|unknown>``, so the stream's subject
filters select a tenant, a camera and a subject without reading the rest, and the
stream's start-time delivery skips what is older than a query's range. The stream keeps
file storage (replicated like the other streams on a NATS cluster) and drops records
older than ``FACEPIPE_ACCESS_LOG_MAX_AGE_DAYS`` by itself.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from facepipe import bus
from facepipe.recognition.tracking import AccessEvent
from facepipe.v1 import recognizer_pb2

log = logging.getLogger("facepipe.accesslog")

UNKNOWN_TOKEN = "unknown"  # the subject token of faces no subject matched
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
PUBLISH_TIMEOUT_S = 5.0
IDLE_READ_S = 0.5
# Records are written when a decision ends, after its frames were captured: a query
# starts this much before its range, so records whose capture clock ran behind are read.
READ_SLACK_MS = 10 * 60 * 1000


def check_token(value: str, what: str) -> str:
    """``value`` when it can be one token of a NATS subject (1-64 letters, digits, '_'
    or '-'); ValueError otherwise."""
    if not TOKEN_RE.match(value or ""):
        raise ValueError(f"invalid {what} {value[:100]!r}: 1-64 letters, digits, '_' or '-'")
    return value


def subject_token(subject_id: str) -> str:
    return check_token(subject_id, "subject id") if subject_id else UNKNOWN_TOKEN


def record_subject(tenant: str, camera_id: str, subject_id: str) -> str:
    """Where one record is published."""
    return ".".join(
        (
            bus.SUBJECT_ACCESS,
            check_token(tenant, "tenant"),
            check_token(camera_id, "camera id"),
            subject_token(subject_id),
        )
    )


def filter_subject(tenant: str, camera_id: str = "", subject_id: str = "") -> str:
    """The stream filter of a query; empty camera or subject: any. ``subject_id`` may be
    ``unknown`` for unknown faces."""
    camera = check_token(camera_id, "camera id") if camera_id else "*"
    subject = check_token(subject_id, "subject id") if subject_id else "*"
    return f"{bus.SUBJECT_ACCESS}.{check_token(tenant, 'tenant')}.{camera}.{subject}"


def event_record(tenant: str, event: AccessEvent) -> recognizer_pb2.AccessRecord:
    return recognizer_pb2.AccessRecord(
        record_id=uuid.uuid4().hex,
        tenant_id=tenant,
        camera_id=event.camera_id,
        track_id=event.track_id,
        subject_id=event.subject_id,
        subject_name=event.subject_name,
        external_id=event.external_id,
        first_seen_ms=event.first_seen_ms,
        last_seen_ms=event.last_seen_ms,
        best_similarity=event.best_similarity,
        snapshot_jpeg=event.snapshot_jpeg,
        frames=event.frames,
    )


@dataclass(frozen=True)
class AccessQuery:
    """What a query selects: a tenant's records, optionally of one camera and subject,
    seen within [since_ms, until_ms] (0: unbounded), at most ``limit``, newest first."""

    tenant: str
    camera_id: str = ""
    subject_id: str = ""  # a subject id, or "unknown"
    since_ms: int = 0
    until_ms: int = 0
    limit: int = DEFAULT_LIMIT
    with_snapshots: bool = True

    def __post_init__(self) -> None:
        filter_subject(self.tenant, self.camera_id, self.subject_id)  # checks the tokens
        if self.since_ms < 0 or self.until_ms < 0:
            raise ValueError("since and until must not be negative")
        if self.until_ms and self.since_ms and self.until_ms < self.since_ms:
            raise ValueError("until is before since")
        if not 0 < self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_LIMIT}")

    def matches(self, record: recognizer_pb2.AccessRecord) -> bool:
        """Whether the record was seen within the range (it overlaps it)."""
        if self.since_ms and record.last_seen_ms < self.since_ms:
            return False
        return not (self.until_ms and record.first_seen_ms > self.until_ms)


class AccessLog:
    """Writes and reads the access log of one JetStream context."""

    def __init__(self, js: JetStreamContext, service: str = "recognizer") -> None:
        self.js = js
        self.service = service

    @classmethod
    async def attach(cls, js: JetStreamContext, max_age_s: float, service: str = "recognizer") -> AccessLog:
        """The access log, its stream created or its retention set to ``max_age_s``."""
        await bus.ensure_access_stream(js, max_age_s)
        return cls(js, service)

    async def write(self, tenant: str, event: AccessEvent) -> recognizer_pb2.AccessRecord:
        """Appends the record of ``event``; raises when the stream did not take it."""
        record = event_record(tenant, event)
        subject = record_subject(tenant, event.camera_id, event.subject_id)
        await self.js.publish(
            subject,
            record.SerializeToString(),
            timeout=PUBLISH_TIMEOUT_S,
            headers={"Nats-Msg-Id": record.record_id},
        )
        return record

    async def query(self, query: AccessQuery) -> list[recognizer_pb2.AccessRecord]:
        """The records ``query`` selects, newest (last seen) first."""
        try:
            await self.js.stream_info(bus.ACCESS_STREAM)
        except NotFoundError:
            return []
        config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL)
        if query.since_ms:
            start_ms = max(0, query.since_ms - READ_SLACK_MS)
            start = datetime.fromtimestamp(start_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
            config = js_api.ConsumerConfig(
                deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=start
            )
        subscription = await self.js.subscribe(
            filter_subject(query.tenant, query.camera_id, query.subject_id),
            stream=bus.ACCESS_STREAM,
            ordered_consumer=True,
            config=config,
        )
        # Records are appended as decisions end, so the stream's order is nearly the last-
        # seen order: keep the latest few more than asked, then sort them exactly.
        newest: deque[recognizer_pb2.AccessRecord] = deque(maxlen=query.limit * 2 + 16)
        try:
            # What the new consumer says is pending can lag its creation: with nothing said,
            # wait a moment for a first record; then each record says how many follow it.
            remaining = (await subscription.consumer_info()).num_pending
            while True:
                try:
                    msg = await subscription.next_msg(timeout=5.0 if remaining > 0 else IDLE_READ_S)
                except TimeoutError:
                    break
                except Exception as exc:  # nats-py's own timeout class
                    if type(exc).__name__ == "TimeoutError":
                        break
                    raise
                remaining = msg.metadata.num_pending
                record = recognizer_pb2.AccessRecord()
                try:
                    record.ParseFromString(msg.data)
                except Exception:  # noqa: BLE001 - a foreign message on the subject: skip it
                    log.warning("unreadable access record", extra={"subject": msg.subject})
                    continue
                if query.matches(record):
                    if not query.with_snapshots:
                        record.ClearField("snapshot_jpeg")
                    newest.append(record)
                if remaining <= 0:
                    break
        finally:
            await subscription.unsubscribe()
        ordered = sorted(newest, key=lambda r: (r.last_seen_ms, r.first_seen_ms), reverse=True)
        return ordered[: query.limit]
