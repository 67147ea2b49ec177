"""Detection limit (issue 12, item 3): the smallest pasted defect the inspector catches on 5 MP parts.

`inspector bench --defects [--json] [--parts 40] [--good 200] [--real] [--plot PATH]`. Progress goes to stderr.

Sources of good parts:

* `synthetic`: parts of `inspector/synthetic.py` rendered at 2592x1944 (5 MP). The profile is trained the way
  `inspector train` does it (JPEG files, `load_training_images`, `fit_profile`) on `--train-parts` (200) other
  generated good parts at the same size;
* with `--real`, every MVTec-layout set in `--data` (default ../shared/data; `--sets` to choose): its
  train/good and test/good images upscaled (INTER_CUBIC) to about 5 MP. Honest only in one sense: it shows what
  the pipeline does with a photo of that size. An upscaled photo has no detail finer than the original's
  pixels (4-7 camera pixels here) and none of a real camera's noise, so a pasted defect stands out from a
  smoother surround than it would in a real 5 MP photo.

Defects: into each of `--parts` (40) good parts (the first of the source's good parts; they are reused,
cycling, when a source has fewer) one defect per kind and diameter d is pasted, at a random place on the part
(`part_mask`: the convex hull of what differs from the border colour or has edges stronger than the border's;
the whole defect lies inside it), each part with its own position, then encoded as JPEG (quality 92) and judged
by `Inspector.inspect_bytes`, exactly as the service judges a file. Kinds, all with a linear soft edge
(`edge_px`, centred on the nominal outline) and keeping the underlying texture:

* `dark_spot`    - a disc of diameter d at 40-60% of the local brightness (each pixel times f, f ~ U(0.4, 0.6));
* `light_spot`   - a disc of diameter d moved 40-60% of the way to white (p + f * (255 - p));
* `scratch`      - a light line (as light_spot) 2-3 px wide and d long tip to tip, at a random angle;
* `colour_speck` - a disc of diameter d whose mean colour becomes a hue off the part's palette (the hue farthest
                   from every hue holding 0.3% of the part's pixels), saturation 0.8, the local brightness (HSV
                   value) clipped to 0.5-0.9.

Figures per source and setting: for each kind and d the share caught (verdict `defect`, i.e. above the profile's
calibrated threshold or not located; a base part already flagged unpasted counts too, `bases_flagged` says how
many are) and n; the false-alarm rate on the same good parts unpasted (every good part of the source, n given);
`min_defect_px_90`, the smallest d such that this d and every larger d tested reach 90%
caught, pooled over the kinds (`all`, n = 4 x parts per d) and per kind (null: not reached at the largest d);
`inspect_over_decode` exactly as `inspector bench` measures it (median `inspect_bytes` over median full
`cv2.imdecode` of the same 5 MP JPEGs, interleaved, on one thread).

Settings: `default` is the configured `[profile]` (the built-in `Config().profile` unless config.toml changes it);
`finest` is the same with `fine_width = --finest-width` (1024), run only when `ProfileParams` has that field.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from inspector import imaging
from inspector.config import Config
from inspector.errors import DatasetError, ImageRejected, InspectorError
from inspector.pipeline import Inspector, Progress, fit_profile, list_images, load_training_images
from inspector.profile import ProfileParams
from inspector.synthetic import make_part
from inspector.tooling.bench import FIVE_MP, _jpeg, speed, speed_samples, write_parts

KINDS = ("dark_spot", "light_spot", "scratch", "colour_speck")
DIAMETERS = (4, 6, 8, 12, 16, 24, 32, 48, 64)
STRENGTH = (0.4, 0.6)  # f: dark = f x brightness; light and scratch = f of the way to white
SCRATCH_WIDTH = (2.0, 3.0)  # px
SPECK_SATURATION = 0.8
SPECK_VALUE = (0.5, 0.9)  # HSV value of the speck: the local value clipped to this range
PALETTE_SHARE = 0.003  # a hue holding this share of the part's pixels belongs to its palette
LEVEL = 0.9  # min_defect_px_90: caught at least this often
MASK_SIDE = 512  # the part mask is found at this longer side
FINE_FIELD = "fine_width"  # ProfileParams field of the fine scoring pass (issue 12 item 1), when it exists
DEFAULT_DATA = Path("../shared/data")
SIZE = FIVE_MP  # the good parts' size (w, h) under `inspector bench --defects`


def edge_px(d: float) -> float:
    """Width of a spot's soft edge in px: max(1, d / 10)."""
    return max(1.0, 0.1 * d)


