"""Where a part's overlay marks the defect, in the pixels of its original image, for the full-size view.

The overlay (inspector.report.overlay) is the part's working image with the anomaly map blended in where it is
high and a contour around what lies above the normal range; everywhere else it is the working image unchanged.
So the original, scaled down to the overlay's size the way the working image was made (area averaging), differs
from the overlay only where the overlay marks something: those differences, grouped into boxes (small specks of
decoding noise dropped, a margin added, overlapping boxes merged), are the regions to look at. The boxes are
given as fractions of the image, so they fit the original at any size it is shown.

`Regions` remembers what it found per (image sha256, overlay path) and decodes at most two images at a time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

MIN_DIFF = 40  # per channel out of 255: the tint from the normal limit up, and the contour (decoding noise: < 25)
MIN_AREA = 0.0003  # of the overlay's pixels: smaller groups of differences are noise
MARGIN = 0.35  # each box grows by this share of its size on every side (at least two overlay pixels)
MAX_BOXES = 3
ENTRIES = 512
DECODERS = 2


@dataclass(frozen=True)
class Box:
    """A region as fractions of the image's width and height (0..1), with its share of the marked pixels."""

    x: float
    y: float
    w: float
    h: float
    share: float

    def scaled(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) in pixels of an image of this size, at least one pixel wide and high."""
        x, y = round(self.x * width), round(self.y * height)
        return x, y, max(1, round(self.w * width)), max(1, round(self.h * height))

    def zoom(self, width: int, height: int, least: float = 0.2) -> tuple[int, int, int, int]:
        """A view box around the region for a close-up: the box, widened to at least `least` of the image's
        shorter side and to the image's aspect ratio, kept inside the image."""
        x, y, w, h = self.scaled(width, height)
        side = max(w, h, round(least * min(width, height)))
        vw, vh = (side * width // height, side) if width >= height else (side, side * height // width)
        vw, vh = min(vw, width), min(vh, height)
        cx, cy = x + w // 2, y + h // 2
        vx = min(max(0, cx - vw // 2), width - vw)
        vy = min(max(0, cy - vh // 2), height - vh)
        return vx, vy, vw, vh


@dataclass(frozen=True)
class Found:
    """What the comparison found: the original's size as decoded and the boxes, largest first."""

    width: int
    height: int
    boxes: tuple[Box, ...]


def find_boxes(original: bytes, overlay: bytes) -> Found | None:
    """The regions the overlay marks, as boxes over the original; None when either does not decode."""
    import cv2
    import numpy as np

    over = cv2.imdecode(np.frombuffer(overlay, np.uint8), cv2.IMREAD_COLOR)
    if over is None or over.size == 0:
        return None
    oh, ow = over.shape[:2]
    img = cv2.imdecode(np.frombuffer(original, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return None
    height, width = img.shape[:2]
    work = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA) if (height, width) != (oh, ow) else img
    del img
    marked = (np.abs(over.astype(np.int16) - work.astype(np.int16)).max(axis=2) > MIN_DIFF).astype(np.uint8)
    n, _labels, stats, _centres = cv2.connectedComponentsWithStats(marked, connectivity=8)
    least = max(2, MIN_AREA * ow * oh)
    total = int(marked.sum()) or 1
    boxes: list[list[float]] = []  # x0, y0, x1, y1 in overlay pixels, marked pixels
    for x, y, w, h, area in stats[1:n]:
        if area < least:
            continue
        pad_x, pad_y = max(2.0, MARGIN * w), max(2.0, MARGIN * h)
        boxes.append([max(0.0, x - pad_x), max(0.0, y - pad_y), min(float(ow), x + w + pad_x),
                      min(float(oh), y + h + pad_y), float(area)])
    merged = True
    while merged:  # overlapping boxes become one
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]), a[4] + b[4]]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    boxes.sort(key=lambda b: -b[4])
    found = tuple(Box(x=b[0] / ow, y=b[1] / oh, w=(b[2] - b[0]) / ow, h=(b[3] - b[1]) / oh, share=b[4] / total)
                  for b in boxes[:MAX_BOXES])
    return Found(width=width, height=height, boxes=found)


class Regions:
    """find_boxes with memory: results kept per (sha256, overlay path), at most `decoders` decodings at once."""

    def __init__(self, entries: int = ENTRIES, decoders: int = DECODERS) -> None:
        self._lock = threading.Lock()
        self._found: OrderedDict[tuple[str, str], Found | None] = OrderedDict()
        self._entries = entries
        self._slots = threading.BoundedSemaphore(decoders)

    def get(self, key: tuple[str, str]) -> tuple[bool, Found | None]:
        """(known, what was found) for a key."""
        with self._lock:
            if key in self._found:
                self._found.move_to_end(key)
                return True, self._found[key]
        return False, None

    def find(self, key: tuple[str, str], original: BinaryIO, overlay: BinaryIO) -> Found | None:
        """The boxes for an opened original and overlay (both read from their start), remembered under key."""
        known, found = self.get(key)
        if known:
            return found
        with self._slots:
            original.seek(0)
            overlay.seek(0)
            found = find_boxes(original.read(), overlay.read())
        with self._lock:
            self._found[key] = found
            while len(self._found) > self._entries:
                self._found.popitem(last=False)
        return found
