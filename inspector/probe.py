"""Sensitivity probe: specks pasted on good parts, and how far each profile's scores of them reach.

The retrain gate re-checks the defects operators have confirmed; it cannot see a candidate that has lost its
sensitivity to defects nobody has confirmed yet. One unusual part cleared as good is enough: the candidate's
threshold and the spread its scores are standardised by widen to accept it, and small defects start to pass
(found by an adversarial test: 8 of 8 small spots caught before such a retrain, 3 of 8 after, and the gate let it
through). The probe pastes specks of a ladder of sizes on a few good images, each on the part (away from the
colour of the photo's border) and contrasting with it where it lands, and measures how far each speck's score
reaches towards the profile's threshold (and how many it flags); the gate compares the candidate's mean reach with
the active profile's, and with the lineage's first profile's, on the same specks.

A part that fills the photo to its edges gets its specks where it differs from its edge colour (its holes and
marks, say) or, where nothing stands out, in the photo's middle.

Pure: arrays in, figures out; no file, database or network I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .profile import NormalProfile
from .verdicts import judge

SIZES = (0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.16)  # speck diameters, fractions of the short side
CONTRAST = 90.0  # grey levels between a speck and the mean of the part where it lands
MAX_IMAGES = 12  # good images specks are pasted on (one speck of each size per image)
MARGIN = 0.15  # without a part to aim at, specks land in the image's middle, this far from each edge
PART_COLOUR = 40.0  # a pixel this far (BGR distance) from the photo's border colour is on the part
MIN_PART = 0.01  # ... when such pixels cover at least this share of the photo (and not nearly all of it)
MAX_REACH = 2.0  # a speck's reach counts up to twice the way to the threshold (larger specks say nothing more)
SEED = 20_261_206
_SUBPIXEL = 4  # cv2.circle's fractional bits


@dataclass(frozen=True)
class Speck:
    """One probe: a good image with one speck pasted on it."""

    size: float  # the speck's diameter, a fraction of the image's short side
    image: np.ndarray  # (H, W, 3) uint8 BGR


@dataclass(frozen=True)
class Sensitivity:
    """What one profile makes of the specks."""

    flagged: tuple[int, ...]  # specks judged defect, per size (SIZES)
    reach: float  # mean over specks of (score - median good score) / (threshold - median good score), clipped to
    # 0..MAX_REACH: 1 is a speck at the threshold; comparable between profiles of different scales; NaN when the
    # profile's threshold or typical score is not finite (nothing to compare)


def pick(n: int, limit: int = MAX_IMAGES) -> list[int]:
    """Indices of up to `limit` of n images, spread evenly (deterministic)."""
    if n <= limit:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, limit).round()]


def on_part(image: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Where a speck of this radius may land (rows (K,), columns (K,)) on a BGR image (H, W, 3): on the part, i.e.
    away from the colour of the photo's border (the belt or fixture around it), else in the image's middle (a part
    that fills the photo, or nothing that stands out)."""
    h, w = image.shape[:2]
    frame = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    far = np.linalg.norm(image.astype(np.float32) - np.median(frame, axis=0), axis=2) > PART_COLOUR
    r = int(math.ceil(radius))
    inner = np.zeros((h, w), np.uint8)
    inner[r + 1:h - r - 1, r + 1:w - r - 1] = 1
    within = cv2.erode(far.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    part = within & inner
    if part.mean() < MIN_PART:  # a speck larger than the part's inside: centred on the part, over its edge
        part = far.astype(np.uint8) & inner
    if not MIN_PART <= part.mean() <= 0.95:
        part = np.zeros((h, w), np.uint8)
        part[int(MARGIN * h):max(int((1 - MARGIN) * h), int(MARGIN * h) + 1),
             int(MARGIN * w):max(int((1 - MARGIN) * w), int(MARGIN * w) + 1)] = 1
    rows, cols = np.nonzero(part)
    return rows, cols


def paste(image: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of a BGR uint8 image (H, W, 3) with one round speck of diameter `size` x its short side on the part,
    its colour CONTRAST levels from the mean of the pixels it covers (darker on a bright part, brighter on a dark
    one, per channel)."""
    h, w = image.shape[:2]
    radius = max(1.0, size * min(h, w) / 2.0)
    rows, cols = on_part(image, radius)
    i = int(rng.integers(len(rows)))
    mask = np.zeros((h, w), np.uint8)
    one = 1 << _SUBPIXEL  # drawn at its true radius (anti-aliased edge), not rounded up to whole pixels
    cv2.circle(mask, (int(cols[i]) * one, int(rows[i]) * one), int(round(radius * one)), 255, -1, cv2.LINE_AA,
               _SUBPIXEL)
    under = np.asarray(cv2.mean(image, mask=mask)[:3])
    colour = np.where(under > 127.5, under - CONTRAST, under + CONTRAST).clip(0, 255)
    alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
    out = image.astype(np.float32) * (1.0 - alpha) + colour.astype(np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def specks(images: Sequence[np.ndarray], sizes: Sequence[float] = SIZES, seed: int = SEED) -> list[Speck]:
    """One speck of each size pasted on each of up to MAX_IMAGES good BGR images (H, W, 3); deterministic."""
    rng = np.random.default_rng(seed)
    return [Speck(size, paste(images[i], size, rng)) for i in pick(len(images)) for size in sizes]


def measure(profile: NormalProfile, probes: Sequence[Speck], batch: int = 8) -> Sensitivity:
    """What the profile makes of the specks: how many of each size (SIZES) it flags, judged as the watcher judges a
    part, and their mean reach towards its threshold (a speck flagged without a score above it, as not located,
    counts MAX_REACH; a non-finite score counts as its sign says)."""
    middle = float(np.median(profile.oof_scores_[: profile.n_train_]))
    span = profile.threshold_ - middle
    flagged = {size: 0 for size in SIZES}
    reach = []
    for start in range(0, len(probes), batch):
        chunk = probes[start:start + batch]
        for probe, found in zip(chunk, profile.assess(p.image for p in chunk)):
            defect = judge(found, profile.threshold_)[0] == "defect"
            flagged[probe.size] = flagged.get(probe.size, 0) + defect
            if defect and not found.score > profile.threshold_:  # not located: flagged whatever its score
                reach.append(MAX_REACH)
            elif math.isnan(found.score):
                reach.append(0.0)
            else:
                reach.append(min(max((found.score - middle) / max(span, 1e-6), 0.0), MAX_REACH))
    if not (math.isfinite(middle) and math.isfinite(profile.threshold_) and span > 0):
        mean = math.nan
    else:
        mean = float(np.mean(reach)) if reach else math.nan
    return Sensitivity(tuple(flagged.get(size, 0) for size in SIZES), mean)