# --- pure helpers ------------------------------------------------------------------------------------------

def min_defect_px(shares: Mapping[int, float], level: float = LEVEL) -> int | None:
    """Smallest d whose share and every larger d's share reach `level`; None when the largest d does not."""
    best = None
    for d in sorted(shares, reverse=True):
        if shares[d] < level:
            break
        best = d
    return best


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a binomial share k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PartMask:
    """Where the part is: `mask` (h, w) bool at a reduced size, each of its pixels `scale` image pixels wide."""

    mask: np.ndarray
    scale: float


def _border(a: np.ndarray, width: int) -> np.ndarray:
    """The values of a 2-D or 3-D array's outer `width` rows and columns, as (N,) or (N, C)."""
    tail = a.shape[2:]
    return np.concatenate([a[:width].reshape(-1, *tail), a[-width:].reshape(-1, *tail),
                           a[:, :width].reshape(-1, *tail), a[:, -width:].reshape(-1, *tail)])


def part_mask(image: np.ndarray) -> PartMask:
    """The part in a BGR image (H, W, 3): the convex hull of the big regions that differ from the border.

    A pixel differs when its colour is far from the border's median colour or its gradient is stronger than
    the border's; regions under 0.2% of the image are dropped (specks of noise); the hull is eroded by 2 px
    (the blur's reach). The whole image when nothing differs.
    """
    h, w = image.shape[:2]
    scale = max(h, w) / MASK_SIDE if max(h, w) > MASK_SIDE else 1.0
    small = cv2.resize(image, (max(1, round(w / scale)), max(1, round(h / scale))), interpolation=cv2.INTER_AREA)
    blur = cv2.GaussianBlur(small.astype(np.float32), (0, 0), 1.5)
    bw = max(2, min(small.shape[:2]) // 75)
    border = _border(blur, bw)
    background = np.median(border, axis=0)
    dist = np.linalg.norm(blur - background, axis=2)
    colour_t = max(12.0, 2.0 * float(np.percentile(np.linalg.norm(border - background, axis=1), 90)))
    grey = cv2.cvtColor(blur, cv2.COLOR_BGR2GRAY)
    grad = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    grad_t = max(20.0, 3.0 * float(np.percentile(_border(grad, bw), 99)))
    differs = ((dist > colour_t) | (grad > grad_t)).astype(np.uint8)
    differs = cv2.morphologyEx(differs, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(differs)
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 0.002 * differs.size]
    out = np.zeros(differs.shape, np.uint8)
    if big:
        pts = np.column_stack(np.nonzero(np.isin(labels, big)))[:, ::-1].astype(np.int32)
        cv2.fillPoly(out, [cv2.convexHull(pts)], 1)
        out = cv2.erode(out, np.ones((5, 5), np.uint8))  # the blur and the gradient reach ~2 px past the outline
    else:
        out[:] = 1
    return PartMask(out.astype(bool), scale)


def place(pm: PartMask, reach: float, rng: np.random.Generator) -> tuple[float, float]:
    """A random centre (x, y) in image px whose disc of radius `reach` lies inside the part (its deepest point
    when none does)."""
    inside = cv2.distanceTransform(np.pad(pm.mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    need = reach / pm.scale + 1.0
    ys, xs = np.nonzero(inside >= need)
    if len(xs) == 0:
        ys, xs = np.unravel_index([int(np.argmax(inside))], inside.shape)
    i = int(rng.integers(0, len(xs)))
    return float((xs[i] + rng.uniform(0.25, 0.75)) * pm.scale), float((ys[i] + rng.uniform(0.25, 0.75)) * pm.scale)


def off_palette_hue(images: Sequence[np.ndarray], masks: Sequence[PartMask]) -> float:
    """The hue (degrees) farthest from every 10-degree hue bin holding PALETTE_SHARE of the parts' pixels."""
    hist = np.zeros(36)
    total = 0
    for image, pm in zip(images, masks):
        small = cv2.resize(image, pm.mask.shape[::-1], interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_BGR2HSV)[pm.mask]  # (N, 3): deg, 0-1, 0-1
        coloured = hsv[(hsv[:, 1] > 0.25) & (hsv[:, 2] > 0.2), 0]
        hist += np.bincount((coloured // 10).astype(int) % 36, minlength=36)
        total += len(hsv)
    occupied = np.flatnonzero(hist >= PALETTE_SHARE * max(total, 1)) * 10 + 5.0
    if len(occupied) == 0:
        return 120.0
    candidates = np.arange(360.0)
    gap = np.abs(candidates[:, None] - occupied[None, :]) % 360
    nearest = np.minimum(gap, 360 - gap).min(axis=1)
    return float(candidates[int(np.argmax(nearest))])


@dataclass(frozen=True)
class Defect:
    """One pasted defect: kind, size d (diameter, or a scratch's length) and where, in image px."""

    kind: str
    d: float
    cx: float
    cy: float
    strength: float  # f (see STRENGTH); unused by colour_speck
    angle: float = 0.0  # radians, scratch only
    width: float = 0.0  # px, scratch only
    hue: float = 0.0  # degrees, colour_speck only

    def reach(self) -> float:
        """Largest distance from the centre that the defect touches, in px."""
        if self.kind == "scratch":
            return self.d / 2.0 + 1.0
        return self.d / 2.0 + edge_px(self.d) / 2.0


def draw(rng: np.random.Generator, kind: str, d: float, pm: PartMask, hue: float = 120.0) -> Defect:
    """A random defect of `kind` and size d placed wholly on the part."""
    if kind not in KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; choose from {', '.join(KINDS)}")
    strength = float(rng.uniform(*STRENGTH))
    angle = float(rng.uniform(0, math.pi))
    width = float(rng.uniform(*SCRATCH_WIDTH))
    probe = Defect(kind, float(d), 0.0, 0.0, strength, angle, width, hue)
    cx, cy = place(pm, probe.reach(), rng)
    return dataclasses.replace(probe, cx=cx, cy=cy)


def coverage(defect: Defect, shape: tuple[int, ...]) -> tuple[int, int, np.ndarray]:
    """(y0, x0, alpha): the defect's coverage in [0, 1] as a float32 (h, w) patch at (y0, x0) of an image of
    `shape` (H, W, ...)."""
    h, w = shape[:2]
    reach = defect.reach() + 1.0
    x0, x1 = max(0, math.floor(defect.cx - reach)), min(w, math.ceil(defect.cx + reach) + 1)
    y0, y1 = max(0, math.floor(defect.cy - reach)), min(h, math.ceil(defect.cy + reach) + 1)
    xx, yy = np.meshgrid(np.arange(x0, x1, dtype=np.float32) - defect.cx,
                         np.arange(y0, y1, dtype=np.float32) - defect.cy)
    if defect.kind == "scratch":
        ux, uy = math.cos(defect.angle), math.sin(defect.angle)
        half = max(0.0, (defect.d - defect.width) / 2.0)
        t = np.clip(xx * ux + yy * uy, -half, half)
        dist = np.hypot(xx - t * ux, yy - t * uy)
        alpha = np.clip((defect.width / 2.0 - dist) / 1.0 + 0.5, 0.0, 1.0)
    else:
        alpha = np.clip((defect.d / 2.0 - np.hypot(xx, yy)) / edge_px(defect.d) + 0.5, 0.0, 1.0)
    return y0, x0, alpha.astype(np.float32)


def _speck_colour(local: np.ndarray, hue: float) -> np.ndarray:
    """BGR (3,) float of `hue` at SPECK_SATURATION and the local brightness (HSV value) clipped to SPECK_VALUE."""
    value = float(np.clip(local.max() / 255.0, *SPECK_VALUE))
    hsv = np.array([[[hue, SPECK_SATURATION, value]]], np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0] * 255.0


def paste(image: np.ndarray, defect: Defect) -> tuple[np.ndarray, float]:
    """A copy of the BGR image (H, W, 3) uint8 with the defect blended in, and its contrast: the mean absolute
    change in grey levels (mean over channels) where the coverage is at least 0.5."""
    y0, x0, alpha = coverage(defect, image.shape)
    ph, pw = alpha.shape
    patch = image[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
    a = alpha[..., None]
    if defect.kind == "dark_spot":
        new = patch * (1.0 - a * (1.0 - defect.strength))
    elif defect.kind in ("light_spot", "scratch"):
        new = patch + a * defect.strength * (255.0 - patch)
    else:
        local = (patch * a).sum(axis=(0, 1)) / max(float(alpha.sum()), 1e-6)
        new = patch + a * (_speck_colour(local, defect.hue) - local)
    new = np.clip(np.rint(new), 0, 255)
    out = image.copy()
    out[y0:y0 + ph, x0:x0 + pw] = new.astype(np.uint8)
    core = alpha >= 0.5
    contrast = float(np.abs(new - patch).mean(axis=2)[core].mean()) if core.any() else 0.0
    return out, contrast


# --- sources of good parts ---------------------------------------------------------------------------------

@dataclass
class Source:
    """Good parts of one product: training files, good parts as JPEG bytes, the first few also as images."""

    name: str
    note: str
    train_files: list[Path]
    good: list[bytes]  # every good part, JPEG q92: the false-alarm set
    bases: list[np.ndarray]  # (H, W, 3) uint8 BGR: the first good parts, unencoded, that defects are pasted into
    masks: list[PartMask] = field(default_factory=list)
    hue: float = 120.0
    speed_samples: list[bytes] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def prepare(self) -> None:
        """Find the part in each base and the off-palette hue."""
        self.masks = [part_mask(b) for b in self.bases]
        self.hue = off_palette_hue(self.bases, self.masks)


def _good_part(job: tuple[int, int, int, int, bool]) -> tuple[bytes, np.ndarray | None]:
    """Worker: good part `index` of `seed` at (w, h) as JPEG bytes, and the image itself when `keep`."""
    w, h, seed, index, keep = job
    image = make_part(np.random.default_rng([seed, 1, index]), w, h)
    return _jpeg(image), (image if keep else None)


def synthetic_source(folder: Path, n_train: int = 200, n_good: int = 200, parts: int = 40,
                     size: tuple[int, int] = FIVE_MP, train_size: tuple[int, int] | None = None, seed: int = 0,
                     log: Callable[[str], None] = lambda s: None) -> Source:
    """Generated parts: n_train training JPEGs in folder, n_good good parts (the first `parts` kept as images)."""
    train_size = train_size or size
    log(f"synthetic: writing {n_train} training parts at {train_size[0]}x{train_size[1]} ...")
    train = write_parts(folder / "synthetic-train", n_train, train_size, seed, log=log)
    log(f"synthetic: rendering {n_good} good parts at {size[0]}x{size[1]} ...")
    jobs = [(size[0], size[1], seed, i, i < parts) for i in range(n_good)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = list(pool.map(_good_part, jobs, chunksize=2))
    src = Source("synthetic", f"generated parts (inspector/synthetic.py) at {size[0]}x{size[1]}, trained on "
                              f"{n_train} at {train_size[0]}x{train_size[1]}",
                 train, [b for b, _ in done], [im for _, im in done if im is not None])
    src.speed_samples = speed_samples(np.random.default_rng([seed, 2]), size)
    src.info = {"n_train": n_train, "train_size": list(train_size), "size": list(size)}
    return src


def upscale(data: bytes, pixels: int, cfg: Config) -> np.ndarray:
    """Decode an image file's bytes and upscale it (INTER_CUBIC) to about `pixels` pixels; (H, W, 3) uint8."""
    image = imaging.decode(data, max_pixels=cfg.input.max_pixels).image
    h, w = image.shape[:2]
    f = math.sqrt(pixels / (w * h))
    return cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)


def real_sets(data: Path, names: Sequence[str] | None = None) -> list[Path]:
    """The MVTec-layout sets (train/good and test/good) in `data`, optionally only those named; [] when absent."""
    if not data.is_dir():
        return []
    found = sorted(p for p in data.iterdir() if (p / "train" / "good").is_dir() and (p / "test" / "good").is_dir())
    return [p for p in found if not names or p.name in names]


def real_source(root: Path, folder: Path, cfg: Config, parts: int = 40, pixels: int = FIVE_MP[0] * FIVE_MP[1],
                log: Callable[[str], None] = lambda s: None) -> Source:
    """A shared set upscaled to ~`pixels`: train/good as training JPEGs in folder, test/good as the good parts."""
    train_in = list_images(root / "train" / "good", cfg.input.patterns)
    good_in = list_images(root / "test" / "good", cfg.input.patterns)
    out = folder / f"{root.name}-train"
    out.mkdir(parents=True, exist_ok=True)
    log(f"{root.name}: upscaling {len(train_in)} training and {len(good_in)} good images to ~{pixels / 1e6:.1f} MP ...")

    def train_one(item: tuple[int, Path]) -> Path | None:
        i, path = item
        try:
            image = upscale(imaging.read_file(path, cfg.input.max_bytes), pixels, cfg)
        except ImageRejected:
            return None
        target = out / f"{i:05d}.jpg"
        target.write_bytes(_jpeg(image))
        return target

    def good_one(item: tuple[int, Path]) -> tuple[bytes, np.ndarray | None] | None:
        i, path = item
        try:
            image = upscale(imaging.read_file(path, cfg.input.max_bytes), pixels, cfg)
        except ImageRejected:
            return None
        return _jpeg(image), (image if i < parts else None)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        train = [p for p in pool.map(train_one, enumerate(train_in)) if p is not None]
        good = [g for g in pool.map(good_one, enumerate(good_in)) if g is not None]
    if len(train) < 2 or not good:
        raise DatasetError(f"{root}: too few readable images ({len(train)} train/good, {len(good)} test/good)")
    h, w = next(im for _, im in good if im is not None).shape[:2]
    src = Source(root.name, f"{root.name} train/good and test/good upscaled (INTER_CUBIC) to {w}x{h}", train,
                 [b for b, _ in good], [im for _, im in good if im is not None])
    src.speed_samples = src.good[:5]
    src.info = {"n_train": len(train), "train_size": [w, h], "size": [w, h]}
    return src


# --- settings and scoring ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """A named variation of the configured [profile]: field name -> value."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


def settings_for(params: ProfileParams, finest_width: int = 1024) -> tuple[list[Setting], list[str]]:
    """The default setting and, when ProfileParams has `fine_width`, the finest; with notes on what was left out."""
    fields = {f.name for f in dataclasses.fields(params)}
    if FINE_FIELD not in fields:
        return [Setting("default")], [f"ProfileParams has no {FINE_FIELD} (no fine scoring pass yet): only the "
                                      "default setting was run"]
    if getattr(params, FINE_FIELD) == finest_width:
        return [Setting("default")], [f"the default already has {FINE_FIELD} = {finest_width}: the finest setting "
                                      "is the default"]
    return [Setting("default"), Setting("finest", {FINE_FIELD: finest_width})], []


def with_setting(cfg: Config, setting: Setting) -> Config:
    """The config with the setting's [profile] overrides applied."""
    return dataclasses.replace(cfg, profile=dataclasses.replace(cfg.profile, **dict(setting.overrides)))


@dataclass(frozen=True)
class Judged:
    """One judged file: verdict, score (None when rejected) and the pasted defect's contrast (0 for good)."""

    verdict: str
    score: float | None
    contrast: float = 0.0


def judge_all(insp: Inspector, jobs: Sequence[Callable[[], tuple[bytes, float]]], progress: Progress | None = None,
              desc: str = "") -> list[Judged]:
    """Build each job's JPEG bytes and judge them as the service does, on one thread per core."""

    def one(job: Callable[[], tuple[bytes, float]]) -> Judged:
        data, contrast = job()
        v = insp.inspect_bytes(data, "part.jpg")
        return Judged(v.verdict, v.score, contrast)

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results: Iterable[Judged] = pool.map(one, jobs)
        if progress:
            results = progress(results, total=len(jobs), desc=desc)
        return list(results)


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


def paste_job(src: Source, kind: str, d: int, i: int, seed: int) -> Callable[[], tuple[bytes, float]]:
    """The i-th part of cell (kind, d): JPEG bytes of a base part with one defect, and its contrast; the same
    for every setting (the randomness depends only on seed, source, kind, d and i)."""

    def job() -> tuple[bytes, float]:
        rng = np.random.default_rng([seed, _key(src.name), KINDS.index(kind), d, i])
        j = i % len(src.bases)
        image, contrast = paste(src.bases[j], draw(rng, kind, d, src.masks[j], src.hue))
        return _jpeg(image), contrast

    return job


def cell(judged: Sequence[Judged], threshold: float) -> dict[str, Any]:
    """Share caught (verdict defect), n, rejected, and the median score / threshold of one cell."""
    n = len(judged)
    caught = sum(j.verdict == "defect" for j in judged)
    ratios = [j.score / threshold for j in judged if j.score is not None and threshold > 0]
    return {"share": caught / n if n else 0.0, "caught": caught, "n": n,
            "rejected": sum(j.verdict == "rejected" for j in judged),
            "score_over_threshold": statistics.median(ratios) if ratios else None}


def evaluate(src: Source, setting: Setting, cfg: Config, kinds: Sequence[str] = KINDS,
             diameters: Sequence[int] = DIAMETERS, parts: int = 40, seed: int = 0, runs: int = 15,
             progress: Progress | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Train the setting's profile on the source, time it, and judge its good and pasted parts."""
    cfg_s = with_setting(cfg, setting)
    tag = f"{src.name}/{setting.name}"
    log(f"{tag}: fitting on {len(src.train_files)} training parts ...")
    start = time.perf_counter()
    ts = load_training_images(src.train_files, cfg_s)
    profile = fit_profile(ts.images, cfg_s.profile)
    fit_s = time.perf_counter() - start
    insp = Inspector(profile, setting.name, cfg_s.input)
    log(f"{tag}: threshold {profile.threshold_:.3f} (fit {fit_s:.0f} s); timing inspect against decode ...")
    timing = speed(insp, src.speed_samples, runs)
    good = judge_all(insp, [lambda b=b: (b, 0.0) for b in src.good], progress, f"{tag} good")
    fa = cell(good, profile.threshold_)
    log(f"{tag}: inspect_over_decode {timing['inspect_over_decode']:.2f}; false alarms {fa['caught']}/{fa['n']}")
    caught: dict[str, dict[str, dict]] = {}
    contrast: dict[str, float] = {}
    for kind in kinds:
        jobs = [paste_job(src, kind, d, i, seed) for d in diameters for i in range(parts)]
        judged = judge_all(insp, jobs, progress, f"{tag} {kind}")
        caught[kind] = {str(d): cell(judged[k * parts:(k + 1) * parts], profile.threshold_)
                        for k, d in enumerate(diameters)}
        contrast[kind] = statistics.median(j.contrast for j in judged)
        log(f"{tag} {kind:<12} caught " + " ".join(f"{d}:{caught[kind][str(d)]['share']:.2f}" for d in diameters))
    pooled = {}
    for d in diameters:
        k = sum(caught[kind][str(d)]["caught"] for kind in kinds)
        n = sum(caught[kind][str(d)]["n"] for kind in kinds)
        pooled[str(d)] = {"share": k / n if n else 0.0, "caught": k, "n": n, "ci95": list(wilson(k, n))}
    limit = {"all": min_defect_px({d: pooled[str(d)]["share"] for d in diameters})}
    limit.update({kind: min_defect_px({d: caught[kind][str(d)]["share"] for d in diameters}) for kind in kinds})
    return {"source": src.name, "setting": setting.name, "overrides": dict(setting.overrides),
            "params": dataclasses.asdict(cfg_s.profile),
            "threshold": profile.threshold_, "n_train": profile.n_train_, "fit_s": fit_s,
            "false_alarm_rate": fa["share"], "n_good": fa["n"], "good_rejected": fa["rejected"],
            "bases_flagged": sum(j.verdict == "defect" for j in good[:len(src.bases)]), "bases": len(src.bases),
            "false_alarm_ci95": list(wilson(fa["caught"], fa["n"])),
            "caught": caught, "caught_all": pooled, "min_defect_px_90": limit,
            "contrast_grey_levels": contrast, **timing}


def run(cfg: Config, parts: int = 40, n_good: int = 200, n_train: int = 200, size: tuple[int, int] = FIVE_MP,
        train_size: tuple[int, int] | None = None, kinds: Sequence[str] = KINDS,
        diameters: Sequence[int] = DIAMETERS, finest_width: int = 1024, extra: Sequence[Setting] = (),
        real: bool = False, data: Path = DEFAULT_DATA, sets: Sequence[str] | None = None, synthetic: bool = True,
        seed: int = 0, runs: int = 15, progress: Progress | None = None,
        log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The detection-limit benchmark: every source under every setting; one JSON-able dict."""
    start = time.perf_counter()
    settings, notes = settings_for(cfg.profile, finest_width)
    settings += list(extra)
    if n_good < parts:
        raise InspectorError(f"--good ({n_good}) must be at least --parts ({parts}): defects go into good parts")
    results, sources = [], []
    with tempfile.TemporaryDirectory(prefix="inspector-defectbench-") as tmp:
        makers: list[Callable[[], Source]] = []
        if synthetic:
            makers.append(lambda: synthetic_source(Path(tmp), n_train, n_good, parts, size, train_size, seed, log))
        if real:
            found = real_sets(data, sets)
            if not found:
                notes.append(f"--real: no MVTec-layout sets in {data}: real images skipped")
            makers += [lambda root=root: real_source(root, Path(tmp), cfg, parts, log=log) for root in found]
        for make in makers:
            src = make()
            src.prepare()
            sources.append({"name": src.name, "note": src.note, "n_good": len(src.good), "bases": len(src.bases),
                            "off_palette_hue": src.hue, **src.info})
            for setting in settings:
                results.append(evaluate(src, setting, cfg, kinds, diameters, parts, seed, runs, progress, log))
            del src
    summary = {r["setting"]: {"min_defect_px_90": r["min_defect_px_90"]["all"],
                              "inspect_over_decode": r["inspect_over_decode"],
                              "false_alarm_rate": r["false_alarm_rate"]}
               for r in results if r["source"] == "synthetic"}
    return {"kinds": list(kinds), "diameters": list(diameters), "parts_per_cell": parts, "level": LEVEL,
            "settings": [{"name": s.name, "overrides": dict(s.overrides)} for s in settings], "notes": notes,
            "contrast": {"dark_spot": "each pixel x f, f ~ U(0.4, 0.6)",
                         "light_spot": "each pixel moved f of the way to white, f ~ U(0.4, 0.6)",
                         "scratch": f"as light_spot, {SCRATCH_WIDTH[0]:g}-{SCRATCH_WIDTH[1]:g} px wide, d long",
                         "colour_speck": f"mean colour -> off-palette hue, saturation {SPECK_SATURATION}, "
                                         f"HSV value = local, clipped to {SPECK_VALUE[0]}-{SPECK_VALUE[1]}",
                         "edge": "linear soft edge max(1, d/10) px wide (scratch: 1 px)"},
            "config": str(cfg.source) if cfg.source else None, "seed": seed, "sources": sources,
            "results": results, "summary": summary, "seconds": time.perf_counter() - start}


# --- output ------------------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _px(x: int | None, largest: int) -> str:
    return f"> {largest}" if x is None else f"{x}"


def markdown(result: dict) -> str:
    """A readable table per source and setting: share caught per kind and d, false alarms, limits, speed."""
    kinds, ds = result["kinds"], result["diameters"]
    lines = []
    for r in result["results"]:
        shown = ", ".join(f"{k} {r['params'][k]}" for k in ("width", FINE_FIELD) if k in r.get("params", {}))
        lines.append(f"### {r['source']}, setting {r['setting']} ({shown})")
        lines.append("")
        lines.append("| d (px) | " + " | ".join(kinds) + " | all kinds (95% CI) |")
        lines.append("|---:|" + "---:|" * (len(kinds) + 1))
        for d in ds:
            a = r["caught_all"][str(d)]
            lines.append(f"| {d} | " + " | ".join(_pct(r["caught"][k][str(d)]["share"]) for k in kinds)
                         + f" | {_pct(a['share'])} ({_pct(a['ci95'][0])}-{_pct(a['ci95'][1])}) |")
        lim = r["min_defect_px_90"]
        lines.append(f"| **min_defect_px_90** | " + " | ".join(_px(lim[k], ds[-1]) for k in kinds)
                     + f" | **{_px(lim['all'], ds[-1])}** |")
        lines.append("")
        lines.append(f"false alarms {r['false_alarm_rate']:.1%} of {r['n_good']} good parts ({r['bases_flagged']} "
                     f"of the {r['bases']} that defects go into) "
                     f"(95% CI {_pct(r['false_alarm_ci95'][0])}-{_pct(r['false_alarm_ci95'][1])}); "
                     f"inspect_over_decode {r['inspect_over_decode']:.2f} ({r['inspect_ms']:.1f} / "
                     f"{r['decode_ms']:.1f} ms); threshold {r['threshold']:.3f}, fit {r['fit_s']:.0f} s on "
                     f"{r['n_train']} parts; median contrast (grey levels) "
                     + ", ".join(f"{k} {r['contrast_grey_levels'][k]:.0f}" for k in kinds))
        lines.append("")
    lines.append(f"{result['parts_per_cell']} parts per kind and d; {result['seconds']:.0f} s. "
                 + " ".join(result["notes"]))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Share caught against d to a PNG: a panel per source (two across), colour = kind, line style = setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = list(dict.fromkeys(r["source"] for r in result["results"]))
    cols = min(2, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.4 * rows), squeeze=False)
    styles = ["-", "--", ":", "-."]
    colours = dict(zip(result["kinds"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    settings = [s["name"] for s in result["settings"]]
    ds = result["diameters"]
    for ax, name in zip(axes.flat, names):
        alarms = []
        for r in (r for r in result["results"] if r["source"] == name):
            style = styles[settings.index(r["setting"]) % len(styles)]
            for kind in result["kinds"]:
                ax.plot(ds, [r["caught"][kind][str(d)]["share"] for d in ds], style, color=colours[kind],
                        marker="o", ms=3)
            ax.plot(ds, [r["caught_all"][str(d)]["share"] for d in ds], style, color="black", lw=2)
            alarms.append(f"{r['setting']} {r['false_alarm_rate']:.1%}")
        ax.axhline(LEVEL, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(ds)
        ax.set_xticklabels([str(d) for d in ds])
        ax.minorticks_off()
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("defect diameter / scratch length d (px)")
        ax.set_ylabel("share caught at the calibrated threshold")
        ax.set_title(f"{name} (false alarms: {', '.join(alarms)})", fontsize=10)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles = [Line2D([], [], color=colours[k], marker="o", ms=3, label=k) for k in result["kinds"]]
    handles.append(Line2D([], [], color="black", lw=2, label="all kinds"))
    handles += [Line2D([], [], color="grey", ls=styles[i % len(styles)], label=f"setting {s}")
                for i, s in enumerate(settings)]
    per_row = 4 * cols  # a 6 inch panel holds about four entries side by side
    legend_rows = -(-len(handles) // per_row)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), per_row), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 * legend_rows / rows, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ints(text: str | None, default: Sequence[int], what: str) -> list[int]:
    """'4,8,16' -> [4, 8, 16] (sorted, positive); the default when empty."""
    if not text:
        return list(default)
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise InspectorError(f"{what} takes comma-separated integers, got {text!r}") from None
    if not out or out[0] < 1:
        raise InspectorError(f"{what} takes positive integers, got {text!r}")
    return out


def run_from_args(args: argparse.Namespace, cfg: Config, progress: Progress | None,
                  log: Callable[[str], None]) -> dict:
    """`inspector bench --defects ...`: parse the options, run, draw the plot when asked."""
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else list(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InspectorError(f"--kinds: unknown {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    parts = 40 if args.parts is None else args.parts
    if parts < 1:
        raise InspectorError("--parts must be at least 1")
    result = run(cfg, parts=parts, n_good=max(args.good, parts), n_train=args.train_parts, size=SIZE, kinds=kinds,
                 diameters=_ints(args.diameters, DIAMETERS, "--diameters"), finest_width=args.finest_width,
                 real=args.real, data=Path(args.data) if args.data else DEFAULT_DATA,
                 sets=[s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None,
                 seed=args.seed, runs=args.runs, progress=progress, log=log)
    if args.plot:
        plot(result, Path(args.plot))
        log(f"wrote {args.plot}")
    return result
