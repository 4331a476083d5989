"""Calibrates a model pack's thresholds on the calibration identities.

``python -m facepipe.calibrate [--pack NAME | --models DIR]`` (default: the active
pack) embeds only the
calibration split: every photo under ``--faces`` (one folder per identity, the
largest face of each) and the named pre-aligned identities under
``--eval-faces``. Held-out identities are never read; the split is named in
``CALIBRATION.md``. From those faces it derives three thresholds:

``search_min_score``
    Cosine similarity below which a search hit is dropped: the lowest threshold
    at which at most ``--search-fmr`` of the impostor pairs (two different
    people) score at or above it.
``same_person_min_score``
    Cosine similarity at or above which ``facepipe verify`` (and recognition)
    call two faces the same person, picked by the same rule with
    ``--same-person-fmr``. A false-match-rate target rather than the
    best balanced-accuracy threshold, because "same person" is a claim made
    without a human looking, so it must be at least as strict as a search hit
    (which a person reviews), and the best balanced-accuracy threshold on this
    split lets several percent of the pairs of strangers through (6.7% for
    MobileFaceNet). Both targets default to
    1e-3, the operating point verification accuracy is reported at (TAR at FAR
    1e-3), so today the two scores are equal; they are separate keys so that one
    can move without the other.
``persons_cluster_distance``
    Cosine distance (1 - similarity) at which average-linkage clustering of
    the faces is cut into persons: of the clusterings whose BCubed F1 against
    the true identities is within ``--cut-tolerance`` of the best, the one with
    the fewest merges, cut in the middle of the range of distances that give it.
    The strictest of the near-best because two people wrongly made one is worse
    than one person split in two: a split is fixed with one merge and shows no
    stranger's face under someone's name, and the best cut on a small set sits at
    the edge where the first two people merge.

``--write`` stores the result in ``facepipe/models/thresholds.json`` under the
recognizer file's sha256, from where ``facepipe models install``/``pull`` copy it
into a pack's ``pack.json``; the calibrated pack's own ``pack.json`` is updated at
once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.models.registry import (
    THRESHOLDS_FILE,
    PackError,
    load_pack,
    refresh_manifest_thresholds,
    sha256_file,
)

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
# How far below the best BCubed F1 the persons cut may go to be stricter.
DEFAULT_CUT_TOLERANCE = 0.02
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# Thresholds are stored to this many decimals (rounded in the strict direction).
DECIMALS = 3


@dataclass(frozen=True)
class FmrThreshold:
    """A similarity threshold chosen for a target false-match rate, with what it measured."""

    score: float
    target_fmr: float
    fmr: float  # impostor pairs at or above the threshold, as a fraction
    fnmr: float  # genuine pairs below the threshold, as a fraction

    def as_dict(self) -> dict:
        return {"target_fmr": self.target_fmr, "fmr": round(self.fmr, 6), "fnmr": round(self.fnmr, 4)}


@dataclass(frozen=True)
class ClusterCut:
    """The average-linkage cut distance with the best BCubed F1, and its scores."""

    distance: float
    bcubed_f1: float
    bcubed_precision: float
    bcubed_recall: float
    clusters: int

    def as_dict(self) -> dict:
        return {
            "bcubed_f1": round(self.bcubed_f1, 4),
            "bcubed_precision": round(self.bcubed_precision, 4),
            "bcubed_recall": round(self.bcubed_recall, 4),
            "clusters": self.clusters,
        }


@dataclass(frozen=True)
class Calibration:
    search: FmrThreshold
    same_person: FmrThreshold
    persons: ClusterCut
    genuine_pairs: int
    impostor_pairs: int
    faces: int
    identities: int

    @property
    def thresholds(self) -> dict[str, float]:
        """The values a pack's ``thresholds`` holds."""
        return {
            "search_min_score": self.search.score,
            "same_person_min_score": self.same_person.score,
            "persons_cluster_distance": self.persons.distance,
        }

    def as_dict(self) -> dict:
        return {
            **self.thresholds,
            "measured": {
                "faces": self.faces,
                "identities": self.identities,
                "genuine_pairs": self.genuine_pairs,
                "impostor_pairs": self.impostor_pairs,
                "search_min_score": self.search.as_dict(),
                "same_person_min_score": self.same_person.as_dict(),
                "persons_cluster_distance": self.persons.as_dict(),
            },
        }


