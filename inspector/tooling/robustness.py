"""Robustness benchmark (issue 10, item 5): detection quality on perturbed copies of the benchmark sets.

`python -m inspector.tooling.robustness [--data DIR] [--sets a,b] [--perturb p1,p2] [--json]`, or
`inspector bench --robustness ...`. Every sub-folder of DIR (default ../shared/data) in the MVTec layout
(train/good, test/) is a set. For each set and each perturbation it reports image AUROC, pixel AUROC (where
masks exist), the false-alarm rate on test/good and the recall at the profile's calibrated threshold, and the
parts the inspector `rejected` (counted apart), beside the clean figures. A markdown table goes to stdout
(JSON with --json), progress to stderr.

Perturbations (applied in float on the fully decoded 8-bit image, then rounded and clipped, and re-encoded
as PNG, lossless; `jpeg80` re-encodes as JPEG quality 80):

* test images only, scored with the one profile fitted on the clean train/good (never refitted):
  `clean` (the original files' bytes, exactly as `inspector eval` scores them), `png` (control: the clean
  image re-encoded as PNG, the path every pixel perturbation takes), `gain0.97`, `gain0.9`, `gain1.1`
  (all channels times g), `offset-10`, `offset+10`, `offset-5`, `offset+5` (grey levels added to all channels;
  the issue asks for +-10, and +-5 is where a dark product still judges the part), `warm` (R x1.05,
  B x0.95), `cool` (R x0.95, B x1.05), `gamma0.9`, `gamma1.1` (255 * (in / 255) ** g), `alternate` (every
  other test part x0.92, the others x1.08, in test order), `jpeg80`; conditions the issue did not list, for what
  else a line's camera does: `noise3`, `noise6` (Gaussian sensor noise of sd 3 or 6 grey levels, as a raised gain
  gives: the same in every channel of a photo that is grey throughout, a mono camera's, independent per channel
  otherwise), `blur1`, `blur2` (defocus: Gaussian blur of sd 1 or 2 px of the photo), `zoom1.03`, `zoom0.97`,
  `zoom1.05`, `zoom0.95` (magnified or reduced by 3% or 5% about the centre, as a camera moved or refocused gives;
  replicated borders), `motion15` (motion blur: a part that moved 15 px of the photo during the exposure);
  uneven light: `side5`, `side10` (a lamp dimmed on one side: x0.95 .. x0.90 at the left edge rising linearly to
  x1.05 .. x1.10 at the right), `vignette30` (corners 30% darker, falling with the squared distance from the centre,
  as a lens opened or changed gives), `shadow20` (the left third of the field 20% darker, its edge soft over 4% of
  the width: something standing between lamp and part);
* train and test alike, refitted: `placed` (every image rotated by a uniform random angle in [0, 360) about
  its centre and shifted by up to +-8% of the field in x and y; INTER_LINEAR with replicated borders, the
  masks warped the same way with INTER_NEAREST and border 0), `placed-black` (the same turns and shifts, the
  corners the turn leaves filled black, as OpenCV's and Pillow's turns leave them by default and as most tools that
  simulate a part placed by hand do), and `pasted` (the placed profile, scored on the
  placed test/good images and on copies of them with one synthetic spot each: a soft-edged disc of diameter
  3-6% of the image side at a random place in the central 70% of the field, coloured as the local mean
  shifted by -60 (`dark_spot`) or +60 (`light_spot`) grey levels, clipped; the other sign is used where
  clipping would leave less than 30 levels of contrast; the disc is its mask).

The refitted rows depend on the random placement (`--seed`, default 0): on the casting, the share of turned
castings caught at the threshold was 0.97 / 0.87 / 0.86 at seeds 0 / 1 / 2 (2026-12-06). `--seeds 0,1,2` runs
them once per seed (the test-only rows once: they do not depend on it), each row with its `seed`, and adds a
`summary` of each refitted row over the seeds: median, min and max of every figure (the table prints it as a
`median of seeds` row, min-max in brackets).

Scoring: a `rejected` verdict (say, lighting beyond the tolerance) is neither a false alarm nor a catch; it
is counted in `rejected` and, for image AUROC, ranks above every score (+inf), as does a verdict flagged for a
reason whatever its score (say, a part not located: a `defect`, counted under `reasons`). Pixel AUROC uses
each verdict's anomaly map, as `inspector eval` does; a file rejected without a map ranks above every pixel.
The false-alarm rate is defect verdicts among test/good, recall defect verdicts among defective parts, both
over all parts including rejected ones.

Where recall is lost (JSON only, and the log line): each row also has `recall_at_parts_threshold` (and
`false_alarms_at_parts_threshold`), the recall with the threshold at the held-out training parts' own (1 - budget)
quantile, `parts_threshold`, leaving out their lighting copies, and `recall_at_test_good_quantile`, with it at the
test set's good parts' own quantile (`test_good_quantile`; an oracle no line has: what the scores separate). Recall
low at the threshold but high at the parts' quantile: the lighting copies set the threshold; low at the test goods'
quantile too: the scores do not separate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from inspector import imaging
from inspector.config import Config
from inspector.errors import DatasetError, ImageRejected, InspectorError
from inspector.evaluate import MASK_SIDE, find_eval_set, flagged_above
from inspector.pipeline import Inspector, Progress, decode_for_training, fit_profile
from inspector.profile import NormalProfile
from inspector.register import rotation_matrix

DEFAULT_DATA = Path("../shared/data")
TEST_ONLY = ("clean", "png", "gain0.97", "gain0.9", "gain1.1", "offset-10", "offset+10", "offset-5", "offset+5", "warm",
             "cool", "gamma0.9", "gamma1.1", "alternate", "jpeg80", "noise3", "noise6", "blur1", "blur2", "zoom1.03",
             "zoom0.97", "zoom1.05", "zoom0.95", "motion15", "side5", "side10", "vignette30", "shadow20")
REFIT = ("placed", "placed-black", "pasted")
PERTURBATIONS = TEST_ONLY + REFIT
MAX_SHIFT = 0.08  # placement shift, fraction of the field
SPOT_DIAMETER = (0.03, 0.06)  # pasted spot diameter, fraction of the shorter image side
SPOT_SHIFT = 60.0  # pasted spot colour = local mean -/+ this many grey levels
SPOT_MIN_CONTRAST = 30.0  # below this after clipping, the other sign is used
SPOT_FIELD = (0.15, 0.85)  # spot centres lie in this fraction of the field, in x and y
_GAINS = {"gain0.97": 0.97, "gain0.9": 0.9, "gain1.1": 1.1}
_OFFSETS = {"offset-10": -10.0, "offset+10": 10.0, "offset-5": -5.0, "offset+5": 5.0}
_GAMMAS = {"gamma0.9": 0.9, "gamma1.1": 1.1}
_TINTS = {"warm": (0.95, 1.0, 1.05), "cool": (1.05, 1.0, 0.95)}  # per channel, BGR order
_NOISES = {"noise3": 3.0, "noise6": 6.0}  # sensor noise sd, grey levels
_BLURS = {"blur1": 1.0, "blur2": 2.0}  # defocus: Gaussian sd, pixels of the photo
_ZOOMS = {"zoom1.03": 1.03, "zoom0.97": 0.97, "zoom1.05": 1.05, "zoom0.95": 0.95}  # magnification about the centre
_SIDES = {"side5": 0.05, "side10": 0.10}  # a lamp dimmed on one side: x(1 - s) at the left edge .. x(1 + s) right
VIGNETTE = 0.30  # `vignette30`: corners this much darker, falling off with the squared distance from the centre
SHADOW = (1.0 / 3.0, 0.20, 0.04)  # `shadow20`: the left third of the field 20% darker, edge soft over 4% of the width


# --- perturbations (pure) ---------------------------------------------------------------------------------

def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def perturb(image: np.ndarray, name: str, index: int = 0) -> np.ndarray:
    """A test-only pixel perturbation of a BGR uint8 image (`index`: the part's place in the test order)."""
    if name in ("clean", "png", "jpeg80"):
        return image
    x = image.astype(np.float32)
    if name in _GAINS:
        return _to_u8(x * _GAINS[name])
    if name in _OFFSETS:
        return _to_u8(x + _OFFSETS[name])
    if name in _TINTS:
        return _to_u8(x * np.array(_TINTS[name], np.float32))
    if name in _GAMMAS:
        return _to_u8(255.0 * (x / 255.0) ** _GAMMAS[name])
    if name == "alternate":
        return _to_u8(x * (0.92 if index % 2 == 0 else 1.08))
    if name in _NOISES:
        return _to_u8(x + _noise(image, _NOISES[name], index))
    if name in _BLURS:
        return cv2.GaussianBlur(image, (0, 0), _BLURS[name], borderType=cv2.BORDER_REPLICATE)
    if name in _ZOOMS:
        return place(image, rotation_matrix(0.0, *image.shape[:2], _ZOOMS[name]))
    if name == "motion15":  # the part moved 15 px of the photo during the exposure, left to right
        kernel = np.full((1, 15), 1.0 / 15.0, np.float32)
        return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    if name in _SIDES or name in ("vignette30", "shadow20"):
        return _to_u8(x * uneven_field(name, *image.shape[:2])[..., None])
    raise ValueError(f"not a test-only pixel perturbation: {name!r}")


def uneven_field(name: str, height: int, width: int) -> np.ndarray:
    """The (H, W) float32 brightness factor of an uneven-light perturbation (side*, vignette30, shadow20)."""
    u = (np.arange(width, dtype=np.float32) + 0.5) / width  # 0..1 left to right
    v = (np.arange(height, dtype=np.float32) + 0.5) / height
    if name in _SIDES:
        return np.broadcast_to(1.0 + _SIDES[name] * (2.0 * u - 1.0), (height, width)).astype(np.float32)
    if name == "vignette30":
        r2 = ((2.0 * u - 1.0) ** 2)[None, :] + ((2.0 * v - 1.0) ** 2)[:, None]  # 2 at the corners
        return (1.0 - VIGNETTE * r2 / 2.0).astype(np.float32)
    if name == "shadow20":
        edge, depth, soft = SHADOW
        ramp = np.clip((u - edge) / soft + 0.5, 0.0, 1.0)  # 0 in the shadow, 1 outside
        return np.broadcast_to(1.0 - depth * (1.0 - ramp), (height, width)).astype(np.float32)
    raise ValueError(f"not an uneven-light perturbation: {name!r}")


def _noise(image: np.ndarray, sd: float, index: int) -> np.ndarray:
    """Gaussian sensor noise (H, W, 3) float32 for the part at `index` (the same for it in every run): the same in
    every channel where the image is grey throughout (a mono camera's photo), independent per channel otherwise (a
    colour camera's)."""
    rng = np.random.default_rng([7, index])
    h, w = image.shape[:2]
    grey = bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
    if grey:
        return np.repeat(rng.normal(0.0, sd, (h, w, 1)).astype(np.float32), 3, axis=2)
    return rng.normal(0.0, sd, image.shape).astype(np.float32)


def encode(image: np.ndarray, name: str = "png") -> bytes:
    """PNG bytes (fast, lossless), or JPEG quality 80 for `jpeg80`."""
    if name == "jpeg80":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    else:
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"cv2.imencode failed for {name}")
    return buf.tobytes()


