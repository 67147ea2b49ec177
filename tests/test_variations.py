"""Lighting copies (inspector/variations.py): a grey product judged under the lightings a line must tolerate,
on generated parts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.profile import NormalProfile
from inspector.synthetic import make_part
from inspector.variations import (ACCEPT_CAST, ACCEPT_GAIN, ACCEPT_GAMMA, ACCEPT_OFFSET, MAX_COPIED, Variation,
                                  copied_parts, draw, relit)


def test_draw_stays_in_the_range_every_line_must_tolerate() -> None:
    rng = np.random.default_rng(0)
    drawn = [draw(rng) for _ in range(500)]
    assert max(abs(v.gain - 1.0) for v in drawn) <= ACCEPT_GAIN
    assert max(abs(v.offset) for v in drawn) <= ACCEPT_OFFSET
    assert max(abs(v.warmth) for v in drawn) <= ACCEPT_CAST
    assert max(abs(v.gamma - 1.0) for v in drawn) <= ACCEPT_GAMMA
    # the range is used, not a corner of it
    assert max(abs(v.offset) for v in drawn) > 0.9 * ACCEPT_OFFSET
    assert min(v.gain for v in drawn) < 1.0 - 0.9 * ACCEPT_GAIN


def test_a_dark_product_gets_offsets_and_gammas_that_move_its_level_by_at_most_the_gain() -> None:
    rng = np.random.default_rng(1)
    typical = 18.0 / 255.0  # a black tyre
    for v in (draw(rng, typical) for _ in range(300)):
        assert abs(v.offset) <= ACCEPT_GAIN * 18.0 + 1e-9
        assert abs(typical ** (v.gamma - 1.0) - 1.0) <= 1.1 * ACCEPT_GAIN


def test_relit_applies_gain_tint_gamma_and_offset_per_channel() -> None:
    image = np.full((2, 2, 3), 100, np.uint8)
    out = relit(image, Variation(gain=1.1, offset=-10.0, warmth=0.05, gamma=1.0))
    assert out[0, 0].tolist() == [round(100 * 1.1 * 0.95 - 10), round(100 * 1.1 - 10), round(100 * 1.1 * 1.05 - 10)]
    assert relit(np.full((1, 1, 3), 250, np.uint8), Variation(1.1, 10.0, 0.0, 1.0)).max() == 255  # clipped


def test_large_training_sets_copy_an_even_subset() -> None:
    assert copied_parts(10).tolist() == list(range(10))
    many = copied_parts(5 * MAX_COPIED)
    assert len(many) == MAX_COPIED and many[0] == 0 and many[-1] == 5 * MAX_COPIED - 1


def _grey_part(rng: np.random.Generator) -> np.ndarray:
    """A grey product in a narrow band of grey levels (a casting on its grey background): the generated part's
    structure, grey, squeezed into 120..200, with sensor noise."""
    grey = cv2.cvtColor(make_part(rng, 160, 120), cv2.COLOR_BGR2GRAY).astype(np.float64)
    grey = 120.0 + 80.0 * (grey - grey.min()) / max(np.ptp(grey), 1.0) + rng.normal(0.0, 2.0, grey.shape)
    return cv2.cvtColor(np.clip(np.round(grey), 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def grey_parts() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(3)
    return [_grey_part(rng) for _ in range(60)], [_grey_part(rng) for _ in range(40)]


@pytest.mark.parametrize("change", [dict(offset=-10.0), dict(offset=10.0), dict(gamma=1.1), dict(warmth=0.05)])
def test_a_grey_product_stays_ok_under_a_tolerated_lighting(grey_parts, change: dict) -> None:
    train, good = grey_parts
    profile = NormalProfile(rotation="off").fit(train)
    lighting = Variation(**{"gain": 1.0, "offset": 0.0, "warmth": 0.0, "gamma": 1.0, **change})
    flagged = profile.anomaly_score([relit(g, lighting) for g in good]) > profile.threshold_
    assert flagged.sum() <= 2, f"{change}: {flagged.sum()} of {len(good)} good grey parts flagged"


def test_copies_are_references_and_held_out_with_their_part(grey_parts) -> None:
    train, _ = grey_parts
    profile = NormalProfile(rotation="off", lighting_copies=2).fit(train[:20])
    assert profile.n_train_ == 20 and profile.n_ref_ == 60
    assert len(profile.ref_cells_) == 60 and len(profile.oof_scores_) == 60
    assert "40 lighting copies" in profile.calibration_.method and profile.calibration_.n_good == 20
    plain = NormalProfile(rotation="off", lighting_copies=0).fit(train[:20])
    assert plain.n_ref_ == 20
