"""The verify command: are the faces of two images the same person?

The active model pack runs in-process (no stack needed). Each image is embedded
once, even when a pairs file names it in many pairs; a pair is the same person
when the cosine similarity of its two faces is at or above the pack's calibrated
``same_person_min_score``.

Exit status: 0 when every pair was compared (the verdict is in the output, not in
the status), 1 for a failure (an unreadable image, a pack without the threshold,
a pair of a pairs file that could not be compared), 2 for a usage mistake, 3 when
an image of the one pair given has no face.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facepipe.cli.errors import FAILURE, CliError, UsageError, image_file
from facepipe.config import Settings

if TYPE_CHECKING:  # the models load on use, so `facepipe --help` stays light
    from facepipe.faces import DetectedFace, FaceEngine

# The same value search uses for "the image has no face", so scripts see one code.
NO_FACE = 3
# Images decoded and in the models at once: enough to fill the batchers, bounded in memory.
CONCURRENT_IMAGES = 16


@dataclass(frozen=True)
class Embedded:
    """One image's face embedding, or why there is none."""

    vector: np.ndarray | None = None
    faces: int = 0  # faces found (1 for a pre-aligned crop)
    error: str = ""
    no_face: bool = False


@dataclass(frozen=True)
class Verdict:
    a: str
    b: str
    similarity: float | None
    threshold: float
    error: str = ""
    no_face: bool = False

    @property
    def verified(self) -> bool | None:
        return None if self.similarity is None else self.similarity >= self.threshold

    def as_dict(self, with_paths: bool) -> dict:
        doc: dict = {"a": self.a, "b": self.b} if with_paths else {}
        doc.update(
            verified=self.verified,
            similarity=None if self.similarity is None else round(self.similarity, 6),
            threshold=self.threshold,
        )
        if self.error:
            doc["error"] = self.error
        return doc


def read_pairs(source: str) -> list[tuple[str, str]]:
    """Pairs of image paths, one pair a line: two paths split by a tab, or by spaces when
    neither path holds one. Blank lines and lines starting with '#' are skipped; relative
    paths are taken from the pairs file's folder ('-' reads standard input, whose paths
    are taken as given)."""
    base: Path | None = None  # standard input: paths stay as given, relative to the current folder
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"no such pairs file: {source}")
        text, base = path.read_text(), path.parent
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        if len(fields) != 2 or not all(fields):
            raise UsageError(
                f"{source}:{number}: expected two image paths (split by a tab when a path holds "
                f"spaces), got {len(fields)} field(s)"
            )
        first, second = (f if base is None else str(base / f) for f in fields)
        pairs.append((first, second))
    if not pairs:
        raise UsageError(f"{source} names no pair of images")
    return pairs


def centre_face(faces: list[DetectedFace], width: int, height: int) -> DetectedFace:
    """The face whose box centre is nearest the image centre."""

    def distance(face: DetectedFace) -> float:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        return ((x1 + x2) / 2 - width / 2) ** 2 + ((y1 + y2) / 2 - height / 2) ** 2

    return min(faces, key=distance)


async def _embed_one(engine: FaceEngine, source: str, aligned: bool, stdin: bytes | None) -> Embedded:
    import cv2

    from facepipe.imaging import ImageError

    try:
        data = stdin if source == "-" else await asyncio.to_thread(Path(source).read_bytes)
    except OSError as exc:
        return Embedded(error=f"cannot read {source}: {exc.strerror or exc}")
    try:
        if engine.detector is not None:
            image = await asyncio.to_thread(engine.detector.decode, data)
        else:
            from facepipe.imaging import decode_image

            settings = engine.settings
            image = await asyncio.to_thread(decode_image, data, settings.max_pixels, settings.max_image_bytes)
    except ImageError as exc:
        return Embedded(error=f"{source} is not a readable image: {exc}")
    if aligned:
        height, width = image.bgr.shape[:2]
        if height != width:
            return Embedded(error=f"{source} is {width}x{height}; a pre-aligned crop is square")
        size = engine.embedder.size
        crop = image.bgr if width == size else cv2.resize(image.bgr, (size, size))
        return Embedded(vector=(await engine.embedder.embed_crops([crop]))[0], faces=1)
    # Every face the detector finds counts, also those the quality checks keep out of the index.
    faces = await engine.detector.detect(image, engine.detector.params(include_rejected=True))
    if not faces:
        return Embedded(error=f"no face found in {source}", no_face=True)
    face = centre_face(faces, image.width, image.height)
    vectors, _ = await engine.embedder.embed_faces(image.bgr, [face.landmarks])
    return Embedded(vector=vectors[0], faces=len(faces))


