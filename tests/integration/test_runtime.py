"""The service runtime against real service processes: HTTP side port, gRPC
health and reflection, JSON logs, and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import time

import grpc
import httpx
import pytest
from conftest import SHARED_FACES
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facepipe import __version__
from facepipe.config import DEFAULT_PORTS, HTTP_PORT_OFFSET, Settings
from facepipe.v1 import common_pb2, detector_pb2, detector_pb2_grpc

DETECTOR = "facepipe.v1.Detector"


def http_get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def log_records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON


def messages(text: str) -> list[str]:
    return [r["msg"] for r in log_records(text)]


# A drain grace no test waits for: a service that exits well within it stopped when its
# work was done, not at the end of the grace period.
LONG_GRACE_S = "600"
# Generous deadlines for what takes seconds, so a loaded machine cannot fail the test.
STOP_DEADLINE_S = 60.0


def metric_value(body: str, name: str) -> float:
    """Sum of a metric's samples whose name and labels start with ``name``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


# -- settings ------------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("FACEPIPE_") or key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FACEPIPE_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_default_ports_per_service(clean_env, tmp_path) -> None:
    for service, port in DEFAULT_PORTS.items():
        s = Settings.from_env(service)
        assert (s.service, s.grpc_port, s.http_port) == (service, port, port + HTTP_PORT_OFFSET)
    assert (Settings.from_env("detector").grpc_port, Settings.from_env("node").grpc_port) == (50051, 50056)
    other = Settings.from_env("something-else")
    assert (other.grpc_port, other.http_port) == (50050, 51050)
    s = Settings.from_env("detector")
    assert s.home == tmp_path / "home"
    assert s.resolved_models_dir == tmp_path / "home" / "models" / "opencv"
    assert s.providers[-1] == "CPUExecutionProvider"


def test_settings_from_env(clean_env, tmp_path) -> None:
    clean_env.setenv("FACEPIPE_GRPC_PORT", "6000")
    clean_env.setenv("FACEPIPE_PROVIDERS", " CUDAExecutionProvider , CPUExecutionProvider,")
    clean_env.setenv("FACEPIPE_INFERENCE_NODES", "node-0:50056,node-1:50056")
    clean_env.setenv("FACEPIPE_DRAIN_SECONDS", "2.5")
    clean_env.setenv("FACEPIPE_MAX_BATCH", "16")
    clean_env.setenv("FACEPIPE_DET_THRESHOLD", "")  # empty means unset
    clean_env.setenv("FACEPIPE_MODELS_DIR", str(tmp_path / "packs" / "mine"))
    clean_env.setenv("FACEPIPE_SERVICE", "ignored")
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317")

    s = Settings.from_env("embedder")
    assert s.service == "embedder"
    assert (s.grpc_port, s.http_port) == (6000, 6000 + HTTP_PORT_OFFSET)
    assert s.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert s.inference_nodes == ("node-0:50056", "node-1:50056")
    assert s.drain_seconds == 2.5 and s.max_batch == 16 and isinstance(s.max_batch, int)
    assert s.det_threshold == Settings().det_threshold
    assert s.models_dir == tmp_path / "packs" / "mine"
    assert s.resolved_models_dir == tmp_path / "packs" / "mine"
    assert s.otlp_endpoint == "http://otel:4317"

    clean_env.setenv("FACEPIPE_HTTP_PORT", "9100")
    clean_env.setenv("FACEPIPE_OTLP_ENDPOINT", "http://collector:4317")
    s = Settings.from_env("embedder")
    assert (s.grpc_port, s.http_port) == (6000, 9100)
    assert s.otlp_endpoint == "http://collector:4317"

    # Explicit overrides win; None (an unset CLI flag) does not.
    s = Settings.from_env("embedder", grpc_port=None, http_port=7001, max_batch=4)
    assert (s.grpc_port, s.http_port, s.max_batch) == (6000, 7001, 4)


