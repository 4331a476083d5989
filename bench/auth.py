"""The cost of API keys on Search: two indexers over copies of one Qdrant Edge shard,
one with FACEPIPE_AUTH=off and one checking keys, asked the same Search by vector
over gRPC in turn (so load on the machine falls on both alike); the ratio of the
p50 latencies (it should stay under 1.05)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import numpy as np

from facepipe.config import Settings
from facepipe.faces import FaceEngine

TENANT = "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(path: Path, dim: int, n: int) -> np.ndarray:
    from facepipe.storage import EdgeVectorStore, FacePoint

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = EdgeVectorStore(path)
    store.ensure_collection(dim)
    for i in range(0, n, 2000):
        store.upsert(
            [
                FacePoint(str(uuid.UUID(int=j + 1)), vectors[j], {"tenant_id": TENANT})
                for j in range(i, min(n, i + 2000))
            ]
        )
    store.optimize()
    store.close()
    return vectors


async def _make_key(nats_url: str) -> str:
    from facepipe import bus
    from facepipe.auth import KeyStore

    nc = await bus.connect(nats_url, "bench")
    try:
        key, _ = await (await KeyStore.open(nc.jetstream())).create(TENANT, "reader")
        return key
    finally:
        await nc.close()


def _serving(addr: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the indexer exited with {proc.returncode}")
        try:
            with grpc.insecure_channel(addr) as ch:
                status = (
                    health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status
                )
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the indexer at {addr} did not become SERVING")


def _p50s(targets: dict[str, tuple[str, str | None]], vectors: np.ndarray, queries: int) -> dict[str, float]:
    """p50 latency per target (address, key), each query sent to every target in turn."""
    from facepipe.auth.client import key_metadata
    from facepipe.v1 import common_pb2, indexer_pb2, indexer_pb2_grpc

    rng = np.random.default_rng(1)
    # Plain channels and the key as call metadata: the client does the same work for both.
    channels = {name: grpc.insecure_channel(addr) for name, (addr, _) in targets.items()}
    metadata = {name: key_metadata(key) for name, (_, key) in targets.items()}
    stubs = {name: indexer_pb2_grpc.IndexerStub(ch) for name, ch in channels.items()}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for q in range(queries + 50):  # the first 50 warm up
            query = vectors[rng.integers(len(vectors))]
            request = indexer_pb2.SearchRequest(
                tenant_id=TENANT, vector=common_pb2.Embedding(vector=query.tolist()), top_k=10
            )
            for name, stub in stubs.items():
                t = time.perf_counter()
                stub.Search(request, timeout=30, metadata=metadata[name])
                if q >= 50:
                    samples[name].append((time.perf_counter() - t) * 1000)
    finally:
        for ch in channels.values():
            ch.close()
    return {name: float(np.percentile(values, 50)) for name, values in samples.items()}


def _start_indexer(work: Path, mode: str, nats_url: str) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    env = {
        **os.environ,
        "FACEPIPE_AUTH": mode,
        # Both alike but for the keys: each also runs the (idle) indexer stage.
        "FACEPIPE_NATS_URL": nats_url,
        "FACEPIPE_VECTOR_DIR": str(work / f"vectors-{mode}"),
        "FACEPIPE_OBJECT_DIR": str(work / "objects"),
        "FACEPIPE_GRPC_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "facepipe", "serve", "indexer", "--port", str(port)]
        + ["--http-port", str(_free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"127.0.0.1:{port}", proc


def run(settings: Settings, n: int = 20_000, queries: int = 1000) -> dict:
    from facepipe.natsd import NatsServer

    engine = FaceEngine.load(settings, "bench", detector=False)
    dim = engine.embedder.dim
    asyncio.run(engine.close())
    work = Path(tempfile.mkdtemp(prefix="fp-bench-auth-"))
    vectors = _fill(work / "vectors-off", dim, n)
    shutil.copytree(work / "vectors-off", work / "vectors-on")
    nats = NatsServer(port=_free_port(), http_port=_free_port(), store_dir=work / "nats").start()
    procs: list[subprocess.Popen] = []
    try:
        key = asyncio.run(_make_key(nats.url))
        targets: dict[str, tuple[str, str | None]] = {}
        for mode in ("off", "on"):
            addr, proc = _start_indexer(work, mode, nats.url)
            procs.append(proc)
            targets[mode] = (addr, key if mode == "on" else None)
        for (addr, _), proc in zip(targets.values(), procs, strict=True):
            _serving(addr, proc)
        p50 = _p50s(targets, vectors, queries)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(60)
        nats.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"n": n, "dim": dim, "queries": queries, "off": p50["off"], "on": p50["on"]}


def report(r: dict) -> str:
    return "\n".join(
        [
            f"== API keys on Search over gRPC ({r['n']} vectors x {r['dim']}-d, {r['queries']} queries) ==",
            f"keys off  p50 {r['off']:.3f} ms",
            f"keys on   p50 {r['on']:.3f} ms",
            f"ratio     {r['on'] / r['off']:.3f}   (keys on / keys off; under 1.05 is the goal)",
        ]
    )
