"""Photometric normalisation: bring each part to the exposure and white balance the profile learned.

A lamp that ages, a camera with auto-exposure or a warmer lamp changes every pixel a little; the palette
assignment moves with it and every cell looks different. The profile therefore learns a reference image
(the per-pixel median of the registered good images) and describes each registered part's lighting against
it on block means (4 x 4 px blocks of the working image; blocks clipped in the part or the reference, and
the darkest ones, are left out):

* the exposure `g`: the weighted median of the log ratio of the part's block brightness to the reference's.
  A median over hundreds of blocks is robust (a defect, a label or a dark background cannot move it) and,
  with blocks weighted by how steady they were across the training parts (a fixture or a plain surface is a
  good probe of the light, an edge or a variant is not), precise: ~0.2% from part to part on a steady line;
* the colour cast `k_c`: the same median per channel, over `g`;
* the black level: straight lines through the blocks, each channel of the part against the same channel of the
  reference, all through one common black level (what lifts a black, stray light or a camera's black level,
  adds the same to every channel), fitted together by reweighted least squares (values far off their line, a
  defect or an edge that moved, weigh less; steady blocks more). Where they cross zero is where the part's black
  lies, and their mean slope is the exposure along them.

The tone curve (reference level -> part level) is `k_c * g * level`: the exposure alone, which the median over all
blocks measures most precisely. Only where the black level has moved from the training parts' median by more
than they scatter by themselves (OFFSET_SDS robust standard deviations, and at least OFFSET_FLOOR) does the curve
follow the lines instead, `k_c * slope * level + black`: a lifted or lowered black, or what a gamma change looks
like over the part's levels. There the cast is corrected too: the same grey levels added to every channel raise a
dark channel's ratio more than a bright one's, by log(1 + black / (slope * level)) at each channel's typical
level, and per channel the smaller of the two readings is kept (a lamp's colour shows in both). Measured
2026-12-04 on the tyre (channels at different levels, typical grey 19): until then one grey line was fitted with
the uncorrected cast divided out, the same 7 levels added to each channel read as a 5% colour cast, and 40 of 54
good tyres were flagged at +7 (now 3, as on clean photos). The lines must meet the exposure at the typical grey
level (within _LINE_AGREE): where a camera clips much of a brighter part, the blocks left do not follow a line.
A cast no larger than the training parts show by themselves is dropped too. What the curve leaves (a gamma change,
an offset too small to measure on this product) is what the lighting copies teach the profile to accept
(variations.py).

Why not more (measured 2026-12-04, the robustness table, default config): until then the curve was bent through a
departure measured at each of 8 grey levels. On the casting only 4 levels held enough blocks and their departures
scattered from part to part (the darkest by 45%), so the curve bent at levels a lighting change had not moved and
missed the lifted black it should have followed; the lighting copies, normalised that way, scored high and set the
threshold: 90% of defective castings caught, 75% when turned. With the exposure and the black level's line: 93%
and 96%, every lighting change within its false-alarm goal. Profiles saved before keep the curve by levels
(`_estimate_by_levels`, `offset_ref_` None), so they judge as they were calibrated.

The part is mapped through the inverted curve (a lookup table per channel). A pixel the camera clipped carries
only "at least this bright" (or dark): for products the camera clips in training, only the range that every
tolerated lighting shows unclipped (SHARED_RANGE) is compared.

Shading (`[profile] shading`; the default "auto" turns it on where registration turns the parts freely, see
profile.shading_on): a lamp lights a part from one side, so a part turned by hand, or a lamp that dims on one side,
shows a smooth brightness field across the part that no tone curve undoes. With
shading on, the tone-corrected part is also divided by a smooth field: the weighted median log ratio of its blocks
to the reference's on a SHADING_GRID x SHADING_GRID grid (each cell a quarter of the side: a defect smaller than
half a cell cannot move its median), interpolated bilinearly, capped at SHADING_CAP. Cells with too few usable
blocks (a dark background, clipped highlights) are not corrected.

`shading = "smooth"` (not the default) divides the tone-corrected part by a low-order field instead: a tilt across x
and across y and a vignetting (x^2 + y^2), fitted to the blocks' log ratios by reweighted least squares, so a
defect or an edge weighs little; capped like the grid. It is what a lamp dimmed on one side or a lens darkening
the corners does (the fine pass compares the part with only its tone curve: dividing every part there too cost the
bottle 0.03 of pixel AUROC and helped no set; `[profile] even_light` divides a flagged part's, see profile.py).
Measured 2026-12-06 (docs/line-conditions.md, "Uneven light"): a 10% side lamp flagged 86 of 262 good castings, 8
with it; a 30%
vignetting 11 of 20 bottles, 1; at a cost on clean photos (castings caught at the threshold 0.98 -> 0.95, 6 of 262
flagged under offset +10 against 4), so it is chosen, not on by default. The grid follows a defect more than these
three terms do, and the castings' own lit side (a field of +-20% from part to part) is what both take away.

Most products fill only a narrow band of grey levels (a dark tyre, a grey casting on its grey background):
there an offset and a gain cannot be told apart, and the curve is right at the levels the part shows, which
are the ones the features see.

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

BLOCK = 4  # block side in working pixels
_CLIP_HIGH = 250.0  # a block with a pixel at or above this (part or reference) is left out of the fit
_CLIP_LOW = 3.0  # ... or at or below this
CLIP_SLACK = 0.002  # a part may have this share more of its pixels at the top than good parts (clipped())
_DARK = 8.0 / 255.0  # blocks this dark in the reference say little about a gain
_SHRINK_SDS = 3.0  # terms beyond the exposure count only beyond this many training scatters
_SHRINK_FLOOR = (0.01, 0.01)  # smallest threshold for the log cast, and for each level's log departure
N_LEVELS = 8  # the reference's grey range is split into this many levels, each with its own departure
_MIN_BLOCKS = 12  # a level needs this many usable blocks ...
_MIN_SHARE = 0.02  # ... and this share of the block weight to be measured
_PLAUSIBLE_GAIN = 0.25  # a level's departure beyond a gain this far off ...
_PLAUSIBLE_OFFSET = 20.0 / 255.0  # ... plus an offset this large is content, not light
_STEADY = 0.01  # block brightness scatter (log) below which a block counts as fully steady
OFFSET_SDS = 3.0  # a part's black level counts as moved beyond this many training scatters ...
OFFSET_FLOOR = 3.0 / 255.0  # ... and beyond this many grey levels (a dark product's fit is tight but not exact)
_HUBER = 1.5  # robust line fit: residuals beyond this many robust deviations weigh less
_FIT_ROUNDS = 6  # reweighting rounds of the robust line fit, at most ...
_FIT_SETTLED = 0.01 / 255.0  # ... it stops once no slope or black level moves by more than this
_LINE_AGREE = 0.08  # the line must meet the exposure within this share at the typical grey level
# Where the camera already clips the good parts at white (a white background, a specular rim), a part under
# another tolerated lighting clips differently: 20% brighter shows nothing above 255 / 1.2 ~ 212 of the
# reference's scale. For such products normalised parts are held below that, so the same part under two
# lightings looks the same there; products with highlights within 10% of clipping (a machined surface) are held
# below NEAR_CLIP; the others keep their full range. The dark end is never held: dark products (a black tyre) have their detail
# in the first grey levels, and a lowered black clips only what was already near black.
SHARED_RANGE = (0, 212)
NEAR_CLIP = 232  # 255 / 1.1: a part 10% brighter clips above this level of the reference's scale
_CLIPPED_SHARE = 0.01  # the range is held when this share of the good parts' pixels is clipped (or near it)
SHADING_GRID = 4  # the shading field's grid side (cells a quarter of the part's side: 3 or 6 did worse, measured)
SHADING_CAP = 0.3  # largest log correction of the field (x0.74 .. x1.35)
SMOOTH = "smooth"  # the shading mode that divides by a low-order field (a tilt and a vignetting), see smooth_field
_MEAN_R2 = 2.0 / 3.0  # the mean of x^2 + y^2 over the frame (x, y in -1..1): the vignetting term leaves it at 0
_SMOOTH_MIN_BLOCKS = 16  # fewer usable blocks: no smooth field is fitted
_SHADING_MIN_SHARE = 0.25  # a cell is corrected when this share of its blocks is usable
_SWAP_FIT = 0.75  # red and blue swapped back must scatter about their cast by less than this share of as photographed


@dataclass(frozen=True)
class Lighting:
    """How a part's lighting differs from the reference, and the curves that undo it."""

    lut: np.ndarray  # (1, 256, 3) uint8, per channel (BGR): the part's value -> the reference's
    exposure: float  # the part's brightness relative to the reference (1.0 = as trained, 0.9 = 10% darker)
    cast: np.ndarray  # (3,) float64, per-channel gain (BGR) over the exposure (1, 1, 1 = neutral); where the black
    # moved, per channel the smaller of the readings with and without it (see LightingModel.estimate)
    offset: float  # grey levels the part's black is lifted by, against the reference
    bend: float  # how far the curve departs from a plain gain: the black level moved (0..1), or (profiles saved
    # before 2026-12-04) the largest log departure kept at some grey level
    raw: np.ndarray  # (4 + N_LEVELS,) float64 before thresholds: log exposure, log cast (B, G, R), and each level's
    # departure (profiles saved before 2026-12-04; NaN otherwise)
    black: float | None = None  # grey levels the part's black lies from the trained parts', as read from its line
    # whether or not it was corrected (None: no line could be fitted, or a profile saved before the line)
    clipped_exposure: float | None = None  # the least exposure its pixels at the top imply (LightingModel.clipped);
    # None when it has no more of them than good parts, or for a profile saved before
    field: np.ndarray | None = None  # (3,) float64 the smooth brightness field the part was divided by (shading
    # "smooth", or a flagged part evened out: log tilt across x, across y, vignetting; see smooth_map); else None

    @property
    def cast_change(self) -> float:
        """Largest departure of a channel's gain from the exposure (0.05 = 5%)."""
        return float(np.abs(self.cast - 1.0).max())


