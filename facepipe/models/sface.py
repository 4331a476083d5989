"""SFace recognizer (OpenCV Zoo): aligned crops in, L2-normalised embeddings out.

OpenCV's FaceRecognizerSF aligns with the same 5-point 112x112 template as ArcFace
(:mod:`facepipe.models.align`) and feeds RGB pixels at 0-255; the graph subtracts
127.5 and scales by 1/128 itself."""

from __future__ import annotations

from facepipe.models.arcface import ArcFace


class SFace(ArcFace):
    """ArcFace-style pre/post-processing with the normalisation left to the graph."""

    def __init__(self, input_hw: tuple[int | None, int | None], output_shape: tuple) -> None:
        super().__init__(input_hw, output_shape, mean=0.0, std=1.0)
