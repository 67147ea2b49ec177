"""The fine pass: a per-pixel variation model at the resolution the product's small defects need.

The cell comparison works on an image 128 px wide: on a 5 MP line camera one working pixel covers ~20 x 20
camera pixels, and a speck or a thin scratch is averaged away. The fine pass looks at the same part, located
and brought to the trained lighting exactly as for the cells, at `fine_width` pixels across, and compares
every pixel with the same pixel of the good training parts (the variation model of industrial vision):

* at fit time, per pixel and channel, the mean and standard deviation over the good parts;
* for a part, the deviation of each pixel in units of that spread, plus a floor of FLOOR grey levels (sensor
  noise and JPEG: a plain, steady surface must not turn every grain into an alarm), the largest over the three
  channels, smoothed by a BLUR x BLUR box (a defect is a blob, a noisy pixel is not);
* the part's fine score: the mean of its largest TOP_FRACTION of smoothed deviations.

Where good parts vary (an edge that moves a little, a label that differs, a texture that is not registered)
the spread is large and the fine pass is blind there, by design: the cell comparison covers it. The fine
score is standardised against good parts the model did not see, like the cell terms.

Memory stays flat with the training set: the model keeps running sums per fold, never the images, and learns
from at most FINE_MAX_IMAGES good parts (evenly spaced); the rest are scored as held-out parts.

Pure core: no file, database or network I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.photometry import divide
from inspector.register import homogeneous

FINE_MAX_IMAGES = 400  # good parts the variation model learns from at most
FLOOR = 4.0  # grey levels added to every pixel's spread
BLUR = 3  # deviation map smoothing, in fine pixels
FINE_REACH = 2  # fine pixels a part may lie off its refined placement (the band's half-width)
MARGIN = 4  # fine pixels along the photo's border that are not compared (what a move brings in there is made up)
TOP_FRACTION = 0.0001  # the fine score is the mean of this share of a part's largest deviations
MIN_TOP = 4  # ... and of at least this many pixels
_MAP_SAMPLE = 20000  # deviation values per held-out part kept for the map scale
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-4)
# after a converged pass at half the size, two steps at the full size finish (within ~0.01 px of 30 steps there)
_ECC_FINISH = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 2, 1e-4)
_HALF_MIN = 32  # the registration image is first registered at half size when that is at least this many px each way
_MAX_REFINE_DEGREES = 10.0 # a refinement that turns the part further than this (or moves it further than
_MAX_REFINE_SHARE = 0.1  # this share of the width) failed: the coarse placement stands
REFINE_WIDTH = 160  # parts are registered on grey images about this wide (ECC converges to ~0.1 px there)
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class FinePart:
    """One part for the fine pass: its photo at the fine size, where the coarse pass placed it, its lighting."""

    image: np.ndarray  # (h, w, 3) uint8 BGR at the fine size, as photographed
    start: np.ndarray  # (2, 3) float64: photo -> profile frame, in fine pixels (from the working image's placement)
    lut: np.ndarray | None  # (1, 256, 3) uint8 lighting lookup table, None without lighting normalisation
    gain: np.ndarray | None = None  # (h, w) float32 brightness correction in the profile's frame, applied before the
    # lookup table (a part judged again with its light evened out, NormalProfile._evened); None: none


def fine_size(width: int, height: int, fine_width: int) -> tuple[int, int]:
    """The fine image size (w, h) for a working image of (width, height): `fine_width` across, aspect kept."""
    return fine_width, max(1, round(height * fine_width / max(width, 1)))


def fine_matrix(matrix: np.ndarray, factor: float) -> np.ndarray:
    """A (2, 3) placement in working pixels re-expressed in pixels `factor` times finer; (2, 3) float64."""
    half = (factor - 1.0) / 2.0  # working pixel i covers fine pixels [factor * i, factor * (i + 1))
    to_fine = np.array([[factor, 0.0, half], [0.0, factor, half], [0.0, 0.0, 1.0]])
    return (to_fine @ homogeneous(matrix) @ np.linalg.inv(to_fine))[:2]


def _top_mean(dev: np.ndarray) -> float:
    """Mean of the largest TOP_FRACTION (at least MIN_TOP) of the values of dev (h, w), all >= 0."""
    flat = dev.ravel()
    k = min(flat.size, max(MIN_TOP, int(TOP_FRACTION * flat.size)))
    # most pixels lie inside the band (exactly 0): numpy's partition is slow on many equal values, and they add 0
    positive = flat[flat > 0]
    if positive.size <= k:
        return float(positive.sum()) / k
    return float(np.partition(positive, positive.size - k)[positive.size - k:].mean())


class VariationModel:
    """Per-pixel tolerance band and spread of registered, lighting-normalised good parts at the fine size.

    The band at a pixel runs from the darkest to the brightest mean value within `reach` pixels (per channel): a part
    that lies up to `reach` fine pixels off where the registration put it still falls inside the band at its edges,
    while on a plain surface the band is as narrow as the mean, so a speck there stands out. The spread is how far
    good parts fall outside the band (sensor noise, JPEG, what the parts really vary in).
    """

    def __init__(self, size: tuple[int, int], reach: int):
        self.size = (int(size[0]), int(size[1]))  # (w, h) of the fine images compared
        self.reach = int(reach)
        w, h = self.size
        self._frame = np.zeros((h, w), np.float32)  # 1 where compared: all but the border margin
        self._frame[MARGIN:h - MARGIN, MARGIN:w - MARGIN] = 1.0

    def fit(self, n: int, part: Callable[[int], FinePart], n_folds: int, rng: np.random.Generator
            ) -> "VariationModel":
        """Learn from good parts 0..n-1, each made on demand by part(i); sets oof_ (n,), the held-out fine score of
        every part, and scale_, the map unit."""
        learn = pick_learners(n)
        self.template_ = None
        w, h = self.size
        rough = np.zeros((h, w, 3))  # the parts as the coarse pass placed them: the template to refine against
        for i in learn:
            rough += self.prepare(part(i))[0]
        self._set_template((rough / len(learn)).astype(np.float32))

        def fine_work(i: int) -> np.ndarray:
            return self.prepare(part(i))[0]

        folds = np.array_split(rng.permutation(learn), min(n_folds, len(learn)))
        fold_of = np.full(n, -1)
        for k, members in enumerate(folds):
            fold_of[members] = k
        total = np.zeros((h, w, 3))  # running sums, never the images
        for i in learn:
            total += fine_work(i)
        mean = (total / len(learn)).astype(np.float32)
        self._set_template(mean)  # from here on as a saved profile will run: registered against the mean
        self._set_band(mean)
        squares = np.zeros((len(folds), h, w, 3))  # how far each fold's parts fall outside the band
        counts = np.zeros(len(folds))
        for i in learn:
            outside = self._outside(fine_work(i)).astype(np.float64)
            squares[fold_of[i]] += outside * outside
            counts[fold_of[i]] += 1
        all_squares, m = squares.sum(axis=0), counts.sum()
        self._set_spread(np.sqrt(all_squares / m).astype(np.float32))
        held_out = [self._with_spread(np.sqrt((all_squares - sq) / (m - c)).astype(np.float32)) if m > c else self
                    for sq, c in zip(squares, counts)]
        self.oof_ = np.empty(n)
        samples = []
        for i in range(n):
            dev = (held_out[fold_of[i]] if fold_of[i] >= 0 else self).deviation(fine_work(i))
            self.oof_[i] = _top_mean(dev)
            samples.append(dev.ravel()[:: max(1, dev.size // _MAP_SAMPLE)].copy())  # a view would keep all of dev
        self.scale_ = float(np.quantile(np.concatenate(samples), 0.999)) + 1e-6
        return self

    def set_state(self, mean: np.ndarray, spread: np.ndarray, scale: float) -> "VariationModel":
        """Use a saved mean and spread, both (h, w, 3) float32, and map unit."""
        self._set_template(np.asarray(mean, np.float32))
        self._set_band(np.asarray(mean, np.float32))
        self._set_spread(np.asarray(spread, np.float32))
        self.scale_ = float(scale)
        return self

    def _set_template(self, mean: np.ndarray) -> None:
        """The small grey image float32 parts are registered against, from a mean (h, w, 3): the fine size shrunk
        by the whole factor nearest w / REFINE_WIDTH (at the fine widths the pass runs at, 320 px and up, 107 to
        213 px across)."""
        self._refine_factor = max(1, round(self.size[0] / REFINE_WIDTH))
        grey = cv2.cvtColor(np.clip(mean, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
        self.template_ = self._small(grey).astype(np.float32)
        self._template_half = _half(self.template_)

    def _small(self, grey: np.ndarray) -> np.ndarray:
        """A grey image (h, w) shrunk by the whole refine factor (see _block_mean)."""
        return _block_mean(grey, self._refine_factor)

    def refine(self, image: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The placement (2, 3) photo -> frame of a fine image (h, w, 3) uint8, refined from `start` by ECC on small
        grey images against the template: the coarse pass places a part to about one working pixel (several fine
        pixels), or not at all. A refinement that fails or strays is dropped."""
        if self.template_ is None:
            return start
        th, tw = self.template_.shape
        grey = self._small(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        if grey.shape != (th, tw):  # (the fine image is always at the fine size; kept safe for any caller)
            grey = cv2.resize(grey, (tw, th), interpolation=cv2.INTER_AREA)
        factor = float(self._refine_factor)
        half_start = fine_matrix(start, 1.0 / factor)
        moved = grey if np.array_equal(start, IDENTITY) else cv2.warpAffine(
            grey, half_start, (tw, th), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        moved = moved.astype(np.float32)
        warp = _register(self.template_, moved, self._template_half)
        if warp is None:  # no convergence (a blank or badly broken part): keep the coarse placement
            return start
        turn = abs(float(np.degrees(np.arctan2(warp[1, 0], warp[0, 0]))))
        if turn > _MAX_REFINE_DEGREES or float(np.hypot(*warp[:, 2])) > _MAX_REFINE_SHARE * tw:
            return start
        # warp maps frame -> the coarsely placed part (small size); the refined placement is warp^-1 after start
        full = homogeneous(fine_matrix(warp.astype(np.float64), factor))
        return (np.linalg.inv(full) @ homogeneous(start))[:2]

    def prepare(self, part: FinePart) -> tuple[np.ndarray, np.ndarray]:
        """The part in the profile's frame at the fine size, relit: ((h, w, 3) uint8, placement (2, 3))."""
        matrix = self.refine(part.image, part.start)
        w, h = self.size
        image = part.image if np.array_equal(matrix, IDENTITY) else cv2.warpAffine(
            part.image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if part.gain is not None:
            image = divide(image, part.gain)
        return (image if part.lut is None else cv2.LUT(image, part.lut)), matrix

    def assess(self, part: FinePart) -> tuple[float, np.ndarray]:
        """A part's raw fine score and its deviation map (h, w) float32 in map units, on the part as photographed."""
        image, matrix = self.prepare(part)
        dev = self.deviation(image)
        if np.array_equal(matrix, IDENTITY):
            return self.score(dev), dev * np.float32(1.0 / self.scale_)
        w, h = self.size
        inside = cv2.warpAffine(np.ones((h, w), np.float32), matrix, (w, h), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        dev = cv2.multiply(dev, inside)  # the replicated border is not compared
        score = self.score(dev)
        dev = cv2.warpAffine(dev, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return score, dev * np.float32(1.0 / self.scale_)

    def _set_band(self, mean: np.ndarray) -> None:
        """Store the mean (h, w, 3) float32 and the band around it."""
        self.mean_ = np.ascontiguousarray(mean, dtype=np.float32)
        kernel = np.ones((2 * self.reach + 1, 2 * self.reach + 1), np.uint8)
        self._low = np.floor(cv2.erode(self.mean_, kernel)).clip(0, 255).astype(np.uint8)
        self._high = np.ceil(cv2.dilate(self.mean_, kernel)).clip(0, 255).astype(np.uint8)

    def _set_spread(self, spread: np.ndarray) -> None:
        """Store the spread (h, w, 3) float32 and its inverse with the floor."""
        self.spread_ = np.ascontiguousarray(spread, dtype=np.float32)
        self._inverse = (1.0 / (self.spread_ + FLOOR)).astype(np.float32)

    def _with_spread(self, spread: np.ndarray) -> "VariationModel":
        """A copy sharing this band, with another spread (a held-out fold's)."""
        other = VariationModel(self.size, self.reach)  # its own frame mask: cheap
        other.mean_, other._low, other._high = self.mean_, self._low, self._high
        other.template_, other._refine_factor = self.template_, self._refine_factor
        other._template_half = self._template_half
        other._set_spread(spread)
        return other

    def _outside(self, work: np.ndarray) -> np.ndarray:
        """How far each pixel of a fine image (h, w, 3) uint8 lies outside the band; (h, w, 3) uint8."""
        return cv2.max(cv2.subtract(self._low, work), cv2.subtract(work, self._high))  # uint8 saturates at 0

    def deviation(self, work: np.ndarray) -> np.ndarray:
        """Smoothed deviation map (h, w) float32 of a fine image (h, w, 3) uint8, in spreads."""
        scaled = cv2.multiply(self._outside(work), self._inverse, dtype=cv2.CV_32F)
        # the channels' maximum, by numpy on strided views: cv2.split copied them out first (0.37 -> 0.04 ms at 324 px)
        worst = np.maximum(np.maximum(scaled[..., 0], scaled[..., 1]), scaled[..., 2])
        return cv2.multiply(cv2.blur(worst, (BLUR, BLUR)) if BLUR > 1 else worst, self._frame)

    def score(self, dev: np.ndarray) -> float:
        """The fine score of a part from its deviation map (h, w)."""
        return _top_mean(dev)


def _block_mean(image: np.ndarray, k: int) -> np.ndarray:
    """An image (h, w) shrunk by the whole factor k: (h // k, w // k), each pixel the mean of a k x k block (the last
    rows and columns that make no whole block are left out). A whole factor keeps OpenCV's area resize on its fast
    path (a fine image 324 px wide shrunk to 160: 0.12 ms, by 2 to 162: 0.004 ms)."""
    if k == 1:
        return image
    h, w = image.shape
    if h >= k and w >= k:
        image = image[: h - h % k, : w - w % k]
    # (a strip narrower than k in one direction is resized whole; the same for the template and every part)
    return cv2.resize(image, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)


def _half(image: np.ndarray) -> np.ndarray | None:
    """A float32 image (h, w) at half size by 2 x 2 block means; None when that would be smaller than _HALF_MIN
    either way."""
    return None if min(image.shape) < 2 * _HALF_MIN else _block_mean(image, 2)


def _ecc(template: np.ndarray, moved: np.ndarray, warp: np.ndarray, criteria: tuple) -> np.ndarray | None:
    """cv2.findTransformECC (Euclidean) of two float32 images of one size from `warp` (2, 3); None when it fails.
    OpenCV writes its steps into the warp it is given, so it gets a copy: `warp` stays the start, also after a
    failure part way."""
    try:
        return cv2.findTransformECC(template, moved, warp.copy(), cv2.MOTION_EUCLIDEAN, criteria, None, 3)[1]
    except cv2.error:
        return None


def _register(template: np.ndarray, moved: np.ndarray, template_half: np.ndarray | None) -> np.ndarray | None:
    """The Euclidean warp (2, 3) float32 taking template (h, w) coordinates to moved's, by ECC from the identity;
    None when it does not converge. Coarse to fine: converged at half size (a quarter of the pixels per step), two
    steps at full size finish: 1.1 ms instead of 1.8 for a 162 x 121 image, within ~0.01 px of 30 full-size steps
    (one step: 0.9 ms, within ~0.05 px, but one good bottle more flagged under a warmer lamp)."""
    identity = np.eye(2, 3, dtype=np.float32)
    if template_half is not None:
        half = _ecc(template_half, _half(moved), identity, _ECC_CRITERIA)
        if half is not None:
            start = fine_matrix(half.astype(np.float64), 2.0).astype(np.float32)
            finished = _ecc(template, moved, start, _ECC_FINISH)
            return start if finished is None else finished
    return _ecc(template, moved, identity, _ECC_CRITERIA)


def check_state(mean: np.ndarray, spread: np.ndarray, size: tuple[int, int]) -> None:
    """Raise ValueError unless mean and spread are finite (h, w, 3) arrays of the fine size (w, h)."""
    shape = (size[1], size[0], 3)
    for name, array in (("fine_mean", mean), ("fine_spread", spread)):
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} holds non-finite values")
    if (spread < 0).any():
        raise ValueError("fine_spread holds negative values")


def pick_learners(n: int) -> list[int]:
    """The indices of the good parts the variation model learns from (at most FINE_MAX_IMAGES, evenly spaced)."""
    return np.unique(np.linspace(0, n - 1, min(n, FINE_MAX_IMAGES)).round().astype(int)).tolist()
