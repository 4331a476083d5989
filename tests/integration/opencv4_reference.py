"""OpenCV's own YuNet and SFace pipeline, the reference for the opencv pack's tests.

Run in a subprocess whose PYTHONPATH puts an OpenCV 4.x first (OpenCV 5's
FaceRecognizerSF fails on the original block-quantised SFace file):

    python opencv4_reference.py JOB.json OUT.json

JOB.json: {"detector": int8 YuNet path, "recognizer": int8 SFace path,
"size": detector side, "score_threshold", "nms_threshold", "images": [paths],
"pad": {path: pixels of black border to add first}}. OUT.json: per image, the
OpenCV version and its faces in original pixels, each with box (x1, y1, x2, y2),
score, 5 landmarks and the 128-d feature of FaceRecognizerSF (alignCrop, feature).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np


def load(path: str, pad: int) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if pad:
        bgr = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return bgr


def main(job_path: str, out_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    size = int(job["size"])
    detector = cv2.FaceDetectorYN.create(
        job["detector"], "", (size, size), job["score_threshold"], job["nms_threshold"], 5000
    )
    recognizer = cv2.FaceRecognizerSF.create(job["recognizer"], "")
    results = {}
    for path in job["images"]:
        bgr = load(path, int(job["pad"].get(path, 0)))
        h, w = bgr.shape[:2]
        # The same scaling as facepipe's letterbox: the long side to ``size``.
        if h / w > 1.0:
            new_h, new_w = size, int(size / (h / w))
        else:
            new_w, new_h = size, int(size * (h / w))
        scale = new_h / h
        small = cv2.resize(bgr, (max(new_w, 1), max(new_h, 1)))
        detector.setInputSize((small.shape[1], small.shape[0]))
        _, found = detector.detect(small)
        faces = []
        for row in found if found is not None else []:
            # alignCrop wants the face in the image it crops from: the original pixels.
            original = row.copy()
            original[:14] /= scale
            feature = recognizer.feature(recognizer.alignCrop(bgr, original))
            x, y, bw, bh = (float(v) for v in original[:4])
            faces.append(
                {
                    "box": [x, y, x + bw, y + bh],
                    "score": float(row[14]),
                    "landmarks": original[4:14].reshape(5, 2).tolist(),
                    "feature": feature.reshape(-1).tolist(),
                }
            )
        results[path] = faces
    Path(out_path).write_text(json.dumps({"opencv": cv2.__version__, "images": results}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
