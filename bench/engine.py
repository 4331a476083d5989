"""Detector and embedder throughput against insightface FaceAnalysis on the
same images and model files, plus per-batch latency percentiles."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from facepipe.config import Settings
from facepipe.detection import detect_batch
from facepipe.faces import FaceEngine
from facepipe.v1 import common_pb2, detector_pb2


def bench_images(shared: Path, min_count: int = 32) -> list[bytes]:
    import insightface

    files = sorted(p for p in (shared / "faces").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files.append(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")
    data = [p.read_bytes() for p in files]
    while len(data) < min_count:
        data = data + data
    return data[:min_count]


def reference_app(models_dir: Path, root: Path | None = None):
    """insightface's FaceAnalysis on the same model files (it looks in ROOT/models/NAME)."""
    from insightface.app import FaceAnalysis

    root = root or Path(tempfile.mkdtemp(prefix="fp-bench-"))
    (root / "models").mkdir()
    os.symlink(models_dir.resolve(), root / "models" / "local")
    app = FaceAnalysis(
        name="local",
        root=str(root),
        allowed_modules=["detection", "recognition"],
        providers=["CPUExecutionProvider"],
    )
    app.prepare(ctx_id=-1, det_size=(640, 640))
    return app


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def run(settings: Settings, shared: Path, rounds: int = 2) -> dict:
    images = bench_images(shared)
    app = reference_app(settings.resolved_models_dir)
    det_ref, rec_ref = app.det_model, app.models["recognition"]

    # insightface, image by image: decode + detect, then embed each face.
    arrays = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in images]
    faces_ref = [app.get(a) for a in arrays[:2]]  # warm-up
    t0 = time.perf_counter()
    faces_ref = []
    for _ in range(rounds):
        for b in images:
            img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
            faces_ref.append((img, app.det_model.detect(img, input_size=(640, 640))))
    ref_det_s = time.perf_counter() - t0
    ref_items = []
    for img, (boxes, kpss) in faces_ref:
        for i in range(len(boxes)):
            ref_items.append((img, kpss[i]))
    from insightface.app.common import Face

    t0 = time.perf_counter()
    for img, kps in ref_items:
        rec_ref.get(img, Face(kps=kps))
    ref_emb_s = time.perf_counter() - t0
    del det_ref

    async def ours() -> dict:
        engine = FaceEngine.load(settings, "bench")
        det, emb = engine.detector, engine.embedder
        params = det.params(include_rejected=True)
        try:
            req = detector_pb2.DetectBatchRequest(images=[common_pb2.ImageInput(id="w", data=images[0])])
            await detect_batch(det, req)  # warm-up
            t0 = time.perf_counter()
            decoded_all = []
            for _ in range(rounds):

                async def one(b: bytes):
                    return await det.detect_bytes(b, params)

                decoded_all += await asyncio.gather(*(one(b) for b in images))
            det_s = time.perf_counter() - t0
            crops = [
                det_crop
                for image, faces in decoded_all
                for det_crop in [emb.align(image.bgr, f.landmarks) for f in faces]
            ]
            await emb.embed_crops(crops[:4])
            t0 = time.perf_counter()
            # Alignment is part of the embedder path, as in insightface's get().
            await asyncio.gather(
                *(emb.embed_faces(image.bgr, [f.landmarks for f in faces]) for image, faces in decoded_all)
            )
            emb_s = time.perf_counter() - t0
            latency = {}
            for batch in (1, 4, 8, 16):
                samples = []
                for i in range(max(4, 32 // batch)):
                    chunk = [images[(i * batch + k) % len(images)] for k in range(batch)]
                    req = detector_pb2.DetectBatchRequest(
                        images=[common_pb2.ImageInput(id=str(k), data=b) for k, b in enumerate(chunk)]
                    )
                    t = time.perf_counter()
                    await detect_batch(det, req)
                    samples.append((time.perf_counter() - t) * 1000)
                latency[batch] = (percentile(samples, 50), percentile(samples, 99))
            return {"det_s": det_s, "emb_s": emb_s, "faces": len(crops), "latency": latency}
        finally:
            await engine.close()

    result = asyncio.run(ours())
    n_images = len(images) * rounds
    out = {
        "images": n_images,
        "ours_det_ips": n_images / result["det_s"],
        "ref_det_ips": n_images / ref_det_s,
        "ours_emb_fps": result["faces"] / result["emb_s"],
        "ref_emb_fps": len(ref_items) / ref_emb_s,
        "latency_ms": result["latency"],
    }
    out["det_ratio"] = out["ours_det_ips"] / out["ref_det_ips"]
    out["emb_ratio"] = out["ours_emb_fps"] / out["ref_emb_fps"]
    return out


def report(r: dict) -> str:
    lines = [
        "== face engine (in-process, CPU) vs insightface FaceAnalysis, same images and models ==",
        f"detector  ours {r['ours_det_ips']:7.1f} img/s   insightface {r['ref_det_ips']:7.1f} img/s   "
        f"ratio {r['det_ratio']:.2f}x   ({r['images']} images, decode included)",
        f"embedder  ours {r['ours_emb_fps']:7.1f} face/s  insightface {r['ref_emb_fps']:7.1f} face/s  "
        f"ratio {r['emb_ratio']:.2f}x   (alignment included)",
        "DetectBatch latency per batch size:",
    ]
    for batch, (p50, p99) in r["latency_ms"].items():
        lines.append(
            f"  batch {batch:3d}: p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   ({p50 / batch:6.1f} ms/img at p50)"
        )
    return "\n".join(lines)
