"""The audit log: who (API key id) did what (action and method) to which tenant, when,
with how many results, what it affected and the outcome.

Records are JSON messages appended to the JetStream stream ``FACEPIPE_AUDIT`` on
``facepipe.audit.<tenant>`` (``~all`` for a ``*`` tenant, ``~none`` for none). The stream
refuses message deletes and purges and drops records after
``FACEPIPE_AUDIT_MAX_AGE_DAYS``.

Recording happens once, in one place per kind of change: gRPC methods whose rule in
:data:`facepipe.auth.access.METHOD_RULES` names an audit action are recorded by the
server interceptor after the handler ran (handlers add counts with :func:`note`); the
keys command line and any later change outside gRPC call :meth:`AuditLog.record`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js import api as js_api

from facepipe import bus
from facepipe.runtime import metrics

log = logging.getLogger("facepipe.audit")

ALL_TENANTS_TOKEN = "~all"  # '~' is never in a tenant name, so these cannot collide with one
NO_TENANT_TOKEN = "~none"
PUBLISH_TIMEOUT_S = 5.0


def tenant_token(tenant: str) -> str:
    """The subject token of a tenant in ``facepipe.audit.<token>``."""
    from facepipe.pipeline import TENANT_RE  # on use: the pipeline module imports the server runtime

    if tenant == "*":
        return ALL_TENANTS_TOKEN
    return tenant if TENANT_RE.match(tenant or "") else NO_TENANT_TOKEN


def subject_of(tenant: str | None) -> str:
    """The subject of one tenant's records, or of every record (None)."""
    return f"{bus.SUBJECT_AUDIT}.>" if tenant is None else f"{bus.SUBJECT_AUDIT}.{tenant_token(tenant)}"


@dataclass
class AuditRecord:
    """One audited action. ``results`` is None when the action returns no list."""

    action: str  # e.g. search, erase, keys.create, optout.add
    tenant: str
    key_id: str = ""  # empty: no key (auth off, or a change made outside gRPC by a NATS user)
    role: str = ""
    method: str = ""  # the gRPC method, or the command that made the change
    service: str = ""
    outcome: str = "OK"  # a gRPC status code name
    results: int | None = None
    affected: dict[str, int] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    seq: int = 0  # the stream sequence, once read back

    @property
    def subject(self) -> str:
        return subject_of(self.tenant)

    def to_bytes(self) -> bytes:
        doc = asdict(self)
        doc.pop("seq")
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, seq: int = 0) -> AuditRecord:
        doc = json.loads(data)
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc and k != "seq"}
        return cls(**known, seq=seq)

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["time_iso"] = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        return doc


# The record of the RPC being served, for its handler to add counts to.
current: contextvars.ContextVar[AuditRecord | None] = contextvars.ContextVar("facepipe_audit", default=None)


def note(results: int | None = None, tenant: str | None = None, **affected: int) -> None:
    """Adds to the audit record of the current call: how many results it returned, how
    many things of each kind it affected, or the tenant when the request had none.
    Does nothing outside an audited call."""
    record = current.get()
    if record is None:
        return
    if results is not None:
        record.results = results
    if tenant is not None:
        record.tenant = tenant
    for name, count in affected.items():
        record.affected[name] = record.affected.get(name, 0) + int(count)


def detail(**values: str) -> None:
    """Adds short descriptive values (a selector, an id) to the current call's record."""
    record = current.get()
    if record is not None:
        record.detail.update({k: str(v)[:200] for k, v in values.items()})


class AuditLog:
    """Appends records to the audit stream. Without NATS (``attach`` never called) a
    record goes to the process log instead, so nothing audited passes unrecorded."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.js: JetStreamContext | None = None

    async def attach(self, js: JetStreamContext, max_age_s: float, update_stream: bool = True) -> None:
        await bus.ensure_audit_stream(js, max_age_s, update=update_stream)
        self.js = js

    async def record(self, record: AuditRecord) -> bool:
        """Appends ``record``; False (logged with the record, counted) when it could not be."""
        record.service = record.service or self.service
        if self.js is None:
            log.info("audit", extra={"audit": record.as_dict()})
            return False
        try:
            await self.js.publish(record.subject, record.to_bytes(), timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the call it records already happened; say so loudly
            metrics.AUDIT_FAILURES.labels(self.service).inc()
            log.error("audit record not stored", extra={"audit": record.as_dict(), "error": str(exc)})
            return False
        metrics.AUDIT_RECORDS.labels(self.service, record.action, record.outcome).inc()
        return True


async def read(
    js: JetStreamContext,
    tenant: str | None,
    since: float = 0.0,
    limit: int = 100,
    idle_s: float = 0.3,
) -> list[AuditRecord]:
    """The newest ``limit`` records of ``tenant`` (None: every tenant) made at or after
    ``since`` (Unix seconds), oldest first."""
    try:
        await js.stream_info(bus.AUDIT_STREAM)
    except Exception as exc:  # noqa: BLE001 - nats-py's NotFoundError: nothing was ever recorded
        if type(exc).__name__ == "NotFoundError":
            return []
        raise
    start = datetime.fromtimestamp(max(since, 0.0), UTC).isoformat().replace("+00:00", "Z")
    config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=start)
    sub = await js.subscribe(
        subject_of(tenant), stream=bus.AUDIT_STREAM, ordered_consumer=True, config=config
    )
    newest: deque[AuditRecord] = deque(maxlen=limit)
    try:
        info = await sub.consumer_info()
        remaining = info.num_pending + (info.num_ack_pending or 0)
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_s if remaining <= 0 else 5.0)
            except Exception as exc:  # nats-py raises its own TimeoutError subclass
                if (
                    isinstance(exc, TimeoutError | asyncio.TimeoutError)
                    or type(exc).__name__ == "TimeoutError"
                ):
                    break  # nothing more stored
                raise
            remaining -= 1
            try:
                record = AuditRecord.from_bytes(msg.data, msg.metadata.sequence.stream)
            except (ValueError, TypeError):
                log.warning("unreadable audit record", extra={"seq": msg.metadata.sequence.stream})
                continue
            if record.time >= since:
                newest.append(record)
    finally:
        await sub.unsubscribe()
    return list(newest)
