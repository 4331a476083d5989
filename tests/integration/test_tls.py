"""TLS of the gRPC ports (server certificates, mutual TLS) and of NATS, with a
throwaway CA, against real service processes and a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import grpc
import nats
import pytest
from conftest import free_port, run_facepipe
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tlscerts import TestCA

from facepipe import bus
from facepipe.auth.client import aio_channel, channel
from facepipe.auth.keys import new_key
from facepipe.config import NatsTlsSettings, Settings, TlsSettings
from facepipe.natsd import NatsServer
from facepipe.tls import check_files, nats_ssl_context
from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

PLAIN = TlsSettings()  # a client that dials plaintext whatever the environment says


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def health(ch: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def wait_serving_tls(addr: str, tls: TlsSettings, proc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the service exited"
        try:
            with channel(addr, None, tls=tls) as ch:
                if health(ch) == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            time.sleep(0.2)
    raise TimeoutError(f"{addr} not SERVING over TLS after {timeout}s")


def start_tls_indexer(start_service, tmp_path: Path, ca: TestCA, client_auth: str, name: str = ""):
    """An indexer that serves TLS and accepts the service credential as its one key."""
    server = ca.issue(name or f"indexer-{client_auth}")
    service_key = new_key()[1]
    key_file = tmp_path / f"service-{client_auth}.key"
    key_file.write_text(service_key)
    env = {
        "FACEPIPE_AUTH": "on",
        "FACEPIPE_SERVICE_KEY_FILE": str(key_file),
        "FACEPIPE_VECTOR_DIR": str(tmp_path / f"vectors-{client_auth}"),
        "FACEPIPE_TLS_CERT": str(server.cert),
        "FACEPIPE_TLS_KEY": str(server.key),
        "FACEPIPE_TLS_CA": str(ca.ca),
        "FACEPIPE_TLS_CLIENT_AUTH": client_auth,
    }
    sp = start_service("indexer", env=env, wait=False)
    client = ca.issue(f"client-{client_auth}")
    with_cert = TlsSettings(ca=ca.ca, cert=client.cert, key=client.key)
    try:
        wait_serving_tls(sp.addr, with_cert, sp.proc)
    except Exception:
        raise RuntimeError(f"indexer failed to start:\n{sp.log()}") from None
    return sp, service_key, with_cert


def stats(addr: str, key: str, tls: TlsSettings) -> indexer_pb2.GetStatsResponse:
    with channel(addr, key, tls=tls) as ch:
        return indexer_pb2_grpc.IndexerStub(ch).GetStats(indexer_pb2.GetStatsRequest(), timeout=10)


def refused(addr: str, tls: TlsSettings) -> grpc.StatusCode:
    with channel(addr, None, tls=tls) as ch, pytest.raises(grpc.RpcError) as err:
        health(ch)
    return err.value.code()


def test_grpc_tls_server_and_client(start_service, tmp_path, ca) -> None:
    sp, key, with_cert = start_tls_indexer(start_service, tmp_path, ca, "none")
    ca_only = TlsSettings(ca=ca.ca)
    # A TLS client that trusts the CA: health and a keyed call both work.
    with channel(sp.addr, None, tls=ca_only) as ch:
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING
    assert stats(sp.addr, key, ca_only).points == 0
    assert stats(sp.addr, key, with_cert).points == 0
    # TLS does not replace keys: a TLS call without one is still UNAUTHENTICATED.
    with pytest.raises(grpc.RpcError) as err:
        stats(sp.addr, "", ca_only)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A plaintext client is refused, and so is a client that trusts another CA.
    assert refused(sp.addr, PLAIN) == grpc.StatusCode.UNAVAILABLE
    stranger = TestCA(tmp_path / "other-ca", "another CA")
    assert refused(sp.addr, TlsSettings(ca=stranger.ca)) == grpc.StatusCode.UNAVAILABLE
    # The HTTP side port stays plain.
    import httpx

    assert httpx.get(f"http://127.0.0.1:{sp.http_port}/healthz", timeout=5).status_code == 200


def test_a_rotated_certificate_is_served_without_a_restart(start_service, tmp_path, ca) -> None:
    sp, _, _ = start_tls_indexer(start_service, tmp_path, ca, "none", name="indexer-rotated")
    new_ca = TestCA(tmp_path / "new-ca", "the next CA")
    assert refused(sp.addr, TlsSettings(ca=new_ca.ca)) == grpc.StatusCode.UNAVAILABLE
    # A Secret update rewrites the mounted files; the server reads them at the next handshake.
    fresh = new_ca.issue("indexer-rotated")
    stamp = time.time() + 5  # a new mtime even on coarse clocks

    def replace(target: Path, source: Path) -> None:
        nonlocal stamp
        target.write_bytes(source.read_bytes())
        stamp += 5
        os.utime(target, (stamp, stamp))

    # Half a pair (the new certificate, the old key) is not taken: the old pair keeps serving.
    replace(ca.folder / "indexer-rotated.crt", fresh.cert)
    with channel(sp.addr, None, tls=TlsSettings(ca=ca.ca)) as ch:
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING
    replace(ca.folder / "indexer-rotated.key", fresh.key)
    with channel(sp.addr, None, tls=TlsSettings(ca=new_ca.ca)) as ch:
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING
    assert refused(sp.addr, TlsSettings(ca=ca.ca)) == grpc.StatusCode.UNAVAILABLE  # the old CA's
    assert sp.proc.poll() is None
    assert sp.log().count("TLS files changed but do not load") == 1
    assert sp.log().count("TLS certificate reloaded") == 1


def test_grpc_mutual_tls(start_service, tmp_path, ca) -> None:
    sp, key, with_cert = start_tls_indexer(start_service, tmp_path, ca, "require")
    with channel(sp.addr, None, tls=with_cert) as ch:
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING
    assert stats(sp.addr, key, with_cert).points == 0

    async def aio_health() -> int:
        async with aio_channel(sp.addr, key, tls=with_cert) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            return (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status

    assert asyncio.run(aio_health()) == health_pb2.HealthCheckResponse.SERVING
    # Without a client certificate, or with one of another CA, the handshake fails.
    assert refused(sp.addr, TlsSettings(ca=ca.ca)) == grpc.StatusCode.UNAVAILABLE
    stranger = TestCA(tmp_path / "other-ca", "another CA").issue("intruder")
    intruder = TlsSettings(ca=ca.ca, cert=stranger.cert, key=stranger.key)
    assert refused(sp.addr, intruder) == grpc.StatusCode.UNAVAILABLE
    assert refused(sp.addr, PLAIN) == grpc.StatusCode.UNAVAILABLE


def test_cli_over_mutual_tls(start_service, tmp_path, ca, facepipe_home) -> None:
    import os

    sp, key, with_cert = start_tls_indexer(start_service, tmp_path, ca, "require")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_")},
        "FACEPIPE_HOME": str(tmp_path / "cli-home"),  # no local stack there
        "FACEPIPE_INDEXER_ADDR": sp.addr,
        "FACEPIPE_API_KEY": key,
    }
    tls_env = {
        "FACEPIPE_TLS_CA": str(with_cert.ca),
        "FACEPIPE_TLS_CERT": str(with_cert.cert),
        "FACEPIPE_TLS_KEY": str(with_cert.key),
    }
    ok = run_facepipe("stats", "--tenant", "acme", "--json", env={**env, **tls_env}, timeout=120)
    assert json.loads(ok.stdout)["faces"] == 0
    # Plaintext against a TLS port: one line, no traceback.
    plain = run_facepipe("stats", "--tenant", "acme", "--json", env=env, check=False, timeout=120)
    assert plain.returncode != 0 and "Traceback" not in plain.stdout + plain.stderr
    # --tls without a CA trusts the system roots only, which do not know the test CA.
    system_roots = run_facepipe("stats", "--tenant", "acme", "--tls", env=env, check=False, timeout=120)
    assert system_roots.returncode != 0 and "Traceback" not in system_roots.stderr
    missing = run_facepipe(
        "stats",
        "--tenant",
        "acme",
        env={**env, "FACEPIPE_TLS_CA": str(tmp_path / "nope.pem")},
        check=False,
        timeout=120,
    )
    assert missing.returncode != 0 and "nope.pem" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_clients_follow_the_environment(ca, monkeypatch) -> None:
    """Channels made without explicit settings (the CLI's) take the environment's."""
    monkeypatch.setenv("FACEPIPE_TLS_CA", str(ca.ca))
    assert TlsSettings.from_env().client_tls
    monkeypatch.delenv("FACEPIPE_TLS_CA")
    monkeypatch.setenv("FACEPIPE_TLS", "true")
    assert TlsSettings.from_env().client_tls
    monkeypatch.setenv("FACEPIPE_TLS", "false")
    assert not TlsSettings.from_env().client_tls


def test_half_configurations_are_refused(ca, tmp_path) -> None:
    leaf = ca.issue("half")
    cases = {
        "FACEPIPE_TLS_CERT and FACEPIPE_TLS_KEY": {"FACEPIPE_TLS_CERT": str(leaf.cert)},
        "FACEPIPE_TLS_CLIENT_AUTH=require needs": {
            "FACEPIPE_TLS_CERT": str(leaf.cert),
            "FACEPIPE_TLS_KEY": str(leaf.key),
            "FACEPIPE_TLS_CLIENT_AUTH": "require",
        },
        "FACEPIPE_NATS_TLS_CERT and FACEPIPE_NATS_TLS_KEY": {"FACEPIPE_NATS_TLS_CERT": str(leaf.cert)},
        "not a PEM certificate and its key": {
            "FACEPIPE_TLS_CERT": str(leaf.cert),
            "FACEPIPE_TLS_KEY": str(ca.ca),
        },
        "is not a PEM CA bundle": {"FACEPIPE_NATS_TLS_CA": str(tmp_path / "missing.pem")},
    }
    for expected, env in cases.items():
        with pytest.raises(ValueError, match=expected):
            check_files(Settings.from_env("indexer", env))
    with pytest.raises(ValueError, match="FACEPIPE_TLS_CLIENT_AUTH"):
        Settings.from_env("indexer", {"FACEPIPE_TLS_CLIENT_AUTH": "maybe"})


def test_serve_names_a_bad_tls_setting_without_traceback(ca, facepipe_home) -> None:
    import os

    env = {
        **os.environ,
        "FACEPIPE_HOME": str(facepipe_home),
        "FACEPIPE_AUTH": "off",
        "FACEPIPE_TLS_CERT": str(ca.ca),
    }
    result = run_facepipe("serve", "indexer", "--port", str(free_port()), env=env, check=False, timeout=120)
    assert result.returncode != 0
    assert "FACEPIPE_TLS_CERT and FACEPIPE_TLS_KEY must be set together" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_up_names_a_bad_tls_setting_before_starting(ca, tmp_path, facepipe_home) -> None:
    import os

    leaf = ca.issue("up-half")
    env = {**os.environ, "FACEPIPE_HOME": str(facepipe_home), "FACEPIPE_NATS_TLS_SERVER_CERT": str(leaf.cert)}
    result = run_facepipe("up", "--detach", "--data-dir", str(tmp_path / "stack"), env=env, check=False)
    assert result.returncode != 0
    assert (
        "FACEPIPE_NATS_TLS_SERVER_CERT and FACEPIPE_NATS_TLS_SERVER_KEY must be set together" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stack" / "stack.json").exists()


# -- NATS -------------------------------------------------------------------------------------


@pytest.fixture
def tls_nats(tmp_path, ca) -> NatsServer:
    """A nats-server that accepts TLS clients with a certificate of ``ca`` only."""
    server_cert = ca.issue("nats")
    tls = NatsTlsSettings(
        ca=ca.ca, server_cert=server_cert.cert, server_key=server_cert.key, client_auth="require"
    )
    server = NatsServer(port=free_port(), http_port=free_port(), store_dir=tmp_path / "nats", tls=tls)
    server.start(log_path=tmp_path / "nats.log")
    yield server
    server.stop()


def test_nats_server_config_has_the_tls_block(tmp_path, ca) -> None:
    leaf = ca.issue("nats-conf")
    plain = NatsServer(port=1, http_port=2, store_dir=tmp_path / "plain")
    plain.command()
    assert "tls" not in (tmp_path / "plain" / "nats.conf").read_text()
    tls = NatsTlsSettings(ca=ca.ca, server_cert=leaf.cert, server_key=leaf.key, client_auth="require")
    NatsServer(port=1, http_port=2, store_dir=tmp_path / "tls", tls=tls).command()
    conf = (tmp_path / "tls" / "nats.conf").read_text()
    assert f'cert_file: "{leaf.cert}"' in conf and f'ca_file: "{ca.ca}"' in conf
    assert "verify: true" in conf


def test_nats_over_mutual_tls(tls_nats, ca) -> None:
    client = ca.issue("nats-client")
    good = NatsTlsSettings(ca=ca.ca, cert=client.cert, key=client.key)
    stranger = TestCA(ca.folder / "stranger", "another CA").issue("stranger")

    async def scenario() -> None:
        nc = await bus.connect(tls_nats.url, "test-tls", tls=good)
        try:
            js = nc.jetstream()
            await bus.ensure_topology(js)
            await bus.publish(js, bus.SUBJECT_INGEST, b"over tls")
            assert (await js.stream_info(bus.STREAM)).state.messages == 1
            assert nc.connected_url.netloc.endswith(str(tls_nats.port))
        finally:
            await nc.close()

        # Plaintext, TLS without a client certificate, and a certificate of another CA are refused.
        attempts = {
            "plain": {},
            "no client certificate": {"tls": nats_ssl_context(NatsTlsSettings(ca=ca.ca))},
            "another CA": {
                "tls": nats_ssl_context(NatsTlsSettings(ca=ca.ca, cert=stranger.cert, key=stranger.key))
            },
        }
        for what, options in attempts.items():
            with pytest.raises(Exception) as err:  # noqa: PT011 - nats-py raises several kinds
                refused_nc = await nats.connect(
                    tls_nats.url,
                    connect_timeout=3,
                    max_reconnect_attempts=0,
                    allow_reconnect=False,
                    **options,
                )
                await refused_nc.close()
            assert err.value is not None, what

    asyncio.run(scenario())


def test_nats_tls_client_refuses_a_plaintext_server(nats_server, ca) -> None:
    """A client configured for TLS does not fall back to plaintext when the server
    (or someone in the middle) does not offer TLS."""

    async def attempt() -> None:
        await bus.connect(nats_server.url, "test-downgrade", tls=NatsTlsSettings(ca=ca.ca))

    with pytest.raises(ConnectionError, match="does not speak TLS"):
        asyncio.run(attempt())
