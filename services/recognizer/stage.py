"""The recognizer's work: the active pack in-process (detector and recognizer), the
subject gallery, and what Enrol, Verify and Recognize compute with them.

The models run through the async batchers of :class:`facepipe.faces.FaceEngine` on the
service's event loop. :func:`recognize_image` is synchronous and CPU-bound, for callers
in a worker thread (the stream runs one per frame): it hands the model calls to the
loop and waits, so concurrent images and streams still share batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from facepipe.config import Settings
from facepipe.detection import options_problem
from facepipe.faces import CentreFace, DetectedFace, FaceEngine, embed_centre_face
from facepipe.imaging import DecodedImage, decode_image, encode_jpeg, thumbnail
from facepipe.models.registry import pack_thresholds
from facepipe.pipeline import Opened
from facepipe.protoconv import face_to_proto
from facepipe.recognition.gallery import NewFace, SubjectGallery, SubjectMatch, SubjectRecord
from facepipe.storage import ObjectStore, VectorStore
from facepipe.v1 import common_pb2, recognizer_pb2

log = logging.getLogger("facepipe.recognizer")

T = TypeVar("T")
MAX_CANDIDATES = 100
# Verify remembers this many images' faces (by content): comparing one photo with many
# (an id photo against selfies, every pair of a set) embeds it once. About 1 KB each.
VERIFY_CACHE_IMAGES = 4096


class PackIncomplete(RuntimeError):
    """The active pack lacks what recognition needs (its calibrated threshold)."""


@dataclass
class RecognizerDeps:
    settings: Settings
    engine: FaceEngine
    gallery: SubjectGallery
    store: VectorStore
    objects: ObjectStore
    # The pack's same_person_min_score: the verdict of Verify and the cut of Recognize.
    threshold: float
    model: str
    collection: str
    # The service's event loop, which runs the models' batchers.
    loop: asyncio.AbstractEventLoop
    # The Persons service, for enrolment from a person's faces; empty: none configured.
    persons_addr: str = ""
    # facepipe.recognition.accesslog.AccessLog of the stream's records; None: no log.
    access_log: Any = None
    # The NATS connection the access log writes through (closed with the deps).
    nats: Any = None
    # A liveness check for streams (services.recognizer.stream.LivenessCheck); None: none.
    liveness: Any = None
    # Verify's faces by (image sha256, aligned): see VERIFY_CACHE_IMAGES.
    verify_cache: OrderedDict[tuple[str, bool], CentreFace] = field(default_factory=OrderedDict)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs ``coroutine`` on the service's loop from a worker thread and waits for it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coroutine.close()
            raise RuntimeError("recognize_image blocks: call it in a worker thread, not on the event loop")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


async def open_deps(opened: Opened) -> RecognizerDeps:
    from facepipe.storage import open_vector_store
    from facepipe.storage.vectors.collections import active_recognizer

    settings = opened.settings
    objects = opened.objects
    assert objects is not None  # declared in main.py
    thresholds = await asyncio.to_thread(pack_thresholds, settings.resolved_models_dir)
    threshold = thresholds.get("same_person_min_score")
    if threshold is None:
        raise PackIncomplete(
            f"the model pack at {settings.resolved_models_dir} has no calibrated same_person_min_score; "
            f"calibrate it with `python -m facepipe.calibrate --models {settings.resolved_models_dir} --write`"
        )
    recognizer = await asyncio.to_thread(active_recognizer, settings)
    engine = await asyncio.to_thread(FaceEngine.load, settings, opened.name)
    try:
        store = await asyncio.to_thread(open_vector_store, settings.vectors, recognizer.subjects_collection)
        try:
            await asyncio.to_thread(store.ensure_collection, engine.embedder.dim)
        except BaseException:
            await asyncio.to_thread(store.close)
            raise
    except BaseException:
        await engine.close()
        raise
    log.info(
        "gallery open",
        extra={
            "collection": recognizer.subjects_collection,
            "threshold": threshold,
            "model": recognizer.file,
        },
    )
    return RecognizerDeps(
        settings=settings,
        engine=engine,
        gallery=SubjectGallery(store, objects, engine.embedder.dim),
        store=store,
        objects=objects,
        threshold=float(threshold),
        model=engine.embedder.model_name,
        collection=recognizer.subjects_collection,
        loop=asyncio.get_running_loop(),
        persons_addr=settings.recognizer.persons_addr,
        **await open_access_log(settings),
    )


async def open_access_log(settings: Settings) -> dict[str, Any]:
    """The access log and its NATS connection; none without FACEPIPE_NATS_URL."""
    from facepipe import bus, natsauth
    from facepipe.recognition.accesslog import AccessLog

    if not settings.nats_url:
        log.info("no FACEPIPE_NATS_URL: camera streams keep no access log")
        return {}
    user, password = natsauth.credentials(settings)
    nc = await bus.connect(settings.nats_url, "recognizer", user, password)
    try:
        access_log = await AccessLog.attach(nc.jetstream(), settings.privacy.access_log_max_age_s)
    except BaseException:
        await nc.close()
        raise
    return {"access_log": access_log, "nats": nc}


async def close_deps(deps: RecognizerDeps) -> None:
    if deps.nats is not None:
        await deps.nats.close()
    try:
        await deps.engine.close()
    finally:
        # Flushes, and releases the Edge lock so the next process can open the gallery.
        await asyncio.to_thread(deps.store.close)


def stats(deps: RecognizerDeps) -> dict[str, Any]:
    return {
        "collection": deps.collection,
        "threshold": deps.threshold,
        "model": deps.model,
        # Every tenant's subject records and enrolled faces together.
        "gallery_points": deps.store.count(),
    }


# --- recognize -------------------------------------------------------------------------------


def recognize_problem(options: recognizer_pb2.RecognizeOptions) -> str | None:
    """What is out of range in ``options``, or None."""
    if not 0 <= options.candidates <= MAX_CANDIDATES:
        return f"candidates must be between 0 and {MAX_CANDIDATES}, got {options.candidates}"
    if not np.isfinite(options.min_similarity) or not -1.0 <= options.min_similarity <= 1.0:
        return f"min_similarity must be a cosine similarity in [-1, 1] (0: the pack's), got {options.min_similarity}"
    return options_problem(options.detect)


async def detect_and_embed(
    engine: FaceEngine, image: DecodedImage, detect: Any
) -> tuple[list[DetectedFace], np.ndarray]:
    """Every face the detector keeps under ``detect`` (DetectOptions) and its embedding."""
    params = engine.detector.params(
        detect.input_size, detect.score_threshold, detect.max_faces, detect.include_rejected
    )
    faces = await engine.detector.detect(image, params)
    if not faces:
        return [], np.zeros((0, engine.embedder.dim), np.float32)
    vectors, _ = await engine.embedder.embed_faces(image.bgr, [f.landmarks for f in faces])
    return faces, vectors


def recognize_image(
    deps: RecognizerDeps, tenant: str, image: np.ndarray, options: recognizer_pb2.RecognizeOptions
) -> recognizer_pb2.RecognizeResponse:
    """Every face of a decoded BGR image against the tenant's subjects: the best subject
    when its best face is at or above the threshold (the pack's same_person_min_score
    unless ``options.min_similarity``), else unknown; runners-up on request. Synchronous:
    call it in a worker thread. Raises ValueError for options out of range."""
    problem = recognize_problem(options)
    if problem:
        raise ValueError(problem)
    decoded = DecodedImage(np.ascontiguousarray(image), "RAW")
    faces, vectors = deps.run(detect_and_embed(deps.engine, decoded, options.detect))
    threshold = options.min_similarity or deps.threshold
    wanted = 1 + max(0, options.candidates)
    matches = [deps.gallery.match(tenant, vector, wanted) for vector in vectors]
    records = deps.gallery.records_of(tenant, [m.subject_id for found in matches for m in found])
    response = recognizer_pb2.RecognizeResponse(
        threshold=threshold, model=deps.model, width=decoded.width, height=decoded.height
    )
    for face, found in zip(faces, matches, strict=True):
        # A face whose subject was deleted between the search and the record read is unknown.
        found = [m for m in found if m.subject_id in records]
        response.faces.append(recognized_face(face, found, records, threshold, options.candidates))
    return response


def recognized_face(
    face: DetectedFace,
    found: list[SubjectMatch],
    records: dict[str, SubjectRecord],
    threshold: float,
    candidates: int,
) -> recognizer_pb2.RecognizedFace:
    out = recognizer_pb2.RecognizedFace(face=face_to_proto(face))
    if found:
        best = found[0]
        out.similarity = best.similarity
        if best.similarity >= threshold:
            record = records[best.subject_id]
            out.subject_id, out.subject_name, out.external_id = (
                record.subject_id,
                record.name,
                record.external_id,
            )
    for match in found[1 : 1 + candidates] if out.subject_id else found[:candidates]:
        record = records[match.subject_id]
        out.candidates.append(
            recognizer_pb2.SubjectCandidate(
                subject_id=record.subject_id,
                name=record.name,
                similarity=match.similarity,
                external_id=record.external_id,
            )
        )
    return out


# --- enrol and verify ------------------------------------------------------------------------


def decode(settings: Settings, data: bytes) -> DecodedImage:
    return decode_image(data, settings.max_pixels, settings.max_image_bytes)


async def centre_face_of(deps: RecognizerDeps, data: bytes, aligned: bool) -> tuple[CentreFace, DecodedImage]:
    """The face nearest the centre of an encoded photo (or a pre-aligned crop). Raises
    ImageError, NoFace, or ValueError for a crop that is not square."""
    image = await asyncio.to_thread(decode, deps.settings, data)
    return await embed_centre_face(deps.engine, image, aligned), image


async def verify_face(deps: RecognizerDeps, data: bytes, aligned: bool) -> CentreFace:
    """The face Verify compares in an encoded image (as :func:`centre_face_of`), from the
    cache when the same image was compared lately. Raises ImageError, NoFace or ValueError."""
    key = (hashlib.sha256(data).hexdigest(), aligned)
    cached = deps.verify_cache.get(key)
    if cached is not None:
        deps.verify_cache.move_to_end(key)
        return cached
    found, _ = await centre_face_of(deps, data, aligned)
    # The crop is not needed again: only the vector and the face are kept.
    found = replace(found, crop=found.crop[:0])
    deps.verify_cache[key] = found
    while len(deps.verify_cache) > VERIFY_CACHE_IMAGES:
        deps.verify_cache.popitem(last=False)
    return found


async def new_face(deps: RecognizerDeps, data: bytes, aligned: bool, source: str) -> NewFace:
    """A face to enrol from one encoded image. Raises ImageError, NoFace or ValueError."""
    found, image = await centre_face_of(deps, data, aligned)

    def encode() -> tuple[bytes, bytes]:
        crop = encode_jpeg(found.crop)
        if found.face is None:
            return crop, crop
        x1, y1, x2, y2 = (float(v) for v in found.face.box)
        box = common_pb2.BoundingBox(x1=x1, y1=y1, x2=x2, y2=y2)
        return crop, encode_jpeg(thumbnail(image.bgr, box))

    crop_jpeg, thumb_jpeg = await asyncio.to_thread(encode)
    quality = found.face.quality.score if found.face is not None else 1.0
    return NewFace(found.vector, crop_jpeg, thumb_jpeg, float(quality), source)