def _unit(embeddings: np.ndarray) -> np.ndarray:
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def pair_scores(embeddings: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of every pair of faces: (genuine, impostor)."""
    unit = _unit(np.asarray(embeddings, np.float64))
    upper = np.triu_indices(len(labels), k=1)
    names = np.asarray(labels)
    same = names[upper[0]] == names[upper[1]]
    scores = (unit @ unit.T)[upper]
    return scores[same], scores[~same]


def threshold_at_fmr(genuine: np.ndarray, impostor: np.ndarray, target_fmr: float) -> FmrThreshold:
    """The lowest score (rounded up to ``DECIMALS``) at which at most ``target_fmr`` of the
    impostor pairs score at or above it."""
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("need at least two identities, one of them with two faces")
    descending = np.sort(impostor)[::-1]
    allowed = int(np.floor(target_fmr * descending.size))  # impostor pairs that may score above
    step = 10.0**DECIMALS
    if allowed >= descending.size:
        score = -1.0
    else:
        # Just above the (allowed+1)-th highest impostor score.
        score = round(float(np.ceil((descending[allowed] + 1e-6) * step) / step), DECIMALS)
    return FmrThreshold(
        score=score,
        target_fmr=target_fmr,
        fmr=float(np.mean(impostor >= score)),
        fnmr=float(np.mean(genuine < score)),
    )


def average_linkage(distances: np.ndarray) -> list[tuple[int, int, float]]:
    """Agglomerative clustering with average linkage (UPGMA) over a square distance matrix.

    Returns the n-1 merges in order as (kept, absorbed, height): cluster ``absorbed``
    (named by an item index) joins ``kept`` at average distance ``height``. Heights never
    decrease, so cutting at distance d keeps exactly the merges with height <= d."""
    n = len(distances)
    dist = np.array(distances, np.float64, copy=True)
    np.fill_diagonal(dist, np.inf)
    sizes = np.ones(n)
    merges: list[tuple[int, int, float]] = []
    for _ in range(n - 1):
        flat = int(np.argmin(dist))
        a, b = divmod(flat, n)
        kept, absorbed = min(a, b), max(a, b)
        height = float(dist[kept, absorbed])
        # Lance-Williams update for the average distance to the merged cluster.
        merged = (sizes[kept] * dist[kept] + sizes[absorbed] * dist[absorbed]) / (
            sizes[kept] + sizes[absorbed]
        )
        dist[kept], dist[:, kept] = merged, merged
        dist[absorbed], dist[:, absorbed] = np.inf, np.inf
        dist[kept, kept] = np.inf
        sizes[kept] += sizes[absorbed]
        merges.append((kept, absorbed, height))
    return merges


def clusters_after(n: int, merges: list[tuple[int, int, float]], count: int) -> np.ndarray:
    """Cluster ids of ``n`` items after the first ``count`` merges."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for kept, absorbed, _ in merges[:count]:
        parent[root(absorbed)] = root(kept)
    return np.array([root(i) for i in range(n)])


def bcubed(clusters: np.ndarray, labels: list[str]) -> tuple[float, float, float]:
    """BCubed (precision, recall, F1) of a clustering against the true labels."""
    names = np.asarray(labels)
    same_cluster = clusters[:, None] == clusters[None, :]
    same_label = names[:, None] == names[None, :]
    both = (same_cluster & same_label).sum(axis=1)
    precision = float(np.mean(both / same_cluster.sum(axis=1)))
    recall = float(np.mean(both / same_label.sum(axis=1)))
    return precision, recall, 2 * precision * recall / (precision + recall)


def best_cluster_cut(
    embeddings: np.ndarray, labels: list[str], tolerance: float = DEFAULT_CUT_TOLERANCE
) -> ClusterCut:
    """The strictest average-linkage cut distance whose BCubed F1 is within ``tolerance``
    of the best (``tolerance=0``: the best, the range nearest 0 on a tie).

    Each clustering the dendrogram can give holds for a range of cut distances, from the
    height of its last merge up to (not including) the next; the cut is put in the middle
    of the chosen clustering's range, rounded to ``DECIMALS`` when that stays inside it."""
    unit = _unit(np.asarray(embeddings, np.float64))
    n = len(labels)
    if n < 2:
        raise ValueError("need at least two faces to cluster")
    merges = average_linkage(np.clip(1.0 - unit @ unit.T, 0.0, 2.0))
    heights = [0.0] + [h for _, _, h in merges] + [2.0]
    scores: list[tuple[int, float]] = []
    for count in range(n):
        low, high = heights[count], heights[count + 1]
        if high <= low:
            continue  # no cut distance gives exactly this many merges
        scores.append((count, bcubed(clusters_after(n, merges, count), labels)[2]))
    # The count n-1 always has a range (2.0 > every height), so scores is not empty.
    best_f1 = max(f1 for _, f1 in scores)
    count = min(c for c, f1 in scores if f1 >= best_f1 - tolerance)
    low, high = heights[count], heights[count + 1]
    middle = (low + high) / 2
    rounded = round(middle, DECIMALS)
    distance = rounded if low <= rounded < high else middle
    clusters = clusters_after(n, merges, count)
    precision, recall, f1 = bcubed(clusters, labels)
    return ClusterCut(
        distance=distance,
        bcubed_f1=f1,
        bcubed_precision=precision,
        bcubed_recall=recall,
        clusters=len(set(clusters.tolist())),
    )


def pick_thresholds(
    embeddings: np.ndarray,
    labels: list[str],
    search_fmr: float = DEFAULT_TARGET_FMR,
    same_person_fmr: float = DEFAULT_TARGET_FMR,
    cut_tolerance: float = DEFAULT_CUT_TOLERANCE,
) -> Calibration:
    """Every threshold from labelled embeddings of the calibration faces."""
    genuine, impostor = pair_scores(embeddings, labels)
    return Calibration(
        search=threshold_at_fmr(genuine, impostor, search_fmr),
        same_person=threshold_at_fmr(genuine, impostor, same_person_fmr),
        persons=best_cluster_cut(embeddings, labels, cut_tolerance),
        genuine_pairs=int(genuine.size),
        impostor_pairs=int(impostor.size),
        faces=len(labels),
        identities=len(set(labels)),
    )


def calibration_files(faces_dir: Path, eval_faces_dir: Path) -> tuple[list[Path], list[Path]]:
    """The calibration split: photos (one folder per identity) and the named pre-aligned crops.
    Only the named identity folders of ``eval_faces_dir`` are listed."""

    def photos(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)

    if not faces_dir.is_dir():
        raise FileNotFoundError(f"no calibration photos at {faces_dir}")
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
            # Read through Python (not cv2.imread) so that every file opened is on record.
            data = np.frombuffer(await asyncio.to_thread(crop.read_bytes), np.uint8)
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"cannot read {crop}")
            # Pre-aligned crops are only resized when the recognizer wants another size.
            aligned.append(bgr if bgr.shape[:2] == (size, size) else cv2.resize(bgr, (size, size)))
        vectors.extend(await engine.embedder.embed_crops(aligned))
        labels.extend(crop.parent.name for crop in crops)
    finally:
        await engine.close()
    return np.stack(vectors), labels


