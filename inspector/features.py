"""Features computed from a segmentation: what the normal profile compares.

Two families, both derived only from the label map and the novel-colour mask:

* **Cell features** (local, for the per-cell comparison and the anomaly map). The working image is covered
  by a grid of overlapping windows: one cell every `stride` pixels, each window `window` strides wide, so
  neighbouring windows overlap and absorb small misalignment. Each cell holds, as fractions of its area:
    - the share of every palette segment (K values): what colours are where;
    - the segment boundary density: the share of pixels whose label differs from a 4-neighbour's; it carries shape and texture (scratches, cracks and broken edges add boundaries);
    - the novel-colour share: pixels farther from every palette colour than the good images ever were;
    - texture: the gradient energy in 4 orientation bins (0, 45, 90, 135 degrees; Sobel on the grey image,
      each pixel's magnitude shared between its two nearest bins), relative to the part's own mean energy
      (a lamp with more contrast does not move them), scaled by the good parts' 99th percentile and clipped
      to 1. Grain, edges and cracks show here on grey and textured surfaces, whose palette is a
      handful of grey levels. Orientation is not rotation-free, so the rotation-free global features leave
      these channels out.
  Shape: (GH, GW, K + 2 + T), T = N_TEXTURE (0 with texture off).
* **Global features** (whole image, for retrieving similar training images and for a whole-image kNN
  term). Rotation-free parts first: global segment shares, boundary density and novel share; then the same
  over concentric rings around the image centre (parts that rotate keep their ring profile); then segment
  shares over a coarse grid (layout of aligned parts). Shape: (G,).

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from inspector.segment import Segmentation


@dataclass(frozen=True)
class FeatureLayout:
    """Geometry of the feature grid for one working image size."""

    width: int  # working image width in pixels
    height: int  # working image height in pixels
    stride: int  # pixels between neighbouring cell centres
    window: int  # window side in pixels (a multiple of the stride, so windows overlap)
    n_rings: int  # concentric rings for the rotation-free global features
    coarse: int  # coarse grid side (coarse x coarse) for the global layout features

    @property
    def grid(self) -> tuple[int, int]:
        """Cells down and across: (GH, GW)."""
        return self.height // self.stride, self.width // self.stride


def make_layout(
    image_width: int, image_height: int, width: int, cells_across: int, window_strides: int,
    n_rings: int, coarse: int,
) -> FeatureLayout:
    """Choose the working size for images of the given size: `width` px across, aspect kept, grid-aligned."""
    stride = max(1, width // cells_across)
    width = stride * cells_across
    rows = max(1, round(width * image_height / max(image_width, 1) / stride))
    return FeatureLayout(width, rows * stride, stride, stride * window_strides, n_rings, coarse)


_CV_MAX_CHANNELS = 128  # channels OpenCV 5 takes in one array (CV_CN_MAX)
N_TEXTURE = 4  # orientation bins of the texture channels


def texture_energy(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude in N_TEXTURE orientation bins (H, W, N_TEXTURE) float32 of a BGR uint8 image (H, W, 3)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude, angle = cv2.cartToPolar(gx, gy)  # angle in [0, 2 pi)
    position = angle * np.float32(N_TEXTURE / np.pi)  # orientation in bin units, in [0, 2 N] ...
    for _ in range(2):  # ... mod pi, as `% N` would give, without numpy's slow float remainder: each subtraction is
        position -= np.float32(N_TEXTURE) * (position >= N_TEXTURE)  # exact, and an angle rounded up to 2 pi
        # (float32) lands on 2 N, which takes both
    lower = np.floor(position)
    upper_share = position - lower
    # each pixel's magnitude split between its two nearest bins; bincount places both shares in one pass each
    # (a pixel's bins differ, so every output value is one share, exactly as a scatter would write it)
    h, w = grey.shape
    size = h * w * N_TEXTURE
    first = np.arange(0, size, N_TEXTURE).reshape(h, w)  # (H, W): each pixel's bin 0
    low = lower.astype(np.intp)
    out = (np.bincount((first + low).ravel(), (magnitude * (1.0 - upper_share)).ravel(), size)
           + np.bincount((first + (low + 1) % N_TEXTURE).ravel(), (magnitude * upper_share).ravel(), size))
    return out.astype(np.float32).reshape(h, w, N_TEXTURE)


def relative_energy(image: np.ndarray) -> np.ndarray:
    """Orientation energy (H, W, N_TEXTURE) float32 relative to the image's own mean energy: a part lit with more or
    less contrast (a brighter lamp, a residue of the lighting correction) keeps its texture channels, while a
    local change (a scratch, a patch of other grain) barely moves the mean of the whole part."""
    energy = texture_energy(image)
    level = float(cv2.mean(cv2.reduce(energy.reshape(-1, N_TEXTURE), 1, cv2.REDUCE_SUM))[0])
    return energy * np.float32(1.0 / max(level, 1.0))


def texture_channels(image: np.ndarray, scale: np.ndarray, weight: float) -> np.ndarray:
    """Texture channels (H, W, N_TEXTURE) float32 in [0, weight]: relative orientation energy over scale
    (N_TEXTURE,)."""
    return np.minimum(relative_energy(image) / scale.astype(np.float32), 1.0) * np.float32(weight)


def _integral(maps: np.ndarray) -> np.ndarray:
    """Integral image of maps (H, W, C): float64 (H + 1, W + 1, C), zero first row and column.

    cv2.integral, not numpy's cumsum: ~5x faster, and OpenCV releases the GIL, so scoring threads overlap.
    """
    h, w, c = maps.shape
    chunks = [
        cv2.integral(np.ascontiguousarray(maps[..., i:i + _CV_MAX_CHANNELS], dtype=np.float32),
                     sdepth=cv2.CV_64F).reshape(h + 1, w + 1, -1)
        for i in range(0, c, _CV_MAX_CHANNELS)
    ]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=2)


@lru_cache(maxsize=16)
def _window_corners(layout: FeatureLayout, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat integral-image indices (4, GH * GW) of every window's corners (y1x1, y0x1, y1x0, y0x0) and the
    window areas (GH * GW, 1) float64, for maps of size (h, w). Windows at the border are shifted inside."""
    gh, gw = layout.grid
    pad = (layout.window - layout.stride) // 2
    y0 = np.clip(np.arange(gh) * layout.stride - pad, 0, h)
    y1 = np.clip(y0 + layout.window, 0, h)
    y0 = np.clip(y1 - layout.window, 0, h)
    x0 = np.clip(np.arange(gw) * layout.stride - pad, 0, w)
    x1 = np.clip(x0 + layout.window, 0, w)
    x0 = np.clip(x1 - layout.window, 0, w)
    row = w + 1  # the integral image is (h + 1, w + 1)
    corners = np.stack([(ys[:, None] * row + xs[None, :]).ravel()
                        for ys, xs in ((y1, x1), (y0, x1), (y1, x0), (y0, x0))])
    area = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).astype(np.float64).reshape(-1, 1)
    for array in (corners, area):
        array.setflags(write=False)  # shared by every call through the cache
    return corners, area


