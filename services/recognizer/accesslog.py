"""ListAccessLog: a tenant's access records, filtered and newest first.

The servicer delegates here; the records are read from the access-log stream by
:class:`facepipe.recognition.accesslog.AccessLog`.
"""

from __future__ import annotations

import grpc

from facepipe.echo import echo
from facepipe.pipeline import TENANT_RE
from facepipe.recognition.accesslog import DEFAULT_LIMIT, MAX_LIMIT, AccessQuery
from facepipe.v1 import recognizer_pb2

from .stage import RecognizerDeps


def access_query(request: recognizer_pb2.ListAccessLogRequest) -> AccessQuery:
    """The query of a request; ValueError (with the message for the caller) when it is wrong."""
    if not TENANT_RE.match(request.tenant_id or ""):
        raise ValueError(f"tenant_id {echo(request.tenant_id)} is required: 1-64 letters, digits, '_' or '-'")
    if request.limit < 0 or request.limit > MAX_LIMIT:
        raise ValueError(f"limit must be 0 (the default, {DEFAULT_LIMIT}) to {MAX_LIMIT}")
    return AccessQuery(
        tenant=request.tenant_id,
        camera_id=request.camera_id,
        subject_id=request.subject_id,
        since_ms=request.since_ms,
        until_ms=request.until_ms,
        limit=request.limit or DEFAULT_LIMIT,
        with_snapshots=not request.without_snapshots,
    )


async def list_access_log(
    deps: RecognizerDeps, request: recognizer_pb2.ListAccessLogRequest, context: grpc.aio.ServicerContext
) -> recognizer_pb2.ListAccessLogResponse:
    try:
        query = access_query(request)
    except ValueError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    access_log = deps.access_log
    if access_log is None:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "this recognizer keeps no access log: it runs without NATS (set FACEPIPE_NATS_URL)",
        )
    records = await access_log.query(query)
    return recognizer_pb2.ListAccessLogResponse(records=records)
