"""A local stack with mutual TLS everywhere: gRPC (FACEPIPE_TLS_*) and NATS
(FACEPIPE_NATS_TLS_*, the local nats-server's tls block), with a throwaway CA.
The CLI ingests, searches and reads stats through it; plaintext is refused."""

from __future__ import annotations

import asyncio
import json
import ssl

import grpc
import httpx
import nats
import pytest
from conftest import SHARED_FACES, run_facepipe
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tlscerts import TestCA

from facepipe.auth.client import channel
from facepipe.config import TlsSettings

BRAD = SHARED_FACES / "brad_pitt" / "brad_1.jpg"
TENANT = "tls-family"


@pytest.fixture(scope="module")
def tls_stack(start_stack, tmp_path_factory) -> dict:
    ca = TestCA(tmp_path_factory.mktemp("stack-ca"))
    leaf = ca.issue("stack")  # servers and clients alike, for 127.0.0.1
    nats_leaf = ca.issue("nats")
    stack = start_stack(
        "tls-stack",
        FACEPIPE_TLS_CERT=str(leaf.cert),
        FACEPIPE_TLS_KEY=str(leaf.key),
        FACEPIPE_TLS_CA=str(ca.ca),
        FACEPIPE_TLS_CLIENT_AUTH="require",
        FACEPIPE_NATS_TLS_SERVER_CERT=str(nats_leaf.cert),
        FACEPIPE_NATS_TLS_SERVER_KEY=str(nats_leaf.key),
        FACEPIPE_NATS_TLS_CA=str(ca.ca),
        FACEPIPE_NATS_TLS_CERT=str(leaf.cert),
        FACEPIPE_NATS_TLS_KEY=str(leaf.key),
        FACEPIPE_NATS_TLS_CLIENT_AUTH="require",
    )
    stack["ca"] = ca
    return stack


def cli(stack: dict, *args: str, check: bool = True):
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check, timeout=300)


def test_the_pipeline_runs_over_tls(tls_stack) -> None:
    status = json.loads(cli(tls_stack, "status", "--json").stdout)
    assert status, status
    summary = json.loads(cli(tls_stack, "ingest", str(BRAD), "--tenant", TENANT, "--wait", "--json").stdout)
    assert summary["faces_indexed"] >= 1, summary
    stats = json.loads(cli(tls_stack, "stats", "--tenant", TENANT, "--json").stdout)
    assert stats["faces"] == summary["faces_indexed"]
    found = json.loads(cli(tls_stack, "search", str(BRAD), "--tenant", TENANT, "--json").stdout)
    assert found, found


def test_plaintext_is_refused(tls_stack) -> None:
    state = tls_stack["state"]
    # The gRPC services; the web service serves HTTPS, checked below.
    services = {n: c for n, c in state["components"].items() if n not in ("nats", "web")}
    assert services
    web = state["components"]["web"]
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port
        httpx.get(f"http://127.0.0.1:{web['grpc_port']}/healthz", timeout=5)
    ca = TlsSettings.from_env(tls_stack["env"]).ca
    answer = httpx.get(
        f"https://127.0.0.1:{web['grpc_port']}/healthz",
        timeout=5,
        verify=ssl.create_default_context(cafile=str(ca)),
    )
    assert answer.status_code == 200
    for name, component in services.items():
        plain = channel(f"127.0.0.1:{component['grpc_port']}", None, tls=TlsSettings())
        with plain, pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, name
        # With a client certificate of the CA, the same call is answered.
        mutual = TlsSettings.from_env(tls_stack["env"])
        with channel(f"127.0.0.1:{component['grpc_port']}", None, tls=mutual) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, name

    async def plain_nats() -> None:
        nc = await nats.connect(
            state["nats_url"], connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0
        )
        await nc.close()

    with pytest.raises(Exception):  # noqa: B017, PT011 - nats-py raises several kinds
        asyncio.run(plain_nats())
