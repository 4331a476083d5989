"""The NATS users' permissions as nats-server will match them, and the URL helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facepipe import bus, natsauth

ROOT = Path(__file__).resolve().parents[2]


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def may_publish(user: str, subject: str) -> bool:
    perms = natsauth.permissions(user)
    return perms is None or any(matches(p, subject) for p in perms.publish)


def may_subscribe(user: str, subject: str) -> bool:
    perms = natsauth.permissions(user)
    return perms is None or any(matches(p, subject) for p in perms.subscribe)


USERS = [*natsauth.fixed_users(), "producer-acme"]


@pytest.mark.parametrize(
    ("subject", "allowed"),
    [
        (bus.SUBJECT_EMBEDDED, {"embedder", "indexer", "admin"}),  # the indexer: its orphans
        (bus.SUBJECT_DETECTED, {"detector", "embedder", "admin"}),
        (bus.SUBJECT_STORED, {"extractor", "detector", "admin"}),
        (bus.SUBJECT_INGEST, {"extractor", "crawler", "producer", "admin"}),
        ("facepipe.ingest.acme", {"extractor", "producer-acme", "admin"}),
        ("facepipe.ingest.victim", {"extractor", "admin"}),
        (f"$KV.{bus.IMAGES_KV}.victim.abc", {"extractor", "indexer", "admin"}),
        (f"$JS.API.STREAM.INFO.KV_{bus.IMAGES_KV}", {"extractor", "indexer", "supervisor", "admin"}),
        ("$KV.facepipe-keys.k1", {"supervisor", "admin"}),
        ("$JS.API.CONSUMER.MSG.NEXT.FACEPIPE.indexer", {"indexer", "admin"}),
        ("$JS.ACK.FACEPIPE.embedder.1.2.3.4.5", {"embedder", "admin"}),
        ("$JS.API.STREAM.DELETE.FACEPIPE", {"admin"}),
        ("$JS.API.STREAM.UPDATE.FACEPIPE", {"supervisor", "admin"}),
    ],
)
def test_who_may_publish(subject, allowed):
    assert {u for u in USERS if may_publish(u, subject)} == allowed


def test_each_user_reads_replies_on_its_own_inbox_only():
    for user in natsauth.SERVICE_USERS:
        assert may_subscribe(user, f"_INBOX_{user}.abc.1")
        others = [u for u in natsauth.SERVICE_USERS if u != user]
        assert not any(may_subscribe(user, f"_INBOX_{o}.abc.1") for o in others)
        assert not may_subscribe(user, "_INBOX.abc")
        assert not may_subscribe(user, bus.SUBJECT_EMBEDDED)
    for producer in ("producer", "producer-acme"):
        assert may_subscribe(producer, "_INBOX.abc")
        assert not may_subscribe(producer, "_INBOX_indexer.abc")
        assert not may_subscribe(producer, f"{bus.SUBJECT_DONE}.batch")
    assert natsauth.inbox_prefix("indexer") == "_INBOX_indexer"
    assert natsauth.inbox_prefix("producer-acme") == "_INBOX"


def test_authorization_lists_every_user_with_its_permissions():
    block = natsauth.authorization({"admin": "a", "embedder": "e", "producer-acme": "p"})
    users = {u["user"]: u for u in block["users"]}
    assert set(users) == {"admin", "embedder", "producer-acme"}
    assert "permissions" not in users["admin"]
    assert users["producer-acme"]["permissions"]["publish"]["allow"] == ["facepipe.ingest.acme"]


def test_producer_user_refuses_a_bad_tenant():
    assert natsauth.producer_user(None) == "producer"
    assert natsauth.producer_user("acme") == "producer-acme"
    for bad in ("a.b", "a*", ">", "", "x" * 65):
        with pytest.raises(ValueError):
            natsauth.producer_user(bad)


def test_urls_carry_and_hide_credentials():
    url = natsauth.url_with_credentials("nats://127.0.0.1:4222,nats://h2:4223", "producer", "p@ss:/w")
    assert url == "nats://producer:p%40ss%3A%2Fw@127.0.0.1:4222,nats://producer:p%40ss%3A%2Fw@h2:4223"
    assert natsauth.url_user(url) == "producer"
    assert "p%40ss" not in natsauth.redact(url) and "producer:***@127.0.0.1:4222" in natsauth.redact(url)
    assert natsauth.url_user("nats://127.0.0.1:4222") == ""


def test_password_dir_makes_owner_only_files(tmp_path):
    passwords = natsauth.PasswordDir(tmp_path / "auth")
    first = passwords.password("embedder")
    assert passwords.password("embedder") == first and len(first) >= 32
    assert (passwords.file("embedder").stat().st_mode & 0o777) == 0o600
    assert (passwords.path.stat().st_mode & 0o777) == 0o700
    assert set(passwords.all()) == set(natsauth.fixed_users())


def test_the_chart_copy_is_current():
    chart = ROOT / natsauth.CHART_FILE
    assert json.loads(chart.read_text()) == json.loads(natsauth.chart_permissions()), (
        "stale: run python -m facepipe.natsauth --write-chart"
    )


def test_serve_names_a_nats_user_without_its_password(tmp_path):
    import os

    from conftest import free_port, run_facepipe

    env = {
        **os.environ,
        "FACEPIPE_HOME": str(tmp_path),
        "FACEPIPE_NATS_URL": "nats://127.0.0.1:1",
        "FACEPIPE_NATS_USER": "extractor",
    }
    env.pop("FACEPIPE_NATS_PASSWORD", None)
    result = run_facepipe("serve", "extractor", "--port", str(free_port()), env=env, check=False, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: FACEPIPE_NATS_USER is set without FACEPIPE_NATS_PASSWORD or FACEPIPE_NATS_PASSWORD_FILE"
    )
    missing = {**env, "FACEPIPE_NATS_PASSWORD_FILE": str(tmp_path / "absent")}
    result = run_facepipe(
        "serve", "extractor", "--port", str(free_port()), env=missing, check=False, timeout=60
    )
    assert result.stderr.strip().startswith(
        f"error: cannot read the NATS password file {tmp_path / 'absent'}"
    )


def test_every_service_with_audited_methods_may_write_the_audit_log() -> None:
    from facepipe.auth.access import audited_services

    services = {full.rsplit(".", 1)[-1].lower() for full in audited_services()}
    assert services == set(natsauth.AUDITING_SERVICES)
    for user in natsauth.SERVICE_USERS:
        publish = natsauth.permissions(user).publish
        assert ("facepipe.audit.>" in publish) == (user in natsauth.AUDITING_SERVICES)