def calibrate(
    models: Path,
    faces_dir: Path,
    eval_faces_dir: Path,
    search_fmr: float = DEFAULT_TARGET_FMR,
    same_person_fmr: float = DEFAULT_TARGET_FMR,
    cut_tolerance: float = DEFAULT_CUT_TOLERANCE,
) -> Calibration:
    photos, crops = calibration_files(faces_dir, eval_faces_dir)
    embeddings, labels = asyncio.run(_embed(models, photos, crops))
    return pick_thresholds(embeddings, labels, search_fmr, same_person_fmr, cut_tolerance)


def write_thresholds(recognizer: Path, result: Calibration, table: Path | None = None) -> None:
    """Records the result under the recognizer file's sha256 in the project's table."""
    table = table or THRESHOLDS_FILE
    known = json.loads(table.read_text()) if table.is_file() else {}
    known[sha256_file(recognizer)] = {"recognizer": recognizer.name, **result.as_dict()}
    table.write_text(json.dumps(dict(sorted(known.items())), indent=2) + "\n")


def _fmr(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return number


def _tolerance(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facepipe.calibrate",
        description=__doc__.split("\n\n")[0],
        epilog="example:\n  python -m facepipe.calibrate --pack opencv --write",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--pack", help="installed pack name, under $FACEPIPE_HOME/models/ (default: the active pack)"
    )
    which.add_argument("--models", help="model pack directory, or a folder of ONNX files")
    parser.add_argument(
        "--faces", default="../shared/faces", help="one folder of photos per identity (default: %(default)s)"
    )
    parser.add_argument(
        "--eval-faces",
        default="../shared/eval/faces",
        help="folder holding the Glint identity folders (default: %(default)s)",
    )
    parser.add_argument(
        "--search-fmr",
        "--target-fmr",
        dest="search_fmr",
        type=_fmr,
        default=DEFAULT_TARGET_FMR,
        help="search_min_score: highest share of impostor pairs allowed at or above it (default: %(default)s)",
    )
    parser.add_argument(
        "--same-person-fmr",
        type=_fmr,
        default=DEFAULT_TARGET_FMR,
        help="same_person_min_score: highest share of impostor pairs allowed at or above it "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--cut-tolerance",
        type=_tolerance,
        default=DEFAULT_CUT_TOLERANCE,
        help="persons_cluster_distance: the strictest cut whose BCubed F1 is at most this below the best "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"record the thresholds in {THRESHOLDS_FILE.name} and in the pack's pack.json",
    )
    args = parser.parse_args(argv)
    from facepipe.config import Settings

    if args.models:
        models = Path(args.models).expanduser()
    elif args.pack:
        models = Settings.from_env("calibrate").home / "models" / args.pack
    else:
        models = Settings.from_env("calibrate").resolved_models_dir
    try:
        pack = load_pack(models)
        result = calibrate(
            models,
            Path(args.faces),
            Path(args.eval_faces),
            args.search_fmr,
            args.same_person_fmr,
            args.cut_tolerance,
        )
    except (PackError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"recognizer": pack.recognizer.name, **result.as_dict()}, indent=2))
    if args.write:
        write_thresholds(pack.recognizer, result)
        if refresh_manifest_thresholds(models):
            print(f"updated {models / 'pack.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
