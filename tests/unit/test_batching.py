"""DynamicBatcher grouping, waiting and auto-backoff, and batched runs of the real models."""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
import pytest
from conftest import SHARED_FACES, SHARED_MODELS
from prometheus_client import REGISTRY

from facepipe.batching import DynamicBatcher
from facepipe.models.scrfd import SCRFD
from facepipe.models.session import OnnxModel


class OutOfMemory(RuntimeError):
    """What ONNX Runtime raises when a provider cannot allocate a batch."""


class Recorder:
    """A process function that squares numbers and records every call."""

    def __init__(self, fail_above: int | None = None, poison: int | None = None, delay: float = 0.0) -> None:
        self.fail_above = fail_above
        self.poison = poison
        self.delay = delay
        self.calls: list[tuple[int, bool, float]] = []  # (size, succeeded, time)
        self.limits: list[int] = []
        self.batcher: DynamicBatcher | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        now = time.monotonic()
        if self.batcher is not None:
            self.limits.append(self.batcher.limit)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_above is not None and len(items) > self.fail_above:
            self.calls.append((len(items), False, now))
            raise OutOfMemory(f"Failed to allocate memory for a batch of {len(items)}")
        if self.poison is not None and self.poison in items:
            self.calls.append((len(items), False, now))
            raise ValueError(f"cannot process item {self.poison}")
        self.calls.append((len(items), True, now))
        return [i * i for i in items]

    @property
    def good_sizes(self) -> list[int]:
        return [size for size, ok, _ in self.calls if ok]


def metric(name: str, model: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": "test", "model": model})


async def test_groups_concurrent_items_up_to_max_batch() -> None:
    process = Recorder(delay=0.01)
    batcher = DynamicBatcher(process, max_batch=4, max_wait_ms=50, name="group", service="test")
    try:
        results = await batcher.submit_many(list(range(22)))
    finally:
        await batcher.close()
    assert results == [i * i for i in range(22)]
    sizes = process.good_sizes
    assert sum(sizes) == 22
    assert max(sizes) == 4
    assert sizes.count(4) >= 5  # grouped, not one by one
    assert batcher.backoffs == 0


# Long enough that no test waits for it: a batch that is not full never goes out early.
NEVER_MS = 600_000
# A generous deadline for work that takes milliseconds, so a loaded machine cannot fail it.
DEADLINE_S = 60


async def test_lone_item_waits_for_max_wait() -> None:
    process = Recorder()
    batcher = DynamicBatcher(process, max_batch=8, max_wait_ms=150, name="lone", service="test")
    try:
        started = time.monotonic()
        # Nothing else arrives, so the batch goes out when max_wait is over (not waiting to be full)...
        assert await asyncio.wait_for(batcher.submit(7), DEADLINE_S) == 49
        waited = process.calls[0][2] - started
        # ...and not before.
        assert waited >= 0.14, waited
        assert process.good_sizes == [1]
    finally:
        await batcher.close()


async def test_items_arriving_while_a_batch_collects_join_it() -> None:
    process = Recorder()
    # The batch only goes out when full, so the second item joins however late it comes.
    batcher = DynamicBatcher(process, max_batch=2, max_wait_ms=NEVER_MS, name="join", service="test")
    try:
        first = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.05)
        assert not first.done()  # collecting, waiting for more
        assert await asyncio.wait_for(asyncio.gather(first, batcher.submit(3)), DEADLINE_S) == [4, 9]
        assert process.good_sizes == [2]
    finally:
        await batcher.close()


async def test_backoff_halves_until_batches_fit_then_recovers() -> None:
    process = Recorder(fail_above=2)
    batcher = DynamicBatcher(
        process, max_batch=8, max_wait_ms=20, recover_after=5, name="oom", service="test"
    )
    process.batcher = batcher
    try:
        # 8 items fail at 8 and at 4, then go through as pairs.
        assert await batcher.submit_many(list(range(8))) == [i * i for i in range(8)]
        assert [(size, ok) for size, ok, _ in process.calls] == [
            (8, False),
            (4, False),
            (2, True),
            (2, True),
            (2, True),
            (2, True),
        ]
        assert batcher.backoffs == 2
        assert batcher.limit == 2
        assert metric("facepipe_backoffs_total", "oom") == 2
        assert metric("facepipe_batch_limit", "oom") == 2

        # Memory is back: after recover_after good batches the limit doubles, up to max_batch.
        process.fail_above = None
        for _ in range(12):
            await batcher.submit_many([1, 2])
        assert batcher.limit == 8
        assert metric("facepipe_batch_limit", "oom") == 8
        process.calls.clear()
        assert await batcher.submit_many(list(range(8))) == [i * i for i in range(8)]
        assert process.good_sizes == [8]
        assert batcher.backoffs == 2
    finally:
        await batcher.close()
    assert sorted(set(process.limits)) == [2, 4, 8]


