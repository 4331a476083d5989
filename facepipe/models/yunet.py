"""YuNet face detector (OpenCV Zoo): letterbox preprocessing and the decoding of
its cls/obj/bbox/kps outputs at strides 8/16/32, as OpenCV's FaceDetectorYN does
it, with the same interface and results as :class:`facepipe.models.scrfd.SCRFD`."""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.models.scrfd import Detections, Letterbox, letterbox, merge_candidates

STRIDES = (8, 16, 32)
KINDS = ("cls", "obj", "bbox", "kps")


class YuNet:
    """Pre- and post-processing around a YuNet graph. It takes BGR pixels at 0-255
    with no normalisation; input sides must be multiples of 32."""

    def __init__(self, output_names: list[str]) -> None:
        try:
            # outputs[kind][i]: index of that output for STRIDES[i]
            self.outputs = {k: [output_names.index(f"{k}_{s}") for s in STRIDES] for k in KINDS}
        except ValueError:
            raise ValueError(f"not a YuNet graph: outputs {output_names}") from None
        # The smallest face side, in input pixels, found reliably: twice the finest stride,
        # as for SCRFD; the adaptive input size keeps the smallest accepted face above it.
        self.min_detectable_px = 2.0 * STRIDES[0]
        self._grids: dict[tuple[int, int], np.ndarray] = {}

    def preprocess(self, bgr: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
        """Letterboxes one image into ``size`` (w, h); returns a (3, h, w) float32 BGR tensor."""
        canvas, box = letterbox(bgr, size)
        return cv2.dnn.blobFromImage(canvas)[0], box

    def _grid(self, rows: int, cols: int) -> np.ndarray:
        """(column, row) of every anchor in row-major order."""
        grid = self._grids.get((rows, cols))
        if grid is None:
            grid = np.stack(np.mgrid[:rows, :cols][::-1], axis=-1).reshape(-1, 2).astype(np.float32)
            if len(self._grids) < 100:
                self._grids[(rows, cols)] = grid
        return grid

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
        idx = self.outputs
        scores_l, boxes_l, kps_l = [], [], []
        for i, stride in enumerate(STRIDES):
            cls = np.clip(outputs[idx["cls"][i]].reshape(-1), 0.0, 1.0)
            obj = np.clip(outputs[idx["obj"][i]].reshape(-1), 0.0, 1.0)
            scores = np.sqrt(cls * obj)
            keep = np.nonzero(scores >= threshold)[0]
            if keep.size == 0:
                continue
            cells = self._grid(letterbox.height // stride, letterbox.width // stride)[keep]
            bbox = outputs[idx["bbox"][i]].reshape(-1, 4)[keep]
            centres = (cells + bbox[:, :2]) * stride
            half = np.exp(bbox[:, 2:]) * stride / 2
            boxes_l.append(np.hstack([centres - half, centres + half]))
            kps = outputs[idx["kps"][i]].reshape(-1, 5, 2)[keep]
            kps_l.append((kps + cells[:, None, :]) * stride)
            scores_l.append(scores[keep])
        return merge_candidates(scores_l, boxes_l, kps_l, letterbox, nms_threshold, max_faces, image_hw)
