"""The detector of every installed model pack, side by side in interleaved rounds:

- through facepipe's detector (the DetectBatch path: decode, letterbox, batched
  inference, decoding, quality checks) against its own inference-only bound, a raw
  ONNX Runtime session run on the very tensors facepipe's detector built;
- against insightface FaceAnalysis (detection only) on the research pack ``local``,
  with detection recall on ``../shared/eval/faces`` for each side;
- adaptive against fixed detection size (``FACEPIPE_ADAPTIVE_DET_SIZE``), with the
  accepted faces of each;
- the embedder against insightface's recognition model, and DetectBatch latency per
  batch size for the active pack.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.rounds import Ratio, RatioReport, interleaved
from facepipe.config import Settings
from facepipe.detection import detect_batch
from facepipe.faces import FaceEngine
from facepipe.models.session import OnnxModel
from facepipe.v1 import common_pb2, detector_pb2

RESEARCH_PACK = "local"
DEFAULT_PACK_TARGET = 2.0  # the default pack's detector against insightface on the research pack
BOUND_TARGET = 0.9  # facepipe's detector against its inference-only bound
ADAPTIVE_SETTING = "adaptive_det_size"  # FACEPIPE_ADAPTIVE_DET_SIZE
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Sizes:
    """How much each part runs; ``quick`` keeps every line but makes it tiny."""

    images: int = 32
    rounds: int = 5
    eval_images: int = 0  # 0: all of ../shared/eval/faces
    latency_batches: tuple[int, ...] = (1, 4, 8, 16)
    latency_samples: int = 32  # images per batch size

    @classmethod
    def quick(cls) -> Sizes:
        return cls(images=4, rounds=2, eval_images=4, latency_batches=(1, 2), latency_samples=2)


def installed_packs(home: Path) -> list[str]:
    """Names of the packs under ``home/models`` that have a manifest."""
    return sorted(p.parent.name for p in (home / "models").glob("*/pack.json"))


def pack_settings(settings: Settings, pack: str, **overrides: object) -> Settings:
    """``settings`` pointed at ``pack``, with the pack's own detector and recognizer."""
    return dataclasses.replace(
        settings, model_pack=pack, models_dir=None, detector_model="", recognizer_model="", **overrides
    )


def has_adaptive_setting() -> bool:
    return any(f.name == ADAPTIVE_SETTING for f in dataclasses.fields(Settings))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)


def bench_images(shared: Path, count: int) -> list[bytes]:
    """``../shared/faces`` and insightface's six-face sample, repeated up to ``count``."""
    import insightface

    files = image_files(shared / "faces")
    files.append(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")
    data = [p.read_bytes() for p in files]
    while len(data) < count:
        data = data + data
    return data[:count]


def eval_images(shared: Path, limit: int) -> list[bytes]:
    """``../shared/eval/faces``; a ``limit`` takes every identity's photos in turn."""
    files = image_files(shared / "eval" / "faces")
    if limit:
        by_identity: dict[str, list[Path]] = {}
        for f in files:
            by_identity.setdefault(f.parent.name, []).append(f)
        files = [f for group in zip(*by_identity.values(), strict=False) for f in group][:limit]
    return [p.read_bytes() for p in files]


def covers_centre(boxes: np.ndarray, width: int, height: int) -> bool:
    """Whether a box holds the image centre: the labelled face of an eval photo is the one
    nearest the centre (LFW), or fills the crop (Glint)."""
    cx, cy = width / 2, height / 2
    return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes)


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


# -- insightface, the reference ----------------------------------------------------------------


def reference_app(models_dir: Path, root: Path | None = None):
    """insightface's FaceAnalysis on the research pack's files (it looks in ROOT/models/NAME)."""
    from insightface.app import FaceAnalysis

    root = root or Path(tempfile.mkdtemp(prefix="fp-bench-"))
    (root / "models").mkdir()
    os.symlink(models_dir.resolve(), root / "models" / RESEARCH_PACK)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every model it finds
        app = FaceAnalysis(
            name=RESEARCH_PACK,
            root=str(root),
            allowed_modules=["detection", "recognition"],
            providers=["CPUExecutionProvider"],
        )
        app.prepare(ctx_id=-1, det_size=(640, 640))
    return app


# -- facepipe's detector and its bound --------------------------------------------------------


