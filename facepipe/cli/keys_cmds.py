"""API key commands: create, list and revoke the keys of a deployment.

Keys live in the NATS KV bucket the services watch, so these commands talk to
the NATS of the stack they are aimed at (or FACEPIPE_NATS_URL)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from datetime import UTC, datetime

from facepipe.cli import addresses
from facepipe.cli.errors import CliError, UsageError

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


async def _with_store(nats_url: str, action):
    from facepipe import bus
    from facepipe.auth import KeyStore

    nc = await bus.connect(nats_url, "cli")
    try:
        return await action(await KeyStore.open(nc.jetstream()))
    finally:
        await nc.close()


def cmd_keys(args: argparse.Namespace) -> int:
    nats_url, _ = addresses.pipeline_env(args)
    if args.keys_cmd == "create":
        key, record = asyncio.run(
            _with_store(
                nats_url, lambda store: store.create(args.tenant, args.role, args.expires or 0.0, args.note)
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
    revoked = asyncio.run(_with_store(nats_url, lambda store: store.revoke(args.key_id)))
    if not revoked:
        raise CliError(f"no key with id {args.key_id}")
    print(f"revoked key {args.key_id}")
    return 0
