"""NATS JetStream topology: streams, subjects, stage consumers and KV buckets,
defined once and created idempotently, plus publishing with trace context.

Every stage is one durable pull consumer on the work-queue stream ``FACEPIPE``;
replicas of a service bind to the same consumer and share its messages, so
running more replicas scales a stage. Dead letters go to ``facepipe.dlq.<stage>``
with the ``Facepipe-*`` headers defined here.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from facepipe.config import NatsTlsSettings
from facepipe.runtime.tracing import inject

log = logging.getLogger("facepipe.bus")

STREAM = "FACEPIPE"
DLQ_STREAM = "FACEPIPE_DLQ"
EVENTS_STREAM = "FACEPIPE_EVENTS"
# How long the events stream keeps a completion event.
EVENTS_MAX_AGE_S = 24 * 3600.0
AUDIT_STREAM = "FACEPIPE_AUDIT"
ACCESS_STREAM = "FACEPIPE_ACCESS"

SUBJECT_INGEST = "facepipe.ingest"
# facepipe.ingest.<tenant>: a producer of one tenant publishes here; the subject's tenant
# wins over the message's. facepipe.ingest itself is for trusted producers.
SUBJECT_TENANT_INGEST = f"{SUBJECT_INGEST}.*"
SUBJECT_STORED = "facepipe.images.stored"
SUBJECT_DETECTED = "facepipe.faces.detected"
SUBJECT_EMBEDDED = "facepipe.faces.embedded"
# The indexer's events for the persons service: faces written (FacesIndexed) and faces
# erased (FacesErased).
SUBJECT_FACES_INDEXED = "facepipe.faces.indexed"
SUBJECT_FACES_ERASED = "facepipe.faces.erased"
SUBJECT_DONE = "facepipe.events.done"
SUBJECT_DLQ = "facepipe.dlq"
SUBJECT_CRAWL_JOBS = "facepipe.crawl.jobs"
SUBJECT_AUDIT = "facepipe.audit"  # facepipe.audit.<tenant>
SUBJECT_ACCESS = "facepipe.access"  # facepipe.access.<tenant>.<camera>.<subject_id|unknown>

IMAGES_KV = "facepipe-images"  # exact dedup and per-image state: <tenant>.<sha256>
FACES_KV = "facepipe-faces"  # near-duplicate face hashes, per-key TTL
CRAWL_KV = "facepipe-crawl"  # crawl jobs (job.<id>), cancel flags, seen URLs, site strategies
CRAWL_KV_TTL = 14 * 24 * 3600.0
OPTOUT_KV = "facepipe-optout"  # people who asked not to be indexed: <tenant>.<optout id>
# Persons: records (<tenant>.person.<id>), the per-tenant lock (<tenant>.lock) and
# recluster states (<tenant>.recluster).
PERSONS_KV = "facepipe-persons"

HDR_STAGE = "Facepipe-Stage"
HDR_ERROR = "Facepipe-Error"
HDR_REASON = "Facepipe-Reason"
HDR_DELIVERIES = "Facepipe-Deliveries"
HDR_SUBJECT = "Facepipe-Subject"
HDR_ORPHANED = "Facepipe-Orphaned"  # times the reconciler put this message back in the queue


DEFAULT_ACK_WAIT = 60.0


@dataclass(frozen=True)
class StageSpec:
    name: str  # durable consumer name, also the service name
    subject: str
    # None: the service's stage setting (FACEPIPE_STAGE_ACK_WAIT), else DEFAULT_ACK_WAIT.
    ack_wait: float | None = None
    max_deliver: int = 5
    max_ack_pending: int = 256
    # More subjects the consumer takes besides ``subject``.
    extra_subjects: tuple[str, ...] = ()

    @property
    def subjects(self) -> tuple[str, ...]:
        return (self.subject, *self.extra_subjects)

    @property
    def ack_wait_s(self) -> float:
        return DEFAULT_ACK_WAIT if self.ack_wait is None else self.ack_wait


STAGES: dict[str, StageSpec] = {
    "extractor": StageSpec("extractor", SUBJECT_INGEST, extra_subjects=(SUBJECT_TENANT_INGEST,)),
    "detector": StageSpec("detector", SUBJECT_STORED),
    "embedder": StageSpec("embedder", SUBJECT_DETECTED),
    "indexer": StageSpec("indexer", SUBJECT_EMBEDDED),
    # One message is a whole crawl: in-progress heartbeats (every ack_wait / 3) keep it
    # while it runs, and a replica that dies hands it to another after ack_wait.
    "crawler": StageSpec("crawler", SUBJECT_CRAWL_JOBS, ack_wait=300.0, max_deliver=10, max_ack_pending=64),
    "persons": StageSpec("persons", SUBJECT_FACES_INDEXED, extra_subjects=(SUBJECT_FACES_ERASED,)),
}


def tls_options(tls: NatsTlsSettings | None = None) -> dict[str, Any]:
    """The TLS keywords of a NATS connection from ``tls`` (default: the environment's
    NATS TLS settings); empty for plain NATS."""
    from facepipe.tls import nats_ssl_context

    context = nats_ssl_context(NatsTlsSettings.from_env() if tls is None else tls)
    return {"tls": context} if context is not None else {}


async def connect(
    url: str, name: str, user: str = "", password: str = "", tls: NatsTlsSettings | None = None
) -> NATS:
    """Connects as ``user`` (else the user the URL carries, else anonymously), replying
    to the user's own inbox (see facepipe.natsauth), over TLS when ``tls`` (default: the
    environment's NATS TLS settings) says so."""
    from facepipe.natsauth import inbox_prefix, url_user

    async def on_error(exc: Exception) -> None:
        log.warning("nats error", extra={"error": str(exc)})

    client = NATS()
    secure = tls_options(tls)

    async def on_disconnect() -> None:
        if not (client.is_closed or client.is_draining):  # a close() also disconnects
            log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    credentials = {"user": user, "password": password} if user else {}
    await client.connect(
        url,
        name=f"facepipe-{name}",
        inbox_prefix=inbox_prefix(user or url_user(url)),
        **credentials,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **secure,
    )
    if secure:
        await _refuse_plaintext(client, url)
    return client


