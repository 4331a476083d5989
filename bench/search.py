"""Search latency p50/p99 on Qdrant Edge at a million vectors, with its memory.

The index is built once into ``bench/results/search-cache/`` (git ignores it) and reused:
later runs only open it and query. Vectors are synthetic with cluster structure (each
identity a centre, each face the centre plus noise), of the dimension the active pack's
recognizer produces. Points are spread over tenants as the product stores them, and
every query is tenant-filtered top-10, as Search runs it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facepipe.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = ROOT / "bench" / "results" / "search-cache"
TENANTS = 10
FACES_PER_IDENTITY = 20
NOISE = 0.35  # per-coordinate noise against unit-variance centres: same-identity cosine ~0.9
CHUNK = 20_000
SEED = 7
# Bump when the way the index is generated changes, so an old cache is rebuilt.
LAYOUT = 1


def recognizer_dim(settings: Settings) -> int:
    """The embedding size, read from the active pack's recognizer output shape."""
    import onnxruntime as ort

    from facepipe.models.registry import load_pack

    pack = load_pack(settings.resolved_models_dir, settings.detector_model, settings.recognizer_model)
    session = ort.InferenceSession(str(pack.recognizer), providers=["CPUExecutionProvider"])
    dim = session.get_outputs()[0].shape[-1]
    if isinstance(dim, int) and dim > 0:
        return dim
    # A symbolic size: one run on zeros tells it.
    feed = session.get_inputs()[0]
    shape = [s if isinstance(s, int) and s > 0 else 1 for s in feed.shape]
    return int(session.run(None, {feed.name: np.zeros(shape, np.float32)})[0].shape[-1])


def _centres(n: int, dim: int) -> np.ndarray:
    identities = max(1, n // FACES_PER_IDENTITY)
    return np.random.default_rng(SEED).standard_normal((identities, dim)).astype(np.float32)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def vectors(start: int, stop: int, centres: np.ndarray) -> np.ndarray:
    """Points ``start..stop``: point i belongs to identity i // FACES_PER_IDENTITY; the
    same range always gives the same vectors."""
    rng = np.random.default_rng([SEED, start])
    ids = np.arange(start, stop) // FACES_PER_IDENTITY % len(centres)
    noise = rng.standard_normal((stop - start, centres.shape[1])).astype(np.float32) * NOISE
    return _unit(centres[ids] + noise)


def tenant_of(i: int) -> str:
    # Identities, not points, are spread over tenants: a person's faces stay in one tenant.
    return f"t{i // FACES_PER_IDENTITY % TENANTS}"


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, CHUNK):
        yield start, min(n, start + CHUNK)


def build(path: Path, n: int, dim: int) -> dict:
    """Upserts ``n`` points and builds the HNSW index; returns the timings."""
    from facepipe.storage import EdgeVectorStore, FacePoint

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    centres = _centres(n, dim)
    store = EdgeVectorStore(path)
    try:
        store.ensure_collection(dim)
        start = time.perf_counter()
        for lo, hi in _chunks(n):
            block = vectors(lo, hi, centres)
            store.upsert(
                [
                    FacePoint(
                        str(uuid.UUID(int=i + 1)), block[i - lo], {"tenant_id": tenant_of(i), "site": "s"}
                    )
                    for i in range(lo, hi)
                ]
            )
        upsert_s = time.perf_counter() - start
        start = time.perf_counter()
        store.optimize()
        optimize_s = time.perf_counter() - start
    finally:
        store.close()
    meta = {"n": n, "dim": dim, "layout": LAYOUT, "upsert_s": upsert_s, "optimize_s": optimize_s}
    (path / "bench.json").write_text(json.dumps(meta))
    return meta


def cached_index(n: int, dim: int, cache_root: Path = CACHE_ROOT) -> tuple[Path, dict, bool]:
    """The index directory for (n, dim), built when missing; True when it was built now."""
    path = cache_root / f"edge-{n}x{dim}"
    meta_file = path / "bench.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("layout") == LAYOUT and meta.get("n") == n and meta.get("dim") == dim:
            return path, meta, False
    return path, build(path, n, dim), True


def run(settings: Settings, n: int = 1_000_000, queries: int = 1000, cache_root: Path = CACHE_ROOT) -> dict:
    from facepipe.storage import EdgeVectorStore

    dim = recognizer_dim(settings)
    path, meta, built = cached_index(n, dim, cache_root)
    rss_before = rss_bytes()
    start = time.perf_counter()
    store = EdgeVectorStore(path)
    try:
        store.ensure_collection(dim)
        open_s = time.perf_counter() - start
        centres = _centres(n, dim)
        rng = np.random.default_rng(SEED + 1)
        # A query is a fresh face of a stored identity, searched in that identity's tenant.
        members = rng.integers(0, n, queries)
        noise = rng.standard_normal((queries, dim)).astype(np.float32) * NOISE
        probes = _unit(centres[members // FACES_PER_IDENTITY % len(centres)] + noise)
        for q in range(min(20, queries)):  # first touches of the mapped files
            store.search(probes[q], tenant_id=tenant_of(int(members[q])), top_k=10)
        samples, found = [], 0
        for q in range(queries):
            t = time.perf_counter()
            hits = store.search(probes[q], tenant_id=tenant_of(int(members[q])), top_k=10)
            samples.append((time.perf_counter() - t) * 1000)
            same = int(members[q]) // FACES_PER_IDENTITY
            found += bool(hits) and int(uuid.UUID(hits[0].id).int - 1) // FACES_PER_IDENTITY == same
        rss_after = rss_bytes()
    finally:
        store.close()
    return {
        "n": n,
        "dim": dim,
        "tenants": TENANTS,
        "built_now": built,
        "upsert_s": meta["upsert_s"],
        "optimize_s": meta["optimize_s"],
        "open_s": open_s,
        "p50_ms": float(np.percentile(samples, 50)),
        "p99_ms": float(np.percentile(samples, 99)),
        "queries": queries,
        "top1_same_identity": found / queries,
        "rss_mb": rss_after / 2**20,
        "rss_delta_mb": (rss_after - rss_before) / 2**20,
        "disk_mb": dir_bytes(path) / 2**20,
        "path": str(path),
        "cores": os.cpu_count() or 1,
    }


def report(r: dict) -> str:
    build_line = (
        f"built now: upsert {r['upsert_s']:.0f} s + index {r['optimize_s']:.0f} s on {r['cores']} cores"
        if r["built_now"]
        else f"reused {r['path']} (built in {r['upsert_s']:.0f} s upsert + {r['optimize_s']:.0f} s index)"
    )
    met = "met" if r["p99_ms"] < 10 else "NOT met"
    return "\n".join(
        [
            f"== search on Qdrant Edge: {r['n']:,} vectors x {r['dim']}-d (the recognizer's), "
            f"{r['tenants']} tenants, tenant-filtered top-10 ==",
            build_line,
            f"search  p50 {r['p50_ms']:.2f} ms   p99 {r['p99_ms']:.2f} ms   target p99 < 10 ms: {met}   "
            f"({r['queries']} queries; top-1 of the same identity {r['top1_same_identity']:.1%})",
            f"memory  RSS {r['rss_mb']:.0f} MB (+{r['rss_delta_mb']:.0f} MB for the open index)   "
            f"on disk {r['disk_mb']:.0f} MB   open {r['open_s'] * 1000:.0f} ms",
        ]
    )