def placement(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A 2x3 affine matrix: rotation by a uniform angle in [0, 360) about the centre, shift up to +-8%."""
    angle = rng.uniform(0.0, 360.0)
    tx, ty = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    m = rotation_matrix(angle, height, width)
    m[0, 2] += tx * width
    m[1, 2] += ty * height
    return m


def place(image: np.ndarray, m: np.ndarray, black: bool = False) -> np.ndarray:
    """The image warped by m (bilinear, borders replicated; or filled black, OpenCV's and Pillow's default), same
    size."""
    h, w = image.shape[:2]
    border = cv2.BORDER_CONSTANT if black else cv2.BORDER_REPLICATE
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=(0, 0, 0))


def place_mask(mask: np.ndarray, m: np.ndarray) -> np.ndarray:
    """A mask warped by m (nearest, border 0), same size."""
    h, w = mask.shape[:2]
    return cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def paste_spot(image: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray, str]:
    """A soft-edged dark or light disc pasted at a random place; (image, mask 0/255, kind actually used)."""
    h, w = image.shape[:2]
    side = min(h, w)
    r = rng.uniform(*SPOT_DIAMETER) * side / 2.0
    cx = rng.uniform(*SPOT_FIELD) * (w - 1)
    cy = rng.uniform(*SPOT_FIELD) * (h - 1)
    reach = int(np.ceil(3 * r))
    x0, x1 = max(0, int(cx) - reach), min(w, int(cx) + reach + 1)
    y0, y1 = max(0, int(cy) - reach), min(h, int(cy) + reach + 1)
    local = image[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32).mean(axis=0)
    sign = -1.0 if kind == "dark_spot" else 1.0
    colour = np.clip(local + sign * SPOT_SHIFT, 0, 255)
    if abs(float((colour - local).mean())) < SPOT_MIN_CONTRAST:
        sign = -sign
        colour = np.clip(local + sign * SPOT_SHIFT, 0, 255)
    used = "dark_spot" if sign < 0 else "light_spot"
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.hypot(xx - cx, yy - cy)
    edge = max(1.0, 0.3 * r)
    alpha = np.clip((r + edge / 2.0 - dist) / edge, 0.0, 1.0)[..., None]
    out = _to_u8(image.astype(np.float32) * (1.0 - alpha) + colour * alpha)
    mask = np.where(dist <= r, 255, 0).astype(np.uint8)
    return out, mask, used


# --- data --------------------------------------------------------------------------------------------------

@dataclass
class Part:
    """One test image: its original bytes, the fully decoded image (None if it cannot be decoded), its mask."""

    name: str
    kind: str  # "good" or the defect type
    data: bytes
    image: np.ndarray | None
    mask: np.ndarray | None  # uint8 0/255 at the image's size, when the set has one for this part


@dataclass
class LoadedSet:
    name: str
    train: list[bytes]
    test: list[Part]
    has_masks: bool
    n_train_rejected: int


def find_sets(data: Path, names: Sequence[str] | None = None) -> list[Path]:
    """The MVTec-layout sub-folders of `data` (with train/good and test/), optionally only those named."""
    if not data.is_dir():
        raise DatasetError(f"not a folder: {data}")
    found = sorted(p for p in data.iterdir() if (p / "train" / "good").is_dir() and (p / "test").is_dir())
    if names:
        by_name = {p.name: p for p in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DatasetError(f"no set {', '.join(missing)} in {data} (found: {', '.join(by_name) or 'none'})")
        found = [by_name[n] for n in names]
    if not found:
        raise DatasetError(f"no MVTec-layout sets (train/good and test/) in {data}")
    return found


def _full_decode(data: bytes, cfg: Config) -> np.ndarray | None:
    try:
        return imaging.decode(data, max_pixels=cfg.input.max_pixels).image
    except ImageRejected:
        return None


def load_set(root: Path, cfg: Config) -> LoadedSet:
    """Read every file of a set once; decode the test images at full size, masks at the image's size."""
    es = find_eval_set(root, cfg.input.patterns)
    train, n_bad = [], 0
    for path in es.train:
        try:
            train.append(imaging.read_file(path, cfg.input.max_bytes))
        except ImageRejected:
            n_bad += 1

    def one(item: tuple[Path, str]) -> Part:
        path, kind = item
        data = imaging.read_file(path, cfg.input.max_bytes)
        image = _full_decode(data, cfg)
        mask = None
        if path in es.masks:
            mask = cv2.imread(str(es.masks[path]), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise DatasetError(f"unreadable mask: {es.masks[path]}")
            if image is not None and mask.shape != image.shape[:2]:
                mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        return Part(path.name, kind, data, image, mask)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        test = list(pool.map(one, es.test))
    return LoadedSet(root.name, train, test, bool(es.masks), n_bad)


def _fit(images: list[np.ndarray], cfg: Config):
    return fit_profile(images, cfg.profile)


def _decode_training(blobs: Sequence[bytes], cfg: Config) -> tuple[list[np.ndarray], int]:
    """Training images at the reduced size the profile needs (as `inspector train` decodes them)."""

    def one(data: bytes) -> np.ndarray | None:
        try:
            return decode_for_training(data, cfg.input, cfg.profile)
        except ImageRejected:
            return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        out = list(pool.map(one, blobs))
    good = [im for im in out if im is not None]
    return good, len(out) - len(good)


# --- scoring -----------------------------------------------------------------------------------------------

def _mask_at_side(mask: np.ndarray | None) -> np.ndarray:
    """A mask at MASK_SIDE x MASK_SIDE as bool, like evaluate._mask; all-False when absent."""
    if mask is None:
        return np.zeros((MASK_SIDE, MASK_SIDE), bool)
    return cv2.resize(mask, (MASK_SIDE, MASK_SIDE), interpolation=cv2.INTER_NEAREST) > 127


@dataclass
class Scored:
    verdict: str
    score: float  # +inf when rejected or flagged for a reason (such as not_located) whatever the score
    reason: str | None
    map_up: np.ndarray | None  # anomaly map at MASK_SIDE (float32), when pixel AUROC is wanted and there is one


def score_jobs(inspector: Inspector, jobs: Sequence[Callable[[], bytes]], names: Sequence[str], want_maps: bool,
               progress: Progress | None = None, desc: str = "") -> list[Scored]:
    """Build each job's bytes and judge them as the service does, on a few threads (OpenCV releases the GIL)."""

    def one(i: int) -> Scored:
        v = inspector.inspect_bytes(jobs[i](), names[i], keep_image=True)
        up = None
        if want_maps and v.anomaly_map is not None:
            up = cv2.resize(np.asarray(v.anomaly_map, np.float32), (MASK_SIDE, MASK_SIDE),
                            interpolation=cv2.INTER_LINEAR)
        flagged = v.verdict == "rejected" or v.reason is not None or v.score is None
        return Scored(v.verdict, float("inf") if flagged else float(v.score), v.reason, up)

    # the threads are the parallelism: BLAS pools inside each only fight over the cores (as in the service)
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = pool.map(one, range(len(jobs)))
        if progress:
            results = progress(results, total=len(jobs), desc=desc)
        return list(results)


def metrics(kinds: Sequence[str], scored: Sequence[Scored], masks: Sequence[np.ndarray | None] | None,
            threshold: float, parts_threshold: float | None = None, budget: float = 0.01) -> dict[str, Any]:
    """Image and pixel AUROC, false alarms, recall and rejections of one scored test set; and where recall is
    lost: at `parts_threshold` (the held-out training parts' own quantile, without their lighting copies) and at
    the test set's good parts' own (1 - budget) quantile (an oracle no line has: what the scores separate)."""
    y = np.array([k != "good" for k in kinds])
    s = np.array([x.score for x in scored], np.float64)
    verdicts = np.array([x.verdict for x in scored])
    flagged = verdicts == "defect"
    rejected = verdicts == "rejected"
    image_auroc = float(roc_auc_score(y, flagged_above(s))) if y.any() and (~y).any() else None
    pixel_auroc = None
    if masks is not None:
        gts = [_mask_at_side(m) for m in masks]
        if any(g.any() for g in gts):
            finite = [x.map_up for x in scored if x.map_up is not None]
            top = (max(float(m.max()) for m in finite) + 1.0) if finite else 1.0
            pred = np.concatenate([(x.map_up if x.map_up is not None else np.full((MASK_SIDE, MASK_SIDE), top,
                                                                                   np.float32)).ravel()
                                   for x in scored])
            pixel_auroc = float(roc_auc_score(np.concatenate([g.ravel() for g in gts]), pred))
    types = sorted(set(kinds) - {"good"})
    k = np.array(kinds)
    n_good, n_def = int((~y).sum()), int(y.sum())
    return {
        "image_auroc": image_auroc,
        "pixel_auroc": pixel_auroc,
        "threshold": float(threshold),
        **_where_recall_goes(s[~rejected], y[~rejected], parts_threshold, budget),
        "false_alarms": int((flagged & ~y).sum()),
        "false_alarm_rate": float((flagged & ~y).sum() / n_good) if n_good else None,
        "recall": float((flagged & y).sum() / n_def) if n_def else None,
        "per_type_recall": {t: float(flagged[k == t].mean()) for t in types},
        "rejected": int(rejected.sum()),
        "rejected_share": float(rejected.mean()) if len(verdicts) else 0.0,
        "rejected_good": int((rejected & ~y).sum()),
        "rejected_defect": int((rejected & y).sum()),
        "rejected_reasons": sorted({x.reason or "?" for x in scored if x.verdict == "rejected"}),
        "reasons": {r: sum(1 for x in scored if x.reason == r and x.verdict != "rejected")
                    for r in sorted({x.reason for x in scored if x.reason and x.verdict != "rejected"})},
        "n_test": len(kinds),
        "n_good": n_good,
        "n_defect": n_def,
    }


def _where_recall_goes(s: np.ndarray, y: np.ndarray, parts_threshold: float | None, budget: float) -> dict[str, Any]:
    """Recall and false alarms of scores s (N,) with y (N,) bool = defect, at the parts' own threshold and at the
    test goods' own (1 - budget) quantile; None where a figure has no parts or no defects to count. The caller
    leaves the rejected parts out (their score is +inf: no threshold separates them, and `recall` does not count
    them either)."""
    good, bad = s[~y], s[y]
    out: dict[str, Any] = {"parts_threshold": None if parts_threshold is None else float(parts_threshold),
                           "recall_at_parts_threshold": None, "false_alarms_at_parts_threshold": None,
                           "test_good_quantile": None, "recall_at_test_good_quantile": None}
    if parts_threshold is not None and len(good):
        out["false_alarms_at_parts_threshold"] = int((good > parts_threshold).sum())
        if len(bad):
            out["recall_at_parts_threshold"] = float((bad > parts_threshold).mean())
    if len(good) and len(bad):
        q = float(np.quantile(good, 1.0 - budget, method="higher"))
        out["test_good_quantile"] = q
        out["recall_at_test_good_quantile"] = float((bad > q).mean())
    return out


def parts_threshold(profile: NormalProfile) -> float:
    """The (1 - false alarm rate) quantile of the held-out scores of a fitted profile's training parts alone (its
    threshold is set on them and their lighting copies together)."""
    scores = np.asarray(profile.oof_scores_[: profile.n_train_], dtype=np.float64)
    return float(np.quantile(scores, 1.0 - profile.params.false_alarm_rate, method="higher"))


# --- the run -----------------------------------------------------------------------------------------------

def _seed(seed: int, name: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream])


def parse_perturbations(text: str | None) -> list[str]:
    """Comma-separated names -> list in canonical order (clean always included); ValueError names unknown ones."""
    if not text:
        return list(PERTURBATIONS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown perturbation {', '.join(unknown)} (choose from {', '.join(PERTURBATIONS)})")
    wanted = set(names) | {"clean"}
    return [p for p in PERTURBATIONS if p in wanted]


def run_set(root: Path, cfg: Config, perturbations: Sequence[str], seeds: Sequence[int] = (0,),
            progress: Progress | None = None, log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """All rows of one set: fit once on the clean train/good for test-only perturbations (seed None), refit on
    placed train/good for the placed and pasted rows, once per seed."""
    t0 = time.perf_counter()
    ls = load_set(root, cfg)
    log(f"{ls.name}: read {len(ls.train)} train and {len(ls.test)} test images in {time.perf_counter() - t0:.1f} s")
    rows: list[dict[str, Any]] = []
    names = [f"{p.kind}/{p.name}" for p in ls.test]
    kinds = [p.kind for p in ls.test]
    masks = [p.mask for p in ls.test] if ls.has_masks else None

    def add(pert: str, refit: bool, kinds_: Sequence[str], scored: list[Scored], masks_, profile: NormalProfile,
            n_train: int, fit_s: float, score_s: float, seed: int | None = None) -> None:
        row = {"set": ls.name, "perturbation": pert, "refit": refit, "seed": seed, "n_train": n_train}
        row.update(metrics(kinds_, scored, masks_, profile.threshold_, parts_threshold(profile),
                           profile.params.false_alarm_rate))
        row.update(fit_s=round(fit_s, 2), score_s=round(score_s, 2))
        rows.append(row)
        label = pert if seed is None else f"{pert} (seed {seed})"
        log(f"{ls.name} {label}: image AUROC {_f(row['image_auroc'])}, pixel AUROC {_f(row['pixel_auroc'])}, "
            f"false alarms {row['false_alarms']}/{row['n_good']}, recall {_f(row['recall'])}, "
            f"rejected {row['rejected']}; recall at the parts' own threshold {_f(row['recall_at_parts_threshold'])}, "
            f"at the test goods' own quantile {_f(row['recall_at_test_good_quantile'])}")

    # test-only perturbations: one fit on the clean train/good
    t = time.perf_counter()
    images, n_bad = _decode_training(ls.train, cfg)
    profile = _fit(images, cfg)
    fit_s = time.perf_counter() - t
    n_train = len(images)
    del images
    log(f"{ls.name}: fitted on {n_train} clean images in {fit_s:.1f} s")
    inspector = Inspector(profile, "robustness", cfg.input)
    for pert in (p for p in perturbations if p in TEST_ONLY):
        def job(i: int, pert: str = pert) -> Callable[[], bytes]:
            part = ls.test[i]
            if pert == "clean" or part.image is None:
                return lambda: part.data
            return lambda: encode(perturb(part.image, pert, i), pert)

        t = time.perf_counter()
        scored = score_jobs(inspector, [job(i) for i in range(len(ls.test))], names, masks is not None, progress,
                            f"{ls.name} {pert}")
        add(pert, False, kinds, scored, masks, profile, n_train, fit_s if pert == "clean" else 0.0,
            time.perf_counter() - t)
    del inspector, profile

    if any(p in REFIT for p in perturbations):
        for seed in seeds:
            _refit_rows(ls, cfg, perturbations, seed, names, kinds, masks, add, progress, log)
    return rows


def _refit_rows(ls: LoadedSet, cfg: Config, perturbations: Sequence[str], seed: int, names: list[str],
                kinds: list[str], masks: list[np.ndarray | None] | None, add: Callable[..., None],
                progress: Progress | None, log: Callable[[str], None]) -> None:
    """The placed, placed-black and pasted rows of one set at one placement seed (passed to `add`)."""
    placed = None
    if "placed" in perturbations or "pasted" in perturbations:
        placed = _placed_rows(ls, cfg, "placed" if "placed" in perturbations else None, seed, names, kinds, masks,
                              add, progress, log)
    if "placed-black" in perturbations:  # the same turns and shifts as `placed`, the corners left black
        _placed_rows(ls, cfg, "placed-black", seed, names, kinds, masks, add, progress, log)
    if placed is not None and "pasted" in perturbations:
        profile, n_train, fit_s, placed_test = placed
        inspector = Inspector(profile, "robustness-placed", cfg.input)
        rng = _seed(seed, ls.name, 1)
        good = [(im, part) for (im, _), part in zip(placed_test, ls.test) if part.kind == "good" and im is not None]
        p_images, p_masks, p_kinds, p_names = [], [], [], []
        for i, (im, part) in enumerate(good):
            p_images.append(im)
            p_masks.append(None)
            p_kinds.append("good")
            p_names.append(f"good/{part.name}")
        for i, (im, part) in enumerate(good):
            spotted, mk, used = paste_spot(im, rng, "dark_spot" if i % 2 == 0 else "light_spot")
            p_images.append(spotted)
            p_masks.append(mk)
            p_kinds.append(used)
            p_names.append(f"{used}/{part.name}")
        jobs = [(lambda im=im: encode(im)) for im in p_images]
        t = time.perf_counter()
        scored = score_jobs(inspector, jobs, p_names, True, progress, f"{ls.name} pasted")
        add("pasted", True, p_kinds, scored, p_masks, profile, n_train, fit_s, time.perf_counter() - t,
            seed)


def _placed_rows(ls: LoadedSet, cfg: Config, row: str | None, seed: int, names: list[str], kinds: list[str],
                 masks: list[np.ndarray | None] | None, add: Callable[..., None], progress: Progress | None,
                 log: Callable[[str], None]) -> tuple[NormalProfile, int, float,
                                                      list[tuple[np.ndarray | None, np.ndarray | None]]]:
    """Every image, train and test, turned and shifted (`placed-black`: its corners black), a profile refitted on
    the train images, and the test images scored as `row` (None: not scored); the profile, its training count and
    time, and the placed test images with their masks."""
    black = row == "placed-black"
    rng = _seed(seed, ls.name, 0)
    t = time.perf_counter()
    placed_train: list[np.ndarray] = []
    for data in ls.train:
        full = _full_decode(data, cfg)
        if full is None:
            continue
        m = placement(rng, full.shape[1], full.shape[0])
        placed_train.append(decode_for_training(encode(place(full, m, black)), cfg.input, cfg.profile))
    profile = _fit(placed_train, cfg)
    fit_s = time.perf_counter() - t
    n_train = len(placed_train)
    del placed_train
    log(f"{ls.name}: fitted on {n_train} placed images{' (black corners)' if black else ''} (seed {seed}) in "
        f"{fit_s:.1f} s")
    placed_test: list[tuple[np.ndarray | None, np.ndarray | None]] = []
    for part in ls.test:
        if part.image is None:
            placed_test.append((None, None))
            continue
        m = placement(rng, part.image.shape[1], part.image.shape[0])
        placed_test.append((place(part.image, m, black), None if part.mask is None else place_mask(part.mask, m)))
    if row is not None:
        inspector = Inspector(profile, "robustness-placed", cfg.input)
        jobs = [(lambda im=im, part=part: part.data if im is None else encode(im))
                for (im, _), part in zip(placed_test, ls.test)]
        t = time.perf_counter()
        scored = score_jobs(inspector, jobs, names, masks is not None, progress, f"{ls.name} {row}")
        pmasks = [mk for _, mk in placed_test] if masks is not None else None
        add(row, True, kinds, scored, pmasks, profile, n_train, fit_s, time.perf_counter() - t, seed)
    return profile, n_train, fit_s, placed_test


def run(data: Path, cfg: Config, sets: Sequence[str] | None = None, perturbations: Sequence[str] | None = None,
        seeds: Sequence[int] = (0,), progress: Progress | None = None,
        log: Callable[[str], None] = lambda s: None) -> dict:
    """Every (set, perturbation, seed) row, with the clean figures of its set beside it, and the refitted rows'
    summary over the seeds; one JSON-able dict."""
    perts = parse_perturbations(",".join(perturbations) if perturbations else None)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    roots = find_sets(Path(data), sets)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for root in roots:
        set_rows = run_set(root, cfg, perts, seeds, progress, log)
        clean = next(r for r in set_rows if r["perturbation"] == "clean")
        for r in set_rows:
            for key in ("image_auroc", "pixel_auroc", "false_alarm_rate", "recall", "rejected_share"):
                r[f"clean_{key}"] = clean[key]
        rows.extend(set_rows)
    return {"data": str(data), "sets": [r.name for r in roots], "perturbations": perts, "seeds": seeds,
            "seconds": round(time.perf_counter() - start, 1), "rows": rows, "summary": summary(rows)}


SUMMARISED = ("image_auroc", "pixel_auroc", "false_alarms", "false_alarm_rate", "recall", "recall_at_parts_threshold",
              "recall_at_test_good_quantile")


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (set, refitted perturbation) run at more than one seed: the seeds, and {median, min, max} of each
    figure in SUMMARISED (None where a seed's figure is None)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("seed") is not None:
            groups.setdefault((r["set"], r["perturbation"]), []).append(r)
    out = []
    for (name, pert), group in groups.items():
        if len(group) < 2:
            continue
        entry: dict[str, Any] = {"set": name, "perturbation": pert, "seeds": [r["seed"] for r in group],
                                 "n_good": group[0]["n_good"]}
        for key in SUMMARISED:
            values = [r[key] for r in group]
            entry[key] = None if any(v is None for v in values) else {
                "median": float(np.median(values)), "min": min(values), "max": max(values)}
        out.append(entry)
    return out


def parse_seeds(text: str) -> list[int]:
    """Comma-separated whole numbers -> distinct seeds in order; ValueError names what is not one."""
    seeds = []
    for part in (p.strip() for p in text.split(",")):
        try:
            seed = int(part)
        except ValueError:
            raise ValueError(f"--seeds takes comma-separated whole numbers, got {part!r}") from None
        if seed < 0:
            raise ValueError(f"--seeds takes seeds of 0 or more, got {seed}")
        seeds.append(seed)
    return list(dict.fromkeys(seeds))


# --- output ------------------------------------------------------------------------------------------------

def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _delta(x: float | None, ref: float | None) -> str:
    if x is None or ref is None:
        return ""
    d = x - ref
    return "" if abs(d) < 0.0005 else f" ({d:+.3f})"


def markdown(result: dict) -> str:
    """The rows as a markdown table; deltas against the set's clean row in brackets."""
    head = ("| set | perturbation | image AUROC | pixel AUROC | false alarms on test/good | recall at threshold "
            "| rejected |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for r in result["rows"]:
        fa = f"{r['false_alarms']}/{r['n_good']} ({100 * (r['false_alarm_rate'] or 0):.1f}%)" if r["n_good"] else "-"
        clean_fa = r["clean_false_alarm_rate"]
        if r["perturbation"] != "clean" and clean_fa is not None and r["false_alarm_rate"] is not None \
                and abs(r["false_alarm_rate"] - clean_fa) >= 0.0005:
            fa += f" (clean {100 * clean_fa:.1f}%)"
        rej = f"{r['rejected']} ({100 * r['rejected_share']:.1f}%)"
        if r["rejected"]:
            rej += f": {r['rejected_good']} good, {r['rejected_defect']} defective"
        for reason, n in r.get("reasons", {}).items():
            rej += f"; {n} flagged {reason}"
        name = r["perturbation"] + (" (refit)" if r["refit"] else "")
        if r.get("seed") is not None and len(result["seeds"]) > 1:
            name = f"{r['perturbation']} (refit, seed {r['seed']})"
        lines.append(
            f"| {r['set']} | {name} | {_f(r['image_auroc'])}{_delta(r['image_auroc'], r['clean_image_auroc'])} "
            f"| {_f(r['pixel_auroc'])}{_delta(r['pixel_auroc'], r['clean_pixel_auroc'])} | {fa} "
            f"| {_f(r['recall'])}{_delta(r['recall'], r['clean_recall'])} | {rej} |")
    for entry in result.get("summary", []):
        seeds = ",".join(str(s) for s in entry["seeds"])
        fa = f"{_spread(entry['false_alarms'], 0)} of {entry['n_good']}"
        lines.append(
            f"| {entry['set']} | {entry['perturbation']} (refit), median of seeds {seeds} "
            f"| {_spread(entry['image_auroc'])} | {_spread(entry['pixel_auroc'])} | {fa} "
            f"| {_spread(entry['recall'])} | |")
    lines.append("")
    seeds = ",".join(str(s) for s in result["seeds"])
    lines.append(f"{len(result['rows'])} rows, {result['seconds']:.0f} s; data {result['data']}, "
                 f"seed{'s' if len(result['seeds']) > 1 else ''} {seeds}. Brackets: change against the set's clean "
                 "row (median rows: min-max over the seeds). `pasted` rows: placed test/good against copies with "
                 "one pasted dark or light spot (their own defect types).")
    return "\n".join(lines)


def _spread(entry: dict[str, float] | None, digits: int = 3) -> str:
    """A summary figure as 'median (min-max)'."""
    if entry is None:
        return "-"
    mid = f"{entry['median']:.{digits}f}" if digits or float(entry["median"]).is_integer() else f"{entry['median']:.1f}"
    return f"{mid} ({entry['min']:.{digits}f}-{entry['max']:.{digits}f})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by `python -m inspector.tooling.robustness` and `inspector bench --robustness`."""
    p.add_argument("--data", default=None,
                   help=f"with --robustness: folder of MVTec-layout sets (default {DEFAULT_DATA})")
    p.add_argument("--sets", default=None,
                   help="with --robustness: comma-separated set (sub-folder) names (default: every set in --data)")
    p.add_argument("--perturb", default=None,
                   help=f"with --robustness: comma-separated perturbations (default: all: {', '.join(PERTURBATIONS)}; "
                        "clean is always run as the reference)")
    p.add_argument("--seed", type=int, default=0, help="with --robustness: seed of placement and pasting (default 0)")
    p.add_argument("--seeds", default=None, metavar="S1,S2",
                   help="with --robustness: run the placed and pasted rows once per seed and add their median over "
                        "the seeds, e.g. 0,1,2 (instead of --seed; the placement moves those rows by a few points)")


def run_from_args(args: argparse.Namespace, cfg: Config, progress: Progress | None,
                  log: Callable[[str], None]) -> dict:
    """Parse the shared options and run; InspectorError for a bad --perturb value."""
    try:
        perts = parse_perturbations(args.perturb)
        seeds = parse_seeds(args.seeds) if args.seeds is not None else [args.seed]
    except ValueError as exc:
        raise InspectorError(f"bench --robustness: {exc}") from None
    if args.seeds is not None and args.seed != 0:
        raise InspectorError("bench --robustness: give --seed or --seeds, not both")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    return run(Path(args.data) if args.data else DEFAULT_DATA, cfg, sets, perts, seeds, progress, log)


def _progress(iterable, total: int | None = None, desc: str = ""):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", disable=None, leave=False, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m inspector.tooling.robustness`: the benchmark with the config at --config (or the defaults)."""
    from inspector import config

    parser = argparse.ArgumentParser(prog="python -m inspector.tooling.robustness",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="config file (default ./config.toml, else the defaults)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config)
        result = run_from_args(args, cfg, _progress, lambda s: print(s, file=sys.stderr, flush=True))
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
