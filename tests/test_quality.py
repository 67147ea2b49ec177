"""Detection quality on the real benchmark images in ../shared/data (skips when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector import config
from inspector.evaluate import evaluate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _dataset(name: str) -> Path:
    """The dataset folder, or skip with a reason."""
    path = DATA / name
    if not (path / "train" / "good").is_dir():
        pytest.skip(f"{path} is absent: quality checks need ../shared/data beside the repo")
    return path


@pytest.mark.quality
def test_bottle_quality_at_default_config() -> None:
    """Issue 2 goals on MVTec AD bottle: image AUROC >= 0.98, pixel AUROC >= 0.90."""
    m = evaluate(_dataset("mvtec-ad-bottle"), config.from_dict({}, Path.cwd())).metrics
    assert m["image_auroc"] >= 0.98, m
    assert m["pixel_auroc"] is not None and m["pixel_auroc"] >= 0.90, m
    assert m["false_alarm_rate"] <= 0.10, m  # 20 good test images: 2 false alarms would be 10%


@pytest.mark.quality
def test_casting_quality_at_default_config() -> None:
    """Issue 2 goal on the casting impeller: image AUROC >= 0.99, false alarms near the 1% budget."""
    m = evaluate(_dataset("casting-impeller"), config.from_dict({}, Path.cwd())).metrics
    assert m["image_auroc"] >= 0.99, m
    assert m["false_alarm_rate"] <= 0.03, m


@pytest.mark.quality
def test_bottles_a_little_off_their_fixture_are_named_and_the_station_told() -> None:
    """The 20 good test bottles photographed 4% to the right (the uncovered strip replicated from the edge): named
    `misplaced`, their light read once they are moved back (as they lie, the replicated strip reads 1.5-1.6x at the
    top: 6 of them were `rejected` for lighting before); as photographed none is; and a run of them raises the
    station's placement_x alarm within the window, where the bottles as photographed, 500 in a row, raise none."""
    import cv2
    import numpy as np

    from inspector import drift
    from inspector.pipeline import Inspector
    from inspector.tooling import robustness as rb

    cfg = config.from_dict({}, Path.cwd())
    loaded = rb.load_set(_dataset("mvtec-ad-bottle"), cfg)
    profile = rb._fit(rb._decode_training(loaded.train, cfg)[0], cfg)
    inspector = Inspector(profile, "v1", cfg.input)
    good = [p.image for p in loaded.test if p.kind == "good"]

    def moved(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return cv2.warpAffine(image, np.float32([[1, 0, 0.04 * w], [0, 1, 0]]), (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    home = [inspector.inspect_bytes(rb.encode(im), f"{i}.png") for i, im in enumerate(good)]
    off = [inspector.inspect_bytes(rb.encode(moved(im)), f"{i}.png") for i, im in enumerate(good)]
    assert [v.reason for v in home].count("misplaced") == 0
    reasons = [v.reason for v in off]
    assert reasons.count("misplaced") >= 17 and reasons.count("lighting") <= 1, reasons
    monitor = drift.DriftMonitor(drift.Baseline.from_meta(profile.get_state()[0]))
    rows = [v.as_dict() for v in home] * 25 + [v.as_dict() for v in off] * 3
    raised = [(n, e.signal) for n, row in enumerate(rows) for e in monitor.update(
        row["exposure"], row["score"], ref=n, reason=row["reason"], lies=drift.lies(row)) if e.kind == "raised"]
    placement = [(n, s) for n, s in raised if s in drift.POSITIONS]
    assert placement and placement[0][1] == "placement_x" and 500 <= placement[0][0] < 500 + drift.POSITION_PARTS, raised
