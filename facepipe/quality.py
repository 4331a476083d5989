"""Face quality: detector score, size, blur and pose, with reason codes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class QualityThresholds:
    min_score: float = 0.5
    min_size_px: float = 24.0
    min_blur: float = 15.0
    max_yaw: float = 60.0
    max_roll: float = 45.0


@dataclass
class QualityResult:
    score: float
    accepted: bool
    reasons: list[str] = field(
        default_factory=list
    )  # LOW_SCORE, TOO_SMALL, BLURRY, POSE_YAW, POSE_ROLL, NO_LANDMARKS
    size_px: float = 0.0
    blur: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0


def pose_from_landmarks(lmk: np.ndarray) -> tuple[float, float]:
    """Approximate (yaw, roll) in degrees from 5 points (eyes, nose, mouth corners)."""
    left_eye, right_eye, nose = lmk[0], lmk[1], lmk[2]
    dx, dy = right_eye - left_eye
    roll = math.degrees(math.atan2(dy, dx))
    eye_dist = math.hypot(dx, dy) or 1.0
    # Nose offset from the eye midline, relative to half the eye distance, as an angle.
    mid = (left_eye + right_eye) / 2.0
    axis = np.array([dx, dy]) / eye_dist
    offset = float(np.dot(nose - mid, axis)) / (eye_dist / 2.0)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, offset))))
    return yaw, roll


def blur_variance(bgr: np.ndarray, box: np.ndarray, side: int = 112) -> float:
    """Variance of the Laplacian over the face box, resized to a fixed side so sizes compare."""
    h, w = bgr.shape[:2]
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(math.ceil(box[2])), w), min(int(math.ceil(box[3])), h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    crop = cv2.cvtColor(bgr[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(crop, cv2.CV_64F).var())


def assess(
    bgr: np.ndarray, box: np.ndarray, score: float, landmarks: np.ndarray | None, t: QualityThresholds
) -> QualityResult:
    size = float(min(box[2] - box[0], box[3] - box[1]))
    blur = blur_variance(bgr, box)
    reasons: list[str] = []
    yaw = roll = 0.0
    if score < t.min_score:
        reasons.append("LOW_SCORE")
    if size < t.min_size_px:
        reasons.append("TOO_SMALL")
    if blur < t.min_blur:
        reasons.append("BLURRY")
    if landmarks is None or len(landmarks) != 5:
        reasons.append("NO_LANDMARKS")
    else:
        yaw, roll = pose_from_landmarks(landmarks)
        if abs(yaw) > t.max_yaw:
            reasons.append("POSE_YAW")
        if abs(roll) > t.max_roll:
            reasons.append("POSE_ROLL")
    # Each factor saturates at a comfortable margin over its threshold.
    factors = (
        min(1.0, score),
        min(1.0, size / (4 * t.min_size_px)),
        min(1.0, blur / (10 * t.min_blur)) if t.min_blur > 0 else 1.0,
        max(0.0, 1.0 - abs(yaw) / 90.0),
    )
    quality = float(np.prod(factors) ** (1 / len(factors)))
    return QualityResult(
        score=round(quality, 4),
        accepted=not reasons,
        reasons=reasons,
        size_px=size,
        blur=blur,
        yaw=yaw,
        roll=roll,
    )
