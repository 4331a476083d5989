"""End-to-end images/s through the local stack against the model-only bound
(the same images through detector and embedder in-process), and search latency
on Qdrant Edge at 100k vectors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from facepipe.config import Settings
from facepipe.faces import FaceEngine


def sample_files(shared: Path) -> list[Path]:
    return sorted(p for p in (shared / "faces").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def model_bound(settings: Settings, files: list[Path], rounds: int) -> float:
    """Images/s for decode, detect, align and embed, in-process, the same work the stages do."""

    async def run() -> float:
        engine = FaceEngine.load(settings, "bench")
        det, emb = engine.detector, engine.embedder
        params = det.params()
        blobs = [p.read_bytes() for p in files]

        async def one(data: bytes) -> None:
            image, faces = await det.detect_bytes(data, params)
            await emb.embed_faces(image.bgr, [f.landmarks for f in faces])

        await one(blobs[0])
        start = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(one(b) for b in blobs))
        elapsed = time.perf_counter() - start
        await engine.close()
        return len(blobs) * rounds / elapsed

    return asyncio.run(run())


def stack_throughput(files: list[Path], rounds: int) -> tuple[float, dict]:
    """Images/s from the first publish to the last ImageDone, through every stage as its own
    process. Publishing runs in this process with the CLI's client code, so the timing holds
    pipeline work, not interpreter start-ups."""
    from facepipe.client import ingest
    from facepipe.stack import StackState, nats_admin_url
    from facepipe.storage import object_store_from_env

    data_dir = Path(tempfile.mkdtemp(prefix="fp-bench-stack-"))
    env = {**os.environ, "ENABLE_GLOBAL_DEDUP": "0"}
    fp = [sys.executable, "-m", "facepipe"]
    subprocess.run(
        [*fp, "up", "--detach", "--auto-ports", "--data-dir", str(data_dir)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    try:
        state = StackState.load(data_dir)
        objects = object_store_from_env({**os.environ, **state.env})
        folder = str(files[0].parent.parent)

        # The stack's NATS lets in only its users: the benchmark ingests as its admin.
        nats_url = nats_admin_url(state)

        async def run() -> tuple[float, dict]:
            await ingest(nats_url, objects, [str(files[0])], "warmup", wait=True)
            start = time.perf_counter()
            summaries = await asyncio.gather(
                *(ingest(nats_url, objects, [folder], f"bench{r}", wait=True) for r in range(rounds))
            )
            elapsed = time.perf_counter() - start
            totals = {
                "images": sum(s.images for s in summaries),
                "faces_indexed": sum(s.faces_indexed for s in summaries),
                "pending": sum(s.pending for s in summaries),
            }
            return totals["images"] / elapsed, totals

        return asyncio.run(run())
    finally:
        subprocess.run([*fp, "down", "--data-dir", str(data_dir)], env=env, capture_output=True, timeout=120)


def search_latency(dim: int, n: int = 100_000, tenants: int = 10, queries: int = 300) -> dict:
    from facepipe.storage import EdgeVectorStore, FacePoint

    rng = np.random.default_rng(0)
    path = Path(tempfile.mkdtemp(prefix="fp-bench-edge-"))
    store = EdgeVectorStore(path)
    store.ensure_collection(dim)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = time.perf_counter()
    for i in range(0, n, 2000):
        store.upsert(
            [
                FacePoint(
                    str(uuid.UUID(int=j + 1)), vectors[j], {"tenant_id": f"t{j % tenants}", "site": "s"}
                )
                for j in range(i, min(n, i + 2000))
            ]
        )
    upsert_s = time.perf_counter() - start

    def measure() -> tuple[float, float]:
        samples = []
        for q in range(queries):
            query = vectors[rng.integers(n)] + rng.standard_normal(dim).astype(np.float32) * 0.05
            t = time.perf_counter()
            store.search(query, tenant_id=f"t{q % tenants}", top_k=10)
            samples.append((time.perf_counter() - t) * 1000)
        return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))

    before = measure()
    start = time.perf_counter()
    store.optimize()
    optimize_s = time.perf_counter() - start
    after = measure()
    store.close()
    return {
        "n": n,
        "dim": dim,
        "upsert_s": upsert_s,
        "optimize_s": optimize_s,
        "plain": before,
        "indexed": after,
    }


def run(settings: Settings, shared: Path, rounds: int = 6) -> dict:
    files = sample_files(shared)
    bound = model_bound(settings, files, rounds)
    pipeline, totals = stack_throughput(files, rounds)
    engine = FaceEngine.load(settings, "bench", detector=False)
    dim = engine.embedder.dim
    asyncio.run(engine.close())
    return {"bound": bound, "pipeline": pipeline, "totals": totals, "search": search_latency(dim)}


def report(r: dict) -> str:
    s = r["search"]
    return "\n".join(
        [
            "== pipeline through the local stack vs the model-only bound (same images, same models) ==",
            f"local stack  {r['pipeline']:6.1f} img/s   ({r['totals']['images']} images, {r['totals']['faces_indexed']} faces "
            "indexed; publish to last ImageDone)",
            f"model bound  {r['bound']:6.1f} img/s   (decode + detect + align + embed, in-process)",
            f"ratio        {r['pipeline'] / r['bound']:.2f}",
            f"== search on Qdrant Edge, {s['n']} vectors x {s['dim']}-d, tenant-filtered top-10 ==",
            f"upsert {s['n'] / s['upsert_s']:,.0f} points/s; optimize {s['optimize_s']:.1f} s",
            f"before optimize: p50 {s['plain'][0]:.2f} ms  p99 {s['plain'][1]:.2f} ms",
            f"after optimize:  p50 {s['indexed'][0]:.2f} ms  p99 {s['indexed'][1]:.2f} ms",
        ]
    )
