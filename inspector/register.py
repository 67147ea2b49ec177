"""Registration: find where a part lies in its photo and bring it into the profile's frame.

A part placed by hand is shifted and turned; the cells the profile compares only mean something when the
same place on the part falls into the same cell. At fit time the `Locator` learns a reference (the median
of the training images once they are registered to each other), how parts rotate on this line, and how well
a good part matches the reference. For each part it then finds a rigid placement (rotation about the frame
centre, then a shift) on the grey working image:

* shift: phase correlation (`cv2.phaseCorrelate`) with the reference; it ignores gain and offset;
* rotation `small` (+-10 degrees): ECC refinement (`cv2.findTransformECC`, Euclidean) at half resolution,
  started from the shift; a result beyond the limit falls back to the shift alone;
* rotation `any` (round parts): candidate angles from the polar-resampled magnitude spectra (which do not
  move with the shift) and from a coarse sweep of turns on quarter-size images, each followed by a
  phase-correlated shift; the candidate that matches best is refined by a local search on half-size images.
  The turns are about the frame's centre, and a part lying off it moves far when turned (8% off and turned half a
  turn: 16%, past the shift the search allows), and the windowed spectra and sweep read it worse: good castings
  moved 7-8% without a turn were read 8-28 degrees off the turn of the same photo unmoved. So the search also runs
  on the part first moved, by whole pixels, from where it lies to the frame's centre, and the better match is kept.
  Where it lies is read against the reference averaged over every turn about the reference's own centre
  (_round_reference), which does not change as the part turns; the centred result is taken only where the part lies
  within max_shift of the reference's part (the search on the part as photographed clips its shift after the turn,
  as before, so whether a part further off is located depends on its turn), and at fit the reference is first
  moved to the median of where the good parts lie (it started from one part's place). Turned castings caught at the
  threshold over placement seeds 0-4: 0.969 / 0.870 / 0.863 / 0.898 / 0.885 before; see docs/line-conditions.md, "A
  part placed
  anywhere";
* `off`: the part is not moved (a fixture holds it), only its match is measured;
* scale, on the line only: a part photographed larger or smaller than the good parts (a camera moved or
  refocused since training) is also tried magnified by each of SCALES (+-1.5%, +-3%) about the frame centre, and on
  by FURTHER_SCALES to +-6% while the match keeps rising past an end (a camera moved 5% closer flagged 15 of 20 good
  bottles; now 1, measured 2026-12-06; parts within 3% cost no more than before), and the best is taken when it
  matches the reference better than the placement alone by more than any good training part gains
  that way, plus SCALE_MARGIN (`scale_limit_`); a product whose good parts already gain from it (a reference that
  is the median of parts that differ) is left unscaled up to that much; and where the search, so limited, does not
  bring back at least SCALE_SEEN of the training parts photographed 5% larger and of those 5% smaller (it cannot
  tell a moved camera from the parts' own differences), it is off (`scale_limit_` None, `scale_seen_` the share);
* `auto` (default) chooses at fit time, on up to MODE_SAMPLE training images: `off` unless a search raises their
  median match by _AUTO_MOVE (every resampling blurs a little, and small defects are a few pixels wide), else the
  cheapest search that matches about as well as the best one.

How well the registered part matches the reference (zero-normalised cross-correlation of the grey images)
is its `match`; below `match_limit_` (half the worst training part's match) the part cannot be located.

A part lying further off than the profile allows (`off_place`, asked only for a part that would not pass): one
phase correlation, not clipped, finds how far it lies from the reference; moved back by that, it is compared with
the reference over the part of the frame still photographed. It lies off its place when that is further than the
training parts lie (OFF_FLOOR, or OFF_MARGIN beyond the OFF_QUANTILE of those phase correlation places reliably)
and than the search reaches; when moved back it matches nearly as well as good parts in place do (OFF_SLACK); and
when it then shows at most OFF_RATIO of the unlikeness it showed as located (`off_limits_`). Found by an
adversarial test: a bottle held in a fixture (`off`) and photographed 5-20% to one side was `rejected` for its
lighting (exposure read 1.6-2.3x); an operator would have checked the lamp while the fixture, the camera's mount or
the trigger's timing had moved. Where the profile does not search (`off`), a part found only beyond where the
training parts lay (without OFF_MARGIN; at least OFF_FLOOR - OFF_MARGIN) is returned too (`far` False): the profile
names it when, moved back, it passes and its light was read as trained (a camera knocked 2-3% aside flagged every
bottle as a plain defect, and nothing said why). Measured on the shared sets: docs/line-conditions.md, "Parts off
their place".
Products whose phase correlation wanders (the tyre's tread, the casting's blades) are named only further off; a part
turned and moved beyond the search is often placed at a wrong turn and then not located (a miss, not a wrong name).

Where each part lies (`where`, asked for every placed part): the same unclipped phase correlation, read at the
part's pivot (`fit_pivot`: the frame point whose place varies least as the good parts turn, learned at fit; a part
off the frame's centre turned about itself is not read as moved), as shares of the photo's width and height. At fit
time the reliable training places give `place_spread_` (median and spread per axis, `place_spread`); the drift
monitor compares the recent parts' median with it, so a camera knocked aside by a few percent, within the scatter
each part may have, is noticed for the station (drift.py, `placement_x`/`_y`).

OpenCV does the array work (it releases the GIL). Note: OpenCV 5.0's `phaseCorrelate` writes into its
inputs, so it is only ever given copies.

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from inspector.drift import robust_spread

ROTATIONS = ("auto", "off", "none", "small", "any")
SMALL_DEGREES = 10.0  # the `small` rotation mode's limit
N_THETA = 360  # angular bins of the polar spectrum (1 degree each)
ROUND_STEP = 7.5  # degrees between the turns of the reference averaged over every turn (`any`, _round_reference)
CENTRED = 2  # `any`: a part within this many working pixels of the frame's centre each way is not moved first
COARSE_STEP = 15.0  # degrees between the turns of the coarse sweep (`any`)
FINE_STEP = 0.5  # the local search around the best turn stops at this step (`any`)
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 1e-4)
_AUTO_GAIN = 0.01  # a costlier search is chosen only when it raises the median match this much ...
_AUTO_MOVE = 0.1  # ... and any search at all only when this much over leaving the parts where they are (each
# resampling blurs a little, and small defects are few pixels wide: parts held by a fixture are not moved)
SCALES = (0.97, 0.985, 1.015, 1.03)  # magnifications (about the frame centre) tried on a placed part on the line
FURTHER_SCALES = {0.97: (0.955, 0.94), 1.03: (1.045, 1.06)}  # tried beyond the best of SCALES where it is at an end
FURTHER_MARGIN = 0.005  # ... and taken only when it raises the match this much more
SCALE_MARGIN = 0.01  # one is taken only when it raises the match this much beyond what any good training part gains
SCALE_CHECK = (0.95, 1.05)  # the search is kept only where good parts photographed 5% smaller and 5% larger (about
SCALE_SEEN = 0.5  # ... the frame centre) are each found scaled back past the limit at least this often: where the
# good parts gain from a scale by their content as much as a moved camera makes them gain, a scale read on the line
# is noise (castings placed by hand: 0% and 3% found, while good ones were read 6% smaller and flagged `size`;
# bottle: 100%)
SCALE_SAMPLE = 40  # ... measured on at most this many training images (a seeded random sample past it)
OFF_FLOOR = 0.04  # a part lies off its place when one phase correlation finds it at least this share of the field
OFF_MARGIN = 0.03  # ... away, and this much further than OFF_QUANTILE of the training parts it finds reliably (and,
# where the profile searches, further than the search reaches), ...
OFF_QUANTILE = 0.99
OFF_SLACK = 3.0  # ... and, moved back, matches the reference over what is still photographed at least as well as
# 1 - OFF_SLACK * (1 - m), m the 5% quantile of the training parts' own matches in place (and the match limit), ...
OFF_RATIO = 0.4  # ... with at most this share of the unlikeness it showed there as located (a repeating texture
# matches about as well a whole number of periods away: found by a review, 7 of 40 parts missing a logo were named)
OFF_OVERLAP = 0.5  # ... with at least this share of the frame left
OFF_SAMPLE = 500  # the limits are learned on at most this many training images (a seeded random sample past it)
SPREAD_MIN_PARTS = 10  # where good parts lie (place_spread_) is learned only from at least this many reliable ones
PIVOT_RIDGE = 1e-4  # fit_pivot: turns of good parts below about half a degree leave the pivot at the frame's centre
MODE_SAMPLE = 200  # `auto` chooses its search on at most this many training images (a seeded random sample past it:
# trying every search on every image was 85% of a fit's registration, 15 of 17 s on 1,438 castings)


@dataclass(frozen=True)
class Placement:
    """Where a part lies: the affine map from its photo to the profile's frame, and how well it matches."""

    matrix: np.ndarray  # (2, 3) float64, photo working pixels -> profile frame working pixels
    match: float  # zero-normalised cross-correlation with the reference grey image, in [-1, 1]

    @property
    def angle(self) -> float:
        """Rotation in degrees (counter-clockwise as displayed)."""
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    @property
    def scale(self) -> float:
        """Magnification from photo to frame (0.95: the part was photographed 5% larger than the reference)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def shift(self) -> tuple[float, float]:
        """Translation part (x, y) in working pixels."""
        return float(self.matrix[0, 2]), float(self.matrix[1, 2])


IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class OffPlace:
    """A part found off its place: how far (shares of the photo's width and height; positive: right of and below
    where good parts lie), and the placement that moves it back, with its match over the frame still photographed."""

    dx: float
    dy: float
    placement: Placement  # its match is over the frame still photographed (-1 when less than OFF_OVERLAP of it is)
    outside: float  # the share of the profile's frame the photo does not cover once the part is moved back
    as_located: float  # the match over the same part of the frame as the part was located (not moved back)
    far: bool = True  # further off than the profile allows; False: only further than the good parts lay (a profile
    # that does not search, `off`), to be named only when the part passes once moved back


def sample(n: int, k: int) -> list[int]:
    """Indices of up to k of n items: all of them, or k drawn at random with a fixed seed, in order (an even step
    would see one camera only of two whose photos alternate; found by a review)."""
    if n <= k:
        return list(range(n))
    return sorted(np.random.default_rng(0).choice(n, size=k, replace=False).tolist())


def fit_pivot(matrices: Sequence[np.ndarray], h: int, w: int) -> tuple[float, float]:
    """The point of the reference frame (x, y working pixels of an (h, w) frame) whose place in the photos varies least
    over good parts' placements (2, 3: photo -> frame): the centre the parts turn about, where they are turned; least
    squares, held towards the frame's centre by PIVOT_RIDGE (parts that never turn leave it there)."""
    inv = [np.linalg.inv(homogeneous(m))[:2] for m in matrices]  # frame -> photo
    a = np.array([m[:, 2] for m in inv])  # (N, 2) where the frame's origin lies in each photo
    b = np.array([m[:, :2] - np.eye(2) for m in inv])  # (N, 2, 2): the pivot p lies at a_i + (B_i + I) p, moved by
    # a_i + B_i p from where the frame has it
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    ridge = PIVOT_RIDGE * len(matrices)
    lhs = np.einsum("nji,njk->ik", b, b) + ridge * np.eye(2)
    rhs = -np.einsum("nji,nj->i", b, a) + ridge * centre
    x, y = np.linalg.solve(lhs, rhs)
    return round(float(x), 3), round(float(y), 3)


