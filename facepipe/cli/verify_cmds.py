"""The verify command: are the faces of two images the same person?

By default the running stack's recognizer compares them (``Recognizer/Verify``),
with its model pack. ``--local`` runs the active model pack in-process instead (no
stack needed: evaluating a pack on a pairs file, as the accuracy tests do); each
image is then embedded once, even when a pairs file names it in many pairs. Either
way a pair is the same person when the cosine similarity of the faces nearest the
centre is at or above the pack's calibrated ``same_person_min_score``.

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

from facepipe.cli.errors import FAILURE, CliError, UsageError, image_file, rpc_failure
from facepipe.config import Settings

if TYPE_CHECKING:  # the models load on use, so `facepipe --help` stays light
    from facepipe.faces import FaceEngine

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


async def _embed_one(engine: FaceEngine, source: str, aligned: bool, stdin: bytes | None) -> Embedded:
    from facepipe.faces import NoFace, embed_centre_face
    from facepipe.imaging import ImageError, decode_image

    try:
        data = stdin if source == "-" else await asyncio.to_thread(Path(source).read_bytes)
    except OSError as exc:
        return Embedded(error=f"cannot read {source}: {exc.strerror or exc}")
    settings = engine.settings
    try:
        image = await asyncio.to_thread(decode_image, data, settings.max_pixels, settings.max_image_bytes)
    except ImageError as exc:
        return Embedded(error=f"{source} is not a readable image: {exc}")
    try:
        found = await embed_centre_face(engine, image, aligned)
    except NoFace:
        return Embedded(error=f"no face found in {source}", no_face=True)
    except ValueError as exc:
        return Embedded(error=f"{source}: {exc}")
    return Embedded(vector=found.vector, faces=found.faces)


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
    stdin = sys.stdin.buffer.read() if "-" in args.images else None
    a, b = args.images
    if args.local:
        threshold = same_person_threshold(args)
        embedded = asyncio.run(embed_images([a, b], args.aligned, stdin))
        verdict = compare([(a, b)], embedded, threshold)[0]
        counts = {image: embedded[image].faces for image in (a, b)}
    else:
        verdict, counts = _verify_remote(args, a, b, stdin)
    if verdict.error:
        raise CliError(verdict.error, NO_FACE if verdict.no_face else FAILURE)
    if args.json:
        print(json.dumps(verdict.as_dict(with_paths=False), indent=2))
        return 0
    for image in (a, b):
        if counts[image] > 1:
            print(f"{image}: {counts[image]} faces, compared the one nearest the centre")
    relation = "at or above" if verdict.verified else "below"
    print(
        f"{_verdict_words(verdict)}: similarity {verdict.similarity:.3f} is {relation} "
        f"the threshold {verdict.threshold:.3f}"
    )
    return 0


def _verify_remote(
    args: argparse.Namespace, a: str, b: str, stdin: bytes | None = None
) -> tuple[Verdict, dict[str, int]]:
    """One pair through the running stack's Recognizer/Verify; the verdict and the number
    of faces found in each image. The recognizer's pack gives the threshold unless
    --threshold does."""
    import grpc

    from facepipe.cli import addresses
    from facepipe.cli.recognize_cmds import recognizer_call
    from facepipe.v1 import recognizer_pb2

    images = {}
    for path in (a, b):
        try:
            images[path] = stdin if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            return Verdict(a, b, None, 0.0, f"cannot read {path}: {exc.strerror or exc}"), {}
    request = recognizer_pb2.VerifyRequest(
        tenant_id=args.tenant or "", image_a=images[a], image_b=images[b], aligned=args.aligned
    )
    try:
        addr = addresses.service_addr(args, "recognizer")
    except CliError as exc:
        raise CliError(f"{exc.message}; or compare in-process with --local") from None
    try:
        response = recognizer_call(args, "Verify", request, addr=addr, raw_errors=True)
    except grpc.RpcError as exc:
        # The service names the image as image_a or image_b: name the user's file instead.
        details = (exc.details() or "").replace("image_a", a).replace("image_b", b)
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and details.startswith("no face found"):
            return Verdict(a, b, None, 0.0, details, no_face=True), {}
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return Verdict(a, b, None, 0.0, details), {}
        raise rpc_failure(exc, "recognizer", addr) from None
    threshold = args.threshold if args.threshold is not None else round(float(response.threshold), 6)
    counts = {a: response.faces_a, b: response.faces_b}
    return Verdict(a, b, float(response.similarity), threshold), counts


def _verify_pairs(args: argparse.Namespace) -> int:
    pairs = read_pairs(args.pairs)
    if args.local:
        threshold = same_person_threshold(args)
        embedded = asyncio.run(embed_images([p for pair in pairs for p in pair], args.aligned))
        verdicts = compare(pairs, embedded, threshold)
    else:
        verdicts = [_verify_remote(args, a, b)[0] for a, b in pairs]
        threshold = next((v.threshold for v in verdicts if not v.error), args.threshold or 0.0)
        verdicts = [
            v if not v.error else Verdict(v.a, v.b, None, threshold, v.error, v.no_face) for v in verdicts
        ]
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
