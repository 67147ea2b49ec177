"""Texture channels (features.texture_energy / texture_channels and their use in profile.py): grey and textured
surfaces judged on grain and edges, not on grey level alone.

Every image is generated here: a grey surface with a directional grain, and the same surface with a patch whose
grain runs the other way (same grey levels, so the same palette shares).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from inspector import profiles
from inspector.features import N_TEXTURE, texture_energy
from inspector.profile import NormalProfile

W, H = 256, 192


def grain(rng: np.random.Generator, patch: bool = False) -> np.ndarray:
    """A grey surface with horizontal grain (period ~6 px, random phase), optionally a 48 px patch of vertical grain."""
    ys, xs = np.indices((H, W), dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(ys * (2 * np.pi / 6.0) + phase)
    if patch:
        x0, y0 = int(rng.integers(40, W - 90)), int(rng.integers(40, H - 90))
        inside = (xs >= x0) & (xs < x0 + 48) & (ys >= y0) & (ys < y0 + 48)
        wave = np.where(inside, np.sin(xs * (2 * np.pi / 6.0) + phase), wave)
    grey = 128 + 40 * wave + rng.normal(0, 4, (H, W))
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_energy_goes_to_the_bin_of_the_gradient():
    ys, xs = np.indices((64, 64), dtype=np.float32)
    vertical_stripes = np.repeat((128 + 60 * np.sin(xs * 0.8)).astype(np.uint8)[..., None], 3, axis=2)
    horizontal_stripes = np.ascontiguousarray(vertical_stripes.transpose(1, 0, 2))
    e_v = texture_energy(vertical_stripes).reshape(-1, N_TEXTURE).sum(axis=0)
    e_h = texture_energy(horizontal_stripes).reshape(-1, N_TEXTURE).sum(axis=0)
    assert e_v.argmax() == 0 and e_v[0] > 5 * max(e_v[1:])  # gradient along x: 0 degrees
    assert e_h.argmax() == 2 and e_h[2] > 5 * max(np.delete(e_h, 2))  # along y: 90 degrees
    flat = np.full((32, 32, 3), 90, np.uint8)
    assert texture_energy(flat).max() == 0.0


def test_energy_of_a_diagonal_is_shared_between_neighbouring_bins():
    ys, xs = np.indices((64, 64), dtype=np.float32)
    diagonal = np.repeat((128 + 60 * np.sin((xs + ys) * 0.5)).astype(np.uint8)[..., None], 3, axis=2)
    e = texture_energy(diagonal).reshape(-1, N_TEXTURE).sum(axis=0)
    assert e.argmax() in (1, 3) and e[0] + e[2] < 0.3 * e.sum()


@pytest.fixture(scope="module")
def surfaces() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return ([grain(rng) for _ in range(40)], [grain(rng) for _ in range(20)],
            [grain(rng, patch=True) for _ in range(20)])


def test_a_grain_turned_the_other_way_is_caught_with_texture_and_missed_without(surfaces):
    train, good, bad = surfaces
    with_texture = NormalProfile(texture_weight=1.0, fine_width=0).fit(train)
    without = NormalProfile(texture_weight=0.0, fine_width=0).fit(train)
    caught = {name: (p.anomaly_score(bad) > p.threshold_).mean() for name, p in (("with", with_texture),
                                                                                   ("without", without))}
    truth = [0] * len(good) + [1] * len(bad)
    auroc = {name: roc_auc_score(truth, np.r_[p.anomaly_score(good), p.anomaly_score(bad)])
             for name, p in (("with", with_texture), ("without", without))}
    # with texture every turned patch ranks above every good surface; the threshold (1% false alarms on held-out
    # parts) sits just above the two faintest patches on some machines (BLAS rounding), so recall is not asked at 1
    assert auroc["with"] >= 0.99 and auroc["without"] <= auroc["with"] - 0.05, auroc
    assert caught["with"] >= 0.85 and caught["without"] <= 0.7, caught  # the palette sees it only by chance
    assert (with_texture.anomaly_score(good) > with_texture.threshold_).sum() <= 2


def test_rotation_free_features_leave_texture_out():
    rng = np.random.default_rng(1)
    train = [grain(rng) for _ in range(12)]
    profile = NormalProfile(texture_weight=1.0, fine_width=0, n_folds=2).fit(train)
    k = len(profile.palette_.centres_)
    channels = k + 2 + N_TEXTURE
    assert len(profile.rotation_free_) == (2 + profile.params.n_rings) * (k + 2)
    assert all(i % channels < k + 2 for i in profile.rotation_free_)


def test_texture_scale_is_saved_and_checked(tmp_path, surfaces):
    train, good, _ = surfaces
    profile = NormalProfile(texture_weight=1.0, fine_width=0).fit(train[:20])
    version = profiles.save(tmp_path, profile)
    loaded = profiles.load(tmp_path, version).profile
    assert np.allclose(loaded.texture_scale_, profile.texture_scale_)
    assert np.allclose(loaded.anomaly_score(good[:3]), profile.anomaly_score(good[:3]))
    meta, arrays = profile.get_state()
    with pytest.raises(ValueError, match="texture_scale"):
        NormalProfile.from_state(dict(meta, texture_scale=[1.0, 2.0]), arrays)
    older = dict(meta, format_version=2)  # before texture: read without it, and its arrays no longer fit
    with pytest.raises(ValueError, match="ref_cells_ has shape"):
        NormalProfile.from_state(older, arrays)
