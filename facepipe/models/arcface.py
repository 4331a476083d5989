"""ArcFace-style recognizer: aligned crops in, L2-normalised embeddings out."""

from __future__ import annotations

import cv2
import numpy as np


class ArcFace:
    """Pre/post-processing around a recognizer graph; the input size and the
    embedding dimension come from the model itself."""

    def __init__(
        self,
        input_hw: tuple[int | None, int | None],
        output_shape: tuple,
        mean: float = 127.5,
        std: float = 127.5,
    ) -> None:
        h, w = input_hw
        if h is None or w is None or h != w:
            raise ValueError(f"recognizer needs a fixed square input, got {input_hw}")
        self.size = int(h)
        dim = output_shape[-1]
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"recognizer output has no fixed embedding dimension: {output_shape}")
        self.dim = dim
        self.mean, self.std = mean, std

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        """Aligned BGR crops to an (N, 3, size, size) RGB float32 blob."""
        return cv2.dnn.blobFromImages(
            crops, 1.0 / self.std, (self.size, self.size), (self.mean,) * 3, swapRB=True
        ).astype(np.float32, copy=False)

    @staticmethod
    def postprocess(raw: np.ndarray) -> np.ndarray:
        feats = raw.reshape(raw.shape[0], -1).astype(np.float32)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)
