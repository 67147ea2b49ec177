"""The inspection path as the service runs it: file bytes -> decoded image -> profile -> verdict.

Also training from a folder of good images. This module joins the pure core (profile) with the image
adapter (imaging); it does no database or network I/O.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from fnmatch import fnmatch
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from inspector import imaging
from inspector.config import Config, InputConfig
from inspector.errors import DatasetError, ImageRejected
from inspector.profile import Assessment, NormalProfile, ProfileParams, fine_frame
from inspector.verdicts import MIRRORED, MISPLACED, judge

Progress = Callable[..., Iterator]  # wraps an iterable (with total=N) to show progress, like tqdm


# a Verdict's scalar fields: its JSON form, and what crosses the pipe from a judging process (judges.py)
VERDICT_FIELDS = ("name", "sha256", "verdict", "reason", "detail", "score", "threshold", "profile_version", "width",
                  "height", "size", "ms", "exposure", "peak_x", "peak_y", "pos_x", "pos_y")


@dataclass
class Verdict:
    """The outcome of inspecting one file."""

    name: str
    sha256: str | None
    verdict: str  # "ok", "defect" or "rejected"
    reason: str | None  # rejection reason code (e.g. "truncated"), or None
    score: float | None
    threshold: float | None
    profile_version: str | None
    width: int | None = None
    height: int | None = None
    size: int | None = None
    ms: float = 0.0
    anomaly_map: np.ndarray | None = field(default=None, repr=False)  # (MH, MW) float32, map units
    image: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) uint8 BGR as photographed, map's size
    detail: str | None = None  # human-readable detail of the reason
    exposure: float | None = None  # brightness relative to the profile's training parts (1.0 = as trained)
    assessment: Assessment | None = field(default=None, repr=False)  # placement and lighting as found
    peak_x: float | None = None  # a defect: where its anomaly map peaks, as a fraction of the photo's width (0 = left)
    peak_y: float | None = None  # ... and of its height (0 = top); None for other verdicts
    pos_x: float | None = None  # a judged part located (or misplaced): how far right of where the reference lies, as a
    pos_y: float | None = None  # fraction of the photo's width; ... below, of its height (the drift monitor's)

    def as_dict(self) -> dict:
        """JSON-able summary (no arrays): the VERDICT_FIELDS."""
        return {k: getattr(self, k) for k in VERDICT_FIELDS}


def list_images(folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Image files directly in `folder` matching any pattern (case-insensitive), sorted by name."""
    if not folder.is_dir():
        raise DatasetError(f"not a folder: {folder}")
    lowered = tuple(p.lower() for p in patterns)
    return sorted(p for p in folder.iterdir() if any(fnmatch(p.name.lower(), pat) for pat in lowered))


def map_peak(anomaly_map: np.ndarray | None) -> tuple[float | None, float | None]:
    """Where an anomaly map (MH, MW) peaks, as fractions (x, y) of its width and height (the centre of the highest
    cell, rounded to 4 digits, as Python floats); (None, None) without a map or a finite value in it."""
    if anomaly_map is None or anomaly_map.size == 0 or not np.isfinite(anomaly_map).any():
        return None, None
    y, x = np.unravel_index(int(np.nanargmax(anomaly_map)), anomaly_map.shape)
    return round(float((x + 0.5) / anomaly_map.shape[1]), 4), round(float((y + 0.5) / anomaly_map.shape[0]), 4)


def need_for(info: imaging.ImageInfo, params: ProfileParams) -> tuple[int, int]:
    """The smallest decode size that still covers the working size for an image of this shape."""
    fine = fine_frame(info.width, info.height, params)  # the fine pass, where it runs, needs its detail decoded
    width = params.width if fine is None else max(params.width, fine[0])
    return width, max(1, math.ceil(width * info.height / max(info.width, 1)))


def decode_for_training(data: bytes, inp: InputConfig, params: ProfileParams) -> np.ndarray:
    """Decode one training image at the reduced size the profile needs; (H, W, 3) uint8 BGR."""
    info = imaging.probe(data, inp.max_pixels)
    image = imaging.decode(data, max_pixels=inp.max_pixels, need=need_for(info, params)).image
    size = fine_frame(image.shape[1], image.shape[0], params)
    if size is not None and image.shape[1] > size[0]:  # held at the fine size: thousands of parts fit in memory
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


@dataclass
class TrainingSet:
    """Decoded good images with their identities; rejected files listed separately."""

    images: list[np.ndarray]
    names: list[str]
    hashes: list[str]
    rejected: list[tuple[str, str]]


def load_training_images(
    files: Sequence[Path], cfg: Config, progress: Progress | None = None, workers: int | None = None,
) -> TrainingSet:
    """Read and decode training files in parallel (OpenCV releases the GIL); bad files are set aside."""

    def one(path: Path) -> tuple[str, str | None, np.ndarray | None, str | None]:
        try:
            data = imaging.read_file(path, cfg.input.max_bytes)
            return path.name, imaging.sha256_hex(data), decode_for_training(data, cfg.input, cfg.profile), None
        except ImageRejected as exc:
            return path.name, None, None, str(exc)

    out = TrainingSet([], [], [], [])
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        results = pool.map(one, files)
        for name, digest, image, error in (progress(results, total=len(files)) if progress else results):
            if image is None:
                out.rejected.append((name, error or "rejected"))
            else:
                out.images.append(image)
                out.names.append(name)
                out.hashes.append(digest or "")
    return out


def fit_profile(images: list[np.ndarray], params: ProfileParams) -> NormalProfile:
    """Fit and calibrate a profile; DatasetError when there are too few good images."""
    if len(images) < 2:
        raise DatasetError(f"need at least 2 readable good images to train, found {len(images)}")
    return NormalProfile(params).fit(images)


