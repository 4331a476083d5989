"""5-point similarity alignment to the ArcFace 112x112 template."""

from __future__ import annotations

import cv2
import numpy as np

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation), Umeyama 1991. Returns 2x3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    a = dst_c.T @ src_c / n
    d = np.ones(dim)
    if np.linalg.det(a) < 0:
        d[-1] = -1
    u, s, vt = np.linalg.svd(a)
    t = np.eye(dim + 1)
    rank = np.linalg.matrix_rank(a)
    if rank == 0:
        return np.full((2, 3), np.nan)
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            t[:dim, :dim] = u @ vt
        else:
            s_ = d[-1]
            d[-1] = -1
            t[:dim, :dim] = u @ np.diag(d) @ vt
            d[-1] = s_
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = 1.0 / src_c.var(0).sum() * (s @ d)
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t[:2]


def template(size: int = 112) -> np.ndarray:
    """The five landmark positions of an aligned crop of side ``size``."""
    if size % 112 == 0:
        ratio, dx = size / 112.0, 0.0
    else:
        ratio = size / 128.0
        dx = 8.0 * ratio
    dst = ARCFACE_TEMPLATE * ratio
    dst[:, 0] += dx
    return dst


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2x3 matrix that maps 5 landmarks onto the template scaled to ``size``."""
    return similarity_transform(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), template(size))


def align_face(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warps the face given by 5 landmarks into a ``size``x``size`` aligned crop."""
    return cv2.warpAffine(bgr, alignment_matrix(landmarks, size), (size, size), borderValue=0.0)


def realign_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """An aligned crop of another side re-aligned to ``size``: its landmarks sit on the
    template of its own side, so the similarity between the two templates maps them onto
    the new one (a plain resize when both sides are multiples of 112). What lay outside
    the stored crop stays black."""
    side = crop.shape[0]
    if crop.shape[:2] == (size, size):
        return crop
    if crop.shape[1] != side:
        raise ValueError(f"an aligned crop is square, got {crop.shape[1]}x{side}")
    matrix = similarity_transform(template(side), template(size))
    return cv2.warpAffine(crop, matrix, (size, size), borderValue=0.0)
