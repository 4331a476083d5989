"""Privacy commands: the audit log (``facepipe audit``) and opt-outs (``facepipe optout``).

Both go through the indexer's gRPC API with an API key, so that what a caller may
read or change is decided by the key, as for every other call."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from facepipe.cli.errors import UsageError, image_file
from facepipe.cli.keys_cmds import DURATION_RE, UNIT_SECONDS
from facepipe.cli.pipeline_cmds import _indexer

DEFAULT_SINCE = "24h"


def parse_since(value: str, now: float | None = None) -> float:
    """``1h``, ``30m``, ``7d``, ``2w``, ``3600s`` ago, or an ISO date/time (UTC if no zone),
    as Unix seconds."""
    now = time.time() if now is None else now
    match = DURATION_RE.match(value.strip())
    if match:
        return now - int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value[:64]!r} is neither a duration (1h, 30m, 7d) nor a date (2026-11-30 or 2026-11-30T12:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _record_doc(r) -> dict:
    return {
        "seq": r.seq,
        "time": _when(r.time_ms),
        "time_ms": r.time_ms,
        "key_id": r.key_id,
        "role": r.role,
        "tenant": r.tenant_id,
        "action": r.action,
        "method": r.method,
        "service": r.service,
        "outcome": r.outcome,
        "results": r.results if r.HasField("results") else None,
        "affected": dict(r.affected),
        "detail": dict(r.detail),
    }


def cmd_audit(args: argparse.Namespace) -> int:
    from facepipe.v1 import indexer_pb2

    since = args.since if args.since is not None else parse_since(DEFAULT_SINCE)
    request = indexer_pb2.ListAuditRecordsRequest(
        tenant_id=args.tenant or "", since_ms=int(since * 1000), limit=args.limit
    )
    records = [_record_doc(r) for r in _indexer(args, "ListAuditRecords", request).records]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print(f"no audit records since {_when(int(since * 1000))}")
    for r in records:
        counts = [f"results={r['results']}"] if r["results"] is not None else []
        counts += [f"{k}={v}" for k, v in sorted(r["affected"].items())]
        counts += [f"{k}={v}" for k, v in sorted(r["detail"].items())]
        who = f"key {r['key_id']}" if r["key_id"] else "no key"
        print(
            f"{r['time']}  {r['tenant']:12} {r['action']:14} {r['outcome']:18} {who}"
            + (f"  {' '.join(counts)}" if counts else "")
        )
    return 0


def cmd_optout(args: argparse.Namespace) -> int:
    from facepipe.v1 import indexer_pb2

    if args.optout_cmd == "add":
        for photo in args.photos:
            image_file(photo)
        images = [Path(p).read_bytes() for p in args.photos]
        resp = _indexer(
            args, "OptOut", indexer_pb2.OptOutRequest(tenant_id=args.tenant, images=images, note=args.note)
        )
        doc = {
            "optout_id": resp.optout_id,
            "tenant": args.tenant,
            "faces": resp.faces,
            "points_deleted": resp.points_deleted,
            "objects_deleted": resp.objects_deleted,
            "min_score": round(resp.min_score, 4),
        }
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(
                f"opt-out {resp.optout_id} registered in tenant {args.tenant} from {resp.faces} face(s); "
                f"erased {resp.points_deleted} indexed face(s), {resp.objects_deleted} object(s); "
                f"later faces at or above {resp.min_score:.3f} similarity are skipped"
            )
        return 0
    if args.optout_cmd == "list":
        resp = _indexer(args, "ListOptOuts", indexer_pb2.ListOptOutsRequest(tenant_id=args.tenant))
        docs = [
            {
                "optout_id": e.optout_id,
                "tenant": e.tenant_id,
                "faces": e.faces,
                "note": e.note,
                "created": _when(e.created_at_ms),
                "key_id": e.key_id,
            }
            for e in resp.optouts
        ]
        if args.json:
            print(json.dumps(docs, indent=2))
            return 0
        if not docs:
            print(f"no opt-outs in tenant {args.tenant}")
        for d in docs:
            note = f"  {d['note']}" if d["note"] else ""
            print(
                f"{d['optout_id']}  {d['faces']} face(s)  created {d['created']} by key {d['key_id']}{note}"
            )
        return 0
    if not args.optout_id or len(args.optout_id) != 16:
        raise UsageError(
            f"{args.optout_id[:64]!r} is not an opt-out id (16 hex digits, from `facepipe optout list`)"
        )
    _indexer(
        args, "RemoveOptOut", indexer_pb2.RemoveOptOutRequest(tenant_id=args.tenant, optout_id=args.optout_id)
    )
    print(
        f"removed opt-out {args.optout_id} from tenant {args.tenant}: their faces are indexed again from now on"
    )
    return 0
