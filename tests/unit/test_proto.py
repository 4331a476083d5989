"""The generated code matches proto/, and the contracts pass buf lint."""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

from conftest import ROOT, VENV_BIN

from facepipe.protogen import generate


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = tmp_path / "facepipe" / "v1"
    committed = ROOT / "facepipe" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    stale = [n for n in names if not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def test_buf_lint(tmp_path: Path) -> None:
    env = {**os.environ, "BUF_CACHE_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(VENV_BIN / "buf"), "lint"], cwd=ROOT / "proto", capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pinned_wire_shape() -> None:
    """Field numbers grpcurl users rely on must never change."""
    from facepipe.v1 import common_pb2, detector_pb2

    def numbers(msg) -> dict[str, int]:
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}

    assert numbers(detector_pb2.DetectBatchRequest) == {"images": 1, "options": 2}
    assert numbers(common_pb2.ImageInput) == {"id": 1, "data": 2, "ref": 3}
    assert numbers(detector_pb2.DetectBatchResponse)["results"] == 1
    got = numbers(detector_pb2.ImageDetections)
    assert {k: got[k] for k in ("id", "faces", "error", "width", "height")} == {
        "id": 1,
        "faces": 2,
        "error": 3,
        "width": 4,
        "height": 5,
    }
    got = numbers(common_pb2.Face)
    assert {k: got[k] for k in ("box", "score", "landmarks", "quality")} == {
        "box": 1,
        "score": 2,
        "landmarks": 3,
        "quality": 4,
    }
    assert numbers(common_pb2.BoundingBox) == {"x1": 1, "y1": 2, "x2": 3, "y2": 4}
    assert numbers(common_pb2.Point) == {"x": 1, "y": 2}