class RecordingInference:
    """Runs every call on the real inference and keeps the (model, tensor) pairs, so the
    bound replays exactly the batches facepipe's detector built."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[str, np.ndarray]] = []

    def model(self, name: str):
        return self.inner.model(name)

    async def run(self, model: str, blob: np.ndarray) -> list[np.ndarray]:
        self.calls.append((model, blob))
        return await self.inner.run(model, blob)


class RawSession:
    """The inference-only bound: the detector's own ONNX Runtime session (same file,
    provider and threads), fed prepared tensors directly, with none of facepipe's
    decoding, batching or hand-offs around it. A model whose batch axis is fixed at 1
    gets its items over as many threads as facepipe gives it."""

    def __init__(self, onnx: OnnxModel) -> None:
        self.session = onnx.session
        self.input_name = onnx.input_name
        self.batch_dynamic = onnx.batch_dynamic
        self.pool = ThreadPoolExecutor(max_workers=1 if onnx.batch_dynamic else onnx.workers)

    def run(self, blob: np.ndarray) -> None:
        if self.batch_dynamic:
            self.session.run(None, {self.input_name: blob})
        else:
            items = range(blob.shape[0])
            list(self.pool.map(lambda i: self.session.run(None, {self.input_name: blob[i : i + 1]}), items))

    def close(self) -> None:
        self.pool.shutdown()


def detect_request(images: list[bytes], include_rejected: bool = False) -> detector_pb2.DetectBatchRequest:
    return detector_pb2.DetectBatchRequest(
        images=[common_pb2.ImageInput(id=str(i), data=b) for i, b in enumerate(images)],
        options=detector_pb2.DetectOptions(include_rejected=include_rejected),
    )


@dataclass
class Recall:
    found: int = 0
    images: int = 0
    accepted_faces: int = 0
    # Photos whose labelled face (the one at the centre) is found and passes the quality checks.
    labelled_accepted: int = 0

    @property
    def rate(self) -> float:
        return self.found / self.images if self.images else float("nan")


async def facepipe_recall(engine: FaceEngine, images: list[bytes], chunk: int = 32) -> Recall:
    """Eval photos whose labelled face facepipe's detector finds (quality checks aside, as
    insightface has none), and the faces it accepts."""
    det = engine.detector
    params = det.params(include_rejected=True)
    recall = Recall()
    for start in range(0, len(images), chunk):
        results = await asyncio.gather(*(det.detect_bytes(b, params) for b in images[start : start + chunk]))
        for image, faces in results:
            boxes = np.array([f.box for f in faces]).reshape(-1, 4)
            recall.found += covers_centre(boxes, image.width, image.height)
            recall.accepted_faces += sum(f.quality.accepted for f in faces)
            accepted = np.array([f.box for f in faces if f.quality.accepted]).reshape(-1, 4)
            recall.labelled_accepted += covers_centre(accepted, image.width, image.height)
            recall.images += 1
    return recall


def insightface_recall(app, images: list[bytes]) -> Recall:
    recall = Recall()
    for data in images:
        img = decode(data)
        boxes, _ = app.det_model.detect(img, input_size=(640, 640))
        recall.found += covers_centre(boxes, img.shape[1], img.shape[0])
        recall.images += 1
    return recall


# -- one pack ----------------------------------------------------------------------------------


@dataclass
class PackResult:
    pack: str
    detector: str
    provider: str
    rounds: RatioReport
    recall: dict[str, Recall] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    latency_ms: dict[int, tuple[float, float]] = field(default_factory=dict)
    embed: RatioReport | None = None
    adaptive: bool = False  # whether the adaptive/fixed sides ran


def timed(images: int, work: Callable[[], object]) -> float:
    """Items per second of one call of ``work``."""
    start = time.perf_counter()
    work()
    return images / (time.perf_counter() - start)


def bench_pack(
    runner: asyncio.Runner,
    settings: Settings,
    pack: str,
    images: list[bytes],
    evals: list[bytes],
    app,
    reference_recall: Recall,
    sizes: Sizes,
    latency: bool,
) -> PackResult:
    adaptive = has_adaptive_setting()
    fixed_settings = pack_settings(settings, pack, **({ADAPTIVE_SETTING: False} if adaptive else {}))
    engines = {"fixed": FaceEngine.load(fixed_settings, "bench")}
    if adaptive:
        engines["adaptive"] = FaceEngine.load(
            pack_settings(settings, pack, **{ADAPTIVE_SETTING: True}), "bench"
        )
    try:
        fixed = engines["fixed"]
        det = fixed.detector
        onnx = det.inference.model(det.model_name)
        # One pass through a recording inference gives the bound its tensors.
        real = det.inference
        recorder = det.inference = RecordingInference(real)
        try:
            runner.run(detect_batch(det, detect_request(images)))
        finally:
            det.inference = real
        batches = [blob for model, blob in recorder.calls if model == det.model_name]
        if not batches:
            raise RuntimeError(
                "the detector ran no tensors through its inference object, so the bound has "
                "none to replay: bench.engine.RecordingInference no longer sees its calls"
            )
        raw = RawSession(onnx)

        def run_bound() -> None:
            for blob in batches:
                raw.run(blob)

        request = detect_request(images)
        sides: dict[str, Callable[[], float]] = {
            "facepipe fixed": lambda: timed(len(images), lambda: runner.run(detect_batch(det, request))),
            "bound": lambda: timed(len(images), run_bound),
        }
        if adaptive:
            adaptive_det = engines["adaptive"].detector
            sides["facepipe adaptive"] = lambda: timed(
                len(images), lambda: runner.run(detect_batch(adaptive_det, request))
            )
        if app is not None:

            def insightface_pass() -> None:
                # insightface decodes too, as facepipe does.
                for data in images:
                    app.det_model.detect(decode(data), input_size=(640, 640))

            sides["insightface"] = lambda: timed(len(images), insightface_pass)
        result = PackResult(
            pack=pack,
            detector=det.model_name,
            provider=onnx.provider,
            rounds=interleaved(sides, sizes.rounds),
            adaptive=adaptive,
        )
        raw.close()
        if not adaptive:
            result.notes.append(
                "adaptive vs fixed size: skipped, this build has no FACEPIPE_ADAPTIVE_DET_SIZE setting"
            )
        for name, engine in engines.items():
            result.recall[f"facepipe {name}"] = runner.run(facepipe_recall(engine, evals))
        if app is not None:
            result.recall["insightface"] = reference_recall
            result.embed = embed_rounds(runner, fixed, app, images, sizes.rounds)
        if latency:
            result.latency_ms = runner.run(detect_latency(det, images, sizes))
        return result
    finally:
        for engine in engines.values():
            runner.run(engine.close())


def embed_rounds(
    runner: asyncio.Runner, engine: FaceEngine, app, images: list[bytes], rounds: int
) -> RatioReport:
    """Faces/s of facepipe's embedder (alignment included) against insightface's recognition
    model on the research pack, on the faces insightface's detector finds."""
    from insightface.app.common import Face

    items = []
    for data in images:
        img = decode(data)
        _, kpss = app.det_model.detect(img, input_size=(640, 640))
        items += [(img, kps) for kps in kpss]
    if not items:
        return RatioReport({"facepipe": [], "insightface": []})
    rec = app.models["recognition"]
    emb = engine.embedder
    by_image: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
    for img, kps in items:
        by_image.setdefault(id(img), (img, []))[1].append(kps)

    async def ours() -> None:
        await asyncio.gather(*(emb.embed_faces(img, kpss) for img, kpss in by_image.values()))

    def theirs() -> None:
        for img, kps in items:
            rec.get(img, Face(kps=kps))

    return interleaved(
        {
            "facepipe": lambda: timed(len(items), lambda: runner.run(ours())),
            "insightface": lambda: timed(len(items), theirs),
        },
        rounds,
    )


