"""A small synthetic product with injectable defects, for tests, the demo and the benchmark.

The part: a blue round flange with a yellow label band, four dark bolt holes and a red marker, on a grey
belt, photographed with small random shifts, rotation, lighting changes and sensor noise. Defects:

* `spot`     - a colour spot (contamination) of a colour the part never has;
* `missing`  - a bolt hole is filled (a missing feature);
* `scratch`  - a bright thin line across the flange;
* `shift`    - the label band is displaced (an assembly error: right colours, wrong place).

Pure: returns arrays, writes nothing.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

DEFECTS = ("spot", "missing", "scratch", "shift")
# products of one line (issue 16): the same part in other colours, (flange, label band, marker) in BGR; a profile of
# one judges the others' good parts as defects, so a part judged with the wrong product's profile shows
PRODUCTS = {"flange": ((170, 90, 30), (40, 200, 230), (40, 40, 200)),
            "cap": ((140, 140, 40), (60, 60, 200), (230, 230, 230)),
            "ring": ((70, 70, 170), (220, 210, 70), (30, 160, 220))}


def make_part(
    rng: np.random.Generator, width: int = 256, height: int = 192, defect: str | None = None,
    noise: float = 3.0, product: str = "flange",
) -> np.ndarray:
    """Render one part as a BGR uint8 image of shape (height, width, 3), optionally with a defect; `product` picks
    the colours (PRODUCTS)."""
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose from {', '.join(DEFECTS)}")
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; choose from {', '.join(PRODUCTS)}")
    flange, label, red = PRODUCTS[product]
    s = min(width, height) / 192.0
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (118, 120, 124)
    cx = width / 2 + rng.normal(0, 1.5 * s)
    cy = height / 2 + rng.normal(0, 1.5 * s)
    angle = rng.normal(0, 2.0)
    r = 70 * s
    centre = (int(round(cx)), int(round(cy)))
    cv2.circle(img, centre, int(r), flange, -1, cv2.LINE_AA)
    band_dy = (28 * s if defect == "shift" else 0.0)
    band = np.array([[-r * 0.8, -12 * s + band_dy], [r * 0.8, -12 * s + band_dy],
                     [r * 0.8, 12 * s + band_dy], [-r * 0.8, 12 * s + band_dy]])
    cv2.fillPoly(img, [_place(band, cx, cy, angle)], label, cv2.LINE_AA)
    holes = [(-45, -45), (45, -45), (-45, 45), (45, 45)]
    missing = int(rng.integers(0, 4)) if defect == "missing" else -1
    for i, (hx, hy) in enumerate(holes):
        if i != missing:
            p = _place(np.array([[hx * s, hy * s]]), cx, cy, angle)[0]
            cv2.circle(img, (int(p[0]), int(p[1])), int(9 * s), (35, 30, 30), -1, cv2.LINE_AA)
    marker = _place(np.array([[0.0, -55 * s]]), cx, cy, angle)[0]
    cv2.circle(img, (int(marker[0]), int(marker[1])), int(6 * s), red, -1, cv2.LINE_AA)
    if defect == "spot":
        a = rng.uniform(0, 2 * math.pi)
        d = rng.uniform(0.2, 0.6) * r
        p = (int(cx + d * math.cos(a)), int(cy + d * math.sin(a)))
        cv2.circle(img, p, int(rng.uniform(6, 10) * s), (60, 160, 60), -1, cv2.LINE_AA)
    elif defect == "scratch":
        a = rng.uniform(0, math.pi)
        d = rng.uniform(-0.3, 0.3) * r
        p0 = np.array([cx + d * math.sin(a) - 0.7 * r * math.cos(a), cy - d * math.cos(a) - 0.7 * r * math.sin(a)])
        p1 = p0 + 1.4 * r * np.array([math.cos(a), math.sin(a)])
        cv2.line(img, tuple(p0.astype(int)), tuple(p1.astype(int)), (235, 235, 240), max(1, int(2 * s)),
                 cv2.LINE_AA)
    gain = rng.normal(1.0, 0.03)
    out = img.astype(np.float32) * gain + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _place(points: np.ndarray, cx: float, cy: float, angle_deg: float) -> np.ndarray:
    """Rotate points (N, 2) about the origin and move them to (cx, cy); returns int32 (N, 2)."""
    t = math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return np.round(points @ rot.T + [cx, cy]).astype(np.int32)