def place_spread(places: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    """Where good parts lie, from their positions (N, 2) as shares of the field: (median x, spread x, median y,
    spread y), each as drift.robust_spread has it (at least 1e-4)."""
    xy = np.asarray(places, dtype=np.float64).reshape(-1, 2)
    (mx, sx), (my, sy) = (robust_spread(xy[:, axis].tolist()) for axis in (0, 1))
    # a perfectly steady product: phase correlation reads 0 each time
    return round(mx, 5), round(max(sx, 1e-4), 5), round(my, 5), round(max(sy, 1e-4), 5)


def grey(image: np.ndarray) -> np.ndarray:
    """BGR uint8 (H, W, 3) -> grey float32 (H, W)."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)


def zncc(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-normalised cross-correlation of two float32 arrays of one shape, in [-1, 1]."""
    a = a - float(a.mean())
    b = b - float(b.mean())
    den = float(np.sqrt(float((a * a).sum()) * float((b * b).sum())))
    return float((a * b).sum()) / den if den > 0 else 0.0


def homogeneous(matrix: np.ndarray) -> np.ndarray:
    """An affine matrix (2, 3) as (3, 3) float64 with the row [0, 0, 1], for composing and inverting."""
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def rotation_matrix(angle: float, h: int, w: int, scale: float = 1.0) -> np.ndarray:
    """(2, 3) float64 rotation by `angle` degrees, and magnification by `scale`, about the centre of an (h, w) frame."""
    return cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angle), float(scale))


