"""Colour segmentation: a palette learned once by k-means, then a lookup-table assignment per pixel.

The tutorial this product grew from runs `cv2.kmeans` on every image (K = 2..20, k-means++, 10 attempts),
which costs seconds per image and gives every image its own, incomparable colours. Here k-means runs once,
at fit time, over pixels pooled from the good images; segmenting an image on the hot path is a table
lookup: each 8-bit BGR colour (quantised to `LUT_BITS` bits per channel) maps to its nearest palette
colour and to its distance from it. Distances are measured in CIE Lab with the two colour channels
weighted up (`chroma_weight`), so that hue changes count more than lighting changes.

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LUT_BITS = 6  # bits kept per BGR channel in the lookup table: 64**3 = 262,144 entries
_LUT_LEVELS = 1 << LUT_BITS
_LUT_SHIFT = 8 - LUT_BITS


def lab_weighted(bgr: np.ndarray, chroma_weight: float) -> np.ndarray:
    """Convert BGR uint8 colours of shape (N, 3) to weighted Lab float32 of shape (N, 3)."""
    lab = cv2.cvtColor(np.ascontiguousarray(bgr, dtype=np.uint8).reshape(-1, 1, 3), cv2.COLOR_BGR2LAB)
    lab = lab.reshape(-1, 3).astype(np.float32)
    lab[:, 1:] = (lab[:, 1:] - 128.0) * chroma_weight
    return lab


def _lut_colours() -> np.ndarray:
    """The BGR colour at the centre of every lookup-table bin, shape (LEVELS**3, 3) uint8."""
    levels = (np.arange(_LUT_LEVELS, dtype=np.uint16) << _LUT_SHIFT) + (1 << _LUT_SHIFT) // 2
    b, g, r = np.meshgrid(levels, levels, levels, indexing="ij")
    return np.stack([b.ravel(), g.ravel(), r.ravel()], axis=1).astype(np.uint8)


def lut_index(image: np.ndarray) -> np.ndarray:
    """Map a BGR uint8 image of shape (H, W, 3) to lookup-table indices of shape (H, W) int32."""
    q = (image >> _LUT_SHIFT).astype(np.int32)
    return (q[..., 0] << (2 * LUT_BITS)) | (q[..., 1] << LUT_BITS) | q[..., 2]


def _distinct_up_to(samples: np.ndarray, k: int, head: int = 4096) -> int:
    """The number of distinct rows of samples (N, D), or at least k when there are k or more: counted on the first
    `head` rows first (np.unique sorts; on 200,000 pooled pixels it cost 0.18 s a fit, a fifth of the k-means)."""
    found = len(np.unique(samples[:head], axis=0))
    return found if found >= k or len(samples) <= head else len(np.unique(samples, axis=0))


def kmeans_centres(samples: np.ndarray, k: int, attempts: int, seed: int) -> np.ndarray:
    """Run k-means++ (cv2.kmeans) on float32 samples of shape (N, D); return centres (k, D) float32."""
    k = max(1, min(k, _distinct_up_to(samples, k)))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.1)
    _, _, centres = cv2.kmeans(
        np.ascontiguousarray(samples, dtype=np.float32), k, None, criteria, attempts, cv2.KMEANS_PP_CENTERS
    )
    return centres.astype(np.float32)


@dataclass(frozen=True)
class Segmentation:
    """One image's segmentation: a label map and each pixel's distance to its palette colour."""

    labels: np.ndarray  # (H, W) uint8, index into the palette
    distance: np.ndarray  # (H, W) float32, weighted-Lab distance to the assigned palette colour
    soft: np.ndarray  # (H, W, K) float32, fuzzy membership in each palette colour (rows sum to 1)


class Palette:
    """A k-means colour palette in weighted Lab, applied through a colour lookup table."""

    def __init__(
        self, n_colours: int = 12, chroma_weight: float = 2.0, softness: float = 0.5, balance: float = 0.0,
        attempts: int = 3, seed: int = 0,
    ):
        self.n_colours = n_colours
        self.chroma_weight = chroma_weight
        self.softness = softness
        self.balance = balance
        self.attempts = attempts
        self.seed = seed

    def fit(self, pixels: np.ndarray) -> "Palette":
        """Learn the palette from BGR uint8 pixels of shape (N, 3) pooled from good images.

        Plain k-means spends its centres where pixels are many (a large dark background gets split into
        shades that flicker with lighting). Pixels are therefore resampled with weight count**-balance of
        their colour bin: balance 0 is plain k-means, 1 treats every colour that occurs alike.
        """
        idx = lut_index(pixels.reshape(-1, 1, 3)).ravel()
        counts = np.bincount(idx, minlength=_LUT_LEVELS**3)[idx].astype(np.float64)
        weights = counts ** -self.balance
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(pixels), size=len(pixels), replace=True, p=weights / weights.sum())
        lab = lab_weighted(pixels[pick], self.chroma_weight)
        centres = kmeans_centres(lab, self.n_colours, self.attempts, self.seed)
        order = np.argsort(centres[:, 0], kind="stable")  # darkest first, so labels are reproducible
        return self._set_centres(centres[order])

    def _set_centres(self, centres: np.ndarray) -> "Palette":
        """Store centres (K, 3) and build the lookup tables from them."""
        self.centres_ = np.asarray(centres, dtype=np.float32)
        lab = lab_weighted(_lut_colours(), self.chroma_weight)
        d2 = (
            (lab**2).sum(1, keepdims=True)
            - 2.0 * lab @ self.centres_.T
            + (self.centres_**2).sum(1)[None, :]
        )
        nearest = np.argmin(d2, axis=1)
        cc = np.sqrt(np.maximum(((self.centres_[:, None] - self.centres_[None]) ** 2).sum(-1), 0))
        np.fill_diagonal(cc, np.inf)
        spacing = float(np.median(cc.min(axis=1))) if len(cc) > 1 else 1.0
        if self.softness > 0:
            sigma = self.softness * spacing
            soft = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / (2.0 * sigma**2))
            lut_soft = (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)
            # subnormal memberships (< 1.2e-38) carry nothing, but arithmetic on them is several times slower
            # (they halved the speed of the global features' matrix product): flush them to zero
            lut_soft[lut_soft < np.finfo(np.float32).tiny] = 0.0
            self.lut_soft_ = lut_soft
        else:
            self.lut_soft_ = np.eye(len(self.centres_), dtype=np.float32)[nearest]
        self.lut_labels_ = nearest.astype(np.uint8)
        self.lut_distance_ = np.sqrt(np.maximum(d2[np.arange(len(d2)), nearest], 0.0)).astype(np.float32)
        return self

    @classmethod
    def from_centres(cls, centres: np.ndarray, chroma_weight: float, softness: float) -> "Palette":
        """Rebuild a fitted palette from saved centres (K, 3) without refitting."""
        return cls(len(centres), chroma_weight, softness)._set_centres(centres)

    def assign(self, image: np.ndarray) -> Segmentation:
        """Segment a BGR uint8 image of shape (H, W, 3) by nearest palette colour."""
        idx = lut_index(image)
        return Segmentation(labels=self.lut_labels_[idx], distance=self.lut_distance_[idx], soft=self.lut_soft_[idx])

    def colours_bgr(self) -> np.ndarray:
        """The palette colours as BGR uint8, shape (K, 3), for display."""
        lab = self.centres_.copy()
        lab[:, 1:] = lab[:, 1:] / self.chroma_weight + 128.0
        lab = np.clip(np.round(lab), 0, 255).astype(np.uint8).reshape(-1, 1, 3)
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR).reshape(-1, 3)


def kmeans_segment(image: np.ndarray, k: int, attempts: int = 10, seed: int = 0) -> np.ndarray:
    """The tutorial's per-image segmentation: cv2.kmeans on BGR pixels, each replaced by its centre.

    Input and output are BGR uint8 of shape (H, W, 3). Slow by design; used only by `inspector segment`.
    """
    pixels = image.reshape(-1, 3).astype(np.float32)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    _, labels, centres = cv2.kmeans(pixels, k, None, criteria, attempts, cv2.KMEANS_PP_CENTERS)
    return np.clip(centres, 0, 255).astype(np.uint8)[labels.ravel()].reshape(image.shape)
