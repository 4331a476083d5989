"""``python -m bench --gpu``: the active pack on the GPU providers beside the CPU provider.

Lines: DetectBatch images/s with requests of 1, 8, 32 and 64 images, embedder faces/s,
and end to end (decode, detect, align, embed) images/s in-process, each measured for
CUDA (and TensorRT where this onnxruntime has it) and CPU in interleaved rounds. Every
line has a time budget and the whole run a deadline, so it ends within four minutes; a
line that no longer fits is named as skipped.

Providers come through facepipe's own model sessions (``FACEPIPE_PROVIDERS``). Without a
GPU provider the CPU column still runs, briefly, beside a note on what is missing, and
the command exits with EXIT_NO_GPU.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.engine import IMAGE_SUFFIXES, RecordingInference, image_files, pack_settings, timed
from bench.rounds import RatioReport, interleaved
from facepipe.config import Settings
from facepipe.detection import detect_batch
from facepipe.faces import FaceEngine
from facepipe.models.session import CPU
from facepipe.v1 import common_pb2, detector_pb2

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
SHORT = {TENSORRT: "TensorRT", CUDA: "CUDA", CPU: "CPU"}
BATCHES = (1, 8, 32, 64)
EXIT_NO_GPU = 3  # the CPU column ran, but no GPU provider is available
ROOT = Path(__file__).resolve().parent.parent
TRT_CACHE = ROOT / "bench" / "results" / "tensorrt-cache"


@dataclass(frozen=True)
class Budget:
    """Seconds: the whole run ends by ``total``; each line measures for about ``line``."""

    total: float = 220.0  # under four minutes, with the start-up and model loads outside it
    line: float = 20.0
    rounds: int = 5
    batches: tuple[int, ...] = BATCHES
    crops: int = 256  # faces per embedder round

    @classmethod
    def quick(cls) -> Budget:
        return cls(total=60.0, line=1.0, rounds=1, batches=(1, 8), crops=8)


def gpu_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in GPU_PROVIDERS if p in available]


def missing_gpu_note() -> str:
    import onnxruntime as ort

    return (
        f"no GPU provider: this onnxruntime ({ort.__version__}) offers {', '.join(ort.get_available_providers())}, "
        f"without {CUDA}. On a machine with an NVIDIA GPU, driver and the CUDA and cuDNN libraries that "
        "onnxruntime-gpu's release notes name, install the CUDA build in place of the CPU one: "
        "'pip uninstall -y onnxruntime && pip install -e \".[cuda]\"' (TensorrtExecutionProvider also "
        "needs TensorRT's libraries). Only the CPU column ran, briefly."
    )


def sample_images(shared: Path, count: int) -> list[bytes]:
    """Photos from ``../shared/faces`` and insightface's samples, when present, repeated up to ``count``."""
    files = image_files(shared / "faces") if (shared / "faces").is_dir() else []
    try:
        import insightface

        samples = Path(insightface.__file__).parent / "data" / "images"
        files += sorted(p for p in samples.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    except ImportError:
        pass
    if not files:
        raise FileNotFoundError(
            f"no photos to measure on: {shared / 'faces'} is missing and insightface is not installed"
        )
    data = [p.read_bytes() for p in files]
    while len(data) < count:
        data = data + data
    return data[:count]


@dataclass
class Line:
    name: str
    unit: str
    report: RatioReport | None = None
    batch_sizes: dict[str, float] = field(default_factory=dict)  # provider: mean tensor batch
    skipped: str = ""


@dataclass
class GpuResult:
    pack: str
    providers: dict[str, str]  # asked for: what the session got
    lines: list[Line]
    seconds: float
    notes: list[str]
    gpu: bool


class BatchCounter(RecordingInference):
    """Counts the tensor batches a detector runs, without keeping them."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.sizes: list[int] = []

    async def run(self, model: str, blob: np.ndarray) -> list[np.ndarray]:
        self.sizes.append(int(blob.shape[0]))
        return await self.inner.run(model, blob)


def _request(images: list[bytes]) -> detector_pb2.DetectBatchRequest:
    return detector_pb2.DetectBatchRequest(
        images=[common_pb2.ImageInput(id=str(i), data=b) for i, b in enumerate(images)]
    )


def run(settings: Settings, shared: Path, budget: Budget | None = None) -> GpuResult:
    started = time.perf_counter()
    gpus = gpu_providers()
    budget = budget or (Budget() if gpus else Budget.quick())
    deadline = started + budget.total
    notes = [] if gpus else [missing_gpu_note()]
    if TENSORRT in gpus:
        # TensorRT builds an engine per input shape; a cache makes later runs start at once.
        TRT_CACHE.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("ORT_TENSORRT_ENGINE_CACHE_ENABLE", "1")
        os.environ.setdefault("ORT_TENSORRT_CACHE_PATH", str(TRT_CACHE))
    images = sample_images(shared, max(budget.batches))
    engines: dict[str, FaceEngine] = {}
    counters: dict[str, BatchCounter] = {}
    actual: dict[str, str] = {}
    with asyncio.Runner() as runner:
        try:
            for provider in [*gpus, CPU]:
                engine = FaceEngine.load(
                    pack_settings(
                        settings,
                        settings.model_pack,
                        providers=(provider,),
                        max_batch=max(settings.max_batch, max(budget.batches)),
                    ),
                    "bench",
                )
                det = engine.detector
                actual[provider] = det.inference.model(det.model_name).provider
                engine.embedder.inference.model(engine.embedder.model_name)
                if actual[provider] != provider:
                    notes.append(
                        f"{provider} is installed but its session fell back to {actual[provider]} "
                        "(driver or CUDA libraries missing?); its column is left out"
                    )
                    runner.run(engine.close())
                    continue
                counters[provider] = BatchCounter(det.inference)
                det.inference = counters[provider]
                engines[provider] = engine
            lines = measure(runner, engines, counters, images, budget, deadline)
        finally:
            for engine in engines.values():
                runner.run(engine.close())
    return GpuResult(
        pack=settings.model_pack,
        providers=actual,
        lines=lines,
        seconds=time.perf_counter() - started,
        notes=notes,
        gpu=any(p in engines for p in GPU_PROVIDERS),
    )


def measure(
    runner: asyncio.Runner,
    engines: dict[str, FaceEngine],
    counters: dict[str, BatchCounter],
    images: list[bytes],
    budget: Budget,
    deadline: float,
) -> list[Line]:
    lines: list[Line] = []

    def side(provider: str, items: int, work: Callable[[FaceEngine], object]) -> Callable[[], float]:
        return lambda: timed(items, lambda: runner.run(work(engines[provider])))

    def detect(batch: int) -> Callable[[FaceEngine], object]:
        request = _request(images[:batch])
        return lambda engine: detect_batch(engine.detector, request)

    # Aligned crops for the embedder, from the faces the CPU detector finds.
    cpu = engines[CPU]
    found = runner.run(detect_and_crop(cpu, images))
    crops = (found * (budget.crops // max(1, len(found)) + 1))[: budget.crops] if found else []

    def embed(engine: FaceEngine) -> object:
        return engine.embedder.embed_crops(crops)

    def end_to_end(engine: FaceEngine) -> object:
        return through(engine, images)

    plan: list[tuple[str, str, int, Callable[[FaceEngine], object], bool]] = [
        (f"DetectBatch x{b:<3d}", "img/s", b, detect(b), True) for b in budget.batches
    ]
    plan.append(("embedder", "face/s", len(crops), embed, False))
    plan.append(("end to end", "img/s", len(images), end_to_end, False))
    longest = 0.0
    for name, unit, items, work, is_detect in plan:
        line = Line(name, unit)
        lines.append(line)
        if items == 0:
            line.skipped = "no faces found to embed"
            continue
        left = deadline - time.perf_counter()
        # A line takes its warm-up (a TensorRT engine build, say) plus its rounds: the longest
        # one so far is the best guess of what the next one needs.
        if left < max(budget.line, longest):
            line.skipped = f"skipped: {left:.0f} s left of the run's budget"
            continue
        for counter in counters.values():
            counter.sizes.clear()
        start = time.perf_counter()
        try:
            line.report = interleaved(
                {SHORT[p]: side(p, items, work) for p in engines}, budget.rounds, budget_s=budget.line
            )
        except Exception as exc:  # noqa: BLE001 - a provider failing at run time (a missing CUDA library)
            line.skipped = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        finally:
            longest = max(longest, time.perf_counter() - start)
        if is_detect:
            line.batch_sizes = {
                SHORT[p]: float(np.mean(c.sizes)) if c.sizes else 0.0 for p, c in counters.items()
            }
    return lines


async def detect_and_crop(engine: FaceEngine, images: list[bytes]) -> list[np.ndarray]:
    det, emb = engine.detector, engine.embedder
    params = det.params()
    results = await asyncio.gather(*(det.detect_bytes(b, params) for b in images))
    return [emb.align(image.bgr, f.landmarks) for image, faces in results for f in faces]


async def through(engine: FaceEngine, images: list[bytes]) -> None:
    """Decode, detect, align and embed every image, concurrently, as the stages do."""
    det, emb = engine.detector, engine.embedder
    params = det.params()

    async def one(data: bytes) -> None:
        image, faces = await det.detect_bytes(data, params)
        await emb.embed_faces(image.bgr, [f.landmarks for f in faces])

    await asyncio.gather(*(one(b) for b in images))


def report(r: GpuResult) -> str:
    columns = [SHORT[p] for p in (*GPU_PROVIDERS, CPU) if r.providers.get(p) == p]
    header = ", ".join(f"{SHORT[p]}={got}" for p, got in r.providers.items())
    lines = [f"== GPU benchmark, pack {r.pack}: {' vs '.join(columns)} (sessions: {header}) =="]
    for line in r.lines:
        if line.report is None:
            lines.append(f"{line.name:16s} {line.skipped}")
            continue
        cells = [f"{c} {line.report.median(c):8.1f} {line.unit}" for c in columns if c in line.report.rates]
        ratios = [
            f"{c}/CPU {line.report.ratio(c, 'CPU').text()}"
            for c in columns
            if c != "CPU" and c in line.report.rates
        ]
        batches = (
            "   tensor batch "
            + " ".join(f"{c} {line.batch_sizes[c]:.1f}" for c in columns if c in line.batch_sizes)
            if line.batch_sizes
            else ""
        )
        lines.append(f"{line.name:16s} " + "   ".join(cells + ratios) + batches)
    lines += [f"note: {n}" for n in r.notes]
    lines.append(f"ran {r.seconds:.0f} s")
    return "\n".join(lines)