@dataclasses.dataclass(frozen=True)
class _WithFlag(Settings):
    debug_images: bool = False


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("false", False), ("no", False)],
)
def test_bool_settings(clean_env, raw, value) -> None:
    clean_env.setenv("FACEPIPE_DEBUG_IMAGES", raw)
    assert _WithFlag.from_env("detector").debug_images is value


# -- a running service -------------------------------------------------------------------
def test_health_metrics_reflection_logs_and_sigterm(start_service, grpcurl_bin) -> None:
    svc = start_service("detector", env={"FACEPIPE_DRAIN_SECONDS": LONG_GRACE_S})

    assert http_get(svc.http_port, "/healthz").status_code == 200
    ready = http_get(svc.http_port, "/readyz")
    assert ready.status_code == 200
    doc = ready.json()
    assert doc["ready"] is True
    assert doc["checks"]["started"] == "ok" and doc["checks"]["models"] == "ok"
    assert set(doc["checks"].values()) == {"ok"}, doc
    stats = http_get(svc.http_port, "/stats")
    assert stats.status_code == 200 and stats.json()["service"] == "detector"
    assert http_get(svc.http_port, "/nope").status_code == 404

    body = http_get(svc.http_port, "/metrics").text
    assert f'facepipe_build_info{{service="detector",version="{__version__}"}} 1.0' in body
    assert 'facepipe_ready{service="detector"} 1.0' in body
    model = svc.pack.detector.name
    assert f'facepipe_model_provider_info{{model="{model}",provider="CPUExecutionProvider"' in body

    with grpc.insecure_channel(svc.addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", DETECTOR):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="facepipe.v1.Nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    def grpcurl(*args: str) -> str:
        done = subprocess.run([grpcurl_bin, "-plaintext", *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = grpcurl(svc.addr, "list").split()
    assert {DETECTOR, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(listed)
    described = grpcurl(svc.addr, "describe", DETECTOR)
    assert "rpc DetectBatch" in described and "rpc DetectStream" in described
    checked = grpcurl("-d", json.dumps({"service": DETECTOR}), svc.addr, "grpc.health.v1.Health/Check")
    assert json.loads(checked) == {"status": "SERVING"}

    # Idle, so it stops at once: far within the grace period (a kill would exit non-zero).
    drain_seconds = float(svc.env["FACEPIPE_DRAIN_SECONDS"])
    assert drain_seconds > STOP_DEADLINE_S
    assert svc.stop(signal.SIGTERM, timeout=STOP_DEADLINE_S) == 0

    records = log_records(svc.log())
    for record in records:
        assert {"ts", "level", "service", "msg"} <= record.keys(), record
        assert record["service"] == "detector"
        assert record["ts"].endswith("Z") and record["level"] in ("debug", "info", "warning", "error")
    msgs = [r["msg"] for r in records]
    assert msgs.index("listening") < msgs.index("serving") < msgs.index("draining") < msgs.index("stopped")
    assert msgs[-1] == "stopped"
    assert next(r for r in records if r["msg"] == "draining")["grace_s"] == drain_seconds


def _request(images: list[bytes], prefix: str) -> detector_pb2.DetectBatchRequest:
    return detector_pb2.DetectBatchRequest(
        images=[common_pb2.ImageInput(id=f"{prefix}-{i}", data=data) for i, data in enumerate(images)]
    )


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    faces = sorted(SHARED_FACES.glob("*/*.jp*g"))
    if not faces:
        pytest.skip("../shared/faces is not present")
    return [p.read_bytes() for p in faces]


async def test_sigterm_drains_in_flight_stream_and_batch(start_service, jpegs) -> None:
    images = jpegs
    svc = start_service("detector", env={"FACEPIPE_DRAIN_SECONDS": LONG_GRACE_S})

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.get(f"http://127.0.0.1:{svc.http_port}{path}")

    async def inferences() -> float:
        return metric_value((await get("/metrics")).text, "facepipe_inference_seconds_count")

    async with grpc.aio.insecure_channel(svc.addr) as channel:
        stub = detector_pb2_grpc.DetectorStub(channel)
        stream = stub.DetectStream(timeout=120)
        await stream.write(_request(images[:2], "stream-a"))
        first = await stream.read()
        assert [len(r.faces) for r in first.results] == [1, 1]

        # A large batch, in flight once the detector has run its first inference for it.
        done_before = await inferences()
        batch = asyncio.ensure_future(stub.DetectBatch(_request(images * 2, "batch"), timeout=120))
        while await inferences() == done_before:
            assert not batch.done(), "the batch finished before it was seen in flight"
            await asyncio.sleep(0.01)
        svc.proc.send_signal(signal.SIGTERM)
        assert not batch.done()

        # Draining: not ready, and the readiness gauge says so.
        deadline = time.monotonic() + STOP_DEADLINE_S
        while (await get("/readyz")).status_code != 503:
            assert time.monotonic() < deadline, "still ready after SIGTERM"
            await asyncio.sleep(0.02)
        assert (await get("/readyz")).json()["checks"]["started"] == "starting"
        assert 'facepipe_ready{service="detector"} 0.0' in (await get("/metrics")).text

        # The open stream still takes and answers a request, then ends cleanly.
        await stream.write(_request(images[2:4], "stream-b"))
        await stream.done_writing()
        second = await stream.read()
        assert [r.id for r in second.results] == ["stream-b-0", "stream-b-1"]
        assert [len(r.faces) for r in second.results] == [1, 1]
        assert await stream.read() == grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK

        response = await batch
        assert [r.id for r in response.results] == [f"batch-{i}" for i in range(2 * len(images))]
        assert all(not r.HasField("error") and len(r.faces) >= 1 for r in response.results)

    # Done when the work was, far within the grace period.
    code = await asyncio.to_thread(svc.proc.wait, STOP_DEADLINE_S)
    assert code == 0
    msgs = messages(svc.log())
    assert msgs.index("draining") < msgs.index("stopped")


def test_failed_start_is_logged_as_json_and_exits_nonzero(start_service, tmp_path) -> None:
    svc = start_service("detector", env={"FACEPIPE_HOME": str(tmp_path / "no-models")}, wait=False)
    assert svc.proc.wait(60) == 1
    records = log_records(svc.log())
    failed = [r for r in records if r["msg"] == "start failed"]
    assert len(failed) == 1, records
    assert failed[0]["level"] == "error"
    assert "model pack not found" in failed[0]["exc"]


def test_bad_setting_names_its_variable(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("FACEPIPE_GRPC_PORT", "abc")
    with pytest.raises(ValueError, match="FACEPIPE_GRPC_PORT='abc'"):
        Settings.from_env("detector")


def test_sigterm_during_start_up_stops_at_once(start_service, tmp_path) -> None:
    """A service still connecting to its dependencies stops on SIGTERM instead of hanging."""
    import socket
    import threading

    # A NATS "server" that accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    threading.Thread(
        target=lambda: [accepted.append(silent.accept()[0]) for _ in range(50)], daemon=True
    ).start()
    port = silent.getsockname()[1]
    svc = start_service("extractor", env={"FACEPIPE_NATS_URL": f"nats://127.0.0.1:{port}"}, wait=False)
    deadline = time.monotonic() + STOP_DEADLINE_S
    while "listening" not in messages(svc.log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert svc.proc.poll() is None, svc.log()
    svc.proc.send_signal(signal.SIGTERM)
    try:
        code = svc.proc.wait(STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {STOP_DEADLINE_S} s after SIGTERM:\n{svc.log()}") from None
    # Exit code 0 and this record only come from giving up the start on SIGTERM; a start that
    # ran on to its own failure would log "start failed" and exit 1.
    assert code == 0, svc.log()
    msgs = messages(svc.log())
    assert "stopped during start-up" in msgs and "start failed" not in msgs and "serving" not in msgs
    silent.close()
