"""Sharpness (inspector/sharpness.py): a blurred photo is told from a sharp one, a defect is not taken for blur."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.sharpness import BLUR_MARGIN, FocusModel, detail
from inspector.synthetic import make_part


@pytest.fixture(scope="module")
def model_and_probes() -> tuple[FocusModel, list[np.ndarray]]:
    rng = np.random.default_rng(5)
    model = FocusModel().fit([make_part(rng, 128, 96) for _ in range(30)])
    return model, [make_part(rng, 128, 96) for _ in range(6)]


def _motion(image: np.ndarray, n: int) -> np.ndarray:
    return cv2.filter2D(image, -1, np.full((1, n), 1.0 / n, np.float32), borderType=cv2.BORDER_REPLICATE)


def test_good_parts_are_sharp_and_blurred_ones_are_not(model_and_probes) -> None:
    model, probes = model_and_probes
    assert model.low_ < 0.0  # the least sharp good part lies below the typical
    for part in probes:
        assert not model.blurred(model.sharpness(part))
        for blurred in (cv2.GaussianBlur(part, (0, 0), 2.0), _motion(part, 6)):
            assert model.blurred(model.sharpness(blurred))
        # a light defocus is less blurred than a strong one, and sensor noise reads sharper
        assert model.sharpness(cv2.GaussianBlur(part, (0, 0), 0.7)) > model.sharpness(cv2.GaussianBlur(part, (0, 0), 2))
        noisy = np.clip(part + np.random.default_rng(1).normal(0, 6, part.shape), 0, 255).astype(np.uint8)
        assert model.sharpness(noisy) > model.sharpness(part)


def test_a_defect_is_not_taken_for_blur(model_and_probes) -> None:
    model, _ = model_and_probes
    rng = np.random.default_rng(9)
    for kind in ("spot", "scratch"):
        for _ in range(4):
            assert not model.blurred(model.sharpness(make_part(rng, 128, 96, defect=kind)))


def test_the_margin_counts_from_the_least_sharp_good_part(model_and_probes) -> None:
    model, _ = model_and_probes
    assert not model.blurred(model.low_ - 0.99 * BLUR_MARGIN) and model.blurred(model.low_ - 1.01 * BLUR_MARGIN)
    again = FocusModel().set_state(model.typical_, model.low_)
    part = model_and_probes[1][0]
    assert again.sharpness(part) == model.sharpness(part)
    assert detail(part).shape == model.typical_.shape == (24, 32)
    assert FocusModel().set_state(model.typical_, 0.0).sharpness(np.zeros((10, 10, 3), np.uint8)) == 0.0  # other size


def test_each_good_part_is_read_against_the_others(model_and_probes) -> None:
    """Against a median it is part of, a part reads sharper than it is, the more so the fewer the parts: with two,
    the soft one read against their median (the mean of the two) reads half as soft as against the other."""
    _, probes = model_and_probes
    parts = [probes[0], cv2.GaussianBlur(probes[1], (0, 0), 1.0)]
    model = FocusModel().fit(parts)
    in_sample = min(model.sharpness(p) for p in parts)
    assert model.low_ < in_sample - 0.1
