"""The normal profile: a scikit-learn-style estimator fitted on good parts only, with its calibration.

How a part is scored (each step earned its place by measurement, see README "Detection"):

1. The image is resized to a small working size, located (registered into the profile's frame: shift, and a
   turn as `rotation` allows; see `register.py`) and brought to the trained exposure and white balance (see
   `photometry.py`), then segmented with the learned palette. The anomaly map is drawn back on the part as
   photographed. A part that matches the reference worse than half the worst good training part cannot be located;
   one whose lighting is beyond the tolerance cannot be judged fairly (`Assessment` says which). With
   `even_light`, a flagged part is judged again divided by the smooth light field the station's recent parts share
   (`station_field`, which pipeline.Inspector keeps), where its own field agrees: a lamp dimmed on one side.
2. Features: cell features on overlapping windows and global features (see `features.py`).
3. Local term: the good training images most similar to this part (nearest by global features) are
   retrieved, and every cell is compared with the same cell of each of them (L1 distance); the cell's
   anomaly is the smallest distance, i.e. "no similar good part looks like this here". This yields the
   anomaly map. Several retrieval sizes are averaged: a small one keeps the comparison consistent for
   products with variants, a larger one avoids flagging rare-but-normal looks. The image's local score is
   the mean of its worst cells (top `top_fraction` of cells).
4. Global term: mean distance to the `global_k` nearest good images in the standardised rotation-free
   global features (whole image and rings): it catches parts that rotate, where cells do not align.
5. Each term is standardised (z) against scores of good images the fit did not see (cross-fitting). The
   anomaly score is z_local + global_weight * max(0, z_global - global_margin): the global term speaks only
   once it is clearly outside its normal range, so a noisy global term cannot drown a clear local defect.

Calibration needs no defective parts: the threshold is the (1 - false_alarm_rate) quantile of the
cross-fitted scores of good images, each scored by a profile that did not see it.

scikit-learn conventions: `fit` returns self; learned attributes end in `_`; `score_samples` is higher for
more normal parts; `decision_function = score_samples - offset_` is negative for anomalies; `predict`
returns +1 (normal) or -1 (anomaly). `anomaly_score` is `-score_samples`, compared with `threshold_`.

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from inspector.drift import EXPOSURE_SD_FLOOR, WINSOR, robust_spread
from inspector.features import (
    FeatureLayout,
    cell_features,
    global_features,
    N_TEXTURE,
    make_layout,
    pixel_channels,
    region_pooling,
    relative_energy,
    texture_channels,
)
from inspector.fill import unfilled
from inspector.fine import FINE_REACH, FinePart, VariationModel, check_state as check_fine_state, fine_matrix, fine_size
from inspector.params import ProfileParams  # defined apart: config.py loads without OpenCV
from inspector.photometry import (
    BLOCK, N_LEVELS, SHADING_CAP, SMOOTH, Lighting, LightingModel, divide, field_gain,
)
from inspector import register
from inspector.register import IDENTITY, Locator, OffPlace, Placement
from inspector.segment import Palette
from inspector import sensor
from inspector.sharpness import FocusModel, detail
from inspector.variations import copied_parts, draw, relit
from inspector.verdicts import EVENED_DETAIL, judge

FORMAT_VERSION = 4  # bump when the meaning of saved arrays changes
# 1: before registration and lighting; 2: before the fine pass (each loads without); 3: before the black-level line
# and shading = "auto" (4: an older build must refuse these, it would judge them with the per-level curve); 5 is
# written only by profiles with shading = "smooth", so an older build says the profile is newer than it reads; 6 by
# those with even_light (the second look), which an older build would judge without it
SMOOTH_FORMAT = 5
EVEN_FORMAT = 6
READABLE_FORMATS = (1, 2, 3, 4, 5, 6)
EVEN_MIN_FIELD = 0.02  # a flagged part is evened out only where the station's smooth field moves the light this much
# (log)
EVEN_MAX_FIELD = SHADING_CAP  # ... and by no more than a lamp plausibly does: beyond, a large defect drew it (broken
# bottles read as fields of 0.5-2.1)
EVEN_AGREE = 0.05  # ... and by the station's field only where the part's own departs from it by at most this much
SIZE_TOLERANCE = 0.0375  # a part found this much larger or smaller (past the scale search's +-3%) is a defect: a
# part of another size or a camera moved (found by an adversarial test: 6% larger bottles passed as good)
_VALID_SHARE = 0.75  # a cell is compared when this share of its window lies inside the photo
MIN_REGISTER_SIDE = 16  # working images narrower than this (a line-scan strip) are neither located nor matched
_EXPOSURE_SD_FLOOR = 0.005  # a training set this steady still leaves the drift monitor this much log-exposure noise
LEAN_CELLS_BYTES = 64 * 2**20  # reference cells larger than this as float32 are held in float16, as saved
GLOBAL_SCALE_FLOOR = 0.003  # share of the image added to each global feature's spread over the good parts: a share
# that never varied among them (novel colours on a part that has none) counts a change of 0.3% of the area as one
# unit, not 0.1% (1e-3 before: a speck or a few odd pixels moved the whole-image term by tens of spreads, and the
# threshold carried that from the held-out parts; measured, see docs/line-conditions.md, "Robustness". It does not
# make a product
# trained on noise-free images robust to sensor noise: measured on generated grey parts)
_FINE_MIN_GAIN = 2.5  # a fine pass runs only when it sees at least this many times the working width: below, the
# cells already see most of the detail there is, and the fine pass would mostly add its own noise
_FINE_SNAP = 1.1  # see fine_frame
MIN_ALLOWANCE_LEVELS = 3.0  # a part's exposure may move by this many grey levels at its typical level beyond
# max_exposure_change, whatever its black shows: on a dark product a few levels are a large ratio that cannot be told
# from a gamma (a black tyre at 19 under gamma 1.1 reads 25% darker with its black where it was)
ASPECT_TOLERANCE = 0.03  # a photo's height to width ratio may differ this much from the trained photos' (beyond: a
# camera replaced or re-set; the part would be judged stretched: found by an adversarial test, every part a defect)


def _mirror_gates(saved: object) -> tuple[float | None, float | None]:
    """The (left to right, top to bottom) mirror gates saved with a profile (since 2026-12-07; before: none, off)."""
    if saved is None:
        return None, None
    ok = isinstance(saved, list) and len(saved) == 2 and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v <= 2.0) for v in saved)
    if not ok:
        raise ValueError(f"mirror_gates must be two numbers in (0, 2] or nulls, not {saved!r}")
    return tuple(None if v is None else float(v) for v in saved)  # type: ignore[return-value]


def _sensor_limits(saved: object) -> tuple[float, float]:
    """The (column, row) line limits saved with a profile (since 2026-12-07; before: sensor.STUCK_SHARE for both)."""
    if saved is None:
        return sensor.STUCK_SHARE, sensor.STUCK_SHARE
    ok = isinstance(saved, list) and len(saved) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and sensor.STUCK_SHARE <= v <= 2 for v in saved)
    if not ok:
        raise ValueError(f"sensor_line_limits must be two numbers from {sensor.STUCK_SHARE} to 2, not {saved!r}")
    return float(saved[0]), float(saved[1])


def _aspect_range(saved: object, lay: FeatureLayout) -> tuple[float, float]:
    """The trained photos' height to width ratios, as saved, or (a profile saved before they were) the working
    size's, widened by its rounding to whole cells."""
    if saved is None:
        aspect, rounding = lay.height / lay.width, lay.stride / (2.0 * lay.width)
        return aspect - rounding, aspect + rounding
    if (not isinstance(saved, list) or len(saved) != 2 or not all(isinstance(v, (int, float)) for v in saved)
            or not 0 < saved[0] <= saved[1] or not math.isfinite(saved[1])):
        raise ValueError("aspect_range must be two positive numbers, the smaller first")
    return float(saved[0]), float(saved[1])


def fine_frame(image_width: int, image_height: int, params: ProfileParams) -> tuple[int, int] | None:
    """The fine pass's image size (w, h) for photos of this size, or None when it adds no detail (off, or the photo
    is under 2.5x the working width). A photo at most _FINE_SNAP times `fine_width` across is compared at its own
    width: resampling it by a few percent would cost more than the scoring saves (a 5 MP JPEG DCT-reduced to 324 px
    for a fine width of 320: 0.6 ms of the ~10 ms a part's scoring takes) and only blur it a little."""
    lay = make_layout(image_width, image_height, params.width, params.cells_across, params.window_strides,
                      params.n_rings, params.coarse)
    snap = params.fine_width <= image_width <= _FINE_SNAP * params.fine_width
    width = image_width if snap else min(params.fine_width, image_width)
    if width < _FINE_MIN_GAIN * lay.width:
        return None
    return fine_size(lay.width, lay.height, width)


