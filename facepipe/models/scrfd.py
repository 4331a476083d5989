"""SCRFD face detector: letterbox preprocessing, stride 8/16/32 decoding with
cached anchor centres, 5 keypoints and NMS, mapped back to original pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Detections:
    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2 in original pixels
    scores: np.ndarray  # (N,)
    landmarks: np.ndarray  # (N, 5, 2) or (N, 0, 2) for models without keypoints

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Letterbox:
    """How an image was scaled into the top-left of the detector input."""

    scale: float
    width: int  # detector input size
    height: int


class SCRFD:
    """Pre- and post-processing around an SCRFD graph; inference happens elsewhere
    (in-process or on an inference node), on batches built with :meth:`preprocess`."""

    def __init__(self, output_names: list[str], mean: float = 127.5, std: float = 128.0) -> None:
        n = len(output_names)
        if n in (6, 9):
            self.fmc, self.strides, self.num_anchors = 3, (8, 16, 32), 2
        elif n in (10, 15):
            self.fmc, self.strides, self.num_anchors = 5, (8, 16, 32, 64, 128), 1
        else:
            raise ValueError(f"not an SCRFD graph: {n} outputs")
        self.use_kps = n in (9, 15)
        # The smallest face side, in input pixels, found reliably: the smallest anchor, twice
        # the finest stride (16 px at stride 8). On photos scaled down step by step every
        # face was still found down to 10 px, so this keeps a margin.
        self.min_detectable_px = 2.0 * self.strides[0]
        self.mean, self.std = mean, std
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    # -- preprocessing -----------------------------------------------------
    def preprocess(self, bgr: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
        """Letterboxes one image into ``size`` (w, h); returns a (3, h, w) float32 RGB tensor."""
        canvas, box = letterbox(bgr, size)
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / self.std, size, (self.mean,) * 3, swapRB=True)
        return blob[0], box

    # -- postprocessing ----------------------------------------------------
    def _anchor_centers(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        centers = self._centers.get(key)
        if centers is None:
            centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
            centers = (centers * stride).reshape(-1, 2)
            if self.num_anchors > 1:
                centers = np.repeat(centers, self.num_anchors, axis=0)
            if len(self._centers) < 100:
                self._centers[key] = centers
        return centers

    def postprocess(
        self,
        outputs: list[np.ndarray],
        letterbox: Letterbox,
        threshold: float = 0.5,
        nms_threshold: float = 0.4,
        max_faces: int = 0,
        image_hw: tuple[int, int] | None = None,
    ) -> Detections:
        """Decodes one image's raw outputs (no batch axis) into faces in original pixels."""
        fmc = self.fmc
        scores_l, boxes_l, kps_l = [], [], []
        for idx, stride in enumerate(self.strides):
            scores = outputs[idx].reshape(-1)
            keep = np.nonzero(scores >= threshold)[0]
            if keep.size == 0:
                continue
            centers = self._anchor_centers(letterbox.height // stride, letterbox.width // stride, stride)[
                keep
            ]
            dist = outputs[idx + fmc].reshape(-1, 4)[keep] * stride
            boxes_l.append(np.hstack([centers - dist[:, :2], centers + dist[:, 2:]]))
            scores_l.append(scores[keep])
            if self.use_kps:
                kps = outputs[idx + fmc * 2].reshape(-1, 10)[keep] * stride
                kps_l.append(kps.reshape(-1, 5, 2) + centers[:, None, :])
        return merge_candidates(scores_l, boxes_l, kps_l, letterbox, nms_threshold, max_faces, image_hw)


def letterbox(bgr: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Scales one image into the top-left of a black ``size`` (w, h) canvas, keeping its aspect."""
    w, h = size
    img_h, img_w = bgr.shape[:2]
    if img_h / img_w > h / w:
        new_h, new_w = h, int(h / (img_h / img_w))
    else:
        new_w, new_h = w, int(w * (img_h / img_w))
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(bgr, (new_w, new_h))
    return canvas, Letterbox(scale=new_h / img_h, width=w, height=h)


def merge_candidates(
    scores_l: list[np.ndarray],
    boxes_l: list[np.ndarray],
    kps_l: list[np.ndarray],
    letterbox: Letterbox,
    nms_threshold: float,
    max_faces: int = 0,
    image_hw: tuple[int, int] | None = None,
) -> Detections:
    """Every decoder's last step: the candidates of all strides, in detector-input pixels,
    mapped to the original image, sorted by score, suppressed (NMS) and capped at
    ``max_faces`` (the largest, most central first)."""
    if not scores_l:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        )
    scores = np.concatenate(scores_l)
    boxes = np.vstack(boxes_l) / letterbox.scale
    kps = np.vstack(kps_l) / letterbox.scale if kps_l else np.zeros((len(scores), 0, 2), np.float32)
    order = np.argsort(-scores, kind="stable")
    scores, boxes, kps = scores[order], boxes[order], kps[order]
    keep = nms(boxes, scores, nms_threshold)
    scores, boxes, kps = scores[keep], boxes[keep], kps[keep]
    if max_faces > 0 and len(scores) > max_faces and image_hw is not None:
        sel = largest_central(boxes, image_hw)[:max_faces]
        scores, boxes, kps = scores[sel], boxes[sel], kps[sel]
    return Detections(boxes.astype(np.float32), scores.astype(np.float32), kps.astype(np.float32))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS over boxes already sorted by descending score."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.arange(len(scores))
    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return keep


def largest_central(boxes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Orders faces by area with a penalty for distance from the centre."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cy, cx = image_hw[0] // 2, image_hw[1] // 2
    off = ((boxes[:, 0] + boxes[:, 2]) / 2 - cx) ** 2 + ((boxes[:, 1] + boxes[:, 3]) / 2 - cy) ** 2
    return np.argsort(-(area - off * 2.0), kind="stable")
