"""The face engine shared by the detector, the embedder, the indexer's search
and the CLI: decode, detect with quality checks, align and embed."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facepipe.auth import service_key
from facepipe.batching import DynamicBatcher
from facepipe.config import Settings
from facepipe.imaging import DecodedImage, decode_image
from facepipe.inference import LocalInference, RemoteInference
from facepipe.models.align import align_face
from facepipe.models.families import detector_decoder, recognizer_codec
from facepipe.models.registry import PackFiles, load_pack
from facepipe.models.scrfd import Letterbox, largest_central
from facepipe.quality import QualityResult, QualityThresholds, assess
from facepipe.runtime import metrics

Inference = LocalInference | RemoteInference

# The detector's input sides. The detectors' strides reach 32, so sides are multiples of 32;
# the upper bound keeps one request's time and memory in check (the cost grows with the
# square of the side), and the fixed set bounds the batchers kept per size.
INPUT_SIZE_MIN = 160
INPUT_SIZE_MAX = 1280
INPUT_SIZE_STEP = 32
INPUT_SIZE_RULE = f"{INPUT_SIZE_MIN} to {INPUT_SIZE_MAX} pixels, a multiple of {INPUT_SIZE_STEP}"


# With adaptive sizing, a face this near the score cut-off or this near (as a fraction)
# the size cut-off sends its image through again at the configured size. On the eval set
# and ../shared/faces the worst accepted face scored 0.32 at the smallest input against
# 0.65 at 640 (YuNet, a half-hidden face); SCRFD's scores move by up to about 0.15.
RECHECK_SCORE_MARGIN = 0.25
RECHECK_SIZE_MARGIN = 0.15


def input_size_problem(size: int) -> str | None:
    """Why ``size`` is not an allowed detector input side, or None when it is."""
    if INPUT_SIZE_MIN <= size <= INPUT_SIZE_MAX and size % INPUT_SIZE_STEP == 0:
        return None
    return f"input_size {size} is not allowed: {INPUT_SIZE_RULE} (0: the server default)"


def adaptive_input_size(
    image_hw: tuple[int, int], cap: int, min_face_px: float, detectable_px: float
) -> tuple[int, int]:
    """The smallest detector input (w, h) that still maps a face of ``min_face_px`` image
    pixels to ``detectable_px`` input pixels, at most the ``cap`` x ``cap`` letterbox.

    Each side is an allowed side (a multiple of the step, from the minimum up to ``cap``),
    so the sizes in use stay within that set squared. The image keeps its aspect ratio:
    a landscape photo gets a landscape input instead of a padded square one."""
    height, width = image_hw
    long_side = max(height, width, 1)
    # Input pixels per image pixel: enough for the smallest accepted face, and never
    # more than the cap's letterbox gives (that is the fixed-size behaviour).
    scale = cap / long_side
    if min_face_px > 0:
        scale = min(scale, detectable_px / min_face_px)

    def side(pixels: int) -> int:
        steps = math.ceil(pixels * scale / INPUT_SIZE_STEP - 1e-9)
        return min(cap, max(INPUT_SIZE_MIN, steps * INPUT_SIZE_STEP))

    return side(width), side(height)


@dataclass
class DetectedFace:
    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)
    quality: QualityResult


@dataclass(frozen=True)
class DetectParams:
    size: int = 640  # the square input side, or with ``adaptive`` the largest one
    threshold: float = 0.5
    nms_threshold: float = 0.4
    max_faces: int = 0
    include_rejected: bool = False
    adaptive: bool = False


def make_inference(settings: Settings, pack: PackFiles, service: str) -> Inference:
    local = LocalInference(
        pack.directory, settings.providers, settings.intra_op_threads, service, settings.workers
    )
    if settings.inference_nodes:
        return RemoteInference(
            list(settings.inference_nodes), local, service, service_key(settings), settings.tls
        )
    return local


class FaceDetector:
    def __init__(
        self, inference: Inference, model: str, settings: Settings, service: str = "facepipe", *, family: str
    ) -> None:
        self.inference = inference
        self.model_name = model
        onnx = inference.model(model)
        # Pre/post-processing of the pack's detector family (SCRFD, YuNet).
        self.decoder = detector_decoder(family, onnx.output_names)
        fixed_h, fixed_w = onnx.input_hw
        self.fixed_size = (fixed_w, fixed_h) if fixed_h and fixed_w else None
        problem = input_size_problem(settings.det_size)
        if problem:
            raise ValueError(f"FACEPIPE_DET_SIZE={settings.det_size}: {problem}")
        self.settings = settings
        self.thresholds = QualityThresholds(
            min_score=settings.min_face_score,
            min_size_px=settings.min_face_px,
            min_blur=settings.min_blur,
            max_yaw=settings.max_yaw,
            max_roll=settings.max_roll,
        )
        self._batchers: dict[tuple[int, int], DynamicBatcher] = {}
        self.service = service

    def params(
        self, size: int = 0, threshold: float = 0.0, max_faces: int = 0, include_rejected: bool = False
    ) -> DetectParams:
        """Raises ValueError for an input size outside the allowed set."""
        size = size or self.settings.det_size
        problem = input_size_problem(size)
        if problem:
            raise ValueError(problem)
        return DetectParams(
            size=size,
            threshold=threshold or self.settings.det_threshold,
            nms_threshold=self.settings.nms_threshold,
            max_faces=max_faces,
            include_rejected=include_rejected,
            adaptive=self.settings.adaptive_det_size,
        )

    def input_size(self, image_hw: tuple[int, int], params: DetectParams) -> tuple[int, int]:
        """The (w, h) one image is detected at."""
        if self.fixed_size:
            return self.fixed_size
        if not params.adaptive:
            return params.size, params.size
        return adaptive_input_size(
            image_hw, params.size, self.settings.min_face_px, self.decoder.min_detectable_px
        )

    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, self.settings.max_pixels, self.settings.max_image_bytes)

    def _batcher(self, size: tuple[int, int]) -> DynamicBatcher:
        # One per input size: both sides are allowed sides (params() and adaptive_input_size
        # see to it), so there are at most ((INPUT_SIZE_MAX - INPUT_SIZE_MIN) / INPUT_SIZE_STEP
        # + 1) squared of them, and far fewer under a cap below the maximum.
        b = self._batchers.get(size)
        if b is None:

            async def run(blobs: list[np.ndarray]) -> list[list[np.ndarray]]:
                # A batch of 640x640 tensors is about 5 MB an image: copying them together
                # on the event loop would stall every other request for tens of milliseconds.
                batch = await asyncio.to_thread(np.stack, blobs)
                outs = await self.inference.run(self.model_name, batch)
                return [[o[i] for o in outs] for i in range(len(blobs))]

            b = self._batchers[size] = DynamicBatcher(
                run,
                self.settings.max_batch,
                self.settings.max_wait_ms,
                name=self.model_name,
                service=self.service,
            )
        return b

    async def detect(self, image: DecodedImage, params: DetectParams) -> list[DetectedFace]:
        return (await self._detect(lambda: image, params))[1]

    async def detect_bytes(
        self, data: bytes, params: DetectParams
    ) -> tuple[DecodedImage, list[DetectedFace]]:
        """Decode and detect, with decoding and letterboxing in one worker-thread hop."""
        return await self._detect(lambda: self.decode(data), params)

    async def _detect(
        self, load: Callable[[], DecodedImage], params: DetectParams
    ) -> tuple[DecodedImage, list[DetectedFace]]:
        def prepare() -> tuple[DecodedImage, tuple[int, int], np.ndarray, Letterbox]:
            image = load()
            size = self.input_size((image.height, image.width), params)
            return (image, size, *self.decoder.preprocess(image.bgr, size))

        image, size, blob, letterbox = await asyncio.to_thread(prepare)
        outputs = await self._batcher(size).submit(blob)
        # At a smaller input than the configured one, candidates a little below the score
        # cut-off are decoded too, to tell whether the configured size must decide.
        smaller = (
            params.adaptive
            and not self.fixed_size
            and letterbox.scale < params.size / max(image.height, image.width) - 1e-9
        )
        floor = max(0.0, self._score_cut(params) - RECHECK_SCORE_MARGIN) if smaller else params.threshold
        faces = await asyncio.to_thread(
            self._candidates, image, outputs, letterbox, params, min(floor, params.threshold)
        )
        if smaller and self._near_a_cutoff(faces, params):
            # The configured size decides faces that the smaller input leaves in doubt.
            metrics.DETECT_RECHECKS.labels(self.service).inc()
            size = (params.size, params.size)
            blob, letterbox = await asyncio.to_thread(self.decoder.preprocess, image.bgr, size)
            outputs = await self._batcher(size).submit(blob)
            faces = await asyncio.to_thread(
                self._candidates, image, outputs, letterbox, params, params.threshold
            )
        return image, self._select(faces, params, (image.height, image.width))

    def _score_cut(self, p: DetectParams) -> float:
        return max(p.threshold, self.thresholds.min_score)

    def _candidates(
        self,
        image: DecodedImage,
        outputs: list[np.ndarray],
        letterbox: Letterbox,
        p: DetectParams,
        floor: float,
    ) -> list[DetectedFace]:
        """Every face the outputs hold at or above ``floor``, best first, with its quality.
        NMS keeps a box only for a better one, so the faces at or above a higher threshold
        are exactly those that decoding at that threshold gives."""
        det = self.decoder.postprocess(outputs, letterbox, floor, p.nms_threshold)
        return [
            DetectedFace(
                box=box,
                score=float(score),
                landmarks=lmk,
                quality=assess(image.bgr, box, float(score), lmk if len(lmk) else None, self.thresholds),
            )
            for box, score, lmk in zip(det.boxes, det.scores, det.landmarks, strict=True)
        ]

    def _near_a_cutoff(self, faces: list[DetectedFace], p: DetectParams) -> bool:
        """Whether a face found at a smaller input than the configured one lies so near the
        score or the size cut-off, or is rejected by a quality check, that the configured size
        could decide it the other way (see RECHECK_SCORE_MARGIN and RECHECK_SIZE_MARGIN)."""
        score_cut, size_cut = self._score_cut(p), self.thresholds.min_size_px
        for face in faces:
            side = min(face.box[2] - face.box[0], face.box[3] - face.box[1])
            if (
                face.score < score_cut + RECHECK_SCORE_MARGIN
                or abs(side - size_cut) <= size_cut * RECHECK_SIZE_MARGIN
                # Pose and sharpness are read from the box and landmarks, which shift with
                # the input size too: a face the smaller input rejects is decided again.
                or not face.quality.accepted
            ):
                return True
        return False

    @staticmethod
    def _select(faces: list[DetectedFace], p: DetectParams, image_hw: tuple[int, int]) -> list[DetectedFace]:
        """The faces at or above the request's threshold, capped at ``max_faces`` (largest and
        most central first), without the rejected ones unless asked for."""
        faces = [f for f in faces if f.score >= p.threshold]
        if p.max_faces > 0 and len(faces) > p.max_faces:
            order = largest_central(np.array([f.box for f in faces]), image_hw)[: p.max_faces]
            faces = [faces[i] for i in order]
        return [f for f in faces if f.quality.accepted or p.include_rejected]

    async def close(self) -> None:
        for b in self._batchers.values():
            await b.close()


class FaceEmbedder:
    def __init__(
        self, inference: Inference, model: str, settings: Settings, service: str = "facepipe", *, family: str
    ) -> None:
        self.inference = inference
        self.model_name = model
        onnx = inference.model(model)
        # Pre/post-processing of the pack's recognizer family (ArcFace, SFace).
        self.recognizer = recognizer_codec(family, onnx.input_hw, onnx.outputs[0].shape)
        self.dim = self.recognizer.dim
        self.size = self.recognizer.size

        async def run(crops: list[np.ndarray]) -> list[np.ndarray]:
            blob = await asyncio.to_thread(self.recognizer.preprocess, crops)
            raw = (await self.inference.run(self.model_name, blob))[0]
            return list(self.recognizer.postprocess(raw))

        self._batcher = DynamicBatcher(
            run, settings.max_batch * 4, settings.max_wait_ms, name=model, service=service
        )

    def align(self, bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return align_face(bgr, landmarks, self.size)

    async def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(await self._batcher.submit_many(crops))

    async def embed_faces(
        self, bgr: np.ndarray, landmarks: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Aligned crops and their embeddings for the given 5-point landmark sets."""
        crops = await asyncio.to_thread(lambda: [self.align(bgr, lmk) for lmk in landmarks])
        return await self.embed_crops(crops), crops

    async def close(self) -> None:
        await self._batcher.close()


