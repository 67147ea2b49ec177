"""Reference baselines for image anomaly detection on MVTec-layout folders.

Why: the README reports our detector's image AUROC. A number alone says little, so this script measures
two simple reference baselines on the same folders, in the same run, so they can sit side by side.

The baselines (both fit a scikit-learn IsolationForest, 200 trees, random_state=0, on train/good only;
anomaly score = -score_samples; image AUROC over every image in test/, a defect image = 1, good = 0):

1. "tutorial k-means + IForest": the recipe this product grew from. Each image is resized to 128 px
   width (aspect kept) and its BGR pixels (float32) are clustered by `cv2.kmeans` with K=4,
   criteria (EPS + MAX_ITER, 10, 1.0), 10 attempts, k-means++ seeding, `cv2.setRNGSeed(0)` before every
   call. Feature = the 4 centres sorted by pixel share (largest first) followed by the 4 shares (16 dims).
2. "colour histogram + IForest": an 8x8x8 BGR histogram (`cv2.calcHist`, normalised to sum 1) of the
   same 128 px image (512 dims). The cheapest global colour descriptor there is.

Both see only global colour statistics, so they are expected to be weak on small, local defects.

`--tutorial-cost` instead times what the tutorial actually does per image: at full resolution, one
`cv2.kmeans` (10 attempts, k-means++) for every K in 2..20, summed, on one bottle image. Note the
bottle images here were downscaled to 512x512 from MVTec's 900x900 originals, so "full resolution"
means 512x512; on the originals the cost is roughly 3x higher (pixel count ratio).

Usage (from the repository root):

    python benchmarks/baselines.py [DATASET_DIR ...] [--json]
    python benchmarks/baselines.py --tutorial-cost [DATASET_DIR ...] [--json]

Without DATASET_DIR every folder of ../shared/data (relative to the repository root) that has
train/good is used. A folder without the MVTec layout ends the script with a one-line message and exit
code 2. Feature extraction runs in 2 worker processes; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

WIDTH = 128  # px, the width both baselines resize to
K = 4  # clusters of the tutorial recipe
ATTEMPTS = 10
SEED = 0
CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
HIST_BINS = 8  # per BGR channel
N_TREES = 200
WORKERS = 2
COST_K_RANGE = range(2, 21)  # the tutorial's K sweep, 2..20 inclusive

EXIT_LAYOUT = 2


class LayoutError(Exception):
    """A dataset folder lacks the MVTec layout or holds an unreadable image; message is one line."""


@dataclass(frozen=True)
class Dataset:
    """The image paths of one MVTec-layout folder, with test labels (1 = defect)."""

    name: str
    train: list[Path]
    test: list[Path]
    labels: list[int]


@dataclass(frozen=True)
class Result:
    """The AUROC of both baselines on one dataset."""

    dataset: str
    tutorial_kmeans_iforest: float
    colour_hist_iforest: float
    n_train: int
    n_test: int


def list_images(folder: Path) -> list[Path]:
    """Return the image files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_dataset(root: Path) -> Dataset:
    """Collect train/good, test/good and test/<defect>/ images of `root`; raise LayoutError if absent."""
    if not root.is_dir():
        raise LayoutError(f"{root}: not a directory")
    required = (root / "train" / "good", root / "test" / "good")
    for folder in required:
        if not folder.is_dir() or not list_images(folder):
            raise LayoutError(f"{root}: no images in {folder.relative_to(root)}/ (expected MVTec layout)")
    defect_dirs = sorted(d for d in (root / "test").iterdir() if d.is_dir() and d.name != "good")
    defects = [p for d in defect_dirs for p in list_images(d)]
    if not defects:
        raise LayoutError(f"{root}: no images in any test/<defect_type>/ folder (expected MVTec layout)")
    good = list_images(root / "test" / "good")
    labels = [0] * len(good) + [1] * len(defects)
    return Dataset(root.name, list_images(root / "train" / "good"), good + defects, labels)


def default_roots(data_root: Path = DEFAULT_DATA_ROOT) -> list[Path]:
    """Every folder directly under `data_root` that has train/good, sorted by name."""
    if not data_root.is_dir():
        return []
    return sorted(d for d in data_root.iterdir() if (d / "train" / "good").is_dir())