async def embed_images(sources: list[str], aligned: bool, stdin: bytes | None = None) -> dict[str, Embedded]:
    """Each distinct image embedded once with the active model pack."""
    from facepipe.faces import FaceEngine
    from facepipe.models.registry import PackError

    try:
        engine = FaceEngine.load(Settings.from_env("cli"), "cli", detector=not aligned)
    except PackError as exc:
        raise CliError(str(exc)) from None
    limit = asyncio.Semaphore(CONCURRENT_IMAGES)

    async def embed(source: str) -> Embedded:
        async with limit:
            return await _embed_one(engine, source, aligned, stdin)

    distinct = list(dict.fromkeys(sources))
    try:
        results = await asyncio.gather(*(embed(s) for s in distinct))
    finally:
        await engine.close()
    return dict(zip(distinct, results, strict=True))


def same_person_threshold(args: argparse.Namespace) -> float:
    """--threshold, else the active pack's calibrated same_person_min_score."""
    if args.threshold is not None:
        return args.threshold
    from facepipe.models.registry import PackError, load_pack, pack_thresholds

    directory = Settings.from_env("cli").resolved_models_dir
    try:
        load_pack(directory)  # a missing pack is named as such, not as a missing threshold
    except PackError as exc:
        raise CliError(str(exc)) from None
    threshold = pack_thresholds(directory).get("same_person_min_score")
    if threshold is None:
        raise CliError(
            f"the model pack at {directory} has no calibrated same_person_min_score: pass --threshold, "
            f"or calibrate it with `python -m facepipe.calibrate --models {directory} --write`"
        )
    return threshold


def compare(pairs: list[tuple[str, str]], embedded: dict[str, Embedded], threshold: float) -> list[Verdict]:
    verdicts = []
    for a, b in pairs:
        first, second = embedded[a], embedded[b]
        failed = first if first.vector is None else second if second.vector is None else None
        if failed is not None:
            verdicts.append(Verdict(a, b, None, threshold, failed.error, failed.no_face))
            continue
        # Embeddings are L2-normalised: the dot product is the cosine similarity.
        similarity = float(np.dot(first.vector, second.vector))
        verdicts.append(Verdict(a, b, similarity, threshold))
    return verdicts


def _verdict_words(v: Verdict) -> str:
    return "same person" if v.verified else "different people"


def cmd_verify(args: argparse.Namespace) -> int:
    if args.pairs is not None:
        if args.images:
            raise UsageError("give two images or --pairs FILE, not both")
        return _verify_pairs(args)
    if len(args.images) != 2:
        raise UsageError(f"give two images to compare (got {len(args.images)}), or --pairs FILE")
    for image in args.images:
        image_file(image)
    if args.images.count("-") > 1:
        raise UsageError("only one of the two images can be read from standard input ('-')")
    threshold = same_person_threshold(args)
    stdin = sys.stdin.buffer.read() if "-" in args.images else None
    a, b = args.images
    embedded = asyncio.run(embed_images([a, b], args.aligned, stdin))
    verdict = compare([(a, b)], embedded, threshold)[0]
    if verdict.error:
        raise CliError(verdict.error, NO_FACE if verdict.no_face else FAILURE)
    if args.json:
        print(json.dumps(verdict.as_dict(with_paths=False), indent=2))
        return 0
    for image in (a, b):
        if embedded[image].faces > 1:
            print(f"{image}: {embedded[image].faces} faces, compared the one nearest the centre")
    relation = "at or above" if verdict.verified else "below"
    print(
        f"{_verdict_words(verdict)}: similarity {verdict.similarity:.3f} is {relation} "
        f"the threshold {threshold:.3f}"
    )
    return 0


def _verify_pairs(args: argparse.Namespace) -> int:
    pairs = read_pairs(args.pairs)
    threshold = same_person_threshold(args)
    embedded = asyncio.run(embed_images([p for pair in pairs for p in pair], args.aligned))
    verdicts = compare(pairs, embedded, threshold)
    for v in verdicts:
        if args.json:
            print(json.dumps(v.as_dict(with_paths=True)))
        elif v.error:
            print(f"error: {v.error}\t{v.a}\t{v.b}")
        else:
            print(f"{_verdict_words(v)}\t{v.similarity:.3f}\t{v.a}\t{v.b}")
    failed = sum(1 for v in verdicts if v.error)
    if not args.json:
        same = sum(1 for v in verdicts if v.verified)
        print(
            f"{len(verdicts)} pair{'' if len(verdicts) == 1 else 's'} at threshold {threshold:.3f}: {same} same person, "
            f"{len(verdicts) - same - failed} different people, {failed} not compared"
        )
    return FAILURE if failed else 0
