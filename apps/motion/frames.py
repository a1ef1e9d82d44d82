"""Camera frames: two frames in, the boxes where something moved out (frame differencing).

The classic pipeline: greyscale, blur (sensor noise is not motion), absolute difference,
threshold, dilate (join the parts of one moving thing), external contours, boxes above a
minimum area. A global brightness change (lights switched on) shifts every pixel a little;
subtracting the median difference first keeps it from being reported as motion.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

THRESHOLD = 25  # grey levels of change that count
MIN_AREA_FRACTION = 0.0005  # boxes smaller than this share of the frame are noise


def motion_boxes(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Where ``after`` differs from ``before`` (BGR images; resized to match if needed)."""
    if before.shape[:2] != after.shape[:2]:
        after = cv2.resize(after, (before.shape[1], before.shape[0]), interpolation=cv2.INTER_AREA)
    a = cv2.GaussianBlur(cv2.cvtColor(before, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    b = cv2.GaussianBlur(cv2.cvtColor(after, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    diff = cv2.absdiff(a, b).astype(np.int16)
    diff = np.clip(diff - int(np.median(diff)), 0, 255).astype(np.uint8)  # global lighting shift
    _, mask = cv2.threshold(diff, THRESHOLD, 255, cv2.THRESH_BINARY)
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)), iterations=2)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    h, w = mask.shape
    min_area = MIN_AREA_FRACTION * w * h
    boxes = [list(map(int, cv2.boundingRect(c))) for c in contours if cv2.contourArea(c) >= min_area]
    boxes.sort(key=lambda box: -box[2] * box[3])
    return {"motion": bool(boxes), "boxes": [{"x": x, "y": y, "w": bw, "h": bh} for x, y, bw, bh in boxes],
            "changed_fraction": round(float(np.count_nonzero(diff > THRESHOLD)) / (w * h), 5),
            "width": w, "height": h}