def polar_spectrum(g: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Log magnitude spectrum of grey (H, W) resampled on polar axes: (N_THETA, R) float32, mid frequencies.

    The magnitude spectrum does not move when the image shifts and turns when it turns, so a rotation is a
    circular shift of rows here, whatever the shift.
    """
    h, w = g.shape
    x = (g - float(g.mean())) * window
    f = cv2.dft(x, flags=cv2.DFT_COMPLEX_OUTPUT)
    mag = np.fft.fftshift(cv2.magnitude(f[..., 0], f[..., 1]))
    mag = cv2.log(mag + 1.0)
    r = min(h, w) / 2.0
    pol = cv2.warpPolar(mag, (int(r), N_THETA), (w / 2.0, h / 2.0), r, cv2.WARP_POLAR_LINEAR | cv2.INTER_LINEAR)
    return np.ascontiguousarray(pol[:, 2: (pol.shape[1] * 3) // 4])


def _peaks(values: np.ndarray, n: int, guard: int) -> list[int]:
    """Indices of the n largest values of a circular array (N,), at least `guard` apart."""
    v = values.copy()
    out = []
    for _ in range(n):
        i = int(np.argmax(v))
        out.append(i)
        v[np.arange(i - guard, i + guard + 1) % len(v)] = -np.inf
    return out


class Locator:
    """Learns a reference from good working images and places each new part in its frame."""

    def __init__(self, rotation: str = "auto", max_shift: float = 0.1):
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {', '.join(ROTATIONS)}, got {rotation!r}")
        self.rotation = rotation
        self.max_shift = max_shift
        self.off_limits_: tuple[float, float] | None = None  # see off_place (None: a profile saved before it)
        self.place_spread_: tuple[float, float, float, float] | None = None  # see place_spread (None: saved before it,
        # or too few training parts placed reliably)
        self.pivot_: tuple[float, float] | None = None  # see fit_pivot (None: the frame's centre)
        self.further_ = True  # the scale search goes on past SCALES (False: a profile saved before it, whose limit
        # was learned within SCALES only: found by a review, 7 of 262 good castings were scaled and flagged with it)
        self.scale_seen_: float | None = None  # how often good parts 5% off the trained scale were found (see
        # _scale_seen); below SCALE_SEEN the search is off (scale_limit_ None); None: a profile saved before it

    # ------------------------------------------------------------------ fitting
    def fit(self, works: Sequence[np.ndarray]) -> "Locator":
        """Learn reference, rotation mode and match limit from good BGR uint8 working images (H, W, 3)."""
        greys = [grey(w) for w in works]
        stack = np.stack(greys)
        median = np.median(stack, axis=0)
        # start from the most typical image (a median of parts that lie differently would be a blur)
        first = greys[int(np.argmax([zncc(g, median) for g in greys]))]
        self._set_reference(first)
        self.mode_ = self.rotation if self.rotation != "auto" else self._choose_mode(
            [greys[i] for i in sample(len(greys), MODE_SAMPLE)])
        if self.mode_ == "off":
            self._set_reference(median)
        else:
            if self.mode_ == "any":  # parts turned and moved by hand: the reference moved to where they lie (moved
                # after the first median instead: 16 of 360 generated parts read more than 3 degrees off, against 8)
                self._set_reference(self._at_typical_place([greys[i] for i in sample(len(greys), MODE_SAMPLE)]))
            for _ in range(2):  # the reference becomes the median of the registered images, twice
                self._set_reference(np.median(np.stack([self.warp(g, self.locate_grey(g)) for g in greys]), axis=0))
        self.train_placements_ = [self.locate_grey(g) for g in greys]  # the profile moves its training images by them
        train = np.array([p.match for p in self.train_placements_])
        # half the worst good part's match: a defect, even a large one, leaves most of the part in place, while
        # a missing, wrong or upside-down part or an empty fixture matches far worse
        self.match_limit_ = float(0.5 * train.min())
        # what good parts gain by the same search (a casting's median reference: its parts gain by content; searched
        # within SCALES only, 2 of 262 good castings were scaled on the line past 3% and flagged, measured)
        gains = [self._best_scale(g, p).match - p.match for g, p in zip(greys, self.train_placements_)]
        limit = float(max(gains)) + SCALE_MARGIN
        self.scale_seen_ = self._scale_seen(greys, limit)
        self.scale_limit_ = limit if self.scale_seen_ >= SCALE_SEEN else None
        self.off_limits_, self.place_spread_ = self._off_limits(greys)
        return self

    def _at_typical_place(self, greys: Sequence[np.ndarray]) -> np.ndarray:
        """The reference (H, W) moved to the median of where good grey working images (H, W) show their part (each read
        against the reference averaged over every turn, which does not change as a part turns): the search's reach
        (max_shift) then counts from where good parts lie, not from where the one part the reference started from
        happened to lie."""
        h, w = self.ref_.shape
        _, average = self._round_reference()
        places = [self._phase(g, IDENTITY, average) for g in greys]
        mx, my = np.round(np.median(np.array(places), axis=0))  # whole pixels: the reference is not blurred
        return cv2.warpAffine(self.ref_, np.array([[1.0, 0.0, mx], [0.0, 1.0, my]]), (w, h), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_REPLICATE)

    def _scale_seen(self, greys: Sequence[np.ndarray], limit: float) -> float:
        """How often the scale search, as `locate` runs it with `limit`, brings good grey working images (H, W)
        magnified by each of SCALE_CHECK about the frame centre (a camera moved; borders replicated) back the right
        way: the share of SCALE_SAMPLE of them, in the direction where it is smaller (a search blind one way reads
        noise that way)."""
        h, w = greys[0].shape
        shares = []
        for zoom in SCALE_CHECK:
            m = rotation_matrix(0.0, h, w, zoom)
            found = []
            for i in sample(len(greys), SCALE_SAMPLE):
                g = cv2.warpAffine(greys[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                scaled = self._rescaled(g, self.locate_grey(g), limit)
                found.append(scaled is not None and (scaled.scale - 1.0) * (zoom - 1.0) < 0.0)  # a zoom in: out
            shares.append(float(np.mean(found)))
        return min(shares)

    def _choose_mode(self, greys: Sequence[np.ndarray]) -> str:
        """`auto`'s choice, from grey working images (H, W) measured against the current reference: `off` unless a
        search raises their median match by _AUTO_MOVE, else the cheapest search within _AUTO_GAIN of the best."""
        matches: dict[str, float] = {}
        for mode in ("off", "none", "small", "any"):
            self.mode_ = mode
            matches[mode] = float(np.median([self.locate_grey(g).match for g in greys]))
        searched = ("none", "small", "any")
        best = max(matches[m] for m in searched)
        if best < matches["off"] + _AUTO_MOVE:
            return "off"
        return next(m for m in searched if matches[m] >= best - _AUTO_GAIN)

    def _off_limits(self, greys: Sequence[np.ndarray]
                    ) -> tuple[tuple[float, float], tuple[float, float, float, float] | None]:
        """(distance, match): how far off a part must lie (share of the field) to be named, and how well it must match
        once moved back; and where the good parts lie (place_spread, read at the pivot this also learns: pivot_);
        learned from (a sample of) the good training images (H, W) and their placements."""
        picks = sample(len(greys), OFF_SAMPLE)
        places = [self.train_placements_[i] for i in picks]
        least = max(self.match_limit_, 1.0 - OFF_SLACK * (1.0 - float(np.quantile([p.match for p in places], 0.05))))
        # where phase correlation failed on a good part (its match moved back is poor) it says nothing of how far
        # good parts lie: such parts once set the casting's limit at 45% of the field (found by a review)
        found = [f for f in (self._unclipped(greys[i], p) for i, p in zip(picks, places)) if f.placement.match >= least]
        away = float(np.quantile([max(abs(f.dx), abs(f.dy)) for f in found], OFF_QUANTILE)) if found else 0.0
        reach = {"off": 0.0, "none": self.max_shift, "small": 2.0 * self.max_shift, "any": self.max_shift}[self.mode_]
        # `small` refines the search's shift by ECC, which may move it by max_shift again
        spread = None
        if len(found) >= SPREAD_MIN_PARTS:
            h, w = greys[0].shape
            self.pivot_ = fit_pivot([f.placement.matrix for f in found], h, w)
            spread = place_spread([self._lies(f.placement.matrix, h, w) for f in found])
        return (float(max(OFF_FLOOR, away + OFF_MARGIN, reach)), float(least)), spread

    def _unclipped(self, g: np.ndarray, placement: Placement) -> OffPlace:
        """Where one phase correlation at the placement's turn, unclipped, finds the part in a grey working image
        (H, W), and the placement moving it back by that."""
        h, w = g.shape
        # the placement's turn, unshifted (not its size: a part out of place is often read as magnified by the scale
        # search, which moves its middle)
        turn = rotation_matrix(-placement.angle, h, w)
        moved = self._shifted(g, turn, limit=False)
        inside = cv2.warpAffine(np.ones_like(g), moved.matrix, (w, h), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) > 0
        match = as_located = -1.0
        if inside.mean() >= OFF_OVERLAP:
            match = zncc(self.warp(g, moved)[inside], self.ref_[inside])
            as_located = zncc(self.warp(g, placement)[inside], self.ref_[inside])
        # the shift phase correlation found after the turn, turned back: where the part lies in the photo
        dx, dy = np.linalg.solve(turn[:, :2], turn[:, 2] - moved.matrix[:, 2])
        return OffPlace(float(dx) / w, float(dy) / h, Placement(moved.matrix, match), 1.0 - float(inside.mean()),
                        as_located)

    def where(self, work: np.ndarray, placement: Placement) -> tuple[float, float]:
        """Where a BGR uint8 working image (H, W, 3) shows the part, as shares of the photo's width and height from
        where the reference shows it (positive: right and below): its pivot (pivot_) brought back into the photo by
        the placement's turn and one phase correlation, unclipped, as `_unclipped` finds it (the drift monitor's
        position, compared with place_spread_)."""
        g = grey(work)
        h, w = g.shape
        turn = rotation_matrix(-placement.angle, h, w)
        matrix = turn.copy()
        matrix[:, 2] -= self._phase(g, turn)
        x, y = self._lies(matrix, h, w)
        return round(x, 5), round(y, 5)

    def _lies(self, matrix: np.ndarray, h: int, w: int) -> tuple[float, float]:
        """Where a placement (2, 3: photo -> frame, working pixels of an (h, w) frame) shows the part's pivot in the
        photo, less where the frame has it, as shares of the width and height: where the part lies, not where a turn
        about the frame's centre moved it (a part off the centre, turned, would read as moved: found by a review)."""
        pivot = np.array(self.pivot_ if self.pivot_ is not None else ((w - 1) / 2.0, (h - 1) / 2.0))
        x, y = np.linalg.solve(matrix[:, :2], pivot - matrix[:, 2]) - pivot
        return float(x) / w, float(y) / h

    def off_place(self, work: np.ndarray, placement: Placement) -> OffPlace | None:
        """Where a BGR uint8 working image (H, W, 3) shows the part when that is further off its place than the profile
        allows (see the module's note), or, where the profile does not search (`off`), further than the good parts lay
        (`far` False: the caller names it only when it passes moved back); else None (or for a profile saved before
        the check)."""
        if self.off_limits_ is None:
            return None
        found = self._unclipped(grey(work), placement)
        distance, least = self.off_limits_
        away = max(abs(found.dx), abs(found.dy))
        # `off` keeps OFF_MARGIN beyond where its good parts lay (or OFF_FLOOR): without it, the training parts' own
        # spread (or OFF_FLOOR - OFF_MARGIN)
        near = max(distance - OFF_MARGIN, OFF_FLOOR - OFF_MARGIN) if self.mode_ == "off" else distance
        clearer = 1.0 - found.placement.match <= OFF_RATIO * (1.0 - found.as_located)
        if away <= near or found.placement.match < least or not clearer:
            return None
        return found if away > distance else replace(found, far=False)

    def _set_reference(self, ref: np.ndarray) -> None:
        """Store the reference grey image (H, W) and what follows from it."""
        self.ref_ = np.ascontiguousarray(ref, dtype=np.float32)
        h, w = self.ref_.shape
        self.window_ = cv2.createHanningWindow((w, h), cv2.CV_32F)
        self.ref_spectrum_ = polar_spectrum(self.ref_, self.window_)
        self.ref_half_ = cv2.resize(self.ref_, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        self.ref_small_ = cv2.resize(self.ref_, (max(8, w // 4), max(8, h // 4)), interpolation=cv2.INTER_AREA)
        self.window_small_ = cv2.createHanningWindow(self.ref_small_.shape[::-1], cv2.CV_32F)
        self.window_half_ = cv2.createHanningWindow(self.ref_half_.shape[::-1], cv2.CV_32F)
        self._round: tuple[tuple[float, float], np.ndarray] | None = None  # see _round_reference (`any` only)

    def _round_reference(self) -> tuple[tuple[float, float], np.ndarray]:
        """Where the reference's part lies (the point it turns about, x and y in working pixels) and the reference
        averaged over every turn about that point (H, W), which does not change as a part turns; computed once per
        reference, for `any` only. The point is half the shift, found by plain cross-correlation, between the
        reference and itself turned half a turn (a whitened phase correlation read a part with a tab 10-30 px off in
        10 of 40 photos: found by a review); one further from the frame's centre than max_shift is taken as the
        centre."""
        if self._round is None:
            h, w = self.ref_.shape
            a = (self.ref_ - float(self.ref_.mean())) * self.window_
            b = np.ascontiguousarray(a[::-1, ::-1])  # turned half a turn about the frame's centre (the window too)
            spectrum = cv2.mulSpectrums(cv2.dft(b, flags=cv2.DFT_COMPLEX_OUTPUT),
                                        cv2.dft(a, flags=cv2.DFT_COMPLEX_OUTPUT), 0, conjB=True)
            corr = np.fft.fftshift(cv2.idft(spectrum, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE))
            py, px = np.unravel_index(int(np.argmax(corr)), corr.shape)
            sx, sy = float(px - w // 2), float(py - h // 2)  # how far the turned copy lies from the reference
            cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
            if abs(sx) / 2.0 <= self.max_shift * w and abs(sy) / 2.0 <= self.max_shift * h:
                cx, cy = cx - sx / 2.0, cy - sy / 2.0
            turns = np.arange(0.0, 360.0, ROUND_STEP)
            average = sum(cv2.warpAffine(self.ref_, cv2.getRotationMatrix2D((cx, cy), float(t), 1.0), (w, h),
                                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                          for t in turns) / len(turns)
            self._round = ((cx, cy), average.astype(np.float32))
        return self._round

    def set_state(self, mode: str, ref: np.ndarray, match_limit: float,
                  scale_limit: float | None = None, further: bool = False,
                  off_limits: Sequence[float] | None = None,
                  place_spread: Sequence[float] | None = None, pivot: Sequence[float] | None = None,
                  scale_seen: float | None = None) -> "Locator":
        """Rebuild a fitted locator from its saved mode, reference (H, W), match limit and scale limit (None: a
        profile saved before the scale search, or one whose search is off: see _scale_seen; neither scales), whether
        its search goes past SCALES, its off-place limits (None: saved before them; the check is off), where its good
        parts lay (None: saved before it; their position is not watched), the pivot it reads their position at (None:
        the frame's centre) and how often its scale search found good parts 5% off (None: saved before that was
        measured)."""
        if mode not in ROTATIONS[1:]:
            raise ValueError(f"saved rotation mode {mode!r} is not one of off, none, small, any")
        if not (math.isfinite(match_limit) and -1.0 <= match_limit <= 1.0):
            raise ValueError(f"saved match limit {match_limit!r} is not a number in [-1, 1]")
        if scale_limit is not None and not (math.isfinite(scale_limit) and -2.0 <= scale_limit <= 2.0):
            raise ValueError(f"saved scale limit {scale_limit!r} is not a number in [-2, 2]")
        self.mode_ = mode
        self._set_reference(ref)
        self.match_limit_ = float(match_limit)
        self.scale_limit_ = None if scale_limit is None else float(scale_limit)
        self.further_ = bool(further)
        if scale_seen is not None and not (isinstance(scale_seen, (int, float)) and not isinstance(scale_seen, bool)
                                           and 0.0 <= scale_seen <= 1.0):
            raise ValueError(f"saved scale seen must be a share in [0, 1], not {scale_seen!r}")
        self.scale_seen_ = None if scale_seen is None else float(scale_seen)
        self.off_limits_ = None
        if off_limits is not None:
            ok = (isinstance(off_limits, (list, tuple)) and len(off_limits) == 2
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in off_limits)
                  and 0.0 < off_limits[0] <= 1.0 and -1.0 <= off_limits[1] <= 1.0)
            if not ok:
                raise ValueError(f"saved off-place limits must be a distance in (0, 1] and a match in [-1, 1], "
                                 f"not {off_limits!r}")
            self.off_limits_ = (float(off_limits[0]), float(off_limits[1]))
        self.place_spread_ = None
        if place_spread is not None:
            ok = (isinstance(place_spread, (list, tuple)) and len(place_spread) == 4
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                          for v in place_spread)
                  and all(abs(v) <= 1.0 for v in place_spread) and place_spread[1] > 0 and place_spread[3] > 0)
            if not ok:
                raise ValueError(f"saved place spread must be a median and a positive spread (shares of the field) "
                                 f"for x and for y, not {place_spread!r}")
            self.place_spread_ = tuple(float(v) for v in place_spread)
        self.pivot_ = None
        if pivot is not None:
            h, w = self.ref_.shape
            ok = (isinstance(pivot, (list, tuple)) and len(pivot) == 2
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pivot)
                  and -w <= pivot[0] <= 2 * w and -h <= pivot[1] <= 2 * h)
            if not ok:
                raise ValueError(f"saved pivot must be a point (x, y) of the {w} x {h} frame or near it, not {pivot!r}")
            self.pivot_ = (float(pivot[0]), float(pivot[1]))
        return self

    # ------------------------------------------------------------------ locating
    def locate(self, work: np.ndarray) -> Placement:
        """Placement of a BGR uint8 working image (H, W, 3) in the reference frame, magnified where that matches
        clearly better (see the module's note on scale)."""
        g = grey(work)
        placement = self.locate_grey(g)
        if self.scale_limit_ is None:
            return placement
        scaled = self._rescaled(g, placement, self.scale_limit_)
        return placement if scaled is None else scaled

    def _rescaled(self, g: np.ndarray, placement: Placement, limit: float) -> Placement | None:
        """The placement of a grey working image (H, W) magnified as matches best (_best_scale), when that raises its
        match by more than `limit`, and never when it matches worse; else None."""
        scaled = self._best_scale(g, placement)
        # never one that matches worse: where every good part matches worse scaled (a sharp, steady product) the limit
        # is negative, and a scaled placement matching worse than the part as it lay was taken (adversarial test)
        return scaled if scaled.match - placement.match > max(limit, 0.0) else None

    def _best_scale(self, g: np.ndarray, placement: Placement) -> Placement:
        """The placement (2, 3) followed by the magnification of SCALES about the frame centre that matches the
        reference best, with that match; where that is an end of SCALES, the FURTHER_SCALES beyond it too (a camera
        moved 5% closer: found by an adversarial test, it flooded the bottle)."""
        h, w = g.shape
        after = homogeneous(placement.matrix)

        def tried(scale: float) -> tuple[float, Placement]:
            m = rotation_matrix(0.0, h, w, scale) @ after
            return scale, Placement(m, zncc(self.warp(g, Placement(m, 0.0)), self.ref_))

        scale, best = max((tried(s) for s in SCALES), key=lambda t: t[1].match)
        for beyond in FURTHER_SCALES.get(scale, ()) if self.further_ else ():
            _, found = tried(beyond)
            if found.match <= best.match + FURTHER_MARGIN:  # a peak between two samples stays at the nearer one
                break
            best = found
        return best

    def locate_grey(self, g: np.ndarray) -> Placement:
        """Placement of a grey float32 working image (H, W)."""
        h, w = g.shape
        if self.mode_ == "off":
            return Placement(IDENTITY.copy(), zncc(g, self.ref_))
        if self.mode_ == "any":
            return self._any_turn(g)
        best = self._shifted(g, rotation_matrix(0.0, h, w))
        if self.mode_ == "small":
            refined = self._refine(g, best.matrix)
            if refined is not None and refined.match > best.match:
                best = refined
        return best

    def _any_turn(self, g: np.ndarray) -> Placement:
        """`any`: the better of the turn search on a grey working image (H, W) as photographed and on the part first
        moved (by whole pixels) from where it lies to the frame's centre (see the module's note); the second only
        where the part lies within max_shift of where the reference's part lies (_round_reference)."""
        h, w = g.shape
        best = self._turned(g)
        (cx, cy), average = self._round_reference()
        # how far the part lies from the reference's: the average over every turn does not change as the part turns
        dx, dy = self._phase(g, IDENTITY, average)
        dx = float(np.clip(dx, -self.max_shift * w, self.max_shift * w)) + cx - (w - 1) / 2.0
        dy = float(np.clip(dy, -self.max_shift * h, self.max_shift * h)) + cy - (h - 1) / 2.0
        move = np.array([[1.0, 0.0, -float(round(dx))], [0.0, 1.0, -float(round(dy))]])
        if abs(move[0, 2]) <= CENTRED and abs(move[1, 2]) <= CENTRED:  # at the centre already: searched as it lies
            return best
        centred = self._turned(cv2.warpAffine(g, move, (w, h), flags=cv2.INTER_NEAREST,
                                              borderMode=cv2.BORDER_REPLICATE))
        matrix = (homogeneous(centred.matrix) @ homogeneous(move))[:2]
        # the point of the photo brought onto the reference's part: where this part lies
        px, py = cv2.invertAffineTransform(matrix) @ np.array([cx, cy, 1.0])
        if abs(px - cx) > self.max_shift * w + 0.5 or abs(py - cy) > self.max_shift * h + 0.5:
            return best
        found = Placement(matrix, zncc(self.warp(g, Placement(matrix, 0.0)), self.ref_))
        return found if found.match > best.match else best

    def _turned(self, g: np.ndarray) -> Placement:
        """The turn search of `any` on a grey working image (H, W): candidate turns from the polar spectra and a coarse
        sweep, each shifted by phase correlation; the best refined by a local search."""
        h, w = g.shape
        pol = polar_spectrum(g, self.window_)
        res = cv2.matchTemplate(np.vstack([pol, pol]), self.ref_spectrum_, cv2.TM_CCOEFF_NORMED)[:N_THETA, 0]
        angles = [-i * 360.0 / N_THETA for i in _peaks(res, 2, 5)]
        best: Placement | None = None
        best_angle = 0.0
        for angle in [a + turn for a in angles for turn in (0.0, 180.0)] + self._coarse_angles(g):
            p = self._shifted(g, rotation_matrix(angle, h, w))
            if best is None or p.match > best.match:
                best, best_angle = p, angle
        assert best is not None
        fine = self._shifted(g, rotation_matrix(self._fine_angle(g, best_angle), h, w))
        return fine if fine.match > best.match else best

    def _turn_score(self, small: np.ndarray, ref: np.ndarray, window: np.ndarray, angle: float) -> float:
        """How well `small` (a reduced grey image) matches `ref` once turned by `angle` and shifted."""
        h, w = ref.shape
        return self._shifted(small, rotation_matrix(angle, h, w), ref, window, limit=False).match

    def _coarse_angles(self, g: np.ndarray, keep: int = 2) -> list[float]:
        """The best `keep` turns of a sweep, every COARSE_STEP degrees, on quarter-size images.

        The spectrum's angle is quick but can be fooled by a part with little texture (its outline dominates
        the spectrum); the sweep is the safety net.
        """
        h, w = self.ref_small_.shape
        small = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
        scored = [(self._turn_score(small, self.ref_small_, self.window_small_, float(a)), float(a))
                  for a in np.arange(0.0, 360.0, COARSE_STEP)]
        return [angle for _, angle in sorted(scored, reverse=True)[:keep]]

    def _fine_angle(self, g: np.ndarray, angle: float) -> float:
        """Refine a turn by a local search on half-size images, down to FINE_STEP degrees."""
        h, w = self.ref_half_.shape
        half = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
        best = self._turn_score(half, self.ref_half_, self.window_half_, angle)
        step = COARSE_STEP / 4.0
        while step >= FINE_STEP:
            for candidate in (angle - step, angle + step):
                value = self._turn_score(half, self.ref_half_, self.window_half_, candidate)
                if value > best:
                    best, angle = value, candidate
                    break
            else:
                step /= 2.0
        return angle

    def _shifted(self, g: np.ndarray, rot: np.ndarray, ref: np.ndarray | None = None,
                 window: np.ndarray | None = None, limit: bool = True) -> Placement:
        """Rotate by `rot` (2, 3), then find the shift by phase correlation against `ref` (default: the full-size
        reference); with `limit`, shifts beyond max_shift are cut (and whole pixels in `none` mode)."""
        ref = self.ref_ if ref is None else ref
        h, w = g.shape
        dx, dy = self._phase(g, rot, ref, window)
        if limit:
            dx = float(np.clip(dx, -self.max_shift * w, self.max_shift * w))
            dy = float(np.clip(dy, -self.max_shift * h, self.max_shift * h))
            if self.mode_ == "none":  # a whole-pixel shift moves the part without resampling (no blur)
                dx, dy = float(round(dx)), float(round(dy))
        matrix = rot.copy()
        matrix[:, 2] -= (dx, dy)
        return Placement(matrix, zncc(self.warp(g, Placement(matrix, 0.0)), ref))

    def _phase(self, g: np.ndarray, rot: np.ndarray, ref: np.ndarray | None = None,
               window: np.ndarray | None = None) -> tuple[float, float]:
        """The shift (dx, dy, pixels) phase correlation finds between `ref` (default: the full-size reference) and a
        grey image (H, W) turned by `rot` (2, 3), unclipped."""
        ref = self.ref_ if ref is None else ref
        window = self.window_ if window is None else window
        h, w = g.shape
        turned = g if np.array_equal(rot, IDENTITY) else cv2.warpAffine(
            g, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        (dx, dy), _ = cv2.phaseCorrelate(ref.copy(), np.array(turned, dtype=np.float32), window)
        return float(dx), float(dy)

    def _refine(self, g: np.ndarray, start: np.ndarray) -> Placement | None:
        """ECC (Euclidean) refinement at half resolution from `start` (2, 3); None when it fails or strays."""
        h, w = g.shape
        half = cv2.resize(g, self.ref_half_.shape[::-1], interpolation=cv2.INTER_AREA)
        sx = self.ref_half_.shape[1] / w
        sy = self.ref_half_.shape[0] / h
        scale = np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])
        inv_scale = np.linalg.inv(scale)
        start_h = (scale @ homogeneous(start) @ inv_scale)[:2]
        # ECC's warp maps the reference's coordinates into the image's: the inverse of ours
        warp = cv2.invertAffineTransform(start_h).astype(np.float32)
        try:
            _, warp = cv2.findTransformECC(self.ref_half_, half, warp, cv2.MOTION_EUCLIDEAN, _ECC_CRITERIA, None, 3)
        except cv2.error:
            return None  # did not converge: keep the unrefined placement
        ours = cv2.invertAffineTransform(warp.astype(np.float64))
        matrix = (inv_scale @ homogeneous(ours) @ scale)[:2]
        p = Placement(matrix, 0.0)
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])
        dx, dy = matrix @ centre - start @ centre  # how far the refinement moved the frame's centre
        if abs(dx) > self.max_shift * w or abs(dy) > self.max_shift * h:
            return None
        if self.mode_ == "small" and abs(p.angle) > 1.5 * SMALL_DEGREES:
            return None
        return Placement(matrix, zncc(self.warp(g, p), self.ref_))

    # ------------------------------------------------------------------ warping
    @staticmethod
    def warp(image: np.ndarray, placement: Placement) -> np.ndarray:
        """Bring an image (H, W[, C]) into the reference frame; the border is replicated."""
        if np.array_equal(placement.matrix, IDENTITY):
            return image
        h, w = image.shape[:2]
        return cv2.warpAffine(image, placement.matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    @staticmethod
    def unwarp_map(amap: np.ndarray, placement: Placement, stride: int) -> np.ndarray:
        """A cell map (GH, GW) in the reference frame, drawn back on the part as photographed (GH, GW)."""
        if np.array_equal(placement.matrix, IDENTITY):
            return amap
        # cell j's centre is at pixel stride * j + (stride - 1) / 2
        to_px = np.array([[stride, 0.0, (stride - 1) / 2.0], [0.0, stride, (stride - 1) / 2.0], [0.0, 0.0, 1.0]])
        cell = (np.linalg.inv(to_px) @ homogeneous(placement.matrix) @ to_px)[:2]
        gh, gw = amap.shape
        return cv2.warpAffine(amap, cell, (gw, gh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