async def detect_latency(det, images: list[bytes], sizes: Sizes) -> dict[int, tuple[float, float]]:
    latency = {}
    for batch in sizes.latency_batches:
        samples = []
        for i in range(max(2, sizes.latency_samples // batch)):
            chunk = [images[(i * batch + k) % len(images)] for k in range(batch)]
            t = time.perf_counter()
            await detect_batch(det, detect_request(chunk))
            samples.append((time.perf_counter() - t) * 1000)
        latency[batch] = (float(np.percentile(samples, 50)), float(np.percentile(samples, 99)))
    return latency


# -- every pack --------------------------------------------------------------------------------


def run(settings: Settings, shared: Path, sizes: Sizes | None = None, packs: list[str] | None = None) -> dict:
    sizes = sizes or Sizes()
    packs = packs or installed_packs(settings.home)
    notes: list[str] = []
    if not packs:
        notes.append(f"no model pack installed under {settings.home / 'models'}: nothing to measure")
    images = bench_images(shared, sizes.images)
    evals = eval_images(shared, sizes.eval_images)
    research = settings.home / "models" / RESEARCH_PACK
    app = None
    if (research / "pack.json").is_file():
        app = reference_app(research)
    else:
        notes.append(
            f"insightface lines skipped: the research pack is not installed at {research} "
            "('facepipe models install local --from ../shared/models')"
        )
    reference_recall = insightface_recall(app, evals) if app is not None else Recall()
    # Latency per batch size for the active pack only (the first one when it is not installed).
    latency_pack = settings.model_pack if settings.model_pack in packs else (packs or [""])[0]
    results = []
    with asyncio.Runner() as runner:
        for pack in packs:
            results.append(
                bench_pack(
                    runner, settings, pack, images, evals, app, reference_recall, sizes, pack == latency_pack
                )
            )
    return {
        "default_pack": settings.model_pack,
        "images": len(images),
        "eval_images": len(evals),
        "reference_detector": f"{RESEARCH_PACK}: {Path(app.det_model.model_file).name}" if app else "",
        "packs": results,
        "notes": notes,
    }


def _rate(report: RatioReport, side: str, unit: str) -> str:
    return f"{report.median(side):7.1f} {unit}"


def _recall(r: Recall) -> str:
    return f"recall {r.rate:.3f} ({r.found}/{r.images})"


def report(r: dict) -> str:
    lines = [
        f"== detector of each installed pack: {r['images']} images a round, decode included on the "
        f"facepipe and insightface sides; recall on {r['eval_images']} eval photos =="
    ]
    for p in r["packs"]:
        rr: RatioReport = p.rounds
        default = " (default pack)" if p.pack == r["default_pack"] else ""
        lines.append(f"-- pack {p.pack}{default}: {p.detector} on {p.provider}")
        bound = rr.ratio("facepipe fixed", "bound")
        lines.append(
            f"detector  facepipe {_rate(rr, 'facepipe fixed', 'img/s')}   inference-only bound "
            f"{_rate(rr, 'bound', 'img/s')}   ratio {bound.text(BOUND_TARGET)}"
        )
        ours = "facepipe adaptive" if p.adaptive else "facepipe fixed"
        if "insightface" in rr.rates:
            target = DEFAULT_PACK_TARGET if p.pack == r["default_pack"] else None
            ratio: Ratio = rr.ratio(ours, "insightface")
            lines.append(
                f"vs insightface ({r['reference_detector']}, det only)  {ours} {_rate(rr, ours, 'img/s')}   "
                f"insightface {_rate(rr, 'insightface', 'img/s')}   ratio {ratio.text(target)}"
            )
            accuracy = p.recall[ours].rate >= p.recall["insightface"].rate
            lines.append(
                f"  eval detection  {ours} {_recall(p.recall[ours])}   insightface "
                f"{_recall(p.recall['insightface'])}   {'equal or better' if accuracy else 'WORSE'}"
            )
        if p.adaptive:
            adaptive = rr.ratio("facepipe adaptive", "facepipe fixed")
            fixed, adaptive_recall = p.recall["facepipe fixed"], p.recall["facepipe adaptive"]
            fixed_accepted, adaptive_accepted = fixed.labelled_accepted, adaptive_recall.labelled_accepted
            lines.append(
                f"adaptive vs fixed size  {_rate(rr, 'facepipe adaptive', 'img/s')} vs "
                f"{_rate(rr, 'facepipe fixed', 'img/s')}   ratio {adaptive.text()}   labelled eval faces accepted "
                f"{adaptive_accepted} vs {fixed_accepted}"
                + ("" if adaptive_accepted >= fixed_accepted else "  (FACES LOST)")
                + f"   (all accepted boxes {adaptive_recall.accepted_faces} vs {fixed.accepted_faces})"
            )
        if p.embed is not None and p.embed.rounds:
            lines.append(
                f"embedder  facepipe {_rate(p.embed, 'facepipe', 'face/s')}   insightface ({RESEARCH_PACK}) "
                f"{_rate(p.embed, 'insightface', 'face/s')}   ratio "
                f"{p.embed.ratio('facepipe', 'insightface').text()}   (alignment included)"
            )
        lines += [f"note: {n}" for n in p.notes]
        if p.latency_ms:
            lines.append("DetectBatch latency per batch size:")
            for batch, (p50, p99) in p.latency_ms.items():
                lines.append(
                    f"  batch {batch:3d}: p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   "
                    f"({p50 / batch:6.1f} ms/img at p50)"
                )
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)
