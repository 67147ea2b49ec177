"""Lighting variations a profile learns to accept: copies of the good training parts under other lightings.

Normalisation (photometry.py) undoes a lighting change only as far as a part shows it: a grey casting fills a
narrow band of grey levels, where an offset and a gain cannot be told apart, and a black lowered by 10 levels
crushes what was darker than that for good. What normalisation leaves is small but systematic, and a profile
that never saw it flags every part of a line whose lamp has aged. So at fit time each registered training
part is also photographed, in effect, under `lighting_copies` lightings drawn from the range every line must
tolerate (below; at most MAX_COPIED parts are copied); each copy is normalised exactly as a part on the line would be, and joins the references
the parts are compared with and the held-out scores the threshold is calibrated on (a copy is held out with
its original, never scored against it).

The range: exposure x0.9..x1.1, black lifted or lowered by up to 10 grey levels, a warmer or cooler lamp
(red up to 5% up and blue as much down, or the reverse) and gamma 0.9..1.1, each drawn independently; on
a dark product the offset and the gamma change are held to what moves its typical grey level by 10% (`draw`). A
lighting beyond `max_exposure_change` of the trained one is rejected instead (profile.py).

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ACCEPT_GAIN = 0.10  # exposure x(1 - 0.1)..x(1 + 0.1)
ACCEPT_OFFSET = 10.0  # grey levels the black may be lifted or lowered by
ACCEPT_CAST = 0.05  # red up and blue down (warmer lamp) by up to this share, or the reverse
ACCEPT_GAMMA = 0.10  # gamma 0.9..1.1
# at most this many parts are copied (chosen evenly): a large training set already holds parts in many lights,
# and the copies neither double a large profile's memory nor its fit time
MAX_COPIED = 250


@dataclass(frozen=True)
class Variation:
    """One lighting: out = 255 * (in / 255) ** gamma * gain * tint + offset, per BGR channel, clipped."""

    gain: float
    offset: float
    warmth: float  # red x (1 + warmth), blue x (1 - warmth)
    gamma: float

    def lut(self) -> np.ndarray:
        """The lookup table (1, 256, 3) uint8 that applies this lighting to a BGR image."""
        levels = np.arange(256, dtype=np.float64) / 255.0
        tint = np.array([1.0 - self.warmth, 1.0, 1.0 + self.warmth])
        out = 255.0 * levels[:, None] ** self.gamma * self.gain * tint[None, :] + self.offset
        return np.clip(np.round(out), 0, 255).astype(np.uint8).reshape(1, 256, 3)


def draw(rng: np.random.Generator, typical: float = 0.5) -> Variation:
    """A lighting drawn uniformly from the range every line must tolerate, for a product whose typical grey level
    is `typical` (0..1): on a dark product an offset or a gamma change moves its levels by a large ratio (10 levels
    on a black tyre at 18 is +55%), so each is held to what moves the typical level by at most ACCEPT_GAIN."""
    level = min(max(typical, 1.0 / 255.0), 1.0)
    offset_range = min(ACCEPT_OFFSET, ACCEPT_GAIN * 255.0 * level)
    gamma_range = min(ACCEPT_GAMMA, ACCEPT_GAIN / max(-np.log(level), 1e-6))
    gain, offset, warmth, gamma = rng.uniform(-1.0, 1.0, size=4)
    return Variation(1.0 + ACCEPT_GAIN * gain, offset_range * offset, ACCEPT_CAST * warmth, 1.0 + gamma_range * gamma)


def copied_parts(n: int) -> np.ndarray:
    """Indices (M,) of the parts, of n, that get lighting copies: all of them up to MAX_COPIED, else evenly."""
    if n <= MAX_COPIED:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_COPIED).round().astype(int))


def relit(image: np.ndarray, variation: Variation) -> np.ndarray:
    """A BGR uint8 image (H, W, 3) under another lighting (H, W, 3) uint8."""
    return cv2.LUT(image, variation.lut())
