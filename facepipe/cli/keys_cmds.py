"""API key commands: create, list and revoke the keys of a deployment.

Keys live in the NATS KV bucket the services watch, so these commands talk to
the NATS of the stack they are aimed at (or FACEPIPE_NATS_URL). Every creation and
revocation is recorded in the audit log, naming the key this command line holds
(when it has one) and the user who ran it."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from facepipe.cli import addresses
from facepipe.cli.errors import CliError, UsageError

if TYPE_CHECKING:
    from facepipe.auth import KeyRecord

DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(value: str, now: float | None = None) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` from now, or an ISO date/time (UTC if no zone)."""
    now = time.time() if now is None else now
    match = DURATION_RE.match(value.strip())
    if match:
        seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
        if seconds <= 0:
            raise argparse.ArgumentTypeError(f"{value!r}: an expiry must lie in the future")
        return now + seconds
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a duration (30d, 12h, 90m, 3600s, 2w) nor a date (2027-01-31)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when.timestamp() <= now:
        raise argparse.ArgumentTypeError(f"{value!r} is in the past")
    return when.timestamp()


def key_tenant(value: str) -> str:
    """A tenant name, or ``*`` for every tenant."""
    from facepipe.cli.parser import tenant

    return value if value == "*" else tenant(value)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "never"


async def _with_store(nats_url: str, action, audited=None):
    """Runs ``action`` on the key store; ``audited`` turns its result into the audit
    record of the change (None: nothing changed)."""
    from facepipe import bus
    from facepipe.audit import AuditLog
    from facepipe.auth import KeyStore
    from facepipe.config import PrivacySettings

    nc = await bus.connect(nats_url, "cli")
    try:
        js = nc.jetstream()
        result = await action(await KeyStore.open(js))
        record = audited(result) if audited is not None else None
        if record is not None:
            audit_log = AuditLog("cli")
            await audit_log.attach(js, PrivacySettings.from_env().audit_max_age_s, update_stream=False)
            if not await audit_log.record(record):
                print(
                    "warning: the change is made, but its audit record could not be stored", file=sys.stderr
                )
        return result
    finally:
        await nc.close()


def _audit_record(args: argparse.Namespace, action: str, tenant: str, **detail: str):
    """The audit record of a key change made by this command line."""
    from facepipe.audit import AuditRecord
    from facepipe.auth import key_id_of

    own_key = addresses.api_key(args)
    return AuditRecord(
        action=action,
        tenant=tenant,
        key_id=(key_id_of(own_key) or "") if own_key else "",
        method=f"facepipe keys {args.keys_cmd}",
        detail={"via": "nats", "os_user": getpass.getuser(), **detail},
        affected={"keys": 1},
    )


def cmd_keys(args: argparse.Namespace) -> int:
    nats_url, _ = addresses.pipeline_env(args)
    if args.keys_cmd == "create":
        key, record = asyncio.run(
            _with_store(
                nats_url,
                lambda store: store.create(args.tenant, args.role, args.expires or 0.0, args.note),
                lambda made: _audit_record(
                    args, "keys.create", made[1].tenant, created_key_id=made[1].key_id, role=made[1].role
                ),
            )
        )
        doc = {"key": key, **record.public()}
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(key)
            print(
                f"key id {record.key_id}: tenant {record.tenant}, role {record.role}, "
                f"expires {_when(record.expires_at)}. Keep the key now: it is not shown again.",
            )
        return 0
    if args.keys_cmd == "list":
        records = asyncio.run(_with_store(nats_url, lambda store: store.list()))
        if args.json:
            print(json.dumps([r.public() for r in records], indent=2))
            return 0
        if not records:
            print("no keys")
        for r in records:
            state = " (expired)" if r.expired() else ""
            note = f"  {r.note}" if r.note else ""
            print(
                f"{r.key_id}  tenant={r.tenant:12} role={r.role:7} created {_when(r.created_at)}  "
                f"expires {_when(r.expires_at)}{state}{note}"
            )
        return 0
    if not re.fullmatch(r"[0-9a-f]{16}", args.key_id):
        raise UsageError(f"{args.key_id[:64]!r} is not a key id (16 hex digits, from `facepipe keys list`)")

    async def revoke(store) -> KeyRecord | None:
        record = await store.get(args.key_id)
        return record if record is not None and await store.revoke(args.key_id) else None

    revoked = asyncio.run(
        _with_store(
            nats_url,
            revoke,
            lambda gone: (
                _audit_record(args, "keys.revoke", gone.tenant, revoked_key_id=gone.key_id, role=gone.role)
                if gone is not None
                else None
            ),
        )
    )
    if revoked is None:
        raise CliError(f"no key with id {args.key_id}")
    print(f"revoked key {args.key_id}")
    return 0