async def _refuse_plaintext(client: NATS, url: str) -> None:
    """With TLS configured, a server that did not switch to it (a plain server, or one
    in the middle stripping TLS) gets no message: nats-py upgrades only when the
    server's INFO asks for TLS, and would otherwise carry on in plaintext."""
    if not client._server_info.get("tls_required"):  # nats-py has no public flag for it
        await client.close()
        raise ConnectionError(
            f"NATS TLS is configured (FACEPIPE_NATS_TLS_*) but the server at {url} does not speak "
            "TLS; refusing to talk to it in plaintext"
        )


async def ensure_topology(js: JetStreamContext, dedup_ttl: float = 7 * 24 * 3600) -> None:
    """Creates or updates streams, stage consumers and KV buckets. Safe to run from every replica."""
    await _ensure_stream(
        js,
        js_api.StreamConfig(
            name=STREAM,
            subjects=[
                SUBJECT_INGEST,
                SUBJECT_TENANT_INGEST,
                "facepipe.images.>",
                "facepipe.faces.>",
                SUBJECT_CRAWL_JOBS,
            ],
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            storage=js_api.StorageType.FILE,
            duplicate_window=300.0,
            max_msg_size=8 * 1024 * 1024,
        ),
    )
    await _ensure_stream(
        js,
        js_api.StreamConfig(
            name=DLQ_STREAM,
            subjects=[f"{SUBJECT_DLQ}.>"],
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            max_age=14 * 24 * 3600.0,
        ),
    )
    await _ensure_stream(
        js,
        js_api.StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{SUBJECT_DONE}.>"],
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            max_age=EVENTS_MAX_AGE_S,
        ),
    )
    # Created when missing, never changed here: each stage applies its own settings
    # (ensure_consumer), which a replica of another stage must not reset.
    for stage in STAGES.values():
        try:
            await js.consumer_info(STREAM, stage.name)
        except NotFoundError:
            with contextlib.suppress(BadRequestError):
                await js.add_consumer(STREAM, consumer_config(stage))
    await _ensure_kv(js, js_api.KeyValueConfig(bucket=IMAGES_KV, history=1, storage=js_api.StorageType.FILE))
    await _ensure_kv(
        js,
        js_api.KeyValueConfig(bucket=FACES_KV, history=1, storage=js_api.StorageType.FILE, ttl=dedup_ttl),
    )
    await _ensure_kv(
        js,
        js_api.KeyValueConfig(bucket=CRAWL_KV, history=1, storage=js_api.StorageType.FILE, ttl=CRAWL_KV_TTL),
    )
    await _ensure_kv(js, persons_kv_config())


