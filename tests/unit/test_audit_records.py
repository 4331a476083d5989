"""Audit records and the command line's time arguments, without servers."""

from __future__ import annotations

import argparse

import pytest

from facepipe.audit import AuditRecord, current, note, subject_of, tenant_token
from facepipe.cli.privacy_cmds import parse_since


def test_tenant_tokens_never_collide_with_a_tenant() -> None:
    assert tenant_token("family") == "family"
    assert tenant_token("*") == "~all"
    assert tenant_token("") == tenant_token("a.b") == tenant_token("x" * 65) == "~none"
    assert subject_of(None) == "facepipe.audit.>"
    assert subject_of("family") == "facepipe.audit.family"


def test_a_record_round_trips_and_notes_add_up() -> None:
    record = AuditRecord(action="erase", tenant="family", key_id="0123456789abcdef", role="admin")
    token = current.set(record)
    try:
        note(points_deleted=2)
        note(points_deleted=1, objects_deleted=6, results=3)
    finally:
        current.reset(token)
    note(points_deleted=100)  # outside a call: ignored
    again = AuditRecord.from_bytes(record.to_bytes(), seq=7)
    assert again.affected == {"points_deleted": 3, "objects_deleted": 6} and again.results == 3
    assert (again.seq, again.key_id, again.subject) == (7, "0123456789abcdef", "facepipe.audit.family")


def test_since_takes_durations_and_dates() -> None:
    now = 1_800_000_000.0
    assert parse_since("1h", now) == now - 3600
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2026-11-30", now) == 1_795_996_800.0
    with pytest.raises(argparse.ArgumentTypeError, match="neither a duration"):
        parse_since("yesterday", now)
