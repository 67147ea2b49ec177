"""The part of a photo that is no photograph: the constant colour a turn or shift of the image leaves in its corners
and along its sides (OpenCV's and Pillow's default fill is black), found by its shape and painted over.

A photo turned by some angle and shifted (a part placed by hand, simulated; a camera image straightened by another
tool) keeps its data inside a convex polygon whose sides run along the turned frame, at most 8 of them; outside it
every pixel holds one colour. Judged as photographed, that fill reads as a large dark stain wherever it falls, and
the good parts it is learned from carry it at other places, so the comparison and the lighting estimate lose their
footing (measured: casting parts turned and shifted with a black fill were caught 18% at the threshold where the
same turns with the border replicated were caught 97%). `unfilled` paints every filled pixel with the nearest
photographed one, which is what OpenCV's replicated border gives for the same turn, and says where it painted.

It is found only where the shape says so: a colour of a corner, connected to the border, whose complement is a
convex polygon of at most MAX_SIDES sides that all run along one turned frame (within SIDE_TOLERANCE degrees), whose
opposite sides lie as far apart as the photo is wide or high (a turn keeps the photo's size), which covers at least
DATA_MIN_SHARE of the photo, and beyond whose sides almost every pixel is that colour. A bright backlight or a black
velvet around a round or irregular part, letterbox bars, a label or board on a clipped background in the middle of
the field and a line of the fill's colour across the photo fail it and are left as photographed (found by an
adversarial review). Left as a limit: a rectangular part covering more than half the field, lying in a corner of it
on a background clipped to one exact colour, reads as a shifted photo, and its background is painted over.
Pure: arrays in, arrays out.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

FILL_TOLERANCE = 6  # grey levels a filled pixel may lie from the fill's colour (a JPEG's ringing, a PNG's 0)
EXACT_LEVELS, EXACT_SHARE = 1, 0.8  # ... and most of it within this (a turn's fill is one colour, and a JPEG keeps
# it so away from its edge; a lit background's gradient within FILL_TOLERANCE is a region of the photo with a straight
# edge, found on the castings as photographed)
CORNER_LEVELS = 3  # a corner's 3 x 3 pixels within this of its colour, where a fill is looked for (a JPEG's ringing)
FILL_MIN_SHARE = 0.002  # a fill covering less of the photo than this is left as it is
DATA_MIN_SHARE = 0.5  # a fill leaves at least this much of the photo (a turn shifted by up to 10% of the field leaves
# 70% or more; more fill: an empty or dark field, or a part on a clipped background)
PAINTED_FILL_SHARE = 0.95  # of the pixels beyond the sides (past the blended rim), at least this share has the fill's
# colour (a line of that colour across the photo joins the fill, and the far side of it is photograph)
DATA_MIN_REACH = 0.75  # ... and reaches at least this share of the photo's shorter side across from a side
SIZE_TOLERANCE = 0.02  # opposite sides lie the photo's width or height apart, within this share (and 2 pixels)
SOLIDITY = 0.97  # the photographed region fills its convex hull at least this much
MAX_SIDES = 8  # a rectangle turned and shifted inside the frame keeps at most 8 sides
SIDE_TOLERANCE = 2.5  # degrees: the sides inside the frame run along one turned frame (0 or 90 degrees apart)
APPROX = 0.004  # the polygon follows the hull within this share of the image's width and height (0.008: black and
# white JPEG fills at quality 85 found 3 -> 5 of 8 turns, at quality 95 7 -> 6 of 8: not kept)
OPEN = 3  # the photographed region is opened by this many pixels before its outline is taken (a JPEG's ringing
# frays the edge into extra corners: black and white fills at quality 75 and 85 found 3 -> 6 of 8 turns)
SEARCH_SIDE = 128  # the fill is looked for on an image about this many pixels on its shorter side
BORDER_NEAR = 2.0  # sampled pixels: a side this close to the border is a thin wedge of fill, or the border itself
RIM = 2  # pixels painted beyond the polygon: the turn's interpolation blends the fill into its first pixel or two


def find_fill(image: np.ndarray) -> np.ndarray | None:
    """Where a BGR uint8 image (H, W, 3) holds a turn's or shift's constant fill: (H, W) bool, or None (none found).
    Looked for on every step-th pixel (a few hundred microseconds on a photo without one), drawn at full size."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"find_fill takes a BGR uint8 image (H, W, 3), not {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < 16:
        return None
    step = max(1, round(min(h, w) / SEARCH_SIDE))
    small = image[::step, ::step]  # a view: copied only once a corner looks filled; pixel i is the photo's i * step
    sh, sw = small.shape[:2]
    tried: list[np.ndarray] = []
    for y, x in ((0, 0), (0, sw - 1), (sh - 1, 0), (sh - 1, sw - 1)):
        colour = small[y, x].astype(np.int16)
        block = small[max(0, y - 1): y + 2, max(0, x - 1): x + 2].reshape(-1, 3).astype(np.int16)
        if np.abs(block - colour).max() > CORNER_LEVELS:  # a fill's corner is one colour; a photo's is noisy
            continue
        if any(np.abs(colour - t).max() <= FILL_TOLERANCE for t in tried):
            continue
        tried.append(colour)
        small = np.ascontiguousarray(small)
        found = _data_polygon(small, colour)
        if found is None:
            continue
        poly, filled = found
        sides = [i for i in _inner_sides(poly, sw, sh) if _holds_fill(poly, i, filled)]
        full = poly * step
        if not sides or not _photo_sized(full, sides, w, h):
            continue
        fill = _painted(image, colour, full, sides, RIM + step - 1)
        if fill is not None:
            return fill
    return None


def _painted(image: np.ndarray, colour: np.ndarray, poly: np.ndarray, sides: list[int], reach: int
             ) -> np.ndarray | None:
    """The fill (H, W) bool of a photo (H, W, 3): what lies beyond the inner `sides` of its data polygon (K, 2), in
    pixels of the photo, and `reach` pixels within them; None where what lies clearly beyond the sides is not almost
    all the fill's colour (3,) (photograph beyond a line of the fill's colour)."""
    h, w = image.shape[:2]
    outside = _outside_sides(poly, sides, w, h)
    deep = outside > reach + 1
    n_deep = int(deep.sum())
    if n_deep >= FILL_MIN_SHARE * h * w and np.count_nonzero(_near(image, colour)[deep]) < PAINTED_FILL_SHARE * n_deep:
        return None
    # all of it beyond the sides, their lines extended: a side crossing the border at a shallow angle blends fill
    # into a run of border pixels further than `reach` from any pixel of the fill's colour (painting only near that
    # colour left such runs as dark lines along the border: castings turned with black corners caught 0.735 against
    # 0.894 at seed 0); the price is a strip of `reach` pixels along a border a side's line runs close to
    fill = outside > -reach
    return fill if fill.sum() >= FILL_MIN_SHARE * h * w else None


def _near(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Where an image (H, W, 3) lies within FILL_TOLERANCE of a colour (3,): (H, W) uint8, 255 there."""
    low = np.clip(colour - FILL_TOLERANCE, 0, 255).astype(np.float64).tolist()
    high = np.clip(colour + FILL_TOLERANCE, 0, 255).astype(np.float64).tolist()
    return cv2.inRange(image, tuple(low), tuple(high))


def _data_polygon(image: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The polygon (K, 2) float, in pixels, that holds an image's (H, W, 3) photograph where the rest is the fill of
    one corner's colour (3,) along one turned frame, and that fill (H, W) uint8 (255: filled); else None."""
    h, w = image.shape[:2]
    near = _near(image, colour)
    if cv2.countNonZero(near) < FILL_MIN_SHARE * h * w:
        return None
    _, labels = cv2.connectedComponents(near, connectivity=4)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    touching = np.zeros(int(labels.max()) + 1, np.uint8)
    touching[edge[edge > 0]] = 255
    filled = touching[labels]
    n_filled = cv2.countNonZero(filled)
    if n_filled < FILL_MIN_SHARE * h * w:
        return None
    # one colour, not a region of the photo within the tolerance of it (a background's gradient is straight too)
    # (inside its blended edge, which a thin strip of fill is mostly made of)
    core = cv2.erode(filled, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    exact = cv2.inRange(image, tuple((colour - EXACT_LEVELS).tolist()), tuple((colour + EXACT_LEVELS).tolist()))
    if cv2.countNonZero(cv2.bitwise_and(exact, core)) < EXACT_SHARE * max(cv2.countNonZero(core), 1):
        return None
    data = cv2.morphologyEx(cv2.bitwise_not(filled), cv2.MORPH_OPEN, np.ones((OPEN, OPEN), np.uint8))
    contours, _ = cv2.findContours(data, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    outline = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(outline)
    if area < DATA_MIN_SHARE * h * w:
        return None
    hull = cv2.convexHull(outline)
    if area < SOLIDITY * cv2.contourArea(hull):
        return None
    poly = cv2.approxPolyDP(hull, max(1.5, APPROX * (h + w)), True).reshape(-1, 2)
    if not 3 <= len(poly) <= MAX_SIDES or not _along_one_frame(poly, w, h):
        return None
    return poly.astype(np.float64), filled


def _inner_sides(poly: np.ndarray, w: int, h: int, near: float = 0.0) -> list[int]:
    """The sides of a polygon (K, 2) in a w x h image that do not lie along its border (within `near` pixels): side
    i runs from corner i to corner i + 1."""
    def on_border(a: np.ndarray, b: np.ndarray) -> bool:
        return any(abs(a[i] - v) <= near and abs(b[i] - v) <= near
                   for i, v in ((0, 0), (0, w - 1), (1, 0), (1, h - 1)))

    return [i for i in range(len(poly)) if not on_border(poly[i], poly[(i + 1) % len(poly)])]


def _along_one_frame(poly: np.ndarray, w: int, h: int) -> bool:
    """Whether the sides of a polygon (K, 2) that do not lie on the image's border all run along one frame turned by
    some angle (directions equal modulo 90 degrees), with at least one such side."""
    # a side a pixel or two off the border is a thin wedge, too short to tell its direction, or the border itself as
    # approximated: left out (so a thin strip alone, a turn of a degree or two or a shift by 1-2%, is not found: a
    # fallback to it found dead sensor rows and a saturated window band, found by an adversarial review)
    sides = _inner_sides(poly, w, h, near=BORDER_NEAR)
    if not sides:
        return False
    d = np.array([poly[(i + 1) % len(poly)] - poly[i] for i in sides], dtype=np.float64)
    angles = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 90.0
    lengths = np.hypot(d[:, 0], d[:, 1])
    # directions modulo 90 on a circle: four times the angle, so 0 and 89.9 degrees lie together; the longest side
    # sets the direction, and a short side may turn from it as far as a pixel at each end makes it
    z = np.exp(1j * np.radians(4.0 * angles))
    off = np.degrees(np.abs(np.angle(z / z[int(np.argmax(lengths))]))) / 4.0
    allowed = np.maximum(SIDE_TOLERANCE, np.degrees(np.arctan2(2.0, np.maximum(lengths, 1.0))))
    return bool((off <= allowed).all())


def _holds_fill(poly: np.ndarray, i: int, filled: np.ndarray) -> bool:
    """Whether side i of a polygon (K, 2) has fill (H, W) uint8 beyond it: a side within a few pixels of the border
    is a thin wedge of fill only where the border beside it is filled (else the border itself, approximated)."""
    h, w = filled.shape
    a, b = poly[i], poly[(i + 1) % len(poly)]
    for axis, edge in ((0, 0), (0, w - 1), (1, 0), (1, h - 1)):
        if abs(a[axis] - edge) <= BORDER_NEAR and abs(b[axis] - edge) <= BORDER_NEAR:
            lo, hi = sorted((int(a[1 - axis]), int(b[1 - axis])))
            run = filled[lo: hi + 1, int(edge)] if axis == 0 else filled[int(edge), lo: hi + 1]
            return bool(run.size) and float(np.mean(run > 0)) >= 0.2
    return True


def _photo_sized(poly: np.ndarray, sides: list[int], w: int, h: int) -> bool:
    """Whether opposite inner sides of a data polygon (K, 2), in pixels of a w x h photo, lie the photo's width or
    height apart, as the sides of the photo itself turned do (a label, a board or letterbox bars do not), and a side
    without one opposite has the photograph reach at least DATA_MIN_REACH of the photo's shorter side across from it
    (a shift by 10% leaves 90%; a saturated band across the top of the field is no shift). Measured across the
    longest side's direction and the one square to it (a short side's own direction is degrees off)."""
    ends = [(poly[i], poly[(i + 1) % len(poly)]) for i in sides]
    longest = max(ends, key=lambda e: float(np.hypot(*(e[1] - e[0]))))
    u = (longest[1] - longest[0]) / max(float(np.hypot(*(longest[1] - longest[0]))), 1e-9)
    for axis in (u, np.array([-u[1], u[0]])):  # sides along this axis, measured across it
        across = np.array([-axis[1], axis[0]])
        at = [float(np.dot((a + b) / 2.0, across)) for a, b in ends
              if abs(float(np.dot((b - a) / max(float(np.hypot(*(b - a))), 1e-9), axis))) > 0.7]
        if not at:
            continue
        apart = max(at) - min(at)
        if apart < 0.25 * min(w, h):  # one side (or pieces of it)
            reach = poly @ across
            if float(reach.max() - reach.min()) < DATA_MIN_REACH * min(w, h):
                return False
            continue
        if min(abs(apart - w) / w, abs(apart - h) / h) > SIZE_TOLERANCE and min(abs(apart - w), abs(apart - h)) > 2:
            return False
    return True


def _outside_sides(poly: np.ndarray, sides: list[int], w: int, h: int) -> np.ndarray:
    """(h, w): how far each pixel lies outside a convex polygon's (K, 2) inner `sides`, the furthest of them, each
    line extended past its corners (a turned frame's side runs on past where the polygon meets the border, and the
    pixels it crosses there are blended with the fill); negative inside."""
    centre = poly.mean(axis=0)
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    outside = np.full((h, w), -np.inf)
    for i in sides:
        a, b = poly[i], poly[(i + 1) % len(poly)]
        n = np.array([b[1] - a[1], a[0] - b[0]], dtype=np.float64)
        n /= max(float(np.hypot(*n)), 1e-9)
        if float(np.dot(centre - a, n)) > 0:  # outward
            n = -n
        outside = np.maximum(outside, (xs - a[0]) * n[0] + (ys - a[1]) * n[1])
    return outside


def unfilled(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A BGR uint8 image (H, W, 3) with its fill (see find_fill) painted by the nearest photographed pixel, and the
    fill (H, W) bool; the image itself and None where it has none."""
    fill = find_fill(image)
    if fill is None:
        return image, None
    return paint_nearest(image, fill), fill


def paint_nearest(image: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """A copy of an image (H, W, C) whose `fill` pixels (H, W) bool hold the nearest (Euclidean) other pixel's value."""
    src = fill.astype(np.uint8)
    _, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    kept = np.flatnonzero(src.ravel() == 0)
    lut = np.zeros(int(labels.max()) + 1, np.int64)
    lut[labels.ravel()[kept]] = kept
    flat = image.reshape(-1, image.shape[2]) if image.ndim == 3 else image.reshape(-1)
    return flat[lut[labels.ravel()]].reshape(image.shape)
