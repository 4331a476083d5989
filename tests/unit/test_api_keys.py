"""API keys without servers: the key format, what is stored, the bearer header,
object ownership, the method rules and the CLI's expiry parsing."""

from __future__ import annotations

import argparse
import json
import time

import pytest

from facepipe import auth
from facepipe.auth.access import MethodRule, Principal, check_role, ingest_tenants, tenant_field
from facepipe.auth.keys import KeyRecord, make_record, new_key
from facepipe.cli.keys_cmds import parse_expiry
from facepipe.v1 import indexer_pb2, pipeline_pb2


def test_keys_are_random_carry_their_id_and_are_stored_only_as_a_hash() -> None:
    (id_a, key_a), (id_b, key_b) = new_key(), new_key()
    assert id_a != id_b and key_a != key_b
    assert auth.key_id_of(key_a) == id_a and auth.key_id_of(key_a + "x") is None
    record = make_record(key_a, "acme", "reader", note="n")
    stored = record.to_bytes().decode()
    assert key_a not in stored and key_a.rsplit("_", 1)[1] not in stored
    assert KeyRecord.from_bytes(record.to_bytes()) == record
    assert record.matches(key_a) and not record.matches(key_b)
    assert "key_sha256" not in record.public() and key_a not in json.dumps(record.public())


def test_expiry() -> None:
    key = new_key()[1]
    assert not make_record(key, "acme", "reader").expired()
    assert make_record(key, "acme", "reader", expires_at=time.time() - 1).expired()
    assert not make_record(key, "acme", "reader", expires_at=time.time() + 60).expired()


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer  abc "),), "abc"),
        ((("authorization", "Basic abc"),), None),
        ((("authorization", "Bearer"),), None),
        ((("x-other", "Bearer abc"),), None),
        ((), None),
        (None, None),
    ],
)
def test_bearer_key(metadata, expected) -> None:
    assert auth.bearer_key(metadata) == expected


async def test_the_authenticator_tells_missing_unknown_and_service_keys_apart() -> None:
    service = new_key()[1]
    gate = auth.Authenticator(True, service)
    gate.ready = True  # no key store: only the service credential is known
    principal = await gate.authenticate((("authorization", f"Bearer {service}"),))
    assert (principal.tenant, principal.role) == ("*", "service")
    with pytest.raises(auth.NotAuthenticated, match="no API key"):
        await gate.authenticate(())
    with pytest.raises(auth.NotAuthenticated, match="not one this deployment issued"):
        await gate.authenticate((("authorization", "Bearer guess"),))
    with pytest.raises(auth.NotAuthenticated, match="unknown"):
        await gate.authenticate((("authorization", f"Bearer {new_key()[1]}"),))


def test_objects_belong_to_the_first_segment_of_their_key() -> None:
    assert auth.object_tenant("raw-images", "acme/abc.jpg") == "acme"
    assert auth.object_tenant("face-crops", "acme/abc/0.jpg") == "acme"
    assert auth.object_tenant("raw-images", "acme/../victim/abc.jpg") is None
    assert auth.object_tenant("raw-images", "abc.jpg") is None
    assert auth.object_tenant("other-bucket", "acme/abc.jpg") is None


def test_roles_rise_and_tenants_bind() -> None:
    rule = MethodRule("writer", tenant_field(), "ingest for")
    reader, writer = Principal("r", "acme", "reader"), Principal("w", "acme", "writer")
    with pytest.raises(auth.AccessDenied, match="needs role writer"):
        check_role(reader, "/facepipe.v1.Extractor/Ingest", rule)
    check_role(writer, "/facepipe.v1.Extractor/Ingest", rule)
    check_role(Principal("a", "acme", "admin"), "/facepipe.v1.Extractor/Ingest", rule)
    with pytest.raises(auth.AccessDenied, match="may not ingest for tenant 'victim'"):
        rule.tenants(writer, pipeline_pb2.IngestRequest(tenant_id="victim"), rule.verb)
    rule.tenants(Principal("s", "*", "writer"), pipeline_pb2.IngestRequest(tenant_id="victim"), rule.verb)


def test_a_request_without_a_tenant_gets_the_keys() -> None:
    scoped = tenant_field(default_to_key=True)
    request = indexer_pb2.GetStatsRequest()
    scoped(Principal("r", "acme", "reader"), request, "read")
    assert request.tenant_id == "acme"
    everything = indexer_pb2.GetStatsRequest()
    scoped(Principal("r", "*", "reader"), everything, "read")
    assert everything.tenant_id == ""


def test_an_ingest_names_only_its_own_tenants_objects() -> None:
    star = Principal("s", "*", "admin")
    ingest_tenants(star, pipeline_pb2.IngestRequest(tenant_id="a", bucket="raw-images", key="a/x.jpg"), "")
    for bucket, key in (
        ("raw-images", "victim/x.jpg"),
        ("face-crops", "b/x.jpg"),
        ("raw-images", "a/../b/x.jpg"),
    ):
        with pytest.raises(auth.AccessDenied, match="not tenant 'a'"):
            ingest_tenants(star, pipeline_pb2.IngestRequest(tenant_id="a", bucket=bucket, key=key), "")


def test_refusals_bound_what_they_echo() -> None:
    with pytest.raises(auth.AccessDenied) as refused:
        tenant_field()(
            Principal("r", "acme", "reader"), indexer_pb2.SearchRequest(tenant_id="x" * 10_000), "search"
        )
    assert len(str(refused.value)) < 200


def test_expiry_parsing() -> None:
    now = 1_000_000.0
    assert parse_expiry("30d", now) == now + 30 * 86400
    assert parse_expiry("12h", now) == now + 12 * 3600
    assert parse_expiry("2w", now) == now + 14 * 86400
    assert parse_expiry("2100-01-01", now) > now
    for bad in ("0s", "soon", "2001-01-01", "-5d"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_expiry(bad, time.time())
