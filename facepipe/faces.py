"""The face engine shared by the detector, the embedder, the indexer's search
and the CLI: decode, detect with quality checks, align and embed."""

from __future__ import annotations

import asyncio
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
from facepipe.models.scrfd import Letterbox
from facepipe.quality import QualityResult, QualityThresholds, assess

Inference = LocalInference | RemoteInference

# The detector's square input side. The detectors' strides reach 32, so sides are multiples
# of 32; the upper bound keeps one request's time and memory in check (the cost grows
# with the square of the side), and the fixed set bounds the batchers kept per size.
INPUT_SIZE_MIN = 160
INPUT_SIZE_MAX = 1280
INPUT_SIZE_STEP = 32
INPUT_SIZE_RULE = f"{INPUT_SIZE_MIN} to {INPUT_SIZE_MAX} pixels, a multiple of {INPUT_SIZE_STEP}"


def input_size_problem(size: int) -> str | None:
    """Why ``size`` is not an allowed detector input side, or None when it is."""
    if INPUT_SIZE_MIN <= size <= INPUT_SIZE_MAX and size % INPUT_SIZE_STEP == 0:
        return None
    return f"input_size {size} is not allowed: {INPUT_SIZE_RULE} (0: the server default)"


@dataclass
class DetectedFace:
    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)
    quality: QualityResult


@dataclass(frozen=True)
class DetectParams:
    size: int = 640
    threshold: float = 0.5
    nms_threshold: float = 0.4
    max_faces: int = 0
    include_rejected: bool = False


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
        )

    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, self.settings.max_pixels, self.settings.max_image_bytes)

    def _batcher(self, size: tuple[int, int]) -> DynamicBatcher:
        # One per input size: params() admits only the allowed sizes, so there are at most
        # (INPUT_SIZE_MAX - INPUT_SIZE_MIN) / INPUT_SIZE_STEP + 1 of them.
        b = self._batchers.get(size)
        if b is None:

            async def run(blobs: list[np.ndarray]) -> list[list[np.ndarray]]:
                outs = await self.inference.run(self.model_name, np.stack(blobs))
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
        size = self.fixed_size or (params.size, params.size)

        def prepare() -> tuple[DecodedImage, np.ndarray, Letterbox]:
            image = load()
            return (image, *self.decoder.preprocess(image.bgr, size))

        image, blob, letterbox = await asyncio.to_thread(prepare)
        outputs = await self._batcher(size).submit(blob)
        return image, await asyncio.to_thread(self._finish, image, outputs, letterbox, params)

    def _finish(
        self, image: DecodedImage, outputs: list[np.ndarray], letterbox: Letterbox, p: DetectParams
    ) -> list[DetectedFace]:
        det = self.decoder.postprocess(
            outputs, letterbox, p.threshold, p.nms_threshold, p.max_faces, (image.height, image.width)
        )
        faces = []
        for box, score, lmk in zip(det.boxes, det.scores, det.landmarks, strict=True):
            quality = assess(image.bgr, box, float(score), lmk if len(lmk) else None, self.thresholds)
            if quality.accepted or p.include_rejected:
                faces.append(DetectedFace(box=box, score=float(score), landmarks=lmk, quality=quality))
        return faces

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
