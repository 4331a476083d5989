"""Calibrates a model pack's search threshold on the calibration identities.

``python -m facepipe.calibrate --models DIR`` embeds only the calibration split
(every photo under ``--faces``, one folder per identity, and the named
pre-aligned 112x112 identities under ``--eval-faces``), scores every pair of
faces by cosine similarity, and picks the search minimum score as the lowest
threshold at which at most ``--target-fmr`` of the impostor pairs (two different
people) score at or above it. ``--write`` stores the result in
``facepipe/models/thresholds.json`` under the recognizer file's sha256, from
where ``facepipe models install``/``pull`` copy it into the pack's ``pack.json``.

Held-out identities are never read: the split is named in ``CALIBRATION.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.models.registry import THRESHOLDS_FILE, load_pack, sha256_file

# The Glint identities of the calibration split (CALIBRATION.md); the rest are held out.
CALIBRATION_GLINT = (
    "Daniel_Radcliffe",
    "Drew_Barrymore",
    "Gwyneth_Paltrow",
    "Halle_Berry",
    "Hugh_Jackman",
    "Hugh_Laurie",
    "James_Spader",
    "Jennifer_Aniston",
    "Jennifer_Lopez",
    "Jessica_Alba",
)
DEFAULT_TARGET_FMR = 1e-3
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass(frozen=True)
class Calibration:
    search_min_score: float
    target_fmr: float
    fmr: float  # impostor pairs at or above the threshold, as a fraction
    fnmr: float  # genuine pairs below the threshold, as a fraction
    genuine_pairs: int
    impostor_pairs: int
    faces: int
    identities: int

    def as_dict(self) -> dict:
        return {
            "search_min_score": self.search_min_score,
            "target_fmr": self.target_fmr,
            "fmr": round(self.fmr, 6),
            "fnmr": round(self.fnmr, 4),
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "faces": self.faces,
            "identities": self.identities,
        }


def pick_threshold(embeddings: np.ndarray, labels: list[str], target_fmr: float) -> Calibration:
    """The lowest score (rounded up to 3 decimals) whose impostor match rate is at most ``target_fmr``."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = unit @ unit.T
    upper = np.triu_indices(len(labels), k=1)
    names = np.asarray(labels)
    same = names[upper[0]] == names[upper[1]]
    scores = sims[upper]
    genuine, impostor = scores[same], np.sort(scores[~same])[::-1]
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("need at least two identities, one of them with two faces")
    allowed = int(np.floor(target_fmr * impostor.size))  # impostor pairs that may score above
    # Just above the (allowed+1)-th highest impostor score.
    threshold = round(float(np.ceil((impostor[allowed] + 1e-6) * 1000) / 1000), 3)
    return Calibration(
        search_min_score=threshold,
        target_fmr=target_fmr,
        fmr=float(np.mean(impostor >= threshold)),
        fnmr=float(np.mean(genuine < threshold)),
        genuine_pairs=int(genuine.size),
        impostor_pairs=int(impostor.size),
        faces=len(labels),
        identities=len(set(labels)),
    )


def calibration_files(faces_dir: Path, eval_faces_dir: Path) -> tuple[list[Path], list[Path]]:
    """The calibration split: photos (one folder per identity) and the named pre-aligned crops."""

    def photos(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)

    full = [p for identity in sorted(faces_dir.iterdir()) if identity.is_dir() for p in photos(identity)]
    crops: list[Path] = []
    for name in CALIBRATION_GLINT:
        folder = eval_faces_dir / name
        if not folder.is_dir():
            raise FileNotFoundError(f"calibration identity {name} missing under {eval_faces_dir}")
        crops += photos(folder)
    return full, crops


async def _embed(models: Path, photos: list[Path], crops: list[Path]) -> tuple[np.ndarray, list[str]]:
    """Embeddings labelled by identity (the parent folder's name): the largest face of
    each photo, and each pre-aligned crop as it is."""
    import cv2

    from facepipe.config import Settings
    from facepipe.faces import FaceEngine
    from facepipe.imaging import decode_image

    engine = FaceEngine.load(Settings.from_env("calibrate", models_dir=models), "calibrate")
    vectors: list[np.ndarray] = []
    labels: list[str] = []
    try:
        for photo in photos:
            image = decode_image(await asyncio.to_thread(photo.read_bytes))
            faces = await engine.detector.detect(image, engine.detector.params())
            if not faces:
                print(f"  no face in {photo}, skipped", file=sys.stderr)
                continue
            largest = max(faces, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
            embedded, _ = await engine.embedder.embed_faces(image.bgr, [largest.landmarks])
            vectors.append(embedded[0])
            labels.append(photo.parent.name)
        size = engine.embedder.size
        aligned = []
        for crop in crops:
            bgr = cv2.imread(str(crop), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"cannot read {crop}")
            # Pre-aligned crops are only resized when the recognizer wants another size.
            aligned.append(bgr if bgr.shape[:2] == (size, size) else cv2.resize(bgr, (size, size)))
        vectors.extend(await engine.embedder.embed_crops(aligned))
        labels.extend(crop.parent.name for crop in crops)
    finally:
        await engine.close()
    return np.stack(vectors), labels


def calibrate(models: Path, faces_dir: Path, eval_faces_dir: Path, target_fmr: float) -> Calibration:
    photos, crops = calibration_files(faces_dir, eval_faces_dir)
    embeddings, labels = asyncio.run(_embed(models, photos, crops))
    return pick_threshold(embeddings, labels, target_fmr)


def write_threshold(recognizer: Path, result: Calibration, table: Path = THRESHOLDS_FILE) -> None:
    """Records the result under the recognizer file's sha256 in the project's table."""
    known = json.loads(table.read_text()) if table.is_file() else {}
    known[sha256_file(recognizer)] = {"recognizer": recognizer.name, **result.as_dict()}
    table.write_text(json.dumps(dict(sorted(known.items())), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facepipe.calibrate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", required=True, help="model pack directory (or a folder of ONNX files)")
    parser.add_argument("--faces", default="../shared/faces", help="one folder of photos per identity")
    parser.add_argument(
        "--eval-faces", default="../shared/eval/faces", help="folder holding the Glint identity folders"
    )
    parser.add_argument(
        "--target-fmr",
        type=float,
        default=DEFAULT_TARGET_FMR,
        help="highest share of impostor pairs allowed at or above the threshold (default: %(default)s)",
    )
    parser.add_argument(
        "--write", action="store_true", help=f"record the threshold in {THRESHOLDS_FILE.name}"
    )
    args = parser.parse_args(argv)
    models = Path(args.models).expanduser()
    pack = load_pack(models)
    result = calibrate(models, Path(args.faces), Path(args.eval_faces), args.target_fmr)
    print(json.dumps({"recognizer": pack.recognizer.name, **result.as_dict()}, indent=2))
    if args.write:
        write_threshold(pack.recognizer, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