def centre_face(faces: list[DetectedFace], width: int, height: int) -> DetectedFace:
    """The face whose box centre is nearest the image centre."""

    def distance(face: DetectedFace) -> float:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        return ((x1 + x2) / 2 - width / 2) ** 2 + ((y1 + y2) / 2 - height / 2) ** 2

    return min(faces, key=distance)


class NoFace(ValueError):
    """The image has no face to compare or enrol."""


@dataclass(frozen=True)
class CentreFace:
    """The face of an image that verification and enrolment use: the one nearest the
    centre of a photo, or the whole of a pre-aligned crop."""

    vector: np.ndarray  # L2-normalised embedding
    crop: np.ndarray  # the aligned crop the recognizer saw
    face: DetectedFace | None  # None for a pre-aligned crop
    faces: int  # faces found in the image (1 for a crop)


async def embed_centre_face(engine: FaceEngine, image: DecodedImage, aligned: bool) -> CentreFace:
    """Embeds the face nearest the centre of ``image`` (every face the detector finds
    counts, also those the quality checks keep out of the index), or with ``aligned``
    the image itself as the recognizer's crop. Raises NoFace, or ValueError for an
    aligned image that is not square."""
    import cv2

    if aligned:
        height, width = image.bgr.shape[:2]
        if height != width:
            raise ValueError(f"the image is {width}x{height}; a pre-aligned crop is square")
        size = engine.embedder.size
        crop = image.bgr if width == size else cv2.resize(image.bgr, (size, size))
        return CentreFace((await engine.embedder.embed_crops([crop]))[0], crop, None, 1)
    faces = await engine.detector.detect(image, engine.detector.params(include_rejected=True))
    if not faces:
        raise NoFace("no face found")
    face = centre_face(faces, image.width, image.height)
    vectors, crops = await engine.embedder.embed_faces(image.bgr, [face.landmarks])
    return CentreFace(vectors[0], crops[0], face, len(faces))


@dataclass
class FaceEngine:
    settings: Settings
    pack: PackFiles
    inference: Inference
    detector: FaceDetector
    embedder: FaceEmbedder

    @classmethod
    def load(
        cls, settings: Settings, service: str = "facepipe", detector: bool = True, embedder: bool = True
    ):
        pack = load_pack(settings.resolved_models_dir, settings.detector_model, settings.recognizer_model)
        inference = make_inference(settings, pack, service)
        det = (
            FaceDetector(inference, pack.detector.name, settings, service, family=pack.detector_family)
            if detector
            else None
        )
        emb = (
            FaceEmbedder(inference, pack.recognizer.name, settings, service, family=pack.recognizer_family)
            if embedder
            else None
        )
        return cls(settings, pack, inference, det, emb)  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.detector:
            await self.detector.close()
        if self.embedder:
            await self.embedder.close()
        close = self.inference.close()
        if asyncio.iscoroutine(close):
            await close
