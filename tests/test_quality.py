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
