"""The audit log of an indexer serving without API keys (``FACEPIPE_AUTH=off``) on a
real nats-server: calls are still recorded, by no key; the retention setting reaches
the stream; and without NATS the records go to the service's log."""

from __future__ import annotations

import asyncio
import json

import grpc
import nats

from facepipe import bus
from facepipe.v1 import common_pb2, indexer_pb2, indexer_pb2_grpc

DIM = 128  # the bundled recognizer's


def _search(stub: indexer_pb2_grpc.IndexerStub, tenant: str) -> None:
    vector = common_pb2.Embedding(vector=[1.0] + [0.0] * (DIM - 1))
    stub.Search(indexer_pb2.SearchRequest(tenant_id=tenant, vector=vector), timeout=30)


def test_calls_without_keys_are_recorded_by_no_key(start_service, nats_server, tmp_path) -> None:
    indexer = start_service(
        "indexer",
        env={
            "FACEPIPE_NATS_URL": nats_server.url,
            "FACEPIPE_VECTOR_DIR": str(tmp_path / "vectors"),
            "FACEPIPE_OBJECT_DIR": str(tmp_path / "objects"),
            "FACEPIPE_AUDIT_MAX_AGE_DAYS": "2",
        },
    )
    with grpc.insecure_channel(indexer.addr) as channel:
        stub = indexer_pb2_grpc.IndexerStub(channel)
        _search(stub, "quiet")
        try:
            stub.DeleteFaces(indexer_pb2.DeleteFacesRequest(tenant_id="quiet"), timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        records = stub.ListAuditRecords(indexer_pb2.ListAuditRecordsRequest(), timeout=30).records
    assert [(r.tenant_id, r.action, r.key_id, r.outcome) for r in records] == [
        ("quiet", "search", "", "OK"),
        ("quiet", "erase", "", "INVALID_ARGUMENT"),
    ]
    assert records[0].HasField("results") and records[0].results == 0

    async def stream_config():
        nc = await nats.connect(nats_server.url)
        try:
            return (await nc.jetstream().stream_info(bus.AUDIT_STREAM)).config
        finally:
            await nc.close()

    config = asyncio.run(stream_config())
    assert config.max_age == 2 * 24 * 3600 and config.deny_delete and config.deny_purge


def test_without_nats_the_records_go_to_the_log(start_service, tmp_path) -> None:
    indexer = start_service(
        "indexer",
        env={
            "FACEPIPE_VECTOR_DIR": str(tmp_path / "vectors"),
            "FACEPIPE_OBJECT_DIR": str(tmp_path / "objects"),
        },
    )
    with grpc.insecure_channel(indexer.addr) as channel:
        _search(indexer_pb2_grpc.IndexerStub(channel), "logged")
    lines = [json.loads(line) for line in indexer.log().splitlines() if line.startswith("{")]
    audited = [line["audit"] for line in lines if line.get("msg") == "audit"]
    assert [(a["tenant"], a["action"], a["outcome"], a["results"]) for a in audited] == [
        ("logged", "search", "OK", 0)
    ]