@dataclass(frozen=True)
class Assessment:
    """What the profile found on one part, beyond its score: placement and lighting."""

    score: float  # anomaly score, compared with threshold_
    anomaly_map: np.ndarray  # (GH, GW) float32 in map units, on the part as photographed
    located: bool  # the part matched the reference at least as well as the learned limit
    match: float | None  # registration match (zero-normalised cross-correlation), None without registration
    angle: float  # degrees the part was turned to bring it into the profile's frame
    shift: tuple[float, float]  # working pixels (x, y) it was moved by
    exposure: float | None  # brightness relative to the training parts (1.0 = as trained), None without
    colour_cast: float  # largest per-channel gain departure from the training parts' white balance
    offset: float  # grey levels the part's black is lifted by
    lighting_ok: bool  # exposure and colour cast within the tolerance
    grey_for_colour: bool = False  # the photo is grey-scale and the trained parts are in colour (the camera's mode)
    framing: str | None = None  # the photo's shape differs from the trained photos' (a camera replaced or re-set)
    blurred: str | None = None  # the photo has lost the detail good parts show (focus, motion blur)
    resized: str | None = None  # the part appears larger or smaller than the good parts beyond SIZE_TOLERANCE
    used_bits: int | None = None  # a 16-bit photo's: the bits its largest colour value needs (the Inspector's)
    red_blue_swapped: bool = False  # its colour cast is beyond the tolerance and red and blue swapped back undo it
    evened: str | None = None  # flagged as lit, within the threshold once its light was evened out: how it was lit
    light_field: np.ndarray | None = None  # (3,) its smooth light field on the photo (with even_light), else None
    sensor_line: str | None = None  # a part that would not pass: a line across its whole photo (a stuck sensor line?)
    off_place: str | None = None  # a part that would not pass: found further off its place than the profile allows
    # (held by a fixture: beyond where the good parts lay, passing moved back and lit as trained)
    mirrored: str | None = None  # a part that would not pass that passes mirrored: "left to right" or "top to bottom"
    lies: tuple[float, float] | None = None  # where the part lies: shares of the photo's width and height from where
    # the reference lies (positive: right, below), for the drift monitor (Locator.where); None without registration

    def as_dict(self) -> dict:
        """JSON-able summary (no arrays)."""
        return {"score": self.score, "located": self.located, "match": self.match, "angle": self.angle,
                "shift": list(self.shift), "exposure": self.exposure, "colour_cast": self.colour_cast,
                "offset": self.offset, "lighting_ok": self.lighting_ok, "grey_for_colour": self.grey_for_colour,
                "framing": self.framing, "blurred": self.blurred, "resized": self.resized, "evened": self.evened,
                "sensor_line": self.sensor_line, "off_place": self.off_place, "mirrored": self.mirrored,
                "lies": None if self.lies is None else list(self.lies),
                "light_field": None if self.light_field is None else [float(v) for v in self.light_field]}


@dataclass(frozen=True)
class Calibration:
    """How the threshold was set, for the record and for the operator."""

    method: str
    n_good: int
    false_alarm_rate: float
    threshold: float
    oof_false_alarm_rate: float


def balanced_spread(values: np.ndarray, floor: float, least: float = 0.0) -> tuple[float, float]:
    """Where the drift monitor centres good parts' values (N,) and how widely they spread: the spread as
    drift.robust_spread has it (wider than the MAD's sd where the values have a long tail), at least `least`; the
    centre where the values, standardised by that spread (floored at `floor`, as the monitor floors it) and
    winsorised at +-drift.WINSOR as the monitor does, average zero, so a skewed scatter pushes neither side of a
    CUSUM (the castings' exposures: a quarter of the good parts read 1.8 MAD-sds darker, and a CUSUM centred on the
    median raised an alarm every ~800 good castings; measured, docs/line-conditions.md, "Drift")."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0, max(least, floor)
    centre, spread = robust_spread(x.tolist())
    spread = max(spread, least)
    scale = max(spread, floor)
    for _ in range(20):  # the winsorised mean's fixed point: each step moves it by at most one spread's winsor share
        step = scale * float(np.clip((x - centre) / scale, -WINSOR, WINSOR).mean())
        centre += step
        if abs(step) < 1e-6 * scale:
            break
    return centre, spread


def _euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances between rows of a (N, D) and b (M, D); returns (N, M)."""
    d2 = (a**2).sum(1)[:, None] - 2.0 * a @ b.T + (b**2).sum(1)[None, :]
    return np.sqrt(np.maximum(d2, 0.0))


def cell_dtype(n: int, p: int, c: int) -> type:
    """How n reference parts of (p, c) cells are held: float16, as saved, when float32 would take more than
    LEAN_CELLS_BYTES (half the memory of a large profile, in training and in every judging process; each
    comparison converts the references it uses), else float32. The values are the same either way."""
    return np.float16 if n * p * c * 4 > LEAN_CELLS_BYTES else np.float32


