"""Sharpness: whether a photo shows as much detail as the good parts did (a camera out of focus, motion blur from
a part that moved during the exposure, a fogged lens).

A blurred photo is a camera's fault, not the part's: every cell looks different from the good parts and every
part would be flagged (an adversarial test, 2026-12-06: a horizontal motion blur of 15 px flagged 33-100% of good
parts of the shared sets). Each registered, normalised working image's detail is read as the mean squared
Laplacian of its grey image in BLOCK x BLOCK px blocks; the good parts' median of it is the typical detail. A
part's sharpness is the median, over the blocks where the typical detail is at least the median block's and
OVER_NOISE times the quietest quarter's (edges and texture: a plain belt's blocks carry only the camera's noise, and
with them a quieter camera read as blurred), of log((part + 1) / (typical + 1)). A part is blurred when its
sharpness lies below the least sharp good training part's (each read against the median of the others) by more than
BLUR_MARGIN (half of that part's detail); verdicts.judge names it (`defect` / `blurred`) where the part is flagged:
it says why, it does not hide the part (docs/line-conditions.md, "Blur").

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

BLOCK = 4  # block side in working pixels
BLUR_MARGIN = float(np.log(2.0))  # blurred: sharpness below the least sharp good part's by more than this (x0.5)
OVER_NOISE = 8.0  # a block has detail when its typical detail is this many times the quietest quarter's
_MIN_BLOCKS = 16  # ... where at least this many blocks have it
_FLOOR = 1.0  # added to the block energies (grey levels squared): a flat block's noise is no detail


def _leave_one_out(logs: np.ndarray) -> np.ndarray:
    """(N,) each row's median over columns of its log detail (N, D) less the (lower) median of the other rows'."""
    n = len(logs)
    order = np.argsort(logs, axis=0, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(n)[:, None], axis=0)
    ordered = np.take_along_axis(logs, order, axis=0)
    middle = (n - 2) // 2  # the lower median of n - 1 values
    others = np.where(ranks > middle, ordered[middle][None, :], ordered[min(middle + 1, n - 1)][None, :])
    return np.median(logs - others, axis=1)


def detail(image: np.ndarray) -> np.ndarray:
    """Block means (BH, BW) float32 of the squared Laplacian of a BGR uint8 image (H, W, 3)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    h, w = grey.shape
    return cv2.resize(lap * lap, (max(1, w // BLOCK), max(1, h // BLOCK)), interpolation=cv2.INTER_AREA)


class FocusModel:
    """The good parts' typical detail and their least sharpness; says how sharp a part is against them."""

    def fit(self, images: Sequence[np.ndarray]) -> "FocusModel":
        """Learn from registered, normalised good working images (H, W, 3) uint8: the typical detail, and the least
        sharpness of a good part, each part read against the median of the others (against a median it is part of,
        a part reads sharper than it is, the more so the fewer the parts: the limit would be too strict)."""
        energies = np.stack([detail(image) for image in images])  # (N, BH, BW)
        self.set_state(np.median(energies, axis=0), 0.0)
        flat = energies.reshape(len(energies), -1)[:, self._detailed.ravel()]  # (N, D) on the detailed blocks
        self.low_ = float(_leave_one_out(np.log(flat + _FLOOR)).min()) if len(flat) > 1 else 0.0
        return self

    def set_state(self, typical: np.ndarray, low: float) -> "FocusModel":
        """Store the typical detail (BH, BW) and the least sharpness of the good parts."""
        self.typical_ = np.asarray(typical, dtype=np.float32)
        self.low_ = float(low)
        # edges and texture: at least the median block, and well above the quietest quarter (a plain belt's camera
        # noise: counted as detail, a quieter camera or a stronger JPEG read as blur; found by an adversarial test)
        median, quiet = float(np.median(self.typical_)), float(np.quantile(self.typical_, 0.25))
        self._detailed = self.typical_ >= max(median, OVER_NOISE * quiet, _FLOOR)
        if self._detailed.sum() < _MIN_BLOCKS:  # texture everywhere (a casting's surface): the upper half
            self._detailed = self.typical_ >= max(median, _FLOOR)
        if not self._detailed.any():  # a blank product: every block
            self._detailed = np.ones_like(self._detailed)
        self._log_typical = np.log(self.typical_[self._detailed] + _FLOOR)
        return self

    def sharpness(self, image: np.ndarray) -> float:
        """Log detail of a registered, normalised working image (H, W, 3) against the typical (0 = as good parts)."""
        energy = detail(image)
        if energy.shape != self.typical_.shape:
            return 0.0
        return float(np.median(np.log(energy[self._detailed] + _FLOOR) - self._log_typical))

    def blurred(self, sharpness: float) -> bool:
        """Whether a part of this sharpness is beyond BLUR_MARGIN below the least sharp good part."""
        return sharpness < self.low_ - BLUR_MARGIN
