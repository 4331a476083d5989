"""Calibration with the real models: it reads the calibration split and nothing of the
held-out identities, and an installed pack carries every threshold calibrated for its
recognizer."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import SHARED, SHARED_FACES

from facepipe import calibrate

EVAL_FACES = SHARED / "eval" / "faces"
CALIBRATION_DOC = SHARED / "eval" / "CALIBRATION.md"

# What the audit hook records while ``_recording`` holds a list: (event, path) of every
# file opened or folder listed by the process (every thread, the models' workers too).
_recording: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _recording is not None and event in ("open", "os.listdir", "os.scandir") and args:
        target = args[0]
        if isinstance(target, str | bytes | Path):
            _recording.append((event, str(Path(target.decode() if isinstance(target, bytes) else target))))


sys.addaudithook(_audit)  # hooks stay for the process; this one records only during a test


def documented_calibration_identities() -> set[str]:
    """The Glint identities CALIBRATION.md allows tuning on."""
    text = CALIBRATION_DOC.read_text()
    line = next(x for x in text.splitlines() if "Glint identities" in x and "may" not in x)
    return set(re.findall(r"[A-Z][A-Za-z]+(?:_[A-Z][A-Za-z]+)+", line.split(":", 1)[1]))


@pytest.fixture(scope="module")
def eval_faces() -> Path:
    if not CALIBRATION_DOC.is_file() or not EVAL_FACES.is_dir():
        pytest.skip("../shared/eval is not present")
    return EVAL_FACES


def test_the_calibration_identities_are_the_documented_ones(eval_faces) -> None:
    assert set(calibrate.CALIBRATION_GLINT) == documented_calibration_identities()
    photos, crops = calibrate.calibration_files(SHARED_FACES, eval_faces)
    assert {p.parent.name for p in crops} == set(calibrate.CALIBRATION_GLINT)
    assert all(p.parent.parent == SHARED_FACES for p in photos) and len(photos) == 26
    assert len(crops) == 10 * len(calibrate.CALIBRATION_GLINT)


def test_calibration_reads_no_held_out_identity(eval_faces, facepipe_home) -> None:
    global _recording
    held_out = {p.name for p in eval_faces.iterdir() if p.is_dir()} - set(calibrate.CALIBRATION_GLINT)
    assert len(held_out) == 23  # all 10 LFW identities and 13 Glint ones
    _recording = []
    try:
        result = calibrate.calibrate(facepipe_home / "models" / "local", SHARED_FACES, eval_faces)
    finally:
        seen, _recording = _recording, None
    under_eval = [(event, Path(path).resolve()) for event, path in seen]
    under_eval = [(e, p) for e, p in under_eval if p.is_relative_to(eval_faces.resolve())]
    touched = {
        p.relative_to(eval_faces.resolve()).parts[0] for _, p in under_eval if p != eval_faces.resolve()
    }
    assert touched == set(calibrate.CALIBRATION_GLINT), sorted(touched - set(calibrate.CALIBRATION_GLINT))
    # Nor is the folder of every identity listed: the calibration names the folders it reads.
    assert not any(p == eval_faces.resolve() for _, p in under_eval)
    assert sum(e == "open" for e, _ in under_eval) == 10 * len(calibrate.CALIBRATION_GLINT)
    assert result.faces == 126 and result.identities == 18


@pytest.mark.parametrize("pack", ["opencv", "local"])
def test_installed_pack_records_the_calibrated_thresholds(facepipe_home, pack) -> None:
    from facepipe.models.registry import THRESHOLD_KEYS, THRESHOLDS_FILE, pack_thresholds, sha256_file

    directory = facepipe_home / "models" / pack
    table = json.loads(THRESHOLDS_FILE.read_text())
    manifest = json.loads((directory / "pack.json").read_text())
    entry = table[sha256_file(directory / manifest["recognizer"])]
    assert manifest["thresholds"] == {key: entry[key] for key in THRESHOLD_KEYS}
    assert pack_thresholds(directory) == manifest["thresholds"]
    measured = entry["measured"]
    for key in ("search_min_score", "same_person_min_score"):
        assert 0.0 < entry[key] < 1.0 and measured[key]["fmr"] <= measured[key]["target_fmr"]
    # Strict enough for a claim of identity: no looser than a search hit.
    assert entry["same_person_min_score"] >= entry["search_min_score"]
    assert 0.0 < entry["persons_cluster_distance"] < 2.0
    assert measured["persons_cluster_distance"]["bcubed_f1"] > 0.9


def test_recalibrating_updates_the_installed_pack(tmp_path, eval_faces, facepipe_home, monkeypatch) -> None:
    """--write records the result in the table and in the calibrated pack's manifest."""
    import shutil

    from facepipe.models import registry

    pack = tmp_path / "local"
    shutil.copytree(facepipe_home / "models" / "local", pack)
    table = tmp_path / "thresholds.json"
    monkeypatch.setattr(registry, "THRESHOLDS_FILE", table)
    monkeypatch.setattr(calibrate, "THRESHOLDS_FILE", table)
    manifest = json.loads((pack / "pack.json").read_text())
    manifest.pop("thresholds")
    (pack / "pack.json").write_text(json.dumps(manifest))
    assert (
        calibrate.main(
            [
                *("--models", str(pack), "--faces", str(SHARED_FACES), "--eval-faces", str(EVAL_FACES)),
                *("--same-person-fmr", "0.0005", "--write"),
            ]
        )
        == 0
    )
    written = json.loads(table.read_text())[registry.sha256_file(pack / manifest["recognizer"])]
    assert written["measured"]["same_person_min_score"]["target_fmr"] == 0.0005
    assert registry.pack_thresholds(pack) == {key: written[key] for key in registry.THRESHOLD_KEYS}