def smooth_map(coef: np.ndarray, height: int, width: int) -> np.ndarray:
    """The log brightness field (height, width) float32 of smooth-field coefficients (3,): a*x + b*y + c*(r2 - 2/3),
    x and y running -1..1 across the frame (pixel centres), r2 = x^2 + y^2; within +-SHADING_CAP."""
    x = ((np.arange(width, dtype=np.float32) + 0.5) / width * 2.0 - 1.0)[None, :]
    y = ((np.arange(height, dtype=np.float32) + 0.5) / height * 2.0 - 1.0)[:, None]
    a, b, c = (np.float32(v) for v in coef)
    return np.clip(a * x + b * y + c * (x * x + y * y - np.float32(_MEAN_R2)), -SHADING_CAP, SHADING_CAP)


def field_gain(coef: np.ndarray, height: int, width: int) -> np.ndarray:
    """The brightness correction (height, width) float32 that divides out the smooth field of coefficients (3,)."""
    return np.exp(-smooth_map(coef, height, width))


def _blocks(image: np.ndarray) -> np.ndarray:
    """Block means (BH, BW, C) float32 of an image (H, W, C)."""
    h, w = image.shape[:2]
    out = cv2.resize(image.astype(np.float32), (max(1, w // BLOCK), max(1, h // BLOCK)), interpolation=cv2.INTER_AREA)
    return out.reshape(out.shape[0], out.shape[1], -1)


def top_shares(images: Sequence[np.ndarray]) -> np.ndarray:
    """(256,) the good parts' mean share of pixels whose brightest channel is at or above each grey level, from
    images (H, W, 3) uint8; non-increasing, 1.0 at level 0."""
    shares = []
    for image in images:
        counts = np.bincount(np.asarray(image).max(axis=2).ravel(), minlength=256)[:256]
        shares.append(np.cumsum(counts[::-1])[::-1] / max(counts.sum(), 1))
    return np.mean(shares, axis=0)


def _clipped(image: np.ndarray) -> np.ndarray:
    """Block mask (BH, BW) bool: the block holds a pixel at the clipping limits in any channel."""
    if image.dtype == np.uint8:  # the hot path, in OpenCV (it releases the GIL)
        inside = cv2.inRange(image, (_CLIP_LOW + 1,) * 3, (_CLIP_HIGH - 1,) * 3)  # 255: every channel inside
        extreme = cv2.subtract(np.full_like(inside, 255), inside).astype(np.float32)
    else:
        extreme = ((image >= _CLIP_HIGH) | (image <= _CLIP_LOW)).any(axis=2).astype(np.float32)
    return _blocks(extreme[..., None])[..., 0] > 0


def _kept(x: np.ndarray | float, threshold: np.ndarray | float) -> np.ndarray:
    """Hard threshold: x where its size exceeds threshold, else zero."""
    return np.where(np.abs(x) > threshold, x, 0.0)


def _sorted_weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of sorted values (N,) under non-negative weights (N,)."""
    cum = np.cumsum(weights)
    if cum[-1] <= 0:
        return float(np.median(values))
    return float(values[np.searchsorted(cum, cum[-1] / 2.0)])


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of values (N,) under non-negative weights (N,)."""
    order = np.argsort(values)
    return _sorted_weighted_median(values[order], weights[order])


class LightingModel:
    """The reference exposure and white balance of a product, and the per-part fit onto it; with `shading`, also
    a smooth brightness field across the part (see the module's docstring)."""

    def __init__(self, shading: bool | str = False):
        if not (isinstance(shading, bool) or shading == SMOOTH):
            raise ValueError(f"shading must be true, false or {SMOOTH!r}, not {shading!r}")
        self.shading = shading  # True: a grid field (shading_field); SMOOTH: a low-order one (smooth_field)
        self.offset_ref_: float | None = None  # the training parts' median black level (0..1); None: by levels
        self.offset_limit_ = 0.0  # a part's black level counts as moved beyond this distance from offset_ref_

    def fit(self, aligned: Sequence[np.ndarray]) -> "LightingModel":
        """Learn the reference and the training parts' own scatter from registered good images (H, W, 3)."""
        ref = np.median(np.stack(aligned), axis=0)
        ref_blocks = np.maximum(_blocks(ref.astype(np.float32)).mean(axis=2), 0.5)  # (BH, BW)
        # how much each block's brightness varies from part to part once each part's exposure is divided out:
        # blocks of the fixture or a plain surface are steady probes of the light, edges and variants are not
        logs = np.log(np.stack([np.maximum(_blocks(a).mean(axis=2), 0.5) for a in aligned]) / ref_blocks)
        logs -= np.median(logs.reshape(len(logs), -1), axis=1)[:, None, None]
        spread = 1.4826 * np.median(np.abs(logs), axis=0)  # (BH, BW)
        # where the camera clips good parts at white, or comes within 10% of it (their share of such pixels)
        self.ceiling_ = 255
        for near, ceiling in ((_CLIP_HIGH, SHARED_RANGE[1]), (NEAR_CLIP, NEAR_CLIP)):
            if float(np.mean([(a >= near).any(axis=2).mean() for a in aligned])) >= _CLIPPED_SHARE:
                self.ceiling_ = ceiling
                break
        weights = 1.0 / (spread**2 + _STEADY**2)
        # capped at the median weight: at least half the blocks weigh the most, so a defect on a small steady
        # region (contamination on the bottom of a bottle) cannot carry the medians
        self.set_reference(ref, np.zeros(1 + N_LEVELS), np.minimum(weights, np.median(weights)), self.ceiling_,
                           top_share=top_shares(aligned))
        # each part's exposure and cast, once; the per-level departures are not measured (a fitted model follows
        # the black level's line, so its level thresholds stay at their floor: only a profile saved before uses them)
        measured = [self._measured(a) for a in aligned]
        terms = [self._terms(a, levels=False, measured=m) for a, m in zip(aligned, measured)]
        casts = np.array([t[0][0] for t in terms])  # (N,) max |log cast|
        self.shrink_ = np.full(1 + N_LEVELS, _SHRINK_FLOOR[1])
        self.shrink_[0] = max(_SHRINK_SDS * 1.4826 * float(np.median(np.abs(casts - np.median(casts)))),
                              _SHRINK_FLOOR[0])
        # the black level each good part shows against the reference, and how much it scatters by itself
        lines = [self._line(m, float(np.exp(t[1])), np.exp(t[1] + t[2])) for m, t in zip(measured, terms)]
        offsets = np.array([line[1] for line in lines if line is not None])
        self.offset_ref_, self.offset_limit_ = 0.0, OFFSET_FLOOR
        if offsets.size:
            self.offset_ref_ = float(np.median(offsets))
            spread = 1.4826 * float(np.median(np.abs(offsets - self.offset_ref_)))
            self.offset_limit_ = min(max(OFFSET_SDS * spread, OFFSET_FLOOR), 1.0)
        return self

    def set_reference(self, ref: np.ndarray, shrink: np.ndarray, weights: np.ndarray, ceiling: int = 255,
                      offset: tuple[float, float] | None = None,
                      top_share: np.ndarray | None = None) -> "LightingModel":
        """Store the reference image (H, W, 3), the thresholds (1 + N_LEVELS,) of the cast and of each level's
        departure, the block weights (BH, BW), the highest grey level compared and the black level's (median,
        limit) over the training parts (None: a profile saved before it, whose curve follows each level)."""
        self.offset_ref_, self.offset_limit_ = (None, 0.0) if offset is None else (float(offset[0]), float(offset[1]))
        self.reference_ = np.ascontiguousarray(ref, dtype=np.float32)
        self.top_share_ = None if top_share is None else np.asarray(top_share, dtype=np.float64)  # (256,), clipped()
        self.weights_ = np.asarray(weights, dtype=np.float64)
        self.ref_blocks_ = _blocks(self.reference_).astype(np.float64) / 255.0
        self.ref_clipped_ = _clipped(self.reference_)
        self.shrink_ = np.asarray(shrink, dtype=np.float64)
        level = self.ref_blocks_.mean(axis=2)
        steady = self.weights_ if self.weights_.shape == level.shape else np.ones_like(level)
        measured = ~self.ref_clipped_ & (level > _DARK)  # the blocks the exposure is measured on
        if not measured.any():
            measured = np.ones_like(measured)
        self.typical_level_ = _weighted_median(level[measured], steady[measured])
        # each channel's typical level: how far a moved black changes the channels' ratios (see estimate)
        self.typical_channels_ = np.array([_weighted_median(self.ref_blocks_[..., c][measured], steady[measured])
                                           for c in range(3)])
        self.ceiling_ = int(ceiling)
        self.range_ = (0, self.ceiling_)
        return self

    def _usable(self, aligned: np.ndarray) -> np.ndarray:
        """Blocks (BH, BW) bool the lighting is measured on: unclipped in part and reference, not black."""
        usable = ~(_clipped(aligned) | self.ref_clipped_) & (self.ref_blocks_.mean(axis=2) > _DARK)
        if usable.sum() < 8:  # a dark product: every block that is not black
            usable = self.ref_blocks_.mean(axis=2) > 1.0 / 255.0
        return usable

    def _measured(self, aligned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A part's block means (BH, BW, 3) in 0..1 and its usable blocks (BH, BW) bool, computed once per part."""
        return _blocks(aligned).astype(np.float64) / 255.0, self._usable(aligned)

    def _line(self, measured: tuple[np.ndarray, np.ndarray], gain: float, start: np.ndarray
              ) -> tuple[float, float] | None:
        """The part's levels as straight lines of the reference's, one per channel through a common black level,
        fitted on the usable blocks of `measured` (see _measured) by reweighted least squares (values far off their
        line, a defect or an edge that moved, weigh less; steady blocks more): (slope, black level in 0..1), the slope
        the channels' mean. The black is common because what lifts it (stray light, a camera's black level) adds the
        same to every channel; one grey line through channels divided by a cast measured with that black in is thrown
        off by the channels' different levels. None with fewer than 8 usable blocks, when they span no range of grey
        levels, or when the line misses the exposure `gain` at the typical level. `start` (3,): the channels' gains
        to start from (the exposure times the cast)."""
        blocks, usable = measured
        if usable.sum() < 8:
            return None
        p, t = blocks[usable], self.ref_blocks_[usable]  # (N, 3) each
        steady = self.weights_[usable] if self.weights_.shape == usable.shape else np.ones(len(t))
        # what the normal equations sum over the blocks before the weights: t^2, t, t p, p and 1, (N, 3, 5); the few
        # numbers per round are solved in plain floats (numpy's calls on them cost more than the arithmetic: 1.3 ->
        # 0.8 ms a part, the same line within 1e-13)
        terms = np.stack([t * t, t, t * p, p, np.ones_like(t)], axis=2)
        slopes = [float(s) for s in np.asarray(start, dtype=np.float64)]
        black = 0.0
        for _ in range(_FIT_ROUNDS):
            size = np.abs(p - (np.array(slopes) * t + black))  # (N, 3) residuals
            scale = 1.4826 * _weighted_median(size.mean(axis=1), steady) + 1e-5  # over blocks: a third of the sorting
            w = steady[:, None] * np.minimum(1.0, _HUBER * scale / np.maximum(size, 1e-12))  # (N, 3)
            # per channel: sum w t^2, w t, w t p, w p, w
            tt, wt, tp, wp, weight = zip(*np.einsum("nc,nck->ck", w, terms).tolist())
            total = sum(weight)
            if not math.isfinite(total + sum(tt) + sum(wt) + sum(tp) + sum(wp)):  # (Python's min and max would
                return None  # pass a NaN by: no line through blocks or a start that are not numbers)
            if min(weight) <= 0.0:  # a channel's usable blocks weigh nothing (only a damaged profile's weights)
                return None
            if min(a - b * b / c for a, b, c in zip(tt, wt, weight)) <= 1e-12 * total:
                return None  # a channel's usable blocks span no range of levels: no line through them
            # the normal equations of sum w (p - slope_c t - black)^2: tt_c slope_c + wt_c black = tp_c per channel,
            # and sum_c wt_c slope_c + total black = sum_c wp_c; the slopes put into the last give the black
            new_black = (sum(wp) - sum(b * d / a for a, b, d in zip(tt, wt, tp))) \
                / (total - sum(b * b / a for a, b in zip(tt, wt)))
            new_slopes = [(d - b * new_black) / a for a, b, d in zip(tt, wt, tp)]
            moved = max(abs(new_black - black), *(abs(a - b) for a, b in zip(new_slopes, slopes)))
            slopes, black = new_slopes, new_black
            if moved < _FIT_SETTLED:  # a hundredth of a grey level: the weights would not change
                break
        slope = sum(slopes) / len(slopes)
        # the line and the exposure measure the same brightness at the part's typical level; where they disagree
        # the blocks do not follow a line (a camera that clips much of a brighter part leaves the darker blocks)
        typical = self.typical_level_
        if min(slopes) <= 0.0 or abs(slope * typical + black - gain * typical) > _LINE_AGREE * typical:
            return None
        return slope, black

    def _terms(self, aligned: np.ndarray, levels: bool = True, measured: tuple[np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """A part's lighting before anything is dropped: ([max |log cast|, departure per level...], log exposure,
        log cast (3,), level centres (N_LEVELS,)); empty levels are NaN, and all are without `levels`."""
        empty = np.full(N_LEVELS, np.nan)
        part, usable = self._measured(aligned) if measured is None else measured
        if usable.sum() < 8:  # a black reference: nothing to measure a gain on
            return np.concatenate([[0.0], empty]), 0.0, np.zeros(3), empty
        p = np.maximum(part[usable], 0.5 / 255.0)  # (N, 3)
        t = np.maximum(self.ref_blocks_[usable], 0.5 / 255.0)
        w = self.weights_[usable]
        log_ratio = np.log(p / t)
        log_g = _weighted_median(log_ratio.mean(axis=1), w)
        log_cast = np.array([_weighted_median(log_ratio[:, c], w) for c in range(3)]) - log_g  # (3,)
        if not levels:
            return np.concatenate([[float(np.abs(log_cast).max())], empty]), log_g, log_cast, empty
        # what the exposure and cast leave (log ratio), per channel value: a blue part's red channel is dark, its
        # blue bright, so the channels spread the grey levels an offset or a gamma is measured over
        rest = (log_ratio - log_cast - log_g).ravel()  # (3N,)
        level = t.ravel()
        w = np.repeat(w, 3)
        which = np.minimum((level * N_LEVELS).astype(int), N_LEVELS - 1)
        departure, centres = empty.copy(), empty.copy()
        by_rest = np.lexsort((rest, which))  # by level, then by value: one sort serves every level's median
        by_level = np.lexsort((level, which))
        edges = np.searchsorted(which[by_rest], np.arange(N_LEVELS + 1))
        total = w.sum()
        for k in range(N_LEVELS):
            a, b = edges[k], edges[k + 1]
            if b - a >= _MIN_BLOCKS and w[by_rest[a:b]].sum() >= _MIN_SHARE * total:
                departure[k] = _sorted_weighted_median(rest[by_rest[a:b]], w[by_rest[a:b]])
                centres[k] = _sorted_weighted_median(level[by_level[a:b]], w[by_level[a:b]])
        return np.concatenate([[float(np.abs(log_cast).max())], departure]), log_g, log_cast, centres

    def estimate(self, aligned: np.ndarray) -> Lighting:
        """How a registered part (H, W, 3) uint8 is lit against the reference, and the curves that undo it."""
        if self.offset_ref_ is None:
            return self._estimate_by_levels(aligned)
        measured = self._measured(aligned)
        summary, log_g, log_cast, _ = self._terms(aligned, levels=False, measured=measured)
        kept_cast = _kept(log_cast, self.shrink_[0])
        levels = np.linspace(0.0, 1.0, 256)
        gain = float(np.exp(log_g))
        black = 0.0
        line = self._line(measured, gain, np.exp(log_g + log_cast))
        if line is not None and abs(line[1] - self.offset_ref_) > self.offset_limit_:
            # the black level moved beyond what good parts show by themselves: follow the lines (a lifted or
            # lowered black, or what a gamma change looks like over the part's levels), never flatter than a tenth
            # against the typical good part's (slope ~1: the reference is their median, black offset_ref_)
            slope, black = max(line[0], 0.1), line[1] - self.offset_ref_
            # the same grey levels added to every channel raise a dark channel's ratio more than a bright one's:
            # the cast read from the ratios carries log(1 + black / (slope * level)) per channel at its typical
            # level, less their mean, which is taken off. Per channel the smaller of the two readings is used: a
            # lamp's colour shows in both, a moved black's ratios only in the first, and a black that a large
            # defect drew (the line through a contaminated bottle) only in the second
            # (a black lowered below half a channel's typical level is far beyond any tolerated lighting; held there
            # so that the logarithm stays finite)
            lift = np.log1p(np.maximum(black / (slope * np.maximum(self.typical_channels_, _DARK)), -0.5))
            lifted_cast = _kept(log_cast - (lift - lift.mean()), self.shrink_[0])
            kept_cast = np.where(np.abs(lifted_cast) < np.abs(kept_cast), lifted_cast, kept_cast)
            fwd = np.exp(kept_cast)[None, :] * (slope * levels)[:, None] + black
        else:
            fwd = np.exp(kept_cast)[None, :] * (gain * levels)[:, None]
        lut = self._inverse(fwd)
        return Lighting(lut=lut, exposure=gain, cast=np.exp(kept_cast), offset=255.0 * black, bend=abs(black),
                        raw=np.concatenate([[log_g], log_cast, summary[1:]]),
                        black=None if line is None else 255.0 * (line[1] - self.offset_ref_),
                        clipped_exposure=self.clipped(aligned))

    def red_blue_swapped(self, aligned: np.ndarray, cast_limit: float) -> bool:
        """Whether a registered part (H, W, 3) uint8 with red and blue swapped back has the reference's colours."""
        # a camera set to RGB instead of BGR reads as a colour cast; swapped back, its cast is within `cast_limit` and
        # its blocks follow the reference more closely, where a lamp's colour fits best as photographed (each block's
        # colour moves alike); a part of one hue fits both ways alike: its swap cannot be told from a lamp's colour
        blocks, usable = self._measured(aligned)
        if usable.sum() < 8:
            return False
        as_is, back = (self._cast_fit(blocks[usable][:, order], usable) for order in ([0, 1, 2], [2, 1, 0]))
        return float(np.abs(np.expm1(back[0])).max()) <= cast_limit and back[1] < _SWAP_FIT * as_is[1]

    def _cast_fit(self, part: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, float]:
        """Log cast (3,) of usable blocks (N, 3) in 0..1, and red and blue's weighted median log scatter about it."""
        log_ratio = np.log(np.maximum(part, 0.5 / 255.0) / np.maximum(self.ref_blocks_[usable], 0.5 / 255.0))
        weights = self.weights_[usable]
        log_g = _weighted_median(log_ratio.mean(axis=1), weights)
        centre = np.array([_weighted_median(log_ratio[:, c], weights) for c in range(3)])
        scatter = np.abs(log_ratio - centre)[:, [0, 2]].mean(axis=1)
        return centre - log_g, _weighted_median(scatter, weights)

    def clipped(self, aligned: np.ndarray) -> float | None:
        """The least exposure (relative to the good parts) a registered part (H, W, 3) uint8 is under, from its pixels
        at the top: if a share S of them reach _CLIP_HIGH and good parts have that share at and above level q, the
        lamp lifted q to the top. The blocks the exposure is read from leave such pixels out, so a much brighter
        lamp read low (found by an adversarial test: a casting under x1.6 read 1.16 and was never rejected). None
        when the part has no more such pixels than good parts (plus CLIP_SLACK), or without their record."""
        if self.top_share_ is None:
            return None
        below = int(_CLIP_HIGH) - 1  # every channel below the top: one OpenCV pass (numpy's max over channels: 0.36 ms)
        size = max(aligned.shape[0] * aligned.shape[1], 1)
        share = 1.0 - cv2.countNonZero(cv2.inRange(aligned, (0, 0, 0), (below, below, below))) / size
        if share <= self.top_share_[int(_CLIP_HIGH)] + CLIP_SLACK:
            return None
        level = int(np.argmax(self.top_share_ <= share))  # the first level good parts have this share above
        return _CLIP_HIGH / level if level >= 1 else None

    def _inverse(self, fwd: np.ndarray) -> np.ndarray:
        """The lookup table (1, 256, 3) uint8 that inverts a forward curve (256, 3) (the reference's level -> the
        part's, per channel), within the range every lighting shows."""
        fwd = np.maximum.accumulate(fwd, axis=0)
        levels = np.linspace(0.0, 1.0, 256)
        lut = np.empty((256, 3), dtype=np.uint8)
        for ch in range(3):
            lut[:, ch] = np.clip(np.round(255.0 * np.interp(levels, fwd[:, ch], levels)), *self.range_)
        return lut.reshape(1, 256, 3)

    def _estimate_by_levels(self, aligned: np.ndarray) -> Lighting:
        """`estimate` for profiles saved before 2026-12-04: the curve bent through each grey level's departure."""
        summary, log_g, log_cast, centres = self._terms(aligned)
        cast = np.exp(_kept(log_cast, self.shrink_[0]))
        departure = summary[1:].copy()
        # a departure no lighting within the tolerance can make at that level is the part's content (a defect
        # covering much of one level), not the light: that level is not used
        bound = np.log1p(_PLAUSIBLE_GAIN + _PLAUSIBLE_OFFSET / np.maximum(np.nan_to_num(centres, nan=1.0), _DARK))
        departure[np.abs(np.nan_to_num(departure)) > bound] = np.nan
        filled = np.isfinite(departure)
        kept = np.where(filled, _kept(np.nan_to_num(departure), self.shrink_[1:]), 0.0)
        levels = np.linspace(0.0, 1.0, 256)
        gain = float(np.exp(log_g))
        if filled.any() and np.any(kept != 0.0):
            # a departure beyond what good parts show at some level (an offset, a gamma): follow it there;
            # between measured levels linearly, above the top one as a gain, below the lowest as an offset
            nodes = centres[filled]
            values = gain * nodes * np.exp(kept[filled])
            fwd_grey = np.interp(levels, nodes, values)
            fwd_grey = np.where(levels > nodes[-1], levels * values[-1] / nodes[-1], fwd_grey)
            fwd_grey = np.where(levels < nodes[0], levels * gain + (values[0] - nodes[0] * gain), fwd_grey)
        else:  # the exposure alone, which the median over all blocks measures most precisely
            fwd_grey = gain * levels
        return Lighting(lut=self._inverse(cast[None, :] * fwd_grey[:, None]), exposure=gain, cast=cast,
                        offset=255.0 * float(fwd_grey[0]), bend=float(np.abs(kept).max()),
                        raw=np.concatenate([[log_g], log_cast, departure]))

    def shading_field(self, normalised: np.ndarray) -> np.ndarray:
        """The log brightness field (SHADING_GRID, SHADING_GRID) of a tone-corrected part (H, W, 3) uint8 against
        the reference: per cell, the weighted median log ratio of its usable blocks; 0 where too few are usable."""
        log_ratio, usable, weights = self._grey_ratio(normalised)
        rows = np.linspace(0, usable.shape[0], SHADING_GRID + 1).astype(int)
        cols = np.linspace(0, usable.shape[1], SHADING_GRID + 1).astype(int)
        grid = np.zeros((SHADING_GRID, SHADING_GRID))
        for i in range(SHADING_GRID):
            for j in range(SHADING_GRID):
                cell = (slice(rows[i], rows[i + 1]), slice(cols[j], cols[j + 1]))
                use = usable[cell]
                if use.size and use.mean() >= _SHADING_MIN_SHARE:
                    grid[i, j] = _weighted_median(log_ratio[cell][use], weights[cell][use])
        return np.clip(grid, -SHADING_CAP, SHADING_CAP)

    def _grey_ratio(self, normalised: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A tone-corrected part's (H, W, 3) uint8 block brightness against the reference's, for its fields: the log
        ratio (BH, BW), the usable blocks (unclipped, not black) and the blocks' weights."""
        part = _blocks(normalised).astype(np.float64).mean(axis=2) / 255.0  # (BH, BW)
        ref = self.ref_blocks_.mean(axis=2)
        usable = ~(_clipped(normalised) | self.ref_clipped_) & (ref > _DARK)
        log_ratio = np.log(np.maximum(part, 0.5 / 255.0) / np.maximum(ref, 0.5 / 255.0))
        weights = self.weights_ if self.weights_.shape == ref.shape else np.ones_like(ref)
        return log_ratio, usable, weights

    def smooth_field(self, normalised: np.ndarray) -> np.ndarray:
        """The smooth log brightness field (3,) of a tone-corrected part (H, W, 3) uint8 against the reference: the
        tilt across x, across y and the vignetting of smooth_map, fitted to its usable blocks' log ratios by
        reweighted least squares (blocks far off the field, a defect or an edge, weigh less; steady blocks more);
        zeros with fewer than _SMOOTH_MIN_BLOCKS usable blocks."""
        ratio, usable, weights = self._grey_ratio(normalised)
        if usable.sum() < _SMOOTH_MIN_BLOCKS:
            return np.zeros(3)
        log_ratio, steady = ratio[usable], weights[usable]  # (N,)
        bh, bw = usable.shape
        rows, cols = np.nonzero(usable)
        x = (cols + 0.5) / bw * 2.0 - 1.0
        y = (rows + 0.5) / bh * 2.0 - 1.0
        design = np.stack([np.ones_like(x), x, y, x * x + y * y - _MEAN_R2], axis=1)  # (N, 4): level, tilts, vignetting
        w = steady
        coef = np.zeros(4)
        for _ in range(_FIT_ROUNDS):
            root = np.sqrt(w)
            solved = np.linalg.lstsq(design * root[:, None], log_ratio * root, rcond=None)[0]
            moved, coef = float(np.abs(solved - coef).max()), solved
            size = np.abs(log_ratio - design @ coef)
            scale = 1.4826 * _weighted_median(size, steady) + 1e-4
            w = steady * np.minimum(1.0, _HUBER * scale / np.maximum(size, 1e-12))
            if moved < 1e-4:
                break
        return coef[1:]

    def normalise(self, aligned: np.ndarray, lighting: Lighting) -> tuple[np.ndarray, Lighting]:
        """The part (H, W, 3) uint8 brought to the reference's lighting, within the shared range (and, with
        shading, divided by its brightness field), and its lighting with the smooth field it was divided by."""
        out = cv2.LUT(aligned, lighting.lut)
        if not self.shading:
            return out, lighting
        h, w = out.shape[:2]
        if self.shading == SMOOTH:
            coef = self.smooth_field(out)
            return divide(out, field_gain(coef, h, w), self.range_[1]), replace(lighting, field=coef)
        gain = cv2.resize(np.exp(-self.shading_field(out)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return divide(out, gain, self.range_[1]), lighting

    def apply(self, aligned: np.ndarray, lighting: Lighting) -> np.ndarray:
        """The part (H, W, 3) uint8 brought to the reference's lighting (see normalise)."""
        return self.normalise(aligned, lighting)[0]


def divide(image: np.ndarray, gain: np.ndarray, ceiling: int = 255) -> np.ndarray:
    """An image (H, W, 3) uint8 times a brightness correction `gain` (H, W) float32, rounded, at most `ceiling`."""
    flat = cv2.multiply(image, cv2.merge([gain.astype(np.float32)] * 3), dtype=cv2.CV_32F)
    return np.clip(np.rint(flat), 0, ceiling).astype(np.uint8)
