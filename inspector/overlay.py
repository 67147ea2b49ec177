"""The anomaly-map overlay: a part's image with its map blended in and the region above normal outlined.

Pure (OpenCV and numpy only, no file I/O), so the watcher draws overlays without importing the report's
plotting libraries (matplotlib, scikit-learn), which took seconds at the first defect after a start.
"""

from __future__ import annotations

import cv2
import numpy as np

MAP_CLIP = 2.0  # colour scale of the overlay, in map units: 0 -> blue, MAP_CLIP -> red
MAP_LIMIT = 1.0  # top of the normal range in map units; the overlay draws a contour around values above it
BLEND_FROM = 0.5  # map value where the colour tint starts; it reaches full `alpha` at BLEND_FROM + 1


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the (GH, GW) map-unit anomaly map as JET colours over the (H, W, 3) uint8 BGR image; (H, W, 3) uint8."""
    image, amap = check_pair(image, amap)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = image.shape[:2]
    a = amap.astype(np.float32)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=MAP_CLIP, neginf=0.0)
    up = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
    # Tint only where the map is high-ish: none below BLEND_FROM, half at the normal limit, full from 1.5 up.
    # Whole-image OpenCV passes (a weight of 0 leaves a pixel exactly as it was): a defect tinting a third of a 324 px
    # overlay took 1.8 ms by numpy on the tinted pixels alone, 0.2 so.
    weight = cv2.multiply(cv2.min(cv2.max(up - BLEND_FROM, 0.0), 1.0), alpha)  # (H, W) float32, 0..alpha
    shades = cv2.convertScaleAbs(cv2.min(cv2.max(up, 0.0), MAP_CLIP), alpha=255.0 / MAP_CLIP)  # (H, W) uint8, rounded
    colour = cv2.applyColorMap(shades, cv2.COLORMAP_JET)  # (H, W, 3)
    out = cv2.blendLinear(np.ascontiguousarray(image), colour, 1.0 - weight, weight)
    contours, _ = cv2.findContours((up > MAP_LIMIT).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        t = max(1, round(min(h, w) / 300))
        cv2.drawContours(out, contours, -1, (0, 0, 0), t + 2, cv2.LINE_AA)  # dark rim: visible on light parts
        cv2.drawContours(out, contours, -1, (255, 255, 255), t, cv2.LINE_AA)
    return out


def check_pair(image: np.ndarray, amap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raise ValueError unless image is non-empty (H, W, 3) uint8 and amap non-empty (GH, GW) real."""
    image = np.asarray(image)
    amap = np.asarray(amap)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"image must be a non-empty (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
    if amap.ndim != 2 or 0 in amap.shape or not np.issubdtype(amap.dtype, np.number) or np.iscomplexobj(amap):
        raise ValueError(f"amap must be a non-empty real (GH, GW) array, got {amap.shape} {amap.dtype}")
    return image, amap
