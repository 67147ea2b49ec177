"""Stuck sensor lines: a column or row of the photo that stands out of its neighbours along its whole length.

A camera whose sensor or cable fails writes one column (or row) stuck bright or dark on every photo. An adversarial
test (2026-12-06) had a stuck white column or row read as a `size` defect on 44 and 49 of 54 tyres (the line pulls
the part's outline) and as plain defects on every bottle, with nothing that pointed at the camera. A part that would
not pass and whose photo shows such a line is a `defect` with reason `sensor`, its detail naming the line
(verdicts.judge); a streak of them raises the station's `camera_sensor` alarm (drift.py). A defect, not a
rejection: one photo cannot tell a stuck column from a streak along a strip product lying square to the pixels (a
review, 2026-12-07), and a real defect must never be lost; as with blur, it says why, it does not hide the part.

A pixel stands out of its row when it is brighter (or darker) than a neighbour on each side by more than LINE_LEVELS
grey levels (the brightest channel; the neighbours next to it, or one of them a pixel further: a line two pixels
wide or spread by JPEG); a column's share is how much of its length stands out with one sign. An edge between two
regions (a part's outline, a stain with a hard edge across the whole photo) is no line: beside it, on one side, is a
pixel like itself. Measured on the shared sets' photos (2026-12-07; 60 photos of each set's training and test parts,
a 1-px white column or row written into the full-size photo, then JPEG 92 and the decode the profile needs): a stuck
line stands out along 82-100% of its length (the rest: where the part behind it is as bright as the line), their own
most line-like column or row along 7-17%. A column is a line when its share reaches the profile's column limit:
STUCK_SHARE, or TRAIN_MARGIN above the training photos' most line-like column where that is higher (with 20 photos
or more, the second most line-like photo's: one photo with a hair across it must not switch the check off); rows
alike, with their own limit. A large training set is sampled (LIMIT_SAMPLE photos at random, seeded: ~1-2 ms a
photo). A product photographed with a seam or a wire across the whole frame keeps its line (the limit exceeds 1: the
check is off for that direction). More than MAX_LINES separate lines at once are a pattern (an interlaced camera's
alternate rows, a weave), not a stuck line (counting those that reach PATTERN of the limit); so is a band of them
wider than MAX_WIDTH. Read only for a part that would not pass (the profile's `_assess_one`): a
good part's photo costs nothing.

What it cannot see: a line in the two columns or rows at each border; one 3 pixels wide or more; a line where the
photo is decoded much smaller than the sensor (a 5 MP JPEG decoded at 1/8 for a small fine size dilutes a 1-px
column eightfold: a white column on a background of 180 vanishes, at 1/4 it is seen).

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LINE_LEVELS = 12  # a pixel stands out when it is brighter (darker) than a neighbour on each side by more than this
STUCK_SHARE = 0.6  # a column (row) standing out along at least this share of its length is a line
TRAIN_MARGIN = 0.2  # ... and at least this much more than the training photos' most line-like column (row)
ROBUST_FROM = 20  # with at least this many training photos, the second most line-like one sets the limit
LIMIT_SAMPLE = 200  # the limits are learned on at most this many training photos (the profile draws them)
MAX_LINES = 3  # more separate lines than this at once: a pattern (interlacing, a weave), not a stuck line
PATTERN = 0.5  # ... counting those that reach this share of the limit (a pattern's lines stand out unevenly)
MAX_WIDTH = 3  # ... or a band of adjacent lines wider than this (alternate rows bright and dark: every row stands out)


def line_shares(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a BGR uint8 image (H, W, 3): each column's (W,) and each row's (H,) share of its length that stands out
    of its neighbours on both sides with one sign (the two border columns and rows on each side: 0)."""
    grey = _grey(image)
    return _shares(grey)[0], _shares(grey.T)[0]


def _grey(image: np.ndarray) -> np.ndarray:
    """The brightest channel (H, W) of a BGR image, or the image itself when it has one channel."""
    if image.ndim == 2:
        return image
    if image.shape[2] != 3:
        return image.max(axis=2)
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])  # 25 times .max(axis=2)'s speed