def audit_stream_config(max_age_s: float) -> js_api.StreamConfig:
    """The audit log: append-only (no message delete, no purge), kept ``max_age_s``."""
    return js_api.StreamConfig(
        name=AUDIT_STREAM,
        subjects=[f"{SUBJECT_AUDIT}.>"],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        max_age=max_age_s,
        deny_delete=True,
        deny_purge=True,
    )


async def ensure_audit_stream(js: JetStreamContext, max_age_s: float, update: bool = True) -> None:
    """Creates the audit stream; with ``update``, also applies ``max_age_s`` to an existing
    one (services do; a command line only creates it when missing)."""
    config = audit_stream_config(max_age_s)
    if update:
        await _ensure_stream(js, config)
        return
    try:
        await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        with contextlib.suppress(BadRequestError):
            await js.add_stream(config)


def access_stream_config(max_age_s: float) -> js_api.StreamConfig:
    """The access log of the recognizer's camera streams, kept ``max_age_s``."""
    return js_api.StreamConfig(
        name=ACCESS_STREAM,
        subjects=[f"{SUBJECT_ACCESS}.>"],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        max_age=max_age_s,
        duplicate_window=min(120.0, max_age_s),
        max_msg_size=1024 * 1024,
    )


async def ensure_access_stream(js: JetStreamContext, max_age_s: float) -> None:
    """Creates the access-log stream, or applies ``max_age_s`` to the existing one."""
    await _ensure_stream(js, access_stream_config(max_age_s))


async def ensure_optout_kv(js: JetStreamContext) -> KeyValue:
    await _ensure_kv(js, js_api.KeyValueConfig(bucket=OPTOUT_KV, history=1, storage=js_api.StorageType.FILE))
    return await js.key_value(OPTOUT_KV)


def persons_kv_config() -> js_api.KeyValueConfig:
    return js_api.KeyValueConfig(bucket=PERSONS_KV, history=1, storage=js_api.StorageType.FILE)


async def ensure_persons_kv(js: JetStreamContext) -> KeyValue:
    await _ensure_kv(js, persons_kv_config())
    return await js.key_value(PERSONS_KV)


def consumer_config(stage: StageSpec) -> js_api.ConsumerConfig:
    """The durable pull consumer of a stage; every replica of the stage binds to it."""
    filters = {"filter_subjects": list(stage.subjects)} if stage.extra_subjects else {}
    return js_api.ConsumerConfig(
        durable_name=stage.name,
        filter_subject=None if stage.extra_subjects else stage.subject,
        **filters,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=stage.ack_wait_s,
        max_deliver=stage.max_deliver,
        max_ack_pending=stage.max_ack_pending,
    )


async def ensure_consumer(js: JetStreamContext, stage: StageSpec) -> None:
    """Creates the stage's consumer, or updates it when its ack_wait, max_deliver or
    max_ack_pending differ from ``stage``."""
    try:
        current = (await js.consumer_info(STREAM, stage.name)).config
    except NotFoundError:
        current = None
    wanted = consumer_config(stage)
    if current is not None and (
        current.ack_wait is not None
        and abs(current.ack_wait - wanted.ack_wait) < 1e-3
        and current.max_deliver == wanted.max_deliver
        and current.max_ack_pending == wanted.max_ack_pending
        and _filters(current) == _filters(wanted)
    ):
        return
    await js.add_consumer(STREAM, wanted)
    if current is not None:
        log.info(
            "stage consumer updated",
            extra={"stage": stage.name, "ack_wait_s": wanted.ack_wait, "max_deliver": wanted.max_deliver},
        )


def _filters(config: js_api.ConsumerConfig) -> set[str]:
    return set(config.filter_subjects or ()) | ({config.filter_subject} if config.filter_subject else set())


async def _ensure_stream(js: JetStreamContext, config: js_api.StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        with contextlib.suppress(BadRequestError):  # another replica created it first
            await js.add_stream(config)
        return
    with contextlib.suppress(BadRequestError):
        await js.update_stream(config)


async def _ensure_kv(js: JetStreamContext, config: js_api.KeyValueConfig) -> None:
    try:
        await js.key_value(config.bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        with contextlib.suppress(BadRequestError):
            await js.create_key_value(config)


async def publish(
    js: JetStreamContext, subject: str, data: bytes, msg_id: str | None = None, headers: dict | None = None
) -> None:
    """Publishes with the current trace context; ``msg_id`` makes republishing idempotent."""
    hdrs = inject(dict(headers or {}))
    if msg_id:
        hdrs["Nats-Msg-Id"] = msg_id
    await js.publish(subject, data, headers=hdrs)
