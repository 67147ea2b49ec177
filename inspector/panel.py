"""The tutorial's figure for `inspector segment`: an image beside per-image k-means segmentations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.segment import kmeans_segment


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    """Return tile (H, W, 3) with a caption band of 28 px on top."""
    band = np.full((28, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, tile])


def make_panel(image: np.ndarray, ks: Sequence[int], max_side: int = 512) -> np.ndarray:
    """Original (H, W, 3) BGR beside its segmentation at each K; returns one BGR uint8 panel."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    tiles = [_caption(image, "original")]
    for k in ks:
        tiles.append(_caption(kmeans_segment(image, k), f"K = {k}"))
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    row = []
    for t in tiles:
        row += [t, gap]
    return np.hstack(row[:-1])


_WRITABLE = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # names OpenCV writes here


def write_panel(out: Path, image: np.ndarray, ks: Sequence[int], max_side: int = 512) -> None:
    """Write make_panel() to `out` (PNG or JPEG by extension)."""
    if out.suffix.lower() not in _WRITABLE:  # OpenCV raises for a name it has no writer for
        raise InspectorError(f"cannot write {out}: use a .png or .jpg name")
    if out.is_dir():
        raise InspectorError(f"cannot write {out}: it is a folder; use a .png or .jpg name")
    panel = make_panel(image, ks, max_side)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(out), panel)
    except (OSError, cv2.error) as exc:
        raise InspectorError(f"cannot write {out}: {getattr(exc, 'strerror', None) or exc}") from None
    if not written:
        raise InspectorError(f"cannot write {out} (use a .png or .jpg name in a writable folder)")
