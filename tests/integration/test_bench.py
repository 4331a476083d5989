"""Every part of ``make bench`` run at its quickest (tiny sizes, real models and stores),
so the benchmark code keeps working as the code it measures changes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import engine, gpu, search
from bench.rounds import interleaved

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def test_interleaved_runs_sides_in_turn_and_takes_ratios_per_round() -> None:
    order: list[str] = []
    rates = {"a": iter([10.0, 10.0, 30.0, 20.0]), "b": iter([5.0, 5.0, 10.0, 20.0])}

    def side(name: str):
        def run() -> float:
            order.append(name)
            return next(rates[name])

        return run

    report = interleaved({"a": side("a"), "b": side("b")}, rounds=3)
    # One untimed warm-up of each, then A, B, A, B, A, B.
    assert order == ["a", "b"] * 4
    ratio = report.ratio("a", "b")
    assert ratio.per_round == [2.0, 3.0, 1.0]
    assert (ratio.median, ratio.low, ratio.high) == (2.0, 1.0, 3.0)
    assert ratio.text(target=2.5).startswith("2.00x (1.00..3.00 over 3 rounds)")
    assert ratio.text(target=2.5).endswith("NOT met")


def test_interleaved_stops_after_the_round_that_passes_its_budget() -> None:
    def slow() -> float:
        time.sleep(0.02)
        return 1.0

    report = interleaved({"a": slow, "b": slow}, rounds=50, warmup=False, budget_s=0.05)
    assert 1 <= report.rounds < 50
    with pytest.raises(ValueError):
        interleaved({"a": slow}, rounds=0)


@pytest.fixture(scope="module")
def bench_settings(facepipe_home):
    from facepipe.config import Settings

    # The research pack, which the fixture installs, whatever the default pack is.
    return Settings.from_env("bench", home=facepipe_home, model_pack="local")


def test_engine_part_compares_each_pack_with_its_bound_and_insightface(bench_settings, face_files) -> None:
    result = engine.run(bench_settings, SHARED, engine.Sizes.quick())
    assert [p.pack for p in result["packs"]] == engine.installed_packs(bench_settings.home)
    local = next(p for p in result["packs"] if p.pack == "local")
    for side in ("facepipe fixed", "bound", "insightface"):
        assert len(local.rounds.rates[side]) == 2 and all(r > 0 for r in local.rounds.rates[side])
    assert local.recall["insightface"].images == local.recall["facepipe fixed"].images == 4
    assert local.recall["facepipe fixed"].found >= 1
    assert local.latency_ms and local.embed is not None and local.embed.rounds == 2
    text = engine.report(result)
    assert "inference-only bound" in text and "vs insightface (local: scrfd_2.5g.onnx, det only)" in text
    assert "eval detection" in text and "DetectBatch latency" in text
    # The adaptive line runs where the setting exists, and says why not where it does not.
    if engine.has_adaptive_setting():
        assert "adaptive vs fixed size  " in text and "labelled eval faces accepted" in text
    else:
        assert "adaptive vs fixed size: skipped, this build has no FACEPIPE_ADAPTIVE_DET_SIZE" in text


def test_search_part_builds_its_index_once_and_reuses_it(bench_settings, tmp_path) -> None:
    first = search.run(bench_settings, n=2000, queries=40, cache_root=tmp_path)
    assert first["built_now"] and first["dim"] == 128  # MobileFaceNet's output, read from the model
    assert 0 < first["p50_ms"] <= first["p99_ms"]
    assert first["top1_same_identity"] >= 0.9  # the clusters are real: a face finds its identity
    assert first["disk_mb"] > 0 and first["rss_mb"] > 0
    second = search.run(bench_settings, n=2000, queries=40, cache_root=tmp_path)
    assert not second["built_now"] and second["upsert_s"] == first["upsert_s"]
    text = search.report(second)
    assert "2,000 vectors x 128-d" in text and "reused" in text and "p99" in text


def test_gpu_part_without_a_gpu_names_the_missing_provider_and_runs_the_cpu_column(facepipe_home) -> None:
    if gpu.gpu_providers():
        pytest.skip("this machine has a GPU provider; the full run is `python -m bench --gpu`")
    env = {**os.environ, "FACEPIPE_HOME": str(facepipe_home), "FACEPIPE_MODEL_PACK": "local"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--gpu", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == gpu.EXIT_NO_GPU, proc.stderr
    out = proc.stdout
    assert "no GPU provider" in out and "CUDAExecutionProvider" in out and ".[cuda]" in out
    for line in ("DetectBatch x1", "DetectBatch x8", "embedder", "end to end"):
        row = next(r for r in out.splitlines() if r.startswith(line))
        assert "CPU" in row and ("img/s" in row or "face/s" in row), row
    assert "Traceback" not in proc.stderr


def test_bench_command_reports_a_missing_pack_without_a_traceback(tmp_path) -> None:
    env = {**os.environ, "FACEPIPE_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "search", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "model pack not found" in proc.stderr and "Traceback" not in proc.stderr


def test_persons_part_reclusters_and_assigns_on_a_real_store(bench_settings, tmp_path) -> None:
    from bench import persons

    result = persons.run(bench_settings, persons.Sizes.quick(), work_dir=tmp_path)
    assert result["faces"] == 2000 and result["dim"] == 128
    precision, recall, f1 = result["bcubed"]
    assert f1 > 0.95  # the synthetic identities are well apart: the clustering finds them
    assert 0 < result["p50_ms"] <= result["p99_ms"] and result["peak_mb"] > 0
    assert result["joined_right"] >= 0.8
    text = persons.report(result)
    assert "2,000 synthetic faces x 128-d" in text and "BCubed" in text and "p99" in text


def test_recognize_part_measures_one_camera_and_counts_cameras(bench_settings) -> None:
    from bench import recognize

    result = recognize.run(bench_settings, SHARED, seconds=3.0, max_cameras=2)
    assert 0 < result["processed"] <= result["sent"] and result["fps"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert set(result["tried"]) <= {1, 2} and 0 <= result["cameras"] <= 2
    text = recognize.report(result)
    assert "one 640x480 camera" in text and "p50" in text and "cameras at 5 frames/s" in text


def test_web_part_compares_rest_search_with_grpc_search(facepipe_home) -> None:
    """`--only web --quick`: a local stack, REST and gRPC search on one photo, side by side."""
    env = {**os.environ, "FACEPIPE_HOME": str(facepipe_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "web", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
    rest, grpc_ = lines["REST POST /api/v1/search"], lines["gRPC Indexer/Search"]
    for line in (rest, grpc_):
        p50, p99 = (float(x) for x in re.findall(r"p(?:50|99)\s+([\d.]+) ms", line))
        assert 0 < p50 <= p99, line
    assert "ratio REST / gRPC" in proc.stdout and "overhead at p50" in proc.stdout
    assert "Traceback" not in proc.stderr
