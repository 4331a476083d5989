"""The audit log and opt-outs on the local stack, through the CLI: who searched, erased
and changed keys is recorded with the right key id and tenant, a tenant's key reads only
its own records, the records cannot be deleted; an opt-out erases the person's indexed
faces with their objects, skips their later faces, leaves other people alone, and once
removed lets them be indexed again."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import nats
import pytest
from conftest import SHARED_FACES, run_facepipe, stack_key, stack_nats_url

from facepipe import bus
from facepipe.auth import key_id_of

BRAD = SHARED_FACES / "brad_pitt"
ALEX = SHARED_FACES / "alex_lacamoire" / "alex_lacamoire1.jpg"
OBAMA_DIR = SHARED_FACES / "barack_obama"


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


def cli(stack, *args: str, check: bool = True):
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check)


def new_tenant(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


def ingest(stack, tenant: str, *paths: Path, rescan: bool = False) -> dict:
    """``--rescan`` reads files the tenant imported before (and erased since) again."""
    flags = ["--rescan"] if rescan else []
    return json.loads(
        cli(stack, "ingest", *map(str, paths), "--tenant", tenant, "--wait", "--json", *flags).stdout
    )


def search(stack, tenant: str, photo: Path, *extra: str) -> dict:
    return json.loads(
        cli(stack, "search", str(photo), "--tenant", tenant, "--top-k", "100", "--json", *extra).stdout
    )


def audit(stack, *args: str, check: bool = True):
    return cli(stack, "audit", "--since", "1h", "--json", *args, check=check)


def embedder_stats(stack) -> dict:
    import urllib.request

    port = stack["state"]["components"]["embedder"]["http_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
        return json.loads(resp.read())


# -- audit log --------------------------------------------------------------------------


def test_search_erase_and_key_changes_are_audited_per_tenant(stack) -> None:
    ours, theirs = new_tenant("au"), new_tenant("au")
    admin_id = key_id_of(stack_key(stack))
    made = json.loads(cli(stack, "keys", "create", "--tenant", ours, "--role", "admin", "--json").stdout)
    key = made["key"]
    ingest(stack, ours, BRAD / "brad_1.jpg")

    found = json.loads(
        cli(stack, "search", str(BRAD / "brad_1.jpg"), "--tenant", ours, "--json", "--key", key).stdout
    )
    assert found["matches"]
    cli(stack, "erase", "--tenant", ours, "--url", str(BRAD / "brad_1.jpg"), "--key", key)
    # A search in another tenant is refused, and recorded there as an attempt by our key.
    refused = cli(stack, "search", str(BRAD / "brad_1.jpg"), "--tenant", theirs, "--key", key, check=False)
    assert refused.returncode == 1 and "may not search" in refused.stderr
    cli(stack, "keys", "revoke", made["key_id"])

    records = json.loads(audit(stack, "--tenant", ours).stdout)
    by_action = {r["action"]: r for r in records}
    assert set(by_action) == {"keys.create", "keys.revoke", "search", "erase"}, records
    assert all(r["tenant"] == ours for r in records)
    created = by_action["keys.create"]
    assert created["key_id"] == admin_id and created["detail"]["created_key_id"] == made["key_id"]
    assert by_action["keys.revoke"]["detail"]["revoked_key_id"] == made["key_id"]
    searched = by_action["search"]
    assert searched["key_id"] == made["key_id"] and searched["role"] == "admin"
    assert searched["outcome"] == "OK" and searched["results"] == len(found["matches"])
    assert searched["method"] == "/facepipe.v1.Indexer/Search" and searched["service"] == "indexer"
    erased = by_action["erase"]
    assert erased["key_id"] == made["key_id"] and erased["outcome"] == "OK"
    assert erased["affected"]["points_deleted"] == 1 and erased["affected"]["objects_deleted"] >= 3
    assert erased["detail"]["selector"] == "url"
    assert records == sorted(records, key=lambda r: r["seq"])

    text = cli(stack, "audit", "--tenant", ours, "--since", "1h").stdout.splitlines()
    assert len(text) == 4 and any("search" in line and f"key {made['key_id']}" in line for line in text)
    assert any("erase" in line and "points_deleted=1" in line for line in text), text

    attempt = json.loads(audit(stack, "--tenant", theirs).stdout)
    assert [(r["action"], r["key_id"], r["outcome"]) for r in attempt] == [
        ("search", made["key_id"], "PERMISSION_DENIED")
    ]


def test_a_tenant_key_reads_only_its_own_tenants_records(stack) -> None:
    ours, theirs = new_tenant("av"), new_tenant("av")
    key = json.loads(cli(stack, "keys", "create", "--tenant", ours, "--role", "admin", "--json").stdout)[
        "key"
    ]
    json.loads(cli(stack, "keys", "create", "--tenant", theirs, "--role", "reader", "--json").stdout)
    cli(stack, "search", str(ALEX), "--tenant", ours, "--key", key)

    own = json.loads(audit(stack, "--key", key).stdout)  # no --tenant: the key's own
    assert own and {r["tenant"] for r in own} == {ours}
    denied = audit(stack, "--tenant", theirs, "--key", key, check=False)
    assert denied.returncode == 1 and "Traceback" not in denied.stderr
    assert denied.stderr.startswith("error: ") and "audit log" in denied.stderr
    # A reader may not read the audit log at all.
    reader = json.loads(cli(stack, "keys", "create", "--tenant", ours, "--role", "reader", "--json").stdout)
    assert audit(stack, "--key", reader["key"], check=False).returncode == 1
    # The stack's admin key (tenant '*') sees every tenant.
    everything = json.loads(audit(stack, "--limit", "10000").stdout)
    assert {ours, theirs} <= {r["tenant"] for r in everything}


def test_the_audit_stream_refuses_deletes_and_purges(stack) -> None:
    async def attempt() -> tuple[list[str], int]:
        nc = await nats.connect(stack_nats_url(stack))
        try:
            js = nc.jetstream()
            state = (await js.stream_info(bus.AUDIT_STREAM)).state
            errors = []
            for action in (
                lambda: js.delete_msg(bus.AUDIT_STREAM, state.last_seq),
                lambda: js.purge_stream(bus.AUDIT_STREAM),
                lambda: js.update_stream(bus.audit_stream_config(3600.0).evolve(deny_delete=False)),
            ):
                try:
                    await action()
                except Exception as exc:  # noqa: BLE001 - nats-py's error types differ per call
                    errors.append(type(exc).__name__)
            after = (await js.stream_info(bus.AUDIT_STREAM)).state
            return errors, after.messages - state.messages
        finally:
            await nc.close()

    audit(stack)  # the stream exists once anything was audited; this call makes sure of one
    cli(stack, "search", str(ALEX), "--tenant", new_tenant("aw"))
    errors, grown = asyncio.run(attempt())
    assert len(errors) == 3, errors
    assert grown == 0  # nothing was removed


# -- opt-out ----------------------------------------------------------------------------


def test_opt_out_erases_skips_and_can_be_removed(stack) -> None:
    tenant = new_tenant("op")
    obama = sorted(OBAMA_DIR.glob("*.jpg"))[0]
    first = ingest(stack, tenant, BRAD / "brad_1.jpg", BRAD / "brad_2.jpg", ALEX, obama)
    assert first["faces_indexed"] >= 4, first

    # What the person's photo matches now, at the calibrated threshold: what must go.
    before = search(stack, tenant, BRAD / "brad_3.jpg")
    doomed = {(m["url"], m["face_index"]) for m in before["matches"]}
    assert doomed, before
    thumbs = [Path(m["thumb"]) for m in before["matches"]]
    assert all(t.is_file() for t in thumbs)
    others = {m["url"] for m in search(stack, tenant, ALEX)["matches"]}
    assert others

    added = json.loads(
        cli(
            stack, "optout", "add", "--tenant", tenant, str(BRAD / "brad_3.jpg"), "--note", "req-1", "--json"
        ).stdout
    )
    assert added["faces"] == 1 and added["points_deleted"] == len(doomed)
    assert added["objects_deleted"] >= 3 * len(doomed)  # crop, sidecar and thumbnail each
    assert not any(t.exists() for t in thumbs)
    assert search(stack, tenant, BRAD / "brad_3.jpg")["matches"] == []
    assert {m["url"] for m in search(stack, tenant, ALEX)["matches"]} == others  # others untouched
    listed = json.loads(cli(stack, "optout", "list", "--tenant", tenant, "--json").stdout)
    assert [(e["optout_id"], e["faces"], e["note"]) for e in listed] == [(added["optout_id"], 1, "req-1")]
    assert listed[0]["key_id"] == key_id_of(stack_key(stack))
    shown = cli(stack, "optout", "list", "--tenant", tenant).stdout
    assert added["optout_id"] in shown and "req-1" in shown
    # Another tenant has no opt-outs.
    assert json.loads(cli(stack, "optout", "list", "--tenant", new_tenant("op"), "--json").stdout) == []

    # A later ingest of the person (the erased photos again, the opt-out photo itself) is skipped.
    skipped_before = embedder_stats(stack).get("faces_optout_skipped", 0)
    again = ingest(
        stack, tenant, *sorted({Path(url.removeprefix("file://")) for url, _ in doomed}), rescan=True
    )
    own = ingest(stack, tenant, BRAD / "brad_3.jpg")
    skipped = again["faces_optout_skipped"] + own["faces_optout_skipped"]
    assert skipped == len(doomed) + 1 and again["faces_indexed"] + own["faces_indexed"] == 0, (again, own)
    assert embedder_stats(stack)["faces_optout_skipped"] - skipped_before == skipped
    assert search(stack, tenant, BRAD / "brad_3.jpg")["matches"] == []

    # Removed: the person is indexed again.
    cli(stack, "optout", "remove", "--tenant", tenant, added["optout_id"])
    assert json.loads(cli(stack, "optout", "list", "--tenant", tenant, "--json").stdout) == []
    missing = cli(stack, "optout", "remove", "--tenant", tenant, added["optout_id"], check=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr
    later = ingest(stack, tenant, BRAD / "brad_pitt_fit.jpg")
    assert later["faces_optout_skipped"] == 0 and later["faces_indexed"] >= 1, later

    actions = [(r["action"], r["outcome"]) for r in json.loads(audit(stack, "--tenant", tenant).stdout)]
    assert ("optout.add", "OK") in actions and ("optout.remove", "OK") in actions
    assert ("optout.remove", "NOT_FOUND") in actions


def test_opt_out_refuses_a_photo_without_a_face(stack, tmp_path) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "white").save(blank)
    result = cli(stack, "optout", "add", "--tenant", new_tenant("op"), str(blank), check=False)
    assert result.returncode == 2 and "photo 1 has no face" in result.stderr
    assert "Traceback" not in result.stderr