def read_bgr(path: Path) -> np.ndarray | None:
    """Read an image as BGR uint8 (H, W, 3), or None if OpenCV cannot decode it."""
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def resize_width(image: np.ndarray, width: int = WIDTH) -> np.ndarray:
    """Resize to `width` px wide keeping the aspect ratio (area interpolation)."""
    h, w = image.shape[:2]
    height = max(1, round(h * width / w))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def kmeans(pixels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded tutorial cv2.kmeans on float32 pixels (N, 3); return labels (N,) and centres (k, 3)."""
    cv2.setRNGSeed(SEED)
    _, labels, centres = cv2.kmeans(pixels, k, None, CRITERIA, ATTEMPTS, cv2.KMEANS_PP_CENTERS)
    return labels.ravel(), centres


def kmeans_feature(small: np.ndarray, k: int = K) -> np.ndarray:
    """Tutorial feature: k BGR centres sorted by share (descending), then the k shares; (4k,) float32."""
    pixels = small.reshape(-1, 3).astype(np.float32)
    labels, centres = kmeans(pixels, k)
    shares = np.bincount(labels, minlength=k).astype(np.float32) / len(labels)
    order = np.argsort(-shares, kind="stable")
    return np.concatenate([centres[order].ravel(), shares[order]]).astype(np.float32)


def hist_feature(small: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """8x8x8 BGR colour histogram normalised to sum 1, flattened to (bins**3,) float32."""
    hist = cv2.calcHist([small], [0, 1, 2], None, [bins] * 3, [0, 256] * 3).ravel()
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float32)


def extract(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Both baseline features of one image file, or None if it cannot be read (runs in a worker)."""
    image = read_bgr(path)
    if image is None:
        return None
    small = resize_width(image)
    return kmeans_feature(small), hist_feature(small)


def init_worker() -> None:
    """Keep each worker process single-threaded so 2 workers use exactly the 2 cores."""
    cv2.setNumThreads(1)


def extract_all(paths: Sequence[Path], pool: ProcessPoolExecutor, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Extract both features for `paths` in the pool, in order; return (kmeans, hist) matrices."""
    km: list[np.ndarray] = []
    hi: list[np.ndarray] = []
    results = pool.map(extract, paths, chunksize=8)
    for path, feats in tqdm(zip(paths, results), total=len(paths), desc=desc, unit="img", file=sys.stderr):
        if feats is None:
            raise LayoutError(f"{path}: cannot be read as an image")
        km.append(feats[0])
        hi.append(feats[1])
    return np.stack(km), np.stack(hi)


def iforest_auroc(train: np.ndarray, test: np.ndarray, labels: Sequence[int]) -> float:
    """Fit IsolationForest on train features; return image AUROC of -score_samples on test."""
    forest = IsolationForest(n_estimators=N_TREES, random_state=SEED).fit(train)
    return float(roc_auc_score(labels, -forest.score_samples(test)))


def evaluate(dataset: Dataset, pool: ProcessPoolExecutor) -> Result:
    """Both baselines' AUROC on one dataset."""
    km_train, hi_train = extract_all(dataset.train, pool, f"{dataset.name} train")
    km_test, hi_test = extract_all(dataset.test, pool, f"{dataset.name} test")
    return Result(
        dataset=dataset.name,
        tutorial_kmeans_iforest=iforest_auroc(km_train, km_test, dataset.labels),
        colour_hist_iforest=iforest_auroc(hi_train, hi_test, dataset.labels),
        n_train=len(dataset.train),
        n_test=len(dataset.test),
    )


def cost_image(datasets: Sequence[Dataset]) -> Path:
    """The image timed by --tutorial-cost: first train/good image of a 'bottle' dataset, else of the first."""
    bottles = [d for d in datasets if "bottle" in d.name.lower()]
    return (bottles or list(datasets))[0].train[0]


def tutorial_cost(path: Path) -> tuple[float, tuple[int, int]]:
    """Seconds for the tutorial's K=2..20 cv2.kmeans sweep on one full-resolution image, and its (w, h)."""
    image = read_bgr(path)
    if image is None:
        raise LayoutError(f"{path}: cannot be read as an image")
    pixels = image.reshape(-1, 3).astype(np.float32)
    start = time.perf_counter()
    for k in tqdm(COST_K_RANGE, desc="tutorial cost (K=2..20)", unit="K", file=sys.stderr):
        kmeans(pixels, k)
    return time.perf_counter() - start, (image.shape[1], image.shape[0])


def format_table(results: Iterable[Result]) -> str:
    """Markdown table of AUROCs to 3 decimals."""
    lines = [
        "| dataset | tutorial k-means + IForest | colour histogram + IForest |",
        "|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.dataset} | {r.tutorial_kmeans_iforest:.3f} | {r.colour_hist_iforest:.3f} |")
    return "\n".join(lines)


def results_json(results: Iterable[Result]) -> dict[str, dict[str, float | int]]:
    """The --json object: {dataset: {tutorial_kmeans_iforest, colour_hist_iforest, n_train, n_test}}."""
    return {
        r.dataset: {
            "tutorial_kmeans_iforest": round(r.tutorial_kmeans_iforest, 4),
            "colour_hist_iforest": round(r.colour_hist_iforest, 4),
            "n_train": r.n_train,
            "n_test": r.n_test,
        }
        for r in results
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Measure reference anomaly-detection baselines (image AUROC) on MVTec-layout folders."
    )
    parser.add_argument(
        "datasets", nargs="*", type=Path, metavar="DATASET_DIR",
        help=f"MVTec-layout folders (default: every folder of {DEFAULT_DATA_ROOT} with train/good)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--tutorial-cost", action="store_true",
        help="only time the tutorial's K=2..20 k-means sweep on one full-resolution bottle image (slow)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    """Load the datasets, then print either the AUROC table/JSON or the tutorial cost."""
    roots = list(args.datasets) or default_roots()
    if not roots:
        raise LayoutError(f"no dataset folders given and none with train/good under {DEFAULT_DATA_ROOT}")
    datasets = [load_dataset(root) for root in roots]  # check every layout before any slow work

    if args.tutorial_cost:
        path = cost_image(datasets)
        seconds, (w, h) = tutorial_cost(path)
        if args.json:
            print(json.dumps({"tutorial_cost": {"image": str(path), "width": w, "height": h,
                                                "k": [COST_K_RANGE.start, COST_K_RANGE.stop - 1],
                                                "seconds_per_image": round(seconds, 3)}}))
        else:
            print(f"tutorial recipe, K=2..20 x cv2.kmeans(attempts={ATTEMPTS}) on one {w}x{h} image "
                  f"({path.name}): {seconds:.2f} s per image")
        return

    context = multiprocessing.get_context("spawn")  # no fork of a process holding OpenCV's thread pool
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context, initializer=init_worker) as pool:
        results = [evaluate(dataset, pool) for dataset in datasets]
    print(json.dumps(results_json(results), indent=2) if args.json else format_table(results))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    try:
        run(args)
    except LayoutError as exc:
        print(f"baselines: error: {exc}", file=sys.stderr)
        return EXIT_LAYOUT
    except KeyboardInterrupt:
        print("baselines: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
