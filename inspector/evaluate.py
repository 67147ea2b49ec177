"""`inspector eval`: fit on an MVTec-layout folder's train/good, score its test/ images, measure quality.

Layout: train/good/*, test/good/*, test/<defect_type>/*, optional ground_truth/<defect_type>/NNN_mask.png.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from inspector import imaging
from inspector.config import Config
from inspector.errors import DatasetError, ImageRejected
from inspector.pipeline import Inspector, Progress, fit_profile, list_images, load_training_images

MASK_SIDE = 256  # masks and maps are compared at this resolution for pixel AUROC


@dataclass
class EvalSet:
    """Files of one MVTec-layout folder."""

    train: list[Path]
    test: list[tuple[Path, str]]  # (file, defect type or "good")
    masks: dict[Path, Path]  # test file -> its ground-truth mask


@dataclass
class EvalResult:
    """Metrics (the JSON object) plus per-image data for the report."""

    metrics: dict[str, Any]
    names: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    top: list[tuple[str, float, np.ndarray, np.ndarray]] = field(default_factory=list)  # overlays for the report
    paths: dict[str, Path] = field(default_factory=dict)  # name -> the test image file (the report links it)


def find_eval_set(root: Path, patterns: tuple[str, ...]) -> EvalSet:
    """Discover an MVTec-layout folder; DatasetError naming what is missing."""
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}")
    for required in ("train/good", "test/good"):
        if not (root / required).is_dir():
            raise DatasetError(f"{root} lacks {required}/ (expected MVTec layout: train/good, test/good, test/<type>)")
    train = list_images(root / "train" / "good", patterns)
    if not train:
        raise DatasetError(f"no images in {root / 'train' / 'good'}")
    test: list[tuple[Path, str]] = []
    masks: dict[Path, Path] = {}
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        for f in list_images(folder, patterns):
            test.append((f, folder.name))
            mask = root / "ground_truth" / folder.name / f"{f.stem}_mask.png"
            if folder.name != "good" and mask.is_file():
                masks[f] = mask
    if not any(t != "good" for _, t in test):
        raise DatasetError(f"{root / 'test'} has no defect folders (test/<defect_type>/)")
    return EvalSet(train, test, masks)


def flagged_above(scores: np.ndarray) -> np.ndarray:
    """Scores (N,) with +inf (a part flagged whatever its score) replaced by a finite value above every other;
    ranking metrics such as AUROC depend on the order only."""
    finite = scores[np.isfinite(scores)]
    top = (float(finite.max()) + 1.0) if finite.size else 1.0
    return np.where(np.isposinf(scores), top, scores)


def _mask(path: Path | None) -> np.ndarray:
    """Ground-truth mask at MASK_SIDE x MASK_SIDE as bool; all-False when absent."""
    if path is None:
        return np.zeros((MASK_SIDE, MASK_SIDE), bool)
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise DatasetError(f"unreadable mask: {path}")
    return cv2.resize(m, (MASK_SIDE, MASK_SIDE), interpolation=cv2.INTER_NEAREST) > 127


N_WRONG = 48  # overlays kept for the report of missed defects, and of false alarms (each)


def evaluate(root: Path, cfg: Config, progress: Progress | None = None, n_top: int = 8) -> EvalResult:
    """Fit with the current config on train/good and score every test image; returns the metrics, and for the
    report the n_top most anomalous parts' overlays and up to N_WRONG missed defects and false alarms each."""
    es = find_eval_set(root, cfg.input.patterns)
    ts = load_training_images(es.train, cfg, progress)
    profile = fit_profile(ts.images, cfg.profile)
    inspector = Inspector(profile, "eval", cfg.input)
    names, types, scores, ms, labels = [], [], [], [], []
    reasons: list[str | None] = []
    map_pairs: list[tuple[np.ndarray, np.ndarray]] = []
    kept: list[tuple[str, float, np.ndarray, np.ndarray]] = []
    wrong: dict[bool, list[tuple[str, float, np.ndarray, np.ndarray]]] = {True: [], False: []}  # defective?
    paths: dict[str, Path] = {}
    with_masks = bool(es.masks)
    items = progress(es.test, total=len(es.test)) if progress else es.test
    for path, kind in items:
        data = imaging.read_file(path, cfg.input.max_bytes)
        start = time.perf_counter()
        v = inspector.inspect_bytes(data, path.name, keep_image=True)
        ms.append((time.perf_counter() - start) * 1000.0)
        if v.assessment is None:  # the file itself was rejected (not an image, truncated, ...)
            raise ImageRejected("eval", f"test image {path} was rejected: {v.reason}: {v.detail}")
        names.append(f"{kind}/{path.name}")
        types.append(kind)
        # a part flagged for its placement or lighting counts as flagged whatever its score
        scores.append(v.assessment.score if v.reason is None else math.inf)
        reasons.append(v.reason)
        labels.append(kind != "good")
        if with_masks:
            up = cv2.resize(v.anomaly_map, (MASK_SIDE, MASK_SIDE), interpolation=cv2.INTER_LINEAR)
            map_pairs.append((_mask(es.masks.get(path)), up))
        shown = (f"{kind}/{path.name}", scores[-1], v.image, v.anomaly_map)
        paths[shown[0]] = path
        kept.append(shown)
        kept = sorted(kept, key=lambda t: -t[1])[:n_top]
        if (scores[-1] > profile.threshold_) != labels[-1] and len(wrong[labels[-1]]) < N_WRONG:
            wrong[labels[-1]].append(shown)  # a missed defect, or a false alarm
    y = np.array(labels)
    s = flagged_above(np.array(scores))
    thr = profile.threshold_
    pixel_auroc = None
    if with_masks:
        gt = np.concatenate([m.ravel() for m, _ in map_pairs])
        pred = np.concatenate([p.ravel() for _, p in map_pairs])
        pixel_auroc = float(roc_auc_score(gt, pred)) if gt.any() else None
    per_type = {t: float((s[np.array(types) == t] > thr).mean()) for t in sorted(set(types)) if t != "good"}
    metrics = {
        "dataset": str(root),
        "image_auroc": float(roc_auc_score(y, s)),
        "average_precision": float(average_precision_score(y, s)),
        "threshold": float(thr),
        "false_alarm_rate": float((s[~y] > thr).mean()),
        "false_alarm_budget": cfg.profile.false_alarm_rate,
        "recall": float((s[y] > thr).mean()),
        "per_type_recall": per_type,
        "pixel_auroc": pixel_auroc,
        "ms_per_image": float(np.median(ms)),
        "n_train": len(ts.images),
        "n_test": len(s),
        "n_train_rejected": len(ts.rejected),
        "n_rejected_lighting": reasons.count("lighting"),
        "n_not_located": reasons.count("not_located"),
        "registration": (profile.locator_.mode_ if profile.locator_ is not None else None),
        "scale_search": profile.searches_scale(),
        "shading": profile.lighting_ is not None and profile.lighting_.shading,
        "even_light": profile.evens_light(),
    }
    return EvalResult(metrics, names, types, s, kept + wrong[True] + wrong[False], paths)
