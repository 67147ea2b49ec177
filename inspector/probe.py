"""Sensitivity probe: specks pasted on good parts, and how many of them a profile flags.

The retrain gate re-checks the defects operators have confirmed; it cannot see a candidate that has lost its
sensitivity to defects nobody has confirmed yet. One unusual part cleared as good is enough: the candidate's
threshold and the spread its scores are standardised by widen to accept it, and small defects start to pass
(found by an adversarial test: 8 of 8 small spots caught before such a retrain, 3 of 8 after, and the gate let it
through). The probe pastes specks of a ladder of sizes on a few good images, each speck contrasting with the part
where it lands, and counts what a profile flags; the gate compares the candidate's count with the active
profile's on the same specks.

Pure: arrays in, counts out; no file, database or network I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .pipeline import judge
from .profile import NormalProfile

SIZES = (0.02, 0.04, 0.08, 0.16)  # speck diameters as fractions of the image's short side
CONTRAST = 90.0  # grey levels between a speck and the mean of the part where it lands
MAX_IMAGES = 12  # good images specks are pasted on (one speck of each size per image)
MARGIN = 0.15  # specks land in the image's middle, this far from each edge (fractions of each side)
SEED = 20_261_206


@dataclass(frozen=True)
class Speck:
    """One probe: a good image with one speck pasted on it."""

    size: float  # the speck's diameter, a fraction of the image's short side
    image: np.ndarray  # (H, W, 3) uint8 BGR


def pick(n: int, limit: int = MAX_IMAGES) -> list[int]:
    """Indices of up to `limit` of n images, spread evenly (deterministic)."""
    if n <= limit:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, limit).round()]


def paste(image: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of a BGR uint8 image (H, W, 3) with one round speck of diameter `size` x its short side, its colour
    CONTRAST levels from the mean of the pixels it covers (darker on a bright part, brighter on a dark one, per
    channel), somewhere in the middle of the image."""
    h, w = image.shape[:2]
    radius = max(1.0, size * min(h, w) / 2.0)
    cx = rng.uniform(MARGIN * w, (1.0 - MARGIN) * w)
    cy = rng.uniform(MARGIN * h, (1.0 - MARGIN) * h)
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (int(round(cx)), int(round(cy))), int(math.ceil(radius)), 255, -1, cv2.LINE_AA)
    under = np.asarray(cv2.mean(image, mask=mask)[:3])
    colour = np.where(under > 127.5, under - CONTRAST, under + CONTRAST).clip(0, 255)
    alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
    out = image.astype(np.float32) * (1.0 - alpha) + colour.astype(np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def specks(images: Sequence[np.ndarray], sizes: Sequence[float] = SIZES, seed: int = SEED) -> list[Speck]:
    """One speck of each size pasted on each of up to MAX_IMAGES good BGR images (H, W, 3); deterministic."""
    rng = np.random.default_rng(seed)
    return [Speck(size, paste(images[i], size, rng)) for i in pick(len(images)) for size in sizes]


def caught(profile: NormalProfile, probes: Sequence[Speck], batch: int = 8) -> dict[float, int]:
    """How many specks of each size the profile flags (judged as the watcher judges a part: a defect verdict)."""
    counts = {p.size: 0 for p in probes}
    for start in range(0, len(probes), batch):
        chunk = probes[start:start + batch]
        for probe, found in zip(chunk, profile.assess(p.image for p in chunk)):
            counts[probe.size] += judge(found, profile.threshold_)[0] == "defect"
    return counts