def _nearest_distances(ref_cells: np.ndarray, picks: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Row k (of M): each cell's smallest L1 distance (P,) to the same cell of picks[0..k]; (M, P) float32.

    cells is (P, C); ref_cells[j] is (P, C), float32 or float16 (converted here). One OpenCV absdiff, row sum
    and minimum per reference: faster than numpy's broadcast, without its (M, P, C) temporaries, and OpenCV
    releases the GIL, so the service's scoring threads overlap here.
    """
    query = np.ascontiguousarray(cells, dtype=np.float32)
    out = np.empty((len(picks), len(query)), dtype=np.float32)
    best = None
    for k, j in enumerate(picks):
        ref = ref_cells[j]
        if ref.dtype != np.float32:  # a lean profile: cv2.add converts exactly, ~4x faster than numpy's astype
            ref = cv2.add(ref, 0.0, dtype=cv2.CV_32F)
        dist = cv2.reduce(cv2.absdiff(ref, query), 1, cv2.REDUCE_SUM)  # (P, 1)
        best = dist if best is None else cv2.min(best, dist)
        out[k] = best[:, 0]
    return out


def _is_grey(image: np.ndarray) -> bool:
    """Whether a BGR uint8 image (H, W, 3) is grey-scale: its channels agree within 2 levels everywhere (a grey
    JPEG or PNG decoded to BGR: exactly)."""
    b, g, r = cv2.split(image)
    return max(float(cv2.absdiff(b, g).max()), float(cv2.absdiff(g, r).max())) <= 2.0


def _top_mean(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Mean of the largest `fraction` of values in each row of maps (N, P); returns (N,)."""
    k = max(1, math.ceil(fraction * maps.shape[1]))
    part = np.partition(maps, maps.shape[1] - k, axis=1)[:, -k:]
    return part.mean(axis=1)


def _resized(placement: Placement) -> str | None:
    """What is wrong with a part the scale search brought from beyond SIZE_TOLERANCE of the trained size, or None."""
    size = 1.0 / max(placement.scale, 1e-6)  # as photographed
    if abs(math.log(size)) <= math.log1p(SIZE_TOLERANCE):
        return None
    return (f"the part appears {100 * abs(size - 1):.0f}% {'larger' if size > 1 else 'smaller'} than the good parts: "
            "a part of another size, or the camera moved or refocused? If every part says so, check the camera's "
            "distance and focus; after moving the camera, train a profile on new photos")


MIRRORS = ((1, "left to right"), (0, "top to bottom"))  # the flips a part that would not pass is tried with
MIRROR_MIN = 0.15  # a direction is tried when good parts mirrored that way match the reference this much worse ...
MIRROR_SHARE = 0.5  # ... and a part then, when mirrored it matches better than as photographed by this share of that
MIRROR_SAMPLE = 100  # the gates are learned on at most this many training images (a seeded random sample past it)
CUT_OFF = 0.02  # a part off its place, moved back with this share of the frame outside the photo, may be cut off


def _off_place(found: OffPlace, moved_score: float, threshold: float) -> str:
    """What is wrong with a part found off its place (further than the profile allows, or than the good parts lay),
    and how it scores moved back."""
    where = [f"{100 * abs(v):.0f}% of the photo's {size} {side}" for v, size, side in
             ((found.dx, "width", "to the right" if found.dx > 0 else "to the left"),
              (found.dy, "height", "down" if found.dy > 0 else "up")) if abs(v) >= 0.01]
    back = "moved back, it looks like a good part"
    if moved_score > threshold:
        back = f"moved back, it still does not pass (score {moved_score:.2f} against {threshold:.2f})"
        back += (f" with {100 * found.outside:.0f}% of the frame outside the photo: cut off at its edge, or flawed "
                 "too; look at the part" if found.outside >= CUT_OFF else ": look at the part too")
    beyond = "further than the profile allows" if found.far else "further than the good parts lay in training"
    return (f"the part lies off where the good parts lie: {' and '.join(where)}, {beyond}; "
            f"{back}. A part placed off, or the camera, its mount or the fixture moved, or the trigger early or late: "
            "if every part says so, check them (or train a profile on photos of the new place)")


def uneven_light(coef: np.ndarray) -> str:
    """How a part evened out was lit, for people, from its smooth field (3,) in the photo's frame (see in_photo)."""
    # photometry.smooth_map: the tilts run -a..a across the part, the vignetting c * (r2 - 2/3) from the centre (r2 = 0)
    # to the corners (r2 = 2)
    a, b, c = (float(v) for v in coef)
    parts = []
    if abs(a) >= 0.01:
        parts.append(f"{100 * math.expm1(2 * abs(a)):.0f}% brighter on the {'right' if a > 0 else 'left'}")
    if abs(b) >= 0.01:
        parts.append(f"{100 * math.expm1(2 * abs(b)):.0f}% brighter at the {'bottom' if b > 0 else 'top'}")
    if abs(c) >= 0.01:
        size = math.expm1(2 * c) if c > 0 else -math.expm1(2 * c)
        parts.append(f"corners {100 * size:.0f}% {'brighter' if c > 0 else 'darker'} than the centre")
    return (f"{EVENED_DETAIL} ({', '.join(parts)}); judged with its light evened out: if every part says so, check "
            "the lamps")


def in_photo(coef: np.ndarray, placement: Placement | None, width: int, height: int,
             to_frame: bool = False) -> np.ndarray:
    """A smooth field (3,) read in the profile's frame, as it lies on the photo (width x height working pixels): its
    tilts turned back through the placement (photo -> frame), the vignetting as it is; `to_frame`: the other way."""
    if placement is None:
        return np.asarray(coef, np.float64)
    a, b, c = (float(v) for v in coef)
    per_pixel = np.array([a / (width / 2.0), b / (height / 2.0)])  # the tilts per pixel
    turn = placement.matrix[:, :2].T  # f(M p) = g . (R p + t): the photo's tilts are R^T g
    moved = np.linalg.solve(turn, per_pixel) if to_frame else turn @ per_pixel
    return np.array([moved[0] * width / 2.0, moved[1] * height / 2.0, c])


@dataclass(frozen=True)
class _Look:
    """One scoring of a prepared part: its score, cell map (GH, GW) in map units in the profile's frame, fine pass."""

    score: float
    cells: np.ndarray
    fine: tuple[float, np.ndarray] | None  # raw fine score and deviation map (h, w) on the part as photographed


def shading_on(setting: bool | str, locator: Locator | None) -> bool | str:
    """How parts are divided by their brightness field (`[profile] shading`): True by a 4 x 4 grid field, SMOOTH by a
    tilt and a vignetting, False not at all; as set, or with "auto" by the grid where registration turns the parts
    freely (rotation `any`: a part turned by hand under a lamp from one side has its lit side anywhere once it is
    registered; measured: turned castings 75% -> 83% of defects caught at the threshold) and not at all elsewhere
    (the grid cost castings as photographed 90% -> 81%, the smooth field 98% -> 95%: docs/line-conditions.md, "Uneven
    light")."""
    if setting == "auto":
        return locator is not None and locator.mode_ == "any"
    return setting if setting == SMOOTH else bool(setting)


class NormalProfile:
    """A profile of normal parts learned from good images; scores new images and maps their anomalies."""

    def __init__(self, params: ProfileParams | None = None, **overrides):
        base = params or ProfileParams()
        self.params = ProfileParams(**{**asdict(base), **overrides})

    @property
    def n_ref_(self) -> int:
        """Reference rows: the training parts, then their lighting copies (made where lighting is normalised)."""
        copies = self.params.lighting_copies * len(copied_parts(self.n_train_)) if self.lighting_ is not None else 0
        return self.n_train_ + copies

    @property
    def map_shape(self) -> tuple[int, int]:
        """(MH, MW) of the anomaly maps: the cell grid, or the fine size when the profile has a fine pass."""
        if self.fine_ is not None:
            w, h = self.fine_.size
            return h, w
        return self.layout_.grid

    @property
    def decode_size(self) -> tuple[int, int]:
        """(w, h) the images must be decoded at, at least: the fine size, or the working size."""
        return self.fine_.size if self.fine_ is not None else (self.layout_.width, self.layout_.height)

    def display_image(self, image: np.ndarray) -> np.ndarray:
        """The part (H0, W0, 3) at the size its anomaly map is drawn on: the fine size, or the working size."""
        w, h = self.decode_size
        if image.shape[:2] == (h, w):
            return image
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)

    # ---------------------------------------------------------------- preparation
    def working_image(self, image: np.ndarray) -> np.ndarray:
        """Resize a BGR uint8 image (H0, W0, 3) to the working size (H, W, 3)."""
        lay = self.layout_
        if image.shape[0] == lay.height and image.shape[1] == lay.width:
            return image
        return cv2.resize(image, (lay.width, lay.height), interpolation=cv2.INTER_AREA)

    def _features(self, work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell features (P, C) and global features (G,) of one working image (H, W, 3)."""
        seg = self.palette_.assign(work)
        extra = 0 if self.texture_scale_ is None else N_TEXTURE
        channels = pixel_channels(seg, len(self.palette_.centres_), self.novel_distance_, extra)
        if extra:
            channels[..., -extra:] = texture_channels(work, self.texture_scale_, self.params.texture_weight)
        cells = cell_features(channels, self.layout_)
        return cells.reshape(-1, cells.shape[-1]), global_features(channels, self.pooling_)

    def _featurise(self, works: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Stack features of prepared working images: cells (N, P, C) (float16 for a large set, see cell_dtype,
        else float32), globals (N, G) float32. Filled in place, so a large training set never holds its cells
        twice."""
        cells: np.ndarray | None = None
        globs: np.ndarray | None = None
        works = list(works)
        for i, work in enumerate(works):
            c, g = self._features(work)
            if cells is None or globs is None:
                cells = np.empty((len(works), *c.shape), cell_dtype(len(works), *c.shape))
                globs = np.empty((len(works), *g.shape), np.float32)
            cells[i], globs[i] = c, g
        if cells is None or globs is None:
            raise ValueError("no images to featurise")
        return cells, globs

    def _valid_cells(self, placement: Placement | None) -> np.ndarray:
        """Cells (P,) bool whose window lies mostly inside the photo once the part is moved into the profile's
        frame; the rest show only the replicated border and are not compared."""
        gh, gw = self.layout_.grid
        if placement is None or np.array_equal(placement.matrix, IDENTITY):
            return np.ones(gh * gw, dtype=bool)
        lay = self.layout_
        inside = cv2.warpAffine(np.ones((lay.height, lay.width), np.float32), placement.matrix, (lay.width, lay.height),
                                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return cell_features(inside[..., None], lay).ravel() >= _VALID_SHARE

    def fine_min_width(self) -> int:
        """The least photo width the fine pass runs at (_FINE_MIN_GAIN times the working width)."""
        return math.ceil(_FINE_MIN_GAIN * self.layout_.width)

    # ---------------------------------------------------------------- fitting
    def fit(self, images: Iterable[np.ndarray], y=None) -> "NormalProfile":
        """Learn placement, lighting, palette, features and calibration from good BGR uint8 images (H0, W0, 3)."""
        p = self.params
        originals: list[np.ndarray] = []
        works: list[np.ndarray] = []
        aspects: list[float] = []
        for image in images:
            aspects.append(image.shape[0] / max(image.shape[1], 1))
            if not works:
                h0, w0 = image.shape[:2]
                self.layout_ = make_layout(w0, h0, p.width, p.cells_across, p.window_strides, p.n_rings, p.coarse)
                size = fine_frame(w0, h0, p)
                self.fine_ = None if size is None else VariationModel(size, FINE_REACH)
            image = self.display_image(image)  # with a fine pass, every part is first brought to the fine size
            # a turned photo's constant fill (black corners), painted as a replicated border would be: see fill.py
            image, _ = unfilled(image)
            originals.append(image)
            works.append(self.working_image(image))
        if len(works) < 2:
            raise ValueError(f"need at least 2 good images to fit a profile, got {len(works)}")
        self.n_train_ = len(works)
        self.aspect_range_ = (min(aspects), max(aspects))
        picks = register.sample(len(originals), sensor.LIMIT_SAMPLE)
        self.sensor_limits_ = sensor.learn_limits([originals[i] for i in picks])
        taken = works
        works, valid, conditions, groups = self._fit_conditions(works)
        self.mirror_gates_ = self._fit_mirrors(taken)
        # blur is judged where a part is known to be there (located): a strip photographed without registration is
        # never "not located", and an empty belt would read as blurred (found by a review)
        self.focus_ = None if self.locator_ is None else FocusModel().fit(works[: self.n_train_])
        fine_oof = self._fit_fine(originals, conditions)
        originals.clear()  # not needed past here (frees memory when the caller passed images larger than the fine size)
        rng = np.random.default_rng(p.seed)
        palette = Palette(p.n_colours, p.chroma_weight, p.softness, p.palette_balance, seed=p.seed)
        parts = works[: self.n_train_]  # the palette and the scales are learned on the parts as photographed
        self.palette_ = palette.fit(self._pixel_sample(parts, rng))
        distances = np.concatenate(
            [self.palette_.assign(w).distance.ravel()[:: max(1, len(parts) // 50)] for w in parts]
        )
        self.novel_distance_ = float(np.quantile(distances, p.novel_quantile)) + 1.0
        self.texture_scale_ = None
        if p.texture_weight > 0:  # each orientation bin's 99th percentile over (up to 50) good parts
            sample = parts[:: max(1, len(parts) // 50)]
            energy = np.concatenate([relative_energy(w).reshape(-1, N_TEXTURE) for w in sample])
            self.texture_scale_ = np.quantile(energy, 0.99, axis=0).astype(np.float64) + 1e-3
        self._derive()
        cells, globs = self._featurise(works)
        works.clear()  # the working images (and `parts`, a view of their list) are not needed past here
        parts.clear()
        self._set_reference(cells, globs)
        del cells  # the reference is that array: held once (0.6 GB in float16 at 5,000 parts), not twice
        self._calibrate(self.ref_cells_, globs, rng, valid, fine_oof, groups)
        return self

    def _fit_fine(self, originals: Sequence[np.ndarray], conditions: Sequence[tuple[Placement | None, Lighting | None]]
                  ) -> np.ndarray | None:
        """Learn the fine pass's variation model (when fit chose one); held-out fine scores (N,)."""
        if self.fine_ is None:
            return None
        self.fine_.fit(len(originals), lambda i: self._fine_part(originals[i], *conditions[i]), self.params.n_folds,
                       np.random.default_rng(self.params.seed + 1))
        return self.fine_.oof_

    def _fine_part(self, image: np.ndarray, placement: Placement | None, lighting: Lighting | None) -> FinePart:
        """The part (H0, W0, 3) for the fine pass: at the fine size, with its coarse placement and lighting."""
        assert self.fine_ is not None
        w, h = self.fine_.size
        if image.shape[:2] != (h, w):
            shrink = image.shape[1] >= w
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        start = IDENTITY if placement is None else fine_matrix(placement.matrix, w / self.layout_.width)
        return FinePart(image, start, None if lighting is None else lighting.lut)

    def _fit_conditions(self, works: list[np.ndarray]) -> tuple[
            list[np.ndarray], np.ndarray, list[tuple[Placement | None, Lighting | None]], np.ndarray | None]:
        """Learn the reference placement and lighting; return the training images registered and normalised
        (with the lighting copies after the N parts), which of their cells (N + C, P) lie inside their photos,
        each part's placement and lighting (N), and which part each image is (N + C,), or None without copies."""
        p = self.params
        self.locator_ = None
        aligned = works
        gh, gw = self.layout_.grid
        valid = np.ones((len(works), gh * gw), dtype=bool)
        placements: list[Placement | None] = [None] * len(works)
        if min(self.layout_.width, self.layout_.height) >= MIN_REGISTER_SIDE:
            self.locator_ = Locator(p.rotation, p.max_shift).fit(works)
            placements = list(self.locator_.train_placements_)
            aligned = [self.locator_.warp(w, pl) for w, pl in zip(works, placements)]
            valid = np.stack([self._valid_cells(pl) for pl in placements])
        self._without_lighting()
        if not p.normalise_lighting:
            return aligned, valid, [(pl, None) for pl in placements], None
        self.lighting_ = LightingModel(shading_on(p.shading, self.locator_)).fit(aligned)
        lights = [self.lighting_.estimate(a) for a in aligned]
        log_exposure = np.log(np.array([max(li.exposure, 1e-3) for li in lights]))
        centre = float(np.median(log_exposure))
        self.exposure_ref_ = float(np.exp(centre))
        relative = log_exposure - centre
        self.exposure_stats_ = np.array(balanced_spread(relative, EXPOSURE_SD_FLOOR, _EXPOSURE_SD_FLOOR))
        # the tolerance counts from the lightings the good training parts were photographed under, and allows an
        # offset of max_offset grey levels at the part's typical level, as far as it moves that level by no more
        # than max_exposure_change: on a dark product (a black tyre at 19) 10 levels is +50%, which normalisation
        # cannot tell from a gain precisely enough to judge the part (measured), so it is beyond the tolerance
        typical = max(self.lighting_.typical_level_ * 255.0, 1.0)
        low, high = self._tolerance(p.max_offset / typical)
        self.exposure_bounds_ = (float(relative.min()) + low, float(relative.max()) + high)
        # ... but a part is allowed only the offset its own black shows (a brighter lamp with its black where it
        # was is a gain: 20%, not 40%; found by an adversarial test, x1.25 flooded the bottle with defects)
        self.exposure_range_ = (float(relative.min()), float(relative.max()))
        self.cast_limit_ = p.max_colour_cast + max(li.cast_change for li in lights)
        done = [self.lighting_.normalise(a, li) for a, li in zip(aligned, lights)]
        normalised, lights = [d[0] for d in done], [d[1] for d in done]
        conditions = list(zip(placements, lights))
        if p.lighting_copies == 0:
            return normalised, valid, conditions, None
        rng = np.random.default_rng(p.seed + 2)
        copied = copied_parts(len(aligned))
        groups = [np.arange(len(aligned))]
        for _ in range(p.lighting_copies):  # parts under other lightings, normalised as on the line
            for i in copied:
                copy = relit(aligned[i], draw(rng, self.lighting_.typical_level_))
                normalised.append(self.lighting_.apply(copy, self.lighting_.estimate(copy)))
            groups.append(copied)
        group = np.concatenate(groups)
        return normalised, valid[group], conditions, group

    def _derive(self) -> None:
        """Set what follows from layout and palette: region pooling and the rotation-free feature indices."""
        self.pooling_ = region_pooling(self.layout_)
        colour = len(self.palette_.centres_) + 2
        n_channels = colour + (0 if self.texture_scale_ is None else N_TEXTURE)
        # whole image and rings, without the texture channels (orientation turns with the part)
        regions = np.arange(2 + self.params.n_rings)[:, None] * n_channels
        self.rotation_free_ = (regions + np.arange(colour)[None, :]).ravel()

    def _pixel_sample(self, works: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Pool up to `pixel_samples` pixels (N, 3) uint8 evenly from the working images."""
        per_image = max(1, self.params.pixel_samples // len(works))
        picks = []
        for w in works:
            flat = w.reshape(-1, 3)
            picks.append(flat[rng.integers(0, len(flat), size=min(per_image, len(flat)))])
        return np.concatenate(picks)

    def _set_reference(self, cells: np.ndarray, globs: np.ndarray) -> None:
        """Store the reference features (cells (N, P, C): float16 as saved, or float32 rounded in place through
        float16, so a loaded profile scores alike and the held-out scores are those of the saved references) and
        the scaling of global features."""
        if cells.dtype != np.float16:
            for part in cells:  # one part at a time: no second full-size array
                part[...] = part.astype(np.float16)
        self.ref_cells_ = cells
        self.ref_global_ = globs.astype(np.float32)
        self.global_scale_ = (globs.std(axis=0) + GLOBAL_SCALE_FLOOR).astype(np.float32)

    def _terms(
        self, cells: np.ndarray, globs: np.ndarray, ref: np.ndarray | None = None, valid: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw local scores (N,), global scores (N,) and cell maps (N, P) against reference rows `ref`; cells
        not `valid` (N, P) count as normal."""
        p = self.params
        ref_idx = np.arange(len(self.ref_cells_)) if ref is None else ref
        ref_g = self.ref_global_[ref_idx] / self.global_scale_
        q_g = globs / self.global_scale_
        d_g = _euclidean(q_g, ref_g)  # (N, n_ref)
        n_ref = len(ref_idx)
        sizes = sorted({min(m, n_ref) for m in p.neighbours})
        m_max = sizes[-1]
        order = np.argsort(d_g, axis=1)
        maps = np.empty((len(cells), cells.shape[1]), dtype=np.float32)
        for i in range(len(cells)):
            dist = _nearest_distances(self.ref_cells_, ref_idx[order[i, :m_max]], cells[i])  # (M, P)
            maps[i] = dist[[m - 1 for m in sizes]].mean(axis=0)
        k = min(p.global_k, n_ref)
        rot = self.rotation_free_
        d_r = _euclidean(q_g[:, rot], ref_g[:, rot])  # (N, n_ref), rotation-free features only
        global_term = np.sort(d_r, axis=1)[:, :k].mean(axis=1)
        if valid is not None:
            maps = np.where(valid, maps, 0.0).astype(np.float32)
        return _top_mean(maps, p.top_fraction), global_term, maps

    def _combine(self, local: np.ndarray, global_term: np.ndarray, fine: np.ndarray | None = None) -> np.ndarray:
        """Anomaly score (N,) from raw terms standardised against held-out good images: the cell terms, plus what the
        fine term (mapped onto their scale, see _fine_mapping) shows beyond the cells' top quantile of good parts."""
        z_local = (local - self.local_stats_[0]) / self.local_stats_[1]
        z_global = (global_term - self.global_stats_[0]) / self.global_stats_[1]
        excess = np.maximum(z_global - self.params.global_margin, 0.0)
        score = z_local + self.params.global_weight * excess
        if fine is not None and self.fine_ is not None:
            mapped = self.fine_stats_[0] + self.fine_stats_[1] * fine
            if len(self.fine_stats_) == 3:
                score = score + np.maximum(mapped - self.fine_stats_[2], 0.0)
            else:  # a profile saved before the margin: the larger of the two terms, as it was calibrated
                score = np.maximum(score, mapped)
        return score.astype(np.float64)

    def _fine_mapping(self, cell_scores: np.ndarray, fine: np.ndarray) -> np.ndarray:
        """[offset, gain, margin] mapping held-out fine scores (N,) onto the cell terms' scale (N,): the median onto
        the median and the (1 - false alarm rate) quantile onto the same quantile, which is the margin. The fine
        term adds only what lies beyond it (as the global term counts only beyond its margin), so a product whose
        fine pass is noisy (parts that vary at the fine scale) keeps what the cells rank, and one where it is
        steady gains the specks the cells cannot see."""
        q = 1.0 - self.params.false_alarm_rate
        c_mid, c_top = np.median(cell_scores), np.quantile(cell_scores, q)
        f_mid, f_top = np.median(fine), np.quantile(fine, q)
        gain = max(c_top - c_mid, 1e-6) / max(f_top - f_mid, 1e-6)
        return np.array([c_mid - gain * f_mid, gain, c_top])

    def _calibrate(self, cells: np.ndarray, globs: np.ndarray, rng: np.random.Generator,
                   valid: np.ndarray | None = None, fine: np.ndarray | None = None,
                   groups: np.ndarray | None = None) -> None:
        """Cross-fit: score each good image with a profile fitted without it; set stats and threshold. `valid`
        (N, P): which cells of each image are compared; `groups` (N,): which part each image is (a part's lighting
        copies are held out with it), None when every image is its own part; `fine` (parts,): held-out fine
        scores."""
        p = self.params
        n = len(cells)
        n_parts = n if groups is None else int(groups.max()) + 1
        folds = np.array_split(rng.permutation(n_parts), min(p.n_folds, n_parts))
        if groups is not None:
            folds = [np.flatnonzero(np.isin(groups, fold)) for fold in folds]
            fine = None if fine is None else fine[groups]
        local = np.empty(n)
        glob = np.empty(n)
        cell_vals = []
        for held in folds:
            ref = np.setdiff1d(np.arange(n), held)
            lo, gl, maps = self._terms(cells[held], globs[held], ref, None if valid is None else valid[held])
            local[held], glob[held] = lo, gl
            cell_vals.append(maps.ravel()[:: max(1, maps.size // 20000)].copy())  # not a view of the fold's maps
        self.local_stats_ = np.array([np.median(local), max(local.std(), 1e-6)])
        self.global_stats_ = np.array([np.median(glob), max(glob.std(), 1e-6)])
        if fine is not None:
            self.fine_stats_ = self._fine_mapping(self._combine(local, glob), fine)
        oof = self._combine(local, glob, fine)
        self.oof_scores_ = oof
        self.threshold_ = float(np.quantile(oof, 1.0 - p.false_alarm_rate, method="higher"))
        self.offset_ = -self.threshold_
        self.map_scale_ = float(np.quantile(np.concatenate(cell_vals), 0.999)) + 1e-6
        copies = "" if groups is None else f" and {n - n_parts} lighting copies of them"
        self.calibration_ = Calibration(
            method=f"{len(folds)}-fold cross-fitting on the training images{copies}",
            n_good=n_parts,
            false_alarm_rate=p.false_alarm_rate,
            threshold=self.threshold_,
            oof_false_alarm_rate=float((oof > self.threshold_).mean()),
        )

    # ---------------------------------------------------------------- scoring
    def assess(self, images: Iterable[np.ndarray], station_field: np.ndarray | None = None) -> list[Assessment]:
        """Score BGR uint8 images and report each part's placement and lighting (see Assessment); `station_field` (3,):
        the smooth light field the station's recent parts share, on the photo (with even_light: see _assess_one)."""
        # one at a time: one full-size image held at once
        return [self._assess_one(image, station_field) for image in images]

    def _assess_one(self, image: np.ndarray, station_field: np.ndarray | None = None) -> Assessment:
        """Score one BGR uint8 image (H0, W0, 3) and report its placement and lighting."""
        framing = self.framing(image.shape[1], image.shape[0])
        image, _ = unfilled(self.display_image(image))  # as in fit
        taken = self.working_image(image)
        # the cached reference first: a grey product's parts (and every part without lighting) skip the check
        grey = self.lighting_ is not None and not self._grey_reference() and _is_grey(taken)
        aligned, placement = self._place(taken)
        work, lighting = self._relight(aligned)
        look = self._look(image, work, placement, lighting)
        located, match, angle, shift, resized = True, None, 0.0, (0.0, 0.0), None
        if placement is not None:
            match = placement.match
            located = match >= self.locator_.match_limit_
            angle, shift = placement.angle, placement.shift
            resized = _resized(placement)
        exposure, cast, offset, lighting_ok = None, 0.0, 0.0, True
        if lighting is not None:
            exposure, lighting_ok = self._lit(lighting)
            cast, offset = lighting.cast_change, lighting.offset
        evened = own = None
        if self.evens_light():  # the part's own light field, on the photo: what the station's is made of
            own = in_photo(self.lighting_.smooth_field(work), placement, *taken.shape[1::-1])
        # a second look only where the score alone decides (the light as first read is what is recorded and judged),
        # by the field the station's recent parts share, where the part's own agrees: a lamp lights every part
        # alike, a stain over half a part is a field of that part alone (per part they cannot be told apart)
        if look.score > self.threshold_ and own is not None and station_field is not None and located \
                and resized is None and lighting_ok and not grey and framing is None \
                and EVEN_MIN_FIELD <= np.abs(station_field).max() <= EVEN_MAX_FIELD \
                and np.abs(own - station_field).max() <= EVEN_AGREE:
            field = in_photo(station_field, placement, *taken.shape[1::-1], to_frame=True)
            again = self._evened(image, aligned, placement, field)
            if again.score <= self.threshold_:  # flagged by the station's light alone
                look, evened = again, uneven_light(station_field)
        found = Assessment(look.score, self._photo_map(look, placement), located, match, angle, shift, exposure, cast,
                           offset, lighting_ok, grey, framing, red_blue_swapped=self._red_blue_swapped(
                               taken, placement, lighting), blurred=self._blurred(work, placement), resized=resized,
                           evened=evened, light_field=own,
                           lies=None if placement is None else self.locator_.where(taken, placement))
        if judge(found, self.threshold_)[0] == "ok":  # a line and the place are looked at only for a part that
            return found  # would not pass
        # mirrored first: it is named only when the part then passes; off its place, when it then matches, unless it
        # matched clearly better mirrored (a mirrored tyre flagged as well was named misplaced: its tread matches
        # again a few grooves along)
        mirrored, looks_mirrored = (None, False)
        if placement is not None and look.score > self.threshold_:  # flagged by its look, not only by its light
            mirrored, looks_mirrored = self._mirrored(image, taken, placement)
        off = None if placement is None or looks_mirrored else self.locator_.off_place(taken, placement)
        named = None
        # nearer than the profile allows, only when lit as trained, as it lies or moved back (its light read where it
        # lies takes in what the move brought into the frame: 6 of 20 bottles 4% off read beyond the tolerance), and
        # moved back it passes (a photo at 0.4x exposure a little off was named so, when its light was not looked at)
        relit = None if off is None else self._relight(self.locator_.warp(taken, off.placement))
        if off is not None and (off.far or found.lighting_ok or self._lit(relit[1])[1]):
            moved_score = self._score_at(image, relit, off.placement)
            if off.far or moved_score <= self.threshold_:
                named = _off_place(off, moved_score, self.threshold_)
        return replace(found, sensor_line=sensor.stuck_line(image, self.sensor_limits_), mirrored=mirrored,
                       off_place=named)

    def _fit_mirrors(self, works: Sequence[np.ndarray]) -> tuple[float | None, float | None]:
        """The (left to right, top to bottom) gates of the mirror check, from the good working images (H, W, 3): for
        a direction in which good parts mirrored match the reference worse than as photographed by MIRROR_MIN or more
        (their median), MIRROR_SHARE of that; None where they match alike (a symmetric part: mirrored, it is the same
        part, and a flagged part mirrored would only pass by chance), or without registration."""
        if self.locator_ is None:
            return None, None
        places = self.locator_.train_placements_
        picks = [(works[i], places[i]) for i in register.sample(len(works), MIRROR_SAMPLE)]
        gates: list[float | None] = []
        for axis, _ in MIRRORS:
            if axis == 0 and self.locator_.mode_ == "any":  # top to bottom: left to right turned half a turn
                gates.append(None)
                continue
            loss = -float(np.median([self.locator_.locate(np.ascontiguousarray(np.flip(w, axis))).match - p.match
                                     for w, p in picks]))
            gates.append(min(MIRROR_SHARE * loss, 2.0) if loss >= MIRROR_MIN else None)
        return gates[0], gates[1]

    def _mirrored(self, image: np.ndarray, taken: np.ndarray, placement: Placement) -> tuple[str | None, bool]:
        """How a part that would not pass (display and working images (H, W, 3), its placement) is the good parts
        mirrored ("left to right" or "top to bottom"): mirrored, it matches the reference better than as photographed
        by the direction's gate (learned: see _fit_mirrors) and then passes; else None. And whether it matched that
        much better mirrored at all (then it is no part off its place either)."""
        better = False
        for (axis, name), gate in zip(MIRRORS, self.mirror_gates_):
            if gate is None:
                continue
            aligned, moved = self._place(np.ascontiguousarray(np.flip(taken, axis)))
            if moved.match - placement.match < gate:
                continue
            better = True
            if self._score_at(np.ascontiguousarray(np.flip(image, axis)), self._relight(aligned), moved) \
                    <= self.threshold_:
                return name, True
        return None, better

    def _score_at(self, image: np.ndarray, relit: tuple[np.ndarray, Lighting | None], placement: Placement) -> float:
        """A part's score (display image, and its working image brought into the frame by `placement` and relit:
        _relight's (H, W, 3) image and lighting) when it is judged so: a part found off its place moved back, or
        mirrored (the fine pass skipped once it is flagged)."""
        work, lighting = relit
        return self._look(image, work, placement, lighting, stop_above=self.threshold_).score

    def _place(self, taken: np.ndarray) -> tuple[np.ndarray, Placement | None]:
        """A working image (H, W, 3) registered into the profile's frame, and its placement (None: not located)."""
        if self.locator_ is None:
            return taken, None
        placement = self.locator_.locate(taken)
        return self.locator_.warp(taken, placement), placement

    def _relight(self, aligned: np.ndarray) -> tuple[np.ndarray, Lighting | None]:
        """A registered working image (H, W, 3) brought to the reference lighting, and its lighting."""
        if self.lighting_ is None:
            return aligned, None
        return self.lighting_.normalise(aligned, self.lighting_.estimate(aligned))

    def _look(self, image: np.ndarray, work: np.ndarray, placement: Placement | None, lighting: Lighting | None,
              field: np.ndarray | None = None, stop_above: float | None = None) -> _Look:
        """Score a prepared part (H, W, 3), with its fine pass on the display `image` relit alike (and divided by the
        smooth `field` (3,), when given); the fine pass is skipped when the cells alone score above `stop_above`."""
        cells, globs = self._featurise([work])
        local, glob, cell_map = self._terms(cells, globs, valid=self._valid_cells(placement)[None])
        cell_map = cell_map.reshape(self.layout_.grid) / self.map_scale_
        cells_only = float(self._combine(local, glob)[0])
        if self.fine_ is None or (stop_above is not None and cells_only > stop_above):
            return _Look(cells_only, cell_map, None)
        part = self._fine_part(image, placement, lighting)
        if field is not None:
            part = replace(part, gain=field_gain(field, *part.image.shape[:2]))
        fine = self.fine_.assess(part)
        return _Look(float(self._combine(local, glob, np.array([fine[0]]))[0]), cell_map, fine)

    def _photo_map(self, look: _Look, placement: Placement | None) -> np.ndarray:
        """The anomaly map of a look on the part as photographed: the cell map, or with a fine pass the cell map at the
        fine size where it is the larger; (MH, MW) float32."""
        amap = look.cells
        if placement is not None:
            amap = Locator.unwarp_map(amap, placement, self.layout_.stride)
        if look.fine is not None:
            amap = cv2.max(cv2.resize(amap, look.fine[1].shape[::-1], interpolation=cv2.INTER_LINEAR), look.fine[1])
        return np.ascontiguousarray(amap, dtype=np.float32)

    def searches_scale(self) -> bool:
        """Whether a placed part is also tried at other scales on the line (a camera moved; off where the search
        could not find good parts photographed 5% off: see register's note on scale)."""
        return self.locator_ is not None and self.locator_.scale_limit_ is not None

    def evens_light(self) -> bool:
        """Whether flagged parts get a second look with their light evened out (`even_light`, where lighting is
        normalised and no shading field divides every part already)."""
        return self.params.even_light and self.lighting_ is not None and not self.lighting_.shading

    def _evened(self, image: np.ndarray, aligned: np.ndarray, placement: Placement | None, field: np.ndarray) -> _Look:
        """A flagged part judged again with its light evened out: the registered part (H, W, 3) divided by a smooth
        field (3,) in the frame, its lighting read afresh (a lamp dimmed on one side also reads as a lifted black)."""
        assert self.lighting_ is not None
        flat = divide(aligned, field_gain(field, *aligned.shape[:2]))
        work, light = self._relight(flat)
        return self._look(image, work, placement, light, field=field, stop_above=self.threshold_)

    def _blurred(self, work: np.ndarray, placement: Placement | None) -> str | None:
        """What is wrong with a registered, normalised working image (H, W, 3) that has lost its detail, or None
        (only a located part is judged for it: see verdicts.judge)."""
        if self.focus_ is None or placement is None:
            return None
        sharpness = self.focus_.sharpness(work)
        if not self.focus_.blurred(sharpness):
            return None
        return (f"the photo is blurred: its detail is {100 * math.exp(sharpness):.0f}% of the good parts' typical "
                f"(the least sharp good part's {100 * math.exp(self.focus_.low_):.0f}%): if every part says so, check "
                "the camera's focus, the exposure time (a part moving) and vibration")

    def _red_blue_swapped(self, work: np.ndarray, placement: Placement | None, lighting: Lighting | None) -> bool:
        """Whether a working image (H, W, 3) whose colour cast is beyond the tolerance has red and blue swapped."""
        if self.lighting_ is None or lighting is None or lighting.cast_change <= self.cast_limit_:
            return False  # the rare path: the part is warped again only here
        aligned = work if self.locator_ is None or placement is None else self.locator_.warp(work, placement)
        return self.lighting_.red_blue_swapped(aligned, self.cast_limit_)

    def framing(self, width: int, height: int, turned: bool = False) -> str | None:
        """What is wrong with a photo of this size for this profile (its height to width ratio beyond the trained
        photos' by more than ASPECT_TOLERANCE: the part would be judged stretched), or None. `assess` checks the
        images it is given; a caller that resizes photos first (the Inspector) checks the photo's own size, and
        says whether its EXIF orientation `turned` it (stored `height` x `width`): the detail then names that."""
        low, high = self.aspect_range_
        lay = self.layout_
        # training images may reach the profile already resized to the working or fine size, whose height is
        # rounded to whole cells: a photo's own shape may lie that far from what was recorded (found by a review:
        # 4096 x 600 photos were trained as 0.141 and checked as 0.146, every part rejected)
        rounding = lay.stride / (2.0 * lay.width)
        least = (min(low, lay.height / lay.width) - rounding) / (1.0 + ASPECT_TOLERANCE)
        most = (max(high, lay.height / lay.width) + rounding) * (1.0 + ASPECT_TOLERANCE)
        if width > 0 and height > 0 and least <= height / width <= most:
            return None
        trained = f"{1 / low:.3g}:1" if abs(high - low) < 1e-9 else f"{1 / high:.3g}:1 to {1 / low:.3g}:1"
        shape = f"the photo is {width}x{height} ({width / max(height, 1):.3g}:1)"
        if turned and self.framing(height, width) is None:  # a camera writing EXIF orientation inconsistently
            return (f"{shape} once turned by its EXIF orientation; as stored, {height}x{width}, it has the trained "
                    f"shape ({trained}): the camera writes an EXIF orientation that turns its photos. Check its "
                    "orientation setting, or train a profile on turned photos")
        if turned:
            return (f"{shape} once turned by its EXIF orientation (stored {height}x{width}) while the parts were "
                    f"trained on {trained} photos: a camera replaced, re-set or turned? Check its orientation setting "
                    "(the EXIF orientation it writes) and resolution, or train a profile on the new photos")
        return (f"{shape} while the parts were trained on {trained} photos: a camera replaced, re-cropped or set to "
                "another resolution? Restore its setting or train a profile on the new photos")

    def _lit(self, lighting: Lighting | None) -> tuple[float | None, bool]:
        """A part's exposure relative to the training parts (None without lighting) and whether it is lit within the
        tolerance (exposure within _exposure_bounds, colour cast within cast_limit_)."""
        if lighting is None:
            return None, True
        # its pixels at the top say how bright the lamp is at least, where the blocks cannot
        exposure = max(lighting.exposure / self.exposure_ref_, lighting.clipped_exposure or 0.0)
        low, high = self._exposure_bounds(lighting)
        return exposure, low <= math.log(max(exposure, 1e-6)) <= high and lighting.cast_change <= self.cast_limit_

    def _exposure_bounds(self, lighting: Lighting) -> tuple[float, float]:
        """The log exposures (relative to the reference) a part lit so is judged within: `max_exposure_change` beyond
        the training parts', widened by the offset its own black shows (at least MIN_ALLOWANCE_LEVELS, at most
        `max_offset`, and at most as much as `max_exposure_change` at the typical level: see _fit_conditions);
        without a reading of its black by MIN_ALLOWANCE_LEVELS; for a profile saved before these bounds, by the
        largest allowed offset, as it was judged then."""
        if self.exposure_range_ is None:
            return self.exposure_bounds_
        p = self.params
        typical = max(self.lighting_.typical_level_ * 255.0, 1.0)
        # no reading of the black (no line through the part's levels: too few usable blocks, or a brighter lamp that
        # clips them) allows only the least: the whole offset would let a 40% brighter lamp through (found by a review)
        black = lighting.black if lighting.black is not None and math.isfinite(lighting.black) else 0.0
        low, high = self._tolerance(min(max(abs(black), MIN_ALLOWANCE_LEVELS), p.max_offset) / typical)
        return self.exposure_range_[0] + low, self.exposure_range_[1] + high

    def _tolerance(self, widen: float) -> tuple[float, float]:
        """The log exposure change allowed below and above the training parts': `max_exposure_change`, widened by
        an offset worth `widen` of the typical level (at most `max_exposure_change` again)."""
        change = self.params.max_exposure_change
        widen = min(widen, change)
        return math.log(max(1.0 - change - widen, 0.05)), math.log1p(change + widen)

    def _grey_reference(self) -> bool:
        """Whether the trained parts are grey-scale (their lighting reference has no colour)."""
        if not hasattr(self, "_grey_ref"):
            self._grey_ref = _is_grey(np.clip(np.rint(self.lighting_.reference_), 0, 255).astype(np.uint8))
        return self._grey_ref

    def score_images(self, images: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores (N,) and anomaly maps (N, MH, MW) of BGR uint8 images; maps are in map units, on the
        parts as photographed, at the map size (the cell grid, or the fine size with a fine pass)."""
        found = self.assess(images)
        if not found:
            return np.zeros(0), np.zeros((0, *self.map_shape), np.float32)
        return np.array([a.score for a in found]), np.stack([a.anomaly_map for a in found])

    def anomaly_score(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """Anomaly score (N,): higher is more anomalous; compare with threshold_."""
        return self.score_images(images)[0]

    def score_samples(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """scikit-learn convention: higher is more normal; equals -anomaly_score."""
        return -self.anomaly_score(images)

    def decision_function(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """score_samples - offset_: negative for anomalies."""
        return self.score_samples(images) - self.offset_

    def predict(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """+1 for normal parts, -1 for anomalies."""
        return np.where(self.decision_function(images) < 0, -1, 1)

    # ---------------------------------------------------------------- state (for profiles.py)
    _ARRAYS = ("ref_cells_", "ref_global_", "global_scale_", "local_stats_", "global_stats_", "oof_scores_")

    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Everything learned, as JSON-able metadata and plain numeric arrays (no objects)."""
        meta = {
            "format_version": self._format(),
            "params": asdict(self.params),
            "layout": asdict(self.layout_),
            "aspect_range": list(self.aspect_range_),
            "chroma_weight": self.palette_.chroma_weight,
            "novel_distance": self.novel_distance_,
            "texture_scale": None if self.texture_scale_ is None else [float(v) for v in self.texture_scale_],
            "threshold": self.threshold_,
            "map_scale": self.map_scale_,
            "n_train": self.n_train_,
            "calibration": asdict(self.calibration_),
            "registration": None if self.locator_ is None else {
                "mode": self.locator_.mode_, "match_limit": self.locator_.match_limit_,
                "scale_limit": self.locator_.scale_limit_, "further_scales": self.locator_.further_,
                "scale_seen": self.locator_.scale_seen_,
                "off_limits": None if self.locator_.off_limits_ is None else list(self.locator_.off_limits_),
                "place_spread": None if self.locator_.place_spread_ is None else list(self.locator_.place_spread_),
                "pivot": None if self.locator_.pivot_ is None else list(self.locator_.pivot_)},
            "lighting": None if self.lighting_ is None else {
                "exposure_ref": self.exposure_ref_, "exposure_bounds": list(self.exposure_bounds_),
                "exposure_range": None if self.exposure_range_ is None else list(self.exposure_range_),
                "cast_limit": self.cast_limit_, "shrink": [float(v) for v in self.lighting_.shrink_],
                "ceiling": self.lighting_.ceiling_, "shading": self.lighting_.shading,
                "top_share": None if self.lighting_.top_share_ is None else [
                    round(float(v), 6) for v in self.lighting_.top_share_],
                "offset": None if self.lighting_.offset_ref_ is None else [
                    self.lighting_.offset_ref_, self.lighting_.offset_limit_]},
            "drift": self.drift_baseline(),
            "fine": None if self.fine_ is None else {
                "size": list(self.fine_.size), "reach": self.fine_.reach, "stats": [float(v) for v in self.fine_stats_],
                "scale": self.fine_.scale_},
            "focus": None if self.focus_ is None else {"low": self.focus_.low_},
            "sensor_line_limits": list(self.sensor_limits_),
            "mirror_gates": list(self.mirror_gates_),
        }
        arrays = {name.rstrip("_"): getattr(self, name) for name in self._ARRAYS}
        arrays["ref_cells"] = self.ref_cells_.astype(np.float16)  # shares are multiples of 1/area
        arrays["palette_centres"] = self.palette_.centres_
        if self.locator_ is not None:
            arrays["register_reference"] = self.locator_.ref_
        if self.lighting_ is not None:
            arrays["lighting_reference"] = self.lighting_.reference_
            arrays["lighting_weights"] = self.lighting_.weights_
        if self.focus_ is not None:
            arrays["focus_typical"] = self.focus_.typical_
        if self.fine_ is not None:
            arrays["fine_mean"] = self.fine_.mean_
            arrays["fine_spread"] = self.fine_.spread_
        return meta, arrays

    def _format(self) -> int:
        """The format this profile is saved in: the oldest that judges it alike (see FORMAT_VERSION)."""
        if self.lighting_ is not None and self.lighting_.shading == SMOOTH:
            return SMOOTH_FORMAT
        return EVEN_FORMAT if self.params.even_light else FORMAT_VERSION

    def threshold_without(self, part: int) -> float:
        """The threshold the held-out scores set without training part `part` (0..n_train_ - 1) and its lighting
        copies: what that part's own held-out score is compared with. With fewer than 100 parts the (1 - false
        alarm rate) quantile is the largest held-out score, so compared with the threshold itself a part's held-out
        score could never lie above it."""
        n = self.n_train_
        group = np.arange(n)
        if len(self.oof_scores_) > n:  # the lighting copies follow the parts, in the order they were made
            copied = copied_parts(n)
            group = np.concatenate([group] + [copied] * ((len(self.oof_scores_) - n) // len(copied)))
        others = np.asarray(self.oof_scores_, dtype=np.float64)[group != part]
        return float(np.quantile(others, 1.0 - self.params.false_alarm_rate, method="higher"))

    def drift_baseline(self) -> dict[str, list]:
        """Where a steady line's parts lie, for the drift monitor: [median, robust sd] of the log exposure
        (relative to the training parts) and of the held-out scores of good training parts (not their lighting
        copies: the monitor's baseline is the line as trained), and, where registration learned it, "position":
        [median, spread] of where the good parts lay across and down (Locator.place_spread_)."""
        scores = np.asarray(self.oof_scores_[: self.n_train_], dtype=np.float64)
        centre = float(np.median(scores))
        spread = 1.4826 * float(np.median(np.abs(scores - centre)))
        out = {"log_exposure": [float(self.exposure_stats_[0]), float(self.exposure_stats_[1])],
               "score": [centre, max(spread, 1e-3)]}
        places = None if self.locator_ is None else self.locator_.place_spread_
        if places is not None:  # where the good parts lay: [median, spread] of x and of y, shares of the field
            out["position"] = [[places[0], places[1]], [places[2], places[3]]]
        return out

    def _check_state(self) -> None:
        """Raise ValueError unless every loaded array has the shape and finiteness this profile needs."""
        lay = self.layout_
        if min(lay.width, lay.height, lay.stride, lay.n_rings, lay.coarse) < 1 or lay.window < lay.stride:
            raise ValueError(f"invalid feature layout {lay}")
        k = len(self.palette_.centres_)
        gh, gw = lay.grid
        c = k + 2 + (0 if self.texture_scale_ is None else N_TEXTURE)
        g = self.pooling_.shape[0] * c
        expected = {
            "palette_.centres_": (self.palette_.centres_, (k, 3)),
            "ref_cells_": (self.ref_cells_, (self.n_ref_, gh * gw, c)),
            "ref_global_": (self.ref_global_, (self.n_ref_, g)),
            "global_scale_": (self.global_scale_, (g,)),
            "local_stats_": (self.local_stats_, (2,)),
            "global_stats_": (self.global_stats_, (2,)),
            "oof_scores_": (self.oof_scores_, (self.n_ref_,)),
        }
        for name, (array, shape) in expected.items():
            if array.shape != shape:
                raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"{name} holds non-finite values")
        if self.locator_ is not None and self.locator_.ref_.shape != (lay.height, lay.width):
            raise ValueError(f"register_reference has shape {self.locator_.ref_.shape}, expected "
                             f"{(lay.height, lay.width)}")
        if self.lighting_ is not None and self.lighting_.reference_.shape != (lay.height, lay.width, 3):
            raise ValueError(f"lighting_reference has shape {self.lighting_.reference_.shape}, expected "
                             f"{(lay.height, lay.width, 3)}")
        for name, array in (("register_reference", getattr(self.locator_, "ref_", None)),
                            ("lighting_reference", getattr(self.lighting_, "reference_", None))):
            if array is not None and not np.isfinite(array).all():
                raise ValueError(f"{name} holds non-finite values")
        scalars = (self.threshold_, self.novel_distance_, self.map_scale_)
        positive = (self.local_stats_[1], self.global_stats_[1], self.map_scale_)
        if not all(math.isfinite(v) for v in scalars) or min(positive) <= 0:
            raise ValueError("profile holds non-finite or non-positive calibration values")

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> "NormalProfile":
        """Rebuild a fitted profile from get_state() output; raises ValueError when inconsistent."""
        if meta.get("format_version") not in READABLE_FORMATS:
            raise ValueError(f"profile format {meta.get('format_version')!r}, this build reads "
                             f"{', '.join(map(str, READABLE_FORMATS))}")
        params = dict(meta["params"])
        params["neighbours"] = tuple(params["neighbours"])
        params.setdefault("lighting_copies", 0)  # profiles saved before the lighting copies have none
        params.setdefault("fine_width", 0)  # nor a fine pass, before it existed
        params.setdefault("shading", False)  # nor a shading field
        params.setdefault("even_light", False)  # nor a second look with the light evened out (judged as before)
        if not isinstance(params["even_light"], bool):
            raise ValueError(f"even_light must be true or false, not {params['even_light']!r}")
        self = cls(ProfileParams(**params))
        self.layout_ = FeatureLayout(**meta["layout"])
        self.aspect_range_ = _aspect_range(meta.get("aspect_range"), self.layout_)
        centres = np.asarray(arrays["palette_centres"], np.float32)
        if centres.ndim != 2 or centres.shape[1] != 3 or not 1 <= len(centres) <= 255:
            raise ValueError(f"palette_centres has shape {centres.shape}, expected (K, 3) with 1 <= K <= 255")
        lay = self.layout_
        if (lay.n_rings, lay.coarse, lay.width) != (self.params.n_rings, self.params.coarse,
                                                    lay.stride * self.params.cells_across):
            raise ValueError("profile layout does not match its parameters")
        self.palette_ = Palette.from_centres(centres, float(meta["chroma_weight"]), self.params.softness)
        for name in self._ARRAYS:
            saved = arrays[name.rstrip("_")]
            dtype = np.float64 if name == "oof_scores_" else np.float32
            if name == "ref_cells_" and saved.ndim == 3:  # a large profile stays in float16, as saved
                dtype = cell_dtype(*saved.shape)
            setattr(self, name, np.asarray(saved, dtype=dtype))
        self.novel_distance_ = float(meta["novel_distance"])
        texture = meta.get("texture_scale") if meta["format_version"] >= 3 else None
        self.texture_scale_ = None if texture is None else np.asarray(texture, np.float64)
        if self.texture_scale_ is not None and (self.texture_scale_.shape != (N_TEXTURE,)
                                                or not np.isfinite(self.texture_scale_).all()
                                                or self.texture_scale_.min() <= 0):
            raise ValueError(f"texture_scale must be {N_TEXTURE} positive numbers")
        self.threshold_ = float(meta["threshold"])
        self.offset_ = -self.threshold_
        self.map_scale_ = float(meta["map_scale"])
        self.n_train_ = int(meta["n_train"])
        self.calibration_ = Calibration(**meta["calibration"])
        self._load_conditions(meta, arrays)
        self._load_fine(meta, arrays)
        self._load_focus(meta, arrays)
        self.sensor_limits_ = _sensor_limits(meta.get("sensor_line_limits"))
        self.mirror_gates_ = _mirror_gates(meta.get("mirror_gates"))
        self._derive()
        self._check_state()
        return self

    def _load_fine(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the fine pass from saved state (profiles before format 3 have none)."""
        self.fine_ = None
        fine = meta.get("fine") if meta["format_version"] >= 3 else None
        if fine is None:
            return
        size = (int(fine["size"][0]), int(fine["size"][1]))
        if size != fine_size(self.layout_.width, self.layout_.height, size[0]) or size[0] < self.layout_.width:
            raise ValueError(f"fine size {size} does not fit the working size {self.layout_.width}x"
                             f"{self.layout_.height}")
        mean = np.asarray(arrays["fine_mean"], np.float32)
        spread = np.asarray(arrays["fine_spread"], np.float32)
        check_fine_state(mean, spread, size)
        stats = np.asarray(fine["stats"], np.float64)
        scale = float(fine["scale"])
        if stats.shape not in ((2,), (3,)) or not np.isfinite(stats).all() or stats[1] <= 0 \
                or not math.isfinite(scale) or scale <= 0:
            raise ValueError("fine stats must be [offset, gain > 0] or [offset, gain > 0, margin] and its scale "
                             "positive")
        reach = int(fine["reach"])
        if not 0 <= reach <= 64:
            raise ValueError(f"fine reach {reach} is not between 0 and 64 pixels")
        self.fine_ = VariationModel(size, reach).set_state(mean, spread, scale)
        self.fine_stats_ = stats

    def _load_focus(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """The good parts' detail, saved since 2026-12-06 (a profile saved before judges no blur)."""
        self.focus_ = None
        focus = meta.get("focus")
        if focus is None:
            return
        if not isinstance(focus, dict) or "focus_typical" not in arrays:
            raise ValueError("focus must be a record with its focus_typical array")
        typical = np.asarray(arrays["focus_typical"], np.float32)
        blocks = detail(np.zeros((self.layout_.height, self.layout_.width, 3), np.uint8)).shape
        if typical.shape != blocks or not np.isfinite(typical).all() or (typical < 0).any():
            raise ValueError(f"focus_typical must be {blocks} non-negative finite numbers")
        low = focus.get("low")
        if not isinstance(low, (int, float)) or isinstance(low, bool) or not math.isfinite(low) or abs(low) > 50:
            raise ValueError(f"focus low must be a finite number, not {low!r}")
        self.focus_ = FocusModel().set_state(typical, float(low))

    def _without_lighting(self) -> None:
        """No lighting model: parts are taken as lit, every lighting is within the tolerance."""
        self.lighting_ = None
        self.exposure_ref_ = 1.0
        self.exposure_stats_ = np.array([0.0, _EXPOSURE_SD_FLOOR])
        self.exposure_bounds_ = (-math.inf, math.inf)
        self.exposure_range_: tuple[float, float] | None = None
        self.cast_limit_ = math.inf

    def _load_conditions(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild registration and lighting from saved state (a format-1 profile has neither)."""
        self.locator_ = None
        self._without_lighting()
        if meta["format_version"] >= 2 and not {"registration", "lighting", "drift"} <= set(meta):
            raise ValueError("profile lacks its registration, lighting or drift record")
        reg = meta.get("registration")
        if reg is not None:
            self.locator_ = Locator(self.params.rotation, self.params.max_shift).set_state(
                str(reg["mode"]), np.asarray(arrays["register_reference"], np.float32), float(reg["match_limit"]),
                None if reg.get("scale_limit") is None else float(reg["scale_limit"]),
                reg.get("further_scales") is True,  # saved since the search past 3% (2026-12-06)
                reg.get("off_limits"),  # saved since 2026-12-07
                reg.get("place_spread"), reg.get("pivot"),  # saved since the afternoon of 2026-12-07
                reg.get("scale_seen"))  # saved since 2026-12-07 noon (None before: the search as its limit says)
        light = meta.get("lighting")
        if light is None:
            return
        shrink = np.asarray(light["shrink"], dtype=np.float64)
        if shrink.shape != (1 + N_LEVELS,) or not np.isfinite(shrink).all() or (shrink < 0).any():
            raise ValueError(f"lighting shrink must be {1 + N_LEVELS} non-negative numbers")
        lay = self.layout_
        weights = np.asarray(arrays["lighting_weights"], np.float64)
        blocks = (max(1, lay.height // BLOCK), max(1, lay.width // BLOCK))
        if weights.shape != blocks or not np.isfinite(weights).all() or (weights < 0).any() or weights.max() <= 0:
            raise ValueError(f"lighting_weights must be {blocks} non-negative finite numbers, not all zero")
        ceiling = int(light["ceiling"])
        if not 128 <= ceiling <= 255:
            raise ValueError(f"lighting ceiling {ceiling} is not a grey level between 128 and 255")
        shading = light.get("shading", shading_on(self.params.shading, self.locator_))  # saved since "auto"
        if not (isinstance(shading, bool) or shading == SMOOTH):
            raise ValueError(f"lighting shading must be true, false or {SMOOTH!r}, not {shading!r}")

        offset = light.get("offset")  # the black level's median and limit; absent before 2026-12-04 (by levels)
        if offset is not None:
            if not isinstance(offset, (list, tuple)) or len(offset) != 2:
                raise ValueError("lighting offset must be [median, limit]")
            offset = tuple(float(v) for v in offset)
            if not (math.isfinite(offset[0]) and -1.0 <= offset[0] <= 1.0 and 0.0 < offset[1] <= 1.0):
                raise ValueError("lighting offset must be [median, limit], the median in [-1, 1], the limit in (0, 1]")
        top = light.get("top_share")
        if top is not None:
            top = np.asarray(top, dtype=np.float64) if isinstance(top, list) else np.zeros(0)
            if top.shape != (256,) or not np.isfinite(top).all() or (top < 0).any() or (top > 1).any() \
                    or (np.diff(top) > 1e-6).any():
                raise ValueError("lighting top_share must be 256 shares in 0..1, none above the one before")
        self.lighting_ = LightingModel(shading).set_reference(
            np.asarray(arrays["lighting_reference"], np.float32), shrink, weights, ceiling, offset, top)
        self.exposure_ref_ = float(light["exposure_ref"])
        low, high = (float(v) for v in light["exposure_bounds"])
        self.exposure_bounds_ = (low, high)
        span = light.get("exposure_range")
        if span is not None:
            if not isinstance(span, list) or len(span) != 2 or not all(isinstance(v, (int, float)) for v in span):
                raise ValueError("lighting exposure_range must be two numbers")
            first, last = (float(v) for v in span)
            if not (math.isfinite(first) and math.isfinite(last) and low <= first <= last <= high):
                raise ValueError("lighting exposure_range must be two finite numbers within exposure_bounds")
            self.exposure_range_ = (first, last)
        self.cast_limit_ = float(light["cast_limit"])
        stats = np.asarray((meta.get("drift") or {}).get("log_exposure", []), np.float64)
        if stats.shape != (2,):
            raise ValueError("drift.log_exposure must be [median, sd]")
        self.exposure_stats_ = stats
        if not (math.isfinite(low) and math.isfinite(high) and low < 0.0 < high):
            raise ValueError("profile holds invalid exposure bounds")
        values = (self.exposure_ref_, self.cast_limit_, *self.exposure_stats_)
        if not all(math.isfinite(v) for v in values) or min(self.exposure_ref_, self.cast_limit_,
                                                             self.exposure_stats_[1]) <= 0:
            raise ValueError("profile holds non-finite or non-positive lighting values")