def _shares(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a (H, W) image: the larger of the shares of its pixels brighter, or darker, than a neighbour on
    each side by more than LINE_LEVELS, and how far they stand out on average; (W,) float64 each. The neighbours
    are those next to it, or one further on one side (a line two pixels wide, or spread by JPEG); an edge between
    two regions is no line: on one side of it the pixel has a neighbour like itself."""
    share, size = np.zeros(grey.shape[1]), np.zeros(grey.shape[1])
    if grey.shape[1] < 5 or grey.shape[0] == 0:
        return share, size
    g = grey.astype(np.int16)  # differences of 8-bit values fit
    c = g[:, 2:-2]  # (H, W - 4): columns 2 .. W - 3
    # each pixel against its neighbours 1 and 2 to the left (dl1, dl2) and to the right (dr1, dr2); it stands out
    # brighter by the least of its differences from a left and a right neighbour, best over (l1, r1), (l1, r2),
    # (l2, r1): max(min(dl1, dr1), min(dl1, dr2), min(dl2, dr1)), written with half the passes; darker alike
    dl1, dl2, dr1, dr2 = c - g[:, 1:-3], c - g[:, :-4], c - g[:, 3:-1], c - g[:, 4:]
    up = np.maximum(np.minimum(dl1, np.maximum(dr1, dr2)), np.minimum(dl2, dr1))
    down = -np.minimum(np.maximum(dl1, np.minimum(dr1, dr2)), np.maximum(dl2, dr1))
    bright, dark = (up > LINE_LEVELS).mean(axis=0), (down > LINE_LEVELS).mean(axis=0)
    share[2:-2] = np.maximum(bright, dark)
    size[2:-2] = np.where(bright >= dark, np.maximum(up, 0).mean(axis=0), np.maximum(down, 0).mean(axis=0))
    return share, size


def _pattern(indices: np.ndarray) -> bool:
    """Whether sorted column (row) indices make more than MAX_LINES separate lines (adjacent ones: one line) or a
    band wider than MAX_WIDTH (a stuck line, with the neighbour JPEG lifted, is 3 pixels at most)."""
    if not indices.size:
        return False
    breaks = np.flatnonzero(np.diff(indices) > 1)
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks, indices.size - 1]
    return len(starts) > MAX_LINES or int((indices[ends] - indices[starts]).max()) + 1 > MAX_WIDTH


def strengths(image: np.ndarray) -> tuple[float, float]:
    """How line-like the most line-like column and the most line-like row of an image (H, W, 3) are: their shares."""
    cols, rows = line_shares(image)
    return float(cols.max(initial=0.0)), float(rows.max(initial=0.0))


def learn_limits(images: Sequence[np.ndarray]) -> tuple[float, float]:
    """The (column, row) line limits learned from (a sample of, see LIMIT_SAMPLE) a product's training photos."""
    return limit_for([strengths(image) for image in images])


def limit_for(found: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The (column, row) line limits for a product whose training photos have these strengths."""
    out = []
    for axis in (0, 1):
        values = sorted(s[axis] for s in found)
        typical = values[-2] if len(values) >= ROBUST_FROM else (values[-1] if values else 0.0)
        out.append(max(STUCK_SHARE, typical + TRAIN_MARGIN))
    return out[0], out[1]


def stuck_line(image: np.ndarray, limits: tuple[float, float] = (STUCK_SHARE, STUCK_SHARE)) -> str | None:
    """A detail naming the line across an image (H, W, 3) when one column or row (or a few) reaches its limit, else
    None (none, or a pattern: more than MAX_LINES lines or a band wider than MAX_WIDTH)."""
    grey = _grey(image)
    found = []
    for name, (shares, sizes), limit in (("column", _shares(grey), limits[0]), ("row", _shares(grey.T), limits[1])):
        over = np.flatnonzero(shares >= limit)
        if not over.size:
            continue
        if _pattern(np.flatnonzero(shares >= PATTERN * limit)):  # many at once, or a wide band: a pattern
            return None
        i = int(over[np.argmax(sizes[over])])  # the line itself rather than a pixel beside it JPEG lifted too
        found.append((float(sizes[i]), float(shares[i]), name, i, len(shares)))
    if not found:
        return None
    _, share, name, i, across = max(found)
    where = f"{100 * i / across:.0f}% from the {'left' if name == 'column' else 'top'}"
    return (f"a line across the whole photo, {where} (a {name} unlike both its neighbours along {100 * share:.0f}% "
            f"of its length): a stuck sensor {name} if every part shows it (check the camera's sensor and cable), "
            "or a streak along the part")
