"""The cost of the web service on search: a local stack (``facepipe up``) with photos
ingested, then the same photo searched over REST (POST /api/v1/search through the web
service) and over gRPC (Indexer/Search, straight to the indexer) in turn, with the same
key, tenant and index, so that load on the machine falls on both alike. Reported: p50
and p99 of each, their ratio, and the web service's overhead at p50 (the goal: under
10 ms)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

from facepipe.config import Settings

TENANT = "bench"
OVERHEAD_GOAL_MS = 10.0


def _facepipe(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facepipe", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _photos(shared: Path, limit: int) -> list[Path]:
    photos = sorted(
        p for p in (shared / "faces").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    if not photos:
        raise FileNotFoundError(f"no photos under {shared / 'faces'}")
    return photos[:limit]


def _ingest(url: str, key: str, photos: list[Path], settle_s: float = 15.0) -> int:
    """Ingests the photos through the web service; returns the images indexed once all
    are, or once the count has not moved for ``settle_s`` (a photo whose faces are all
    rejected or skipped as near-duplicates indexes nothing)."""
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120) as c:
        c.post("/api/v1/ingest", params={"tenant": TENANT}, files=files).raise_for_status()
        deadline = time.monotonic() + 300
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            images = int(c.get("/api/v1/stats", params={"tenant": TENANT}).json().get("images", 0))
            if images >= len(photos) or (images and images == last and time.monotonic() - since > settle_s):
                return images
            if images != last:
                last, since = images, time.monotonic()
            time.sleep(0.5)
    raise TimeoutError("the photos were not indexed in 300 s")


def _measure(url: str, indexer: str, key: str, image: bytes, queries: int) -> dict[str, list[float]]:
    """Latency in ms of each way, the two asked in turn; the first 10 of each warm up."""
    from facepipe.auth.client import key_metadata
    from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

    samples: dict[str, list[float]] = {"rest": [], "grpc": []}
    request = indexer_pb2.SearchRequest(tenant_id=TENANT, image=image, top_k=10)
    with (
        httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as rest,
        grpc.insecure_channel(indexer) as channel,
    ):
        stub = indexer_pb2_grpc.IndexerStub(channel)
        metadata = key_metadata(key)
        for q in range(queries + 10):
            t = time.perf_counter()
            answer = rest.post(
                "/api/v1/search",
                params={"tenant": TENANT},
                files={"image": ("q.jpg", image)},
                data={"top_k": "10"},
            )
            rest_ms = (time.perf_counter() - t) * 1000
            answer.raise_for_status()
            t = time.perf_counter()
            stub.Search(request, timeout=60, metadata=metadata)
            grpc_ms = (time.perf_counter() - t) * 1000
            if q >= 10:
                samples["rest"].append(rest_ms)
                samples["grpc"].append(grpc_ms)
    return samples


def run(settings: Settings, shared: Path, queries: int = 300, photos: int = 20) -> dict:
    env = {**os.environ, "FACEPIPE_HOME": str(settings.home), "FACEPIPE_WEB_RATE_LIMIT_PER_MINUTE": "0"}
    with tempfile.TemporaryDirectory(prefix="facepipe-bench-web-") as tmp:
        data_dir = Path(tmp) / "stack"
        up = _facepipe("up", "--detach", "--auto-ports", "--data-dir", str(data_dir), env=env)
        if up.returncode != 0:
            raise RuntimeError(f"the stack did not start:\n{up.stdout}\n{up.stderr}")
        try:
            state = json.loads((data_dir / "stack.json").read_text())
            url = f"http://127.0.0.1:{state['components']['web']['grpc_port']}"
            indexer = f"127.0.0.1:{state['components']['indexer']['grpc_port']}"
            key = (data_dir / "admin.key").read_text().strip()
            library = _photos(shared, photos + 1)
            indexed = _ingest(url, key, library[1:])
            samples = _measure(url, indexer, key, library[0].read_bytes(), queries)
        finally:
            _facepipe("down", "--data-dir", str(data_dir), env=env)
    out: dict = {"queries": queries, "photos": indexed}
    for way, values in samples.items():
        out[way] = {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}
    return out


def report(r: dict) -> str:
    rest, grpc_ = r["rest"], r["grpc"]
    overhead = rest["p50"] - grpc_["p50"]
    verdict = "met" if overhead < OVERHEAD_GOAL_MS else "NOT met"
    return "\n".join(
        [
            f"== web service: REST search vs gRPC Search (same photo and index of {r['photos']} images, "
            f"{r['queries']} queries) ==",
            f"REST POST /api/v1/search  p50 {rest['p50']:8.2f} ms   p99 {rest['p99']:8.2f} ms",
            f"gRPC Indexer/Search       p50 {grpc_['p50']:8.2f} ms   p99 {grpc_['p99']:8.2f} ms",
            f"ratio REST / gRPC         p50 {rest['p50'] / grpc_['p50']:8.3f}      p99 {rest['p99'] / grpc_['p99']:8.3f}",
            f"overhead at p50           {overhead:8.2f} ms   (goal under {OVERHEAD_GOAL_MS:g} ms: {verdict})",
        ]
    )