def _window_sums(maps: np.ndarray, layout: FeatureLayout) -> np.ndarray:
    """Mean of each channel of maps (H, W, C) float32 over every cell window; returns (GH, GW, C) float32."""
    h, w, c = maps.shape
    integral = _integral(maps).reshape(-1, c)
    corners, area = _window_corners(layout, h, w)
    i11, i01, i10, i00 = corners
    sums = np.take(integral, i11, axis=0)  # (GH * GW, C); np.take and in-place steps: no temporaries per corner
    sums -= np.take(integral, i01, axis=0)
    sums -= np.take(integral, i10, axis=0)
    sums += np.take(integral, i00, axis=0)
    sums /= area
    gh, gw = layout.grid
    return sums.astype(np.float32).reshape(gh, gw, c)


def pixel_channels(seg: Segmentation, n_colours: int, novel_distance: float, extra: int = 0) -> np.ndarray:
    """Per-pixel indicator channels (H, W, K + 2 + extra): one-hot labels, boundary, novel colour, then `extra`
    zero channels for the caller to fill (the texture channels: no second array and copy to join them)."""
    labels = seg.labels
    h, w = labels.shape
    out = np.zeros((h, w, n_colours + 2 + extra), dtype=np.float32)
    out[..., :n_colours] = seg.soft
    boundary = np.zeros((h, w), dtype=bool)  # both pixels of a differing pair: symmetric under flips
    across = labels[:, :-1] != labels[:, 1:]
    down = labels[:-1, :] != labels[1:, :]
    boundary[:, :-1] |= across
    boundary[:, 1:] |= across
    boundary[:-1, :] |= down
    boundary[1:, :] |= down
    out[..., n_colours] = boundary
    out[..., n_colours + 1] = seg.distance > novel_distance
    return out


def cell_features(channels: np.ndarray, layout: FeatureLayout) -> np.ndarray:
    """Cell features (GH, GW, K + 2) from pixel channels (H, W, K + 2)."""
    return _window_sums(channels, layout)


def region_pooling(layout: FeatureLayout) -> np.ndarray:
    """Averaging matrix (R, H * W) float32 over the global regions: whole image, rings, coarse cells.

    Rings split the inscribed circle's radius into `n_rings`; one more ring holds the corners.
    """
    h, w = layout.height, layout.width
    ys, xs = np.indices((h, w), dtype=np.float32)
    r = np.hypot(ys - (h - 1) / 2.0, xs - (w - 1) / 2.0) / (min(h, w) / 2.0)
    ring = np.minimum((r * layout.n_rings).astype(np.int64), layout.n_rings).ravel()
    q = layout.coarse
    cy = np.minimum(np.arange(h) * q // h, q - 1)
    cx = np.minimum(np.arange(w) * q // w, q - 1)
    coarse = (cy[:, None] * q + cx[None, :]).ravel()
    n_regions = 1 + (layout.n_rings + 1) + q * q
    member = np.zeros((n_regions, h * w), dtype=np.float32)
    member[0] = 1.0
    member[1 + ring, np.arange(h * w)] = 1.0
    member[2 + layout.n_rings + coarse, np.arange(h * w)] = 1.0
    return member / np.maximum(member.sum(axis=1, keepdims=True), 1.0)


def global_features(channels: np.ndarray, pooling: np.ndarray) -> np.ndarray:
    """Whole-image features (R * C,) from pixel channels (H, W, C) and a region pooling matrix (R, H * W)."""
    c = channels.shape[-1]
    return (pooling @ channels.reshape(-1, c)).ravel().astype(np.float32)
