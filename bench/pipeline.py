"""End-to-end images/s through the local stack against the model-only bound
(the same images through detector and embedder in-process), taken in alternating
rounds with the CPU each process spent per image. Search latency is bench/search.py's."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from facepipe.config import Settings
from facepipe.faces import FaceEngine


def sample_files(shared: Path) -> list[Path]:
    return sorted(p for p in (shared / "faces").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a live process, all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    """One side's run over the round's images: its rate and the CPU it spent, by process."""

    images: int
    seconds: float
    cpu_s: dict[str, float]
    faces: int = 0

    @property
    def rate(self) -> float:
        return self.images / self.seconds


class ModelBound:
    """Decode, detect, align and embed in-process: the same work the stages do, with
    the stack's models and batching, and nothing else."""

    def __init__(self, settings: Settings, files: list[Path]) -> None:
        self.settings = settings
        self.blobs = [p.read_bytes() for p in files]
        self.engine: FaceEngine | None = None

    async def round(self, copies: int) -> Round:
        if self.engine is None:
            self.engine = FaceEngine.load(self.settings, "bench")
            await self._one(self.blobs[0])  # warm-up: sessions and thread pools
        cpu = time.process_time()
        start = time.perf_counter()
        faces = await asyncio.gather(*(self._one(b) for _ in range(copies) for b in self.blobs))
        elapsed = time.perf_counter() - start
        return Round(len(faces), elapsed, {"bench": time.process_time() - cpu}, sum(faces))

    async def _one(self, data: bytes) -> int:
        assert self.engine is not None
        det, emb = self.engine.detector, self.engine.embedder
        image, faces = await det.detect_bytes(data, det.params())
        await emb.embed_faces(image.bgr, [f.landmarks for f in faces])
        return len(faces)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.close()


class LocalStack:
    """``facepipe up`` with every stage as its own process. A round publishes with the
    CLI's client code from this process, so its time holds pipeline work from the
    first publish to the last ImageDone, not interpreter start-ups."""

    def __init__(self, files: list[Path]) -> None:
        self.sources = [str(p) for p in files]
        self.data_dir = Path(tempfile.mkdtemp(prefix="fp-bench-stack-"))
        self.env = {**os.environ, "ENABLE_GLOBAL_DEDUP": "0"}
        self.facepipe = [sys.executable, "-m", "facepipe"]
        self.rounds = 0

    def __enter__(self) -> LocalStack:
        from facepipe.stack import StackState, nats_admin_url
        from facepipe.storage import object_store_from_env

        subprocess.run(
            [*self.facepipe, "up", "--detach", "--auto-ports", "--data-dir", str(self.data_dir)],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        state = StackState.load(self.data_dir)
        assert state is not None
        self.objects = object_store_from_env({**os.environ, **state.env})
        # The stack's NATS lets in only its users: the benchmark ingests as its admin.
        self.nats_url = nats_admin_url(state)
        self.pids = {name: c.pid for name, c in state.components.items() if c.pid}
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [*self.facepipe, "down", "--data-dir", str(self.data_dir)],
            env=self.env,
            capture_output=True,
            timeout=120,
        )

    async def round(self, copies: int) -> Round:
        from facepipe.client import ingest

        if not self.rounds:
            await ingest(self.nats_url, self.objects, self.sources[:1], "warmup", wait=True)
        self.rounds += 1
        before = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        cpu = time.process_time()
        start = time.perf_counter()
        # Each copy under its own tenant, so no image is a duplicate of another.
        summaries = await asyncio.gather(
            *(
                ingest(self.nats_url, self.objects, self.sources, f"bench{self.rounds}x{c}", wait=True)
                for c in range(copies)
            )
        )
        elapsed = time.perf_counter() - start
        used = {name: process_cpu_s(pid) - before[name] for name, pid in self.pids.items()}
        used["bench"] = time.process_time() - cpu
        pending = sum(s.pending for s in summaries)
        if pending:
            raise RuntimeError(f"{pending} images never finished in the local stack")
        return Round(sum(s.images for s in summaries), elapsed, used, sum(s.faces_indexed for s in summaries))


def compare(settings: Settings, files: list[Path], rounds: int, copies: int) -> dict:
    """The bound and the stack in alternating rounds (A, B, A, B, ...) over the same
    images, so a noisy neighbour slows both sides alike; the ratio is taken per round."""
    bound = ModelBound(settings, files)
    with LocalStack(files) as stack, asyncio.Runner() as runner:
        try:
            pairs = []
            for _ in range(rounds):
                a = runner.run(bound.round(copies))
                b = runner.run(stack.round(copies))
                pairs.append((a, b))
        finally:
            runner.run(bound.close())
    return {"pairs": pairs}


def run(settings: Settings, shared: Path, rounds: int = 5, copies: int = 3) -> dict:
    files = sample_files(shared)
    return compare(settings, files, rounds, copies)


def _cpu_per_image(rounds: list[Round]) -> dict[str, float]:
    """Milliseconds of CPU per image, by process, summed over the rounds."""
    images = sum(r.images for r in rounds)
    names = dict.fromkeys(name for r in rounds for name in r.cpu_s)
    return {name: 1000 * sum(r.cpu_s.get(name, 0.0) for r in rounds) / images for name in names}


def report(r: dict) -> str:
    pairs: list[tuple[Round, Round]] = r["pairs"]
    bound = [a for a, _ in pairs]
    stack = [b for _, b in pairs]
    ratios = [b.rate / a.rate for a, b in pairs]
    stack_cpu = _cpu_per_image(stack)
    bound_cpu = _cpu_per_image(bound)
    parts = "  ".join(f"{name} {ms:.1f}" for name, ms in sorted(stack_cpu.items(), key=lambda kv: -kv[1]))
    return "\n".join(
        [
            "== pipeline through the local stack vs the model-only bound (same images, same models; "
            f"{len(pairs)} interleaved rounds of {stack[0].images} images) ==",
            f"local stack  {statistics.median(b.rate for b in stack):6.1f} img/s median   "
            f"({stack[0].faces} faces indexed a round; publish to last ImageDone)",
            f"model bound  {statistics.median(a.rate for a in bound):6.1f} img/s median   "
            "(decode + detect + align + embed, in-process)",
            f"ratio        {statistics.median(ratios):.2f} median of the rounds' ratios "
            f"(range {min(ratios):.2f}-{max(ratios):.2f})",
            f"CPU per image: bound {sum(bound_cpu.values()):.1f} ms; stack {sum(stack_cpu.values()):.1f} ms "
            f"({parts}); where CPU is the limit the ratio is "
            f"{sum(bound_cpu.values()) / sum(stack_cpu.values()):.2f}",
        ]
    )