def _shows_the_light(found: Assessment) -> bool:
    """Whether a part's own light field may shape the station's: located, of the trained size, shape and colour mode,
    sharp, lit within the tolerance."""
    return (found.located and found.lighting_ok and found.resized is None and found.framing is None
            and not found.grey_for_colour and found.blurred is None)


NO_PEAK = frozenset({"not_located", MISPLACED, MIRRORED})  # defects whose map says nothing of where on the part
STATION_PARTS = 9  # with even_light, the station's light field is the median of this many recent parts' own
STATION_MAX_AGE_S = 600.0  # ... judged within this many seconds (after a pause the lamp may have been fixed)
STATION_AGREE = 7  # ... where at least this many of them lie within STATION_SPREAD of it: a lamp lights every
# part alike, while a defect that comes and goes (a smooth darkening on some parts, from a faulty step upstream) made
# a bare majority's median its own (5 of 9: found by a review) and then passed as light
STATION_SPREAD = 0.1  # (log; each of tilt x, tilt y, vignetting) the good parts' own fields scatter by ~0.04 (bottle)


class Inspector:
    """Judges files or bytes with one fitted profile, exactly as the service does."""

    def __init__(self, profile: NormalProfile, version: str | None, inp: InputConfig):
        self.profile = profile
        self.version = version
        self.inp = inp
        self._need = profile.decode_size
        # recent parts' light fields, with when they were judged (even_light)
        self._fields: deque[tuple[float, np.ndarray]] = deque(maxlen=STATION_PARTS)

    def station_field(self, now: float | None = None) -> np.ndarray | None:
        """The smooth light field (3,) the recent parts share: the median of those judged within STATION_MAX_AGE_S,
        where at least STATION_AGREE of them lie within STATION_SPREAD of it; else None."""
        now = time.monotonic() if now is None else now
        recent = [f for at, f in list(self._fields) if now - at <= STATION_MAX_AGE_S]
        if len(recent) < STATION_AGREE:
            return None
        fields = np.stack(recent)  # (N, 3)
        median = np.median(fields, axis=0)
        agree = int((np.abs(fields - median).max(axis=1) <= STATION_SPREAD).sum())
        return median if agree >= STATION_AGREE else None

    def inspect_bytes(self, data: bytes, name: str, keep_image: bool = False, digest: str | None = None) -> Verdict:
        """Hash (unless `digest` is given), decode and score bytes; bad input becomes a `rejected` verdict."""
        start = time.perf_counter()
        if digest is None and data:
            digest = imaging.sha256_hex(data)
        try:
            decoded = imaging.decode(data, max_pixels=self.inp.max_pixels, need=self._need)
        except ImageRejected as exc:
            return self._rejected(name, digest, exc, len(data), start)
        shown = self.profile.display_image(decoded.image)  # once: assess starts from it, the overlay draws on it
        found = self.profile.assess([shown], self.station_field())[0]
        # the shape of the photo as taken, not of the part already resized to the decode size (found by a review)
        found = replace(found, framing=self.profile.framing(decoded.width, decoded.height, decoded.turned),
                        used_bits=decoded.used_bits)
        if found.light_field is not None and _shows_the_light(found):
            self._fields.append((time.monotonic(), found.light_field))
        verdict, reason, detail = judge(found, self.profile.threshold_)
        # where a defect's map peaks (a part not located, or out of place, has no meaningful peak)
        peak = map_peak(found.anomaly_map) if verdict == "defect" and reason not in NO_PEAK else (None, None)
        # where a judged part lies: not one that was not found, nor one read mirrored; one found off its place lies
        # where the off-place check found it, located or not (a part 8% off matched too badly where it lay to be
        # located, and recorded no position: found by an adversarial test)
        lies = (found.lies if verdict != "rejected" and (found.located or reason == MISPLACED) and reason != MIRRORED
                else None)
        return Verdict(
            name=name, sha256=digest, verdict=verdict, reason=reason, detail=detail,
            score=None if verdict == "rejected" else found.score, threshold=self.profile.threshold_,
            profile_version=self.version, width=decoded.width, height=decoded.height, size=len(data),
            ms=(time.perf_counter() - start) * 1000.0, anomaly_map=found.anomaly_map,
            image=shown if keep_image else None, exposure=found.exposure,
            assessment=found, peak_x=peak[0], peak_y=peak[1],
            pos_x=None if lies is None else lies[0], pos_y=None if lies is None else lies[1],
        )

    def inspect_file(self, path: Path, keep_image: bool = False) -> Verdict:
        """Read a file once and inspect its bytes; unreadable files become `rejected` verdicts."""
        start = time.perf_counter()
        name = os.fsdecode(path.name) if isinstance(path, Path) else os.fsdecode(os.path.basename(path))
        try:
            data = imaging.read_file(path, self.inp.max_bytes)
        except ImageRejected as exc:
            return self._rejected(name, None, exc, None, start)
        verdict = self.inspect_bytes(data, name, keep_image)
        verdict.ms = (time.perf_counter() - start) * 1000.0
        return verdict

    def _rejected(self, name: str, digest: str | None, exc: ImageRejected, size: int | None,
                  start: float) -> Verdict:
        """A rejected verdict carrying the rejection reason."""
        return Verdict(
            name=name, sha256=digest, verdict="rejected", reason=exc.reason, detail=exc.detail, score=None,
            threshold=self.profile.threshold_, profile_version=self.version, size=size,
            ms=(time.perf_counter() - start) * 1000.0,
        )