async def test_a_failing_item_fails_only_its_caller() -> None:
    process = Recorder(poison=13)
    batcher = DynamicBatcher(process, max_batch=4, max_wait_ms=20, name="poison", service="test")
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in (11, 12, 13, 14)), return_exceptions=True)
        assert results[:2] == [121, 144]
        assert isinstance(results[2], ValueError) and str(results[2]) == "cannot process item 13"
        assert results[3] == 196
        # The batcher keeps working afterwards.
        assert await batcher.submit(3) == 9

        # A lone failing item is not a reason to back off.
        backoffs = batcher.backoffs
        with pytest.raises(ValueError, match="item 13"):
            await batcher.submit(13)
        assert batcher.backoffs == backoffs
    finally:
        await batcher.close()


async def test_a_broken_process_function_fails_callers_instead_of_hanging() -> None:
    async def drops_one(items: list[int]) -> list[int]:
        return items[1:]

    batcher = DynamicBatcher(drops_one, max_batch=4, max_wait_ms=20, name="broken", service="test")
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True), DEADLINE_S
        )
        assert all(isinstance(r, ValueError) and "2 results for a batch of 3" in str(r) for r in results), (
            results
        )
    finally:
        await batcher.close()


# -- real models with a fixed batch of 1 -------------------------------------------
@pytest.fixture(scope="module")
def face_images() -> list[np.ndarray]:
    paths = [
        SHARED_FACES / "barack_obama" / "obama.jpg",
        SHARED_FACES / "brad_pitt" / "brad_1.jpg",
        SHARED_FACES / "kit_harington" / "john1.jpeg",
    ]
    if not all(p.is_file() for p in paths):
        pytest.skip("../shared/faces is not present")
    return [cv2.imread(str(p)) for p in paths]


def model(name: str) -> OnnxModel:
    path = SHARED_MODELS / name
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return OnnxModel(path, ("CPUExecutionProvider",), service="test")


def arcface_input(bgr: np.ndarray) -> np.ndarray:
    """A square top-left crop as a (3, 112, 112) RGB tensor scaled to [-1, 1]."""
    side = min(bgr.shape[:2])
    rgb = cv2.resize(bgr[:side, :side], (112, 112))[:, :, ::-1]
    return np.ascontiguousarray(((rgb.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1))


def assert_batched_equals_single(m: OnnxModel, blob: np.ndarray) -> list[np.ndarray]:
    batched = m.run_batch(blob)
    assert len(batched) == len(m.outputs)
    for i in range(len(blob)):
        single = m.run_batch(blob[i : i + 1])
        for out, one in zip(batched, single, strict=True):
            assert out.shape[0] == len(blob) and one.shape[0] == 1
            assert out.shape[1:] == one.shape[1:]
            np.testing.assert_allclose(out[i], one[0], rtol=1e-5, atol=1e-5)
    return batched


def test_scrfd_run_batch(face_images) -> None:
    m = model("scrfd_2.5g.onnx")
    try:
        assert not m.batch_dynamic
        scrfd = SCRFD(m.output_names)
        blob = np.stack([scrfd.preprocess(img, (640, 640))[0] for img in face_images])
        assert blob.shape == (3, 3, 640, 640)
        outs = assert_batched_equals_single(m, blob)
        # Scores at strides 8/16/32: 80x80, 40x40 and 20x20 cells, 2 anchors each.
        assert [o.shape for o in outs[:3]] == [(3, 12800, 1), (3, 3200, 1), (3, 800, 1)]
        best = [max(float(o[i].max()) for o in outs[:3]) for i in range(3)]
        assert min(best) > 0.5, best  # each image has a confident face
        # The images differ, so a mix-up of items would show.
        assert not np.allclose(outs[0][0], outs[0][1])
    finally:
        m.close()


def test_mobilefacenet_run_batch(face_images) -> None:
    m = model("MobileFaceNet.onnx")
    try:
        assert not m.batch_dynamic
        blob = np.stack([arcface_input(img) for img in face_images])
        assert blob.shape == (3, 3, 112, 112)
        outs = assert_batched_equals_single(m, blob)
        assert outs[0].shape == (3, 128)
        assert not np.allclose(outs[0][0], outs[0][2])
    finally:
        m.close()
