"""Model families: the pre/post-processing class for each family a pack's manifest
names (``detector_family``, ``recognizer_family``). Nothing else picks code by model."""

from __future__ import annotations

from facepipe.models.arcface import ArcFace
from facepipe.models.scrfd import SCRFD
from facepipe.models.sface import SFace
from facepipe.models.yunet import YuNet

# Constructed from the graph's output names.
DETECTORS: dict[str, type[SCRFD] | type[YuNet]] = {"scrfd": SCRFD, "yunet": YuNet}
# Constructed from the graph's input (height, width) and output shape.
RECOGNIZERS: dict[str, type[ArcFace]] = {"arcface": ArcFace, "sface": SFace}


def detector_decoder(family: str, output_names: list[str]) -> SCRFD | YuNet:
    if family not in DETECTORS:
        raise ValueError(f"unknown detector family {family!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[family](output_names)


def recognizer_codec(family: str, input_hw: tuple[int | None, int | None], output_shape: tuple) -> ArcFace:
    if family not in RECOGNIZERS:
        raise ValueError(f"unknown recognizer family {family!r}; known: {', '.join(RECOGNIZERS)}")
    return RECOGNIZERS[family](input_hw, output_shape)
