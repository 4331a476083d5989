"""API keys on the local stack, through the CLI as its user meets them: the stack's
own credentials, keys create/list/revoke, expiry, and the cross-tenant attacks a
key must stop (search, erase, stats and ingest of another tenant's data)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import time
import uuid
from pathlib import Path

import grpc
import nats
import pytest
from conftest import SHARED_FACES, run_facepipe, stack_channel, stack_key, stack_nats_url

from facepipe.auth import hash_key
from facepipe.auth.client import channel
from facepipe.v1 import extractor_pb2, indexer_pb2, pipeline_pb2

BRAD = SHARED_FACES / "brad_pitt" / "brad_1.jpg"


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


def cli(stack, *args: str, check: bool = True, env: dict | None = None):
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=env or stack["env"], check=check)


def tenant() -> str:
    return "k" + uuid.uuid4().hex[:12]


def create_key(stack, tenant_id: str, role: str, *extra: str) -> dict:
    doc = json.loads(
        cli(stack, "keys", "create", "--tenant", tenant_id, "--role", role, *extra, "--json").stdout
    )
    assert set(doc) >= {"key", "key_id", "tenant", "role"} and (doc["tenant"], doc["role"]) == (
        tenant_id,
        role,
    )
    return doc


def refused(result, *words: str) -> str:
    """The one error line of a refused command, checked to name ``words``."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def indexer_call(stack, key: str | None, method: str, request, response_type):
    addr = f"127.0.0.1:{stack['state']['components']['indexer']['grpc_port']}"
    with channel(addr, key) as ch:
        return ch.unary_unary(
            f"/facepipe.v1.Indexer/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )(request, timeout=60)


def status_of(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_the_stacks_credentials_are_readable_by_their_owner_only(stack) -> None:
    for name in ("admin.key", "service.key"):
        mode = stat.S_IMODE((Path(stack["dir"]) / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"


def test_a_created_key_works_only_in_its_tenant_and_role(stack) -> None:
    mine, theirs = tenant(), tenant()
    doc = create_key(stack, mine, "reader")
    assert cli(stack, "stats", "--tenant", mine, "--key", doc["key"]).stdout.startswith(
        f"tenant {mine}: 0 face(s)"
    )
    refused(
        cli(stack, "stats", "--tenant", theirs, "--key", doc["key"], check=False),
        "may not",
        f"tenant '{theirs}'",
    )
    refused(
        cli(stack, "erase", "--tenant", mine, "--all", "--key", doc["key"], check=False), "needs role admin"
    )
    refused(cli(stack, "stats", "--tenant", mine, "--key", "fpk_bogus", check=False), "refused the API key")
    # Without a key the call is UNAUTHENTICATED.
    assert (
        status_of(
            lambda: indexer_call(
                stack,
                None,
                "GetStats",
                indexer_pb2.GetStatsRequest(tenant_id=mine),
                indexer_pb2.GetStatsResponse,
            )
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )


def test_keys_list_shows_no_secret(stack) -> None:
    doc = create_key(stack, tenant(), "writer", "--note", "listed")
    text = cli(stack, "keys", "list").stdout
    listed = cli(stack, "keys", "list", "--json").stdout
    assert doc["key_id"] in text and doc["key_id"] in listed
    secrets = [doc["key"], doc["key"].rsplit("_", 1)[1], hash_key(doc["key"]), stack_key(stack)]
    for secret in secrets:
        assert secret not in text and secret not in listed
    assert all("key" not in entry and "key_sha256" not in entry for entry in json.loads(listed))


def test_a_revoked_key_is_refused(stack) -> None:
    mine = tenant()
    doc = create_key(stack, mine, "reader")
    cli(stack, "stats", "--tenant", mine, "--key", doc["key"])
    assert cli(stack, "keys", "revoke", doc["key_id"]).stdout.strip() == f"revoked key {doc['key_id']}"
    refused(cli(stack, "stats", "--tenant", mine, "--key", doc["key"], check=False), "revoked")
    refused(cli(stack, "keys", "revoke", doc["key_id"], check=False), "no key with id")


def test_an_expired_key_is_refused(stack) -> None:
    mine = tenant()
    doc = create_key(stack, mine, "reader", "--expires", "3s")
    cli(stack, "stats", "--tenant", mine, "--key", doc["key"])
    time.sleep(max(0.0, doc["expires_at"] - time.time()) + 0.2)
    refused(cli(stack, "stats", "--tenant", mine, "--key", doc["key"], check=False), "expired")
    result = cli(
        stack, "keys", "create", "--tenant", mine, "--role", "reader", "--expires", "2001-01-01", check=False
    )
    assert result.returncode == 2 and "in the past" in result.stderr


@pytest.fixture(scope="module")
def victim(stack) -> dict:
    """A tenant with one indexed photo, and an attacker with keys of its own tenant."""
    name, attacker = tenant(), tenant()
    summary = json.loads(cli(stack, "ingest", str(BRAD), "--tenant", name, "--wait", "--json").stdout)
    assert summary["faces_indexed"] >= 1, summary
    return {
        "tenant": name,
        "attacker": attacker,
        "faces": summary["faces_indexed"],
        "sha": hashlib.sha256(BRAD.read_bytes()).hexdigest(),
        "reader": create_key(stack, attacker, "reader")["key"],
        "admin": create_key(stack, attacker, "admin")["key"],
        "writer": create_key(stack, attacker, "writer")["key"],
    }


def test_searching_another_tenant_is_refused(stack, victim) -> None:
    line = refused(
        cli(stack, "search", str(BRAD), "--tenant", victim["tenant"], "--key", victim["reader"], check=False),
        "may not search",
    )
    assert victim["tenant"] in line


def test_erasing_another_tenant_is_refused(stack, victim) -> None:
    request = indexer_pb2.DeleteFacesRequest(tenant_id=victim["tenant"], all=True)
    code = status_of(
        lambda: indexer_call(stack, victim["admin"], "DeleteFaces", request, indexer_pb2.DeleteFacesResponse)
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    kept = indexer_call(
        stack,
        stack_key(stack),
        "GetStats",
        indexer_pb2.GetStatsRequest(tenant_id=victim["tenant"]),
        indexer_pb2.GetStatsResponse,
    )
    assert kept.points == victim["faces"]


def test_stats_across_tenants_and_server_paths_are_not_given(stack, victim) -> None:
    everything = indexer_call(
        stack, stack_key(stack), "GetStats", indexer_pb2.GetStatsRequest(), indexer_pb2.GetStatsResponse
    )
    assert everything.points >= victim["faces"]
    theirs = indexer_call(
        stack, victim["reader"], "GetStats", indexer_pb2.GetStatsRequest(), indexer_pb2.GetStatsResponse
    )
    assert theirs.points == 0 and not theirs.counters
    for stats in (everything, theirs):
        assert str(stack["dir"]) not in str(stats) and "/" not in stats.vector_store + stats.object_store
    code = status_of(
        lambda: indexer_call(
            stack,
            victim["reader"],
            "GetStats",
            indexer_pb2.GetStatsRequest(tenant_id=victim["tenant"]),
            indexer_pb2.GetStatsResponse,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_ingesting_another_tenants_object_is_refused(stack, victim) -> None:
    key = f"{victim['tenant']}/{victim['sha']}.jpg"
    request = pipeline_pb2.IngestRequest(tenant_id=victim["attacker"], bucket="raw-images", key=key)
    addr = f"127.0.0.1:{stack['state']['components']['extractor']['grpc_port']}"
    for api_key in (victim["writer"], stack_key(stack)):
        with channel(addr, api_key) as ch:
            ingest = ch.unary_unary(
                "/facepipe.v1.Extractor/Ingest",
                request_serializer=pipeline_pb2.IngestRequest.SerializeToString,
                response_deserializer=extractor_pb2.IngestResponse.FromString,
            )
            assert (
                status_of(lambda ingest=ingest: ingest(request, timeout=30))
                == grpc.StatusCode.PERMISSION_DENIED
            )

    # Published on NATS, the message's tenant is the one checked: dead-lettered, nothing indexed.
    async def publish() -> pipeline_pb2.ImageDone:
        nc = await nats.connect(stack_nats_url(stack))
        try:
            batch = uuid.uuid4().hex
            sub = await nc.subscribe(f"facepipe.events.done.{batch}")
            message = pipeline_pb2.IngestRequest()
            message.CopyFrom(request)
            message.batch_id = batch
            await nc.jetstream().publish("facepipe.ingest", message.SerializeToString())
            done = pipeline_pb2.ImageDone()
            done.ParseFromString((await sub.next_msg(timeout=60)).data)
            return done
        finally:
            await nc.close()

    done = asyncio.run(publish())
    assert (done.status, done.reason) == (pipeline_pb2.IMAGE_STATUS_FAILED, "foreign_object"), done
    stats = indexer_call(
        stack,
        stack_key(stack),
        "GetStats",
        indexer_pb2.GetStatsRequest(tenant_id=victim["attacker"]),
        indexer_pb2.GetStatsResponse,
    )
    assert stats.points == 0


def test_the_cli_uses_the_stacks_key_by_default(stack) -> None:
    """No --key, no FACEPIPE_API_KEY: the stack's own admin key is sent to its own services."""
    env = {k: v for k, v in stack["env"].items() if k != "FACEPIPE_API_KEY"}
    mine = tenant()
    assert cli(stack, "stats", "--tenant", mine, env=env).returncode == 0
    with stack_channel(stack, "indexer") as ch:
        ch.unary_unary(
            "/facepipe.v1.Indexer/GetStats",
            request_serializer=indexer_pb2.GetStatsRequest.SerializeToString,
            response_deserializer=indexer_pb2.GetStatsResponse.FromString,
        )(indexer_pb2.GetStatsRequest(tenant_id=mine), timeout=30)
