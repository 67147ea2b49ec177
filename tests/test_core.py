"""Tests for the detection core: palette (segment.py), features (features.py), the normal profile (profile.py).

Every image is rendered in memory with inspector.synthetic. Fitted objects are shared through module-scoped
fixtures so the whole file stays fast.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from inspector.features import (
    FeatureLayout,
    cell_features,
    global_features,
    make_layout,
    pixel_channels,
    region_pooling,
)
from inspector.profile import NormalProfile
from inspector.segment import Palette, kmeans_centres, kmeans_segment, lab_weighted
from inspector.synthetic import DEFECTS, make_part

W, H = 256, 192  # source image size for the profile tests (working size is 128 x 96)

# The pure colours make_part paints (BGR).
BLUE = (170, 90, 30)  # flange
YELLOW = (40, 200, 230)  # label band
GREY = (118, 120, 124)  # belt
DARK = (35, 30, 30)  # bolt holes
RED = (40, 40, 200)  # marker
MAGENTA = (255, 0, 255)  # never on a part
GREEN_SPOT = (60, 160, 60)  # the contamination colour used by the `spot` defect


def parts(seed: int, n: int, defect: str | None = None, width: int = W, height: int = H) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [make_part(rng, width, height, defect) for _ in range(n)]


def solid(colour, height: int, width: int) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = colour
    return img


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def train_images() -> list[np.ndarray]:
    return parts(seed=0, n=40)


@pytest.fixture(scope="module")
def profile(train_images) -> NormalProfile:
    return NormalProfile(seed=0).fit(train_images)


@pytest.fixture(scope="module")
def part_pixels() -> np.ndarray:
    return np.concatenate([p.reshape(-1, 3) for p in parts(seed=1, n=6)])


@pytest.fixture(scope="module")
def palette(part_pixels) -> Palette:
    return Palette(n_colours=10, seed=0).fit(part_pixels)


@pytest.fixture(scope="module")
def square_layout() -> FeatureLayout:
    return make_layout(128, 128, 128, 64, 2, 4, 4)


# ---------------------------------------------------------------------------------------------- palette


def test_palette_assign_shapes_dtypes_and_ranges(palette):
    img = parts(seed=2, n=1)[0]
    seg = palette.assign(img)
    k = len(palette.centres_)
    assert palette.centres_.shape == (k, 3) and 2 <= k <= 10
    assert seg.labels.shape == (H, W) and seg.labels.dtype == np.uint8
    assert seg.labels.max() < k
    assert seg.distance.shape == (H, W) and seg.distance.dtype == np.float32
    assert (seg.distance >= 0).all() and np.isfinite(seg.distance).all()
    assert seg.soft.shape == (H, W, k)
    assert (seg.soft >= 0).all()
    np.testing.assert_allclose(seg.soft.sum(axis=-1), 1.0, atol=1e-5)
    # the hard label is the colour with the largest membership
    assert (seg.soft.argmax(axis=-1) == seg.labels).mean() > 0.99


def test_palette_pure_part_colours_get_distinct_labels(palette):
    colours = [BLUE, YELLOW, GREY, DARK, RED]
    seg = palette.assign(np.array([colours], np.uint8))
    labels = seg.labels[0].tolist()
    assert len(set(labels)) == len(colours), labels
    # each pure colour is close to its palette colour
    assert (seg.distance[0] < 10.0).all(), seg.distance


def test_palette_labels_are_consistent_across_parts(palette):
    """Flange pixels of any part take flange-blue palette colours, band pixels yellow ones, never each other's.

    Plain k-means may split a large area (the flange) into a few shades, so a region can hold more than one
    label; but every one of them must be a shade of that region's colour.
    """
    blue_label = int(palette.assign(solid(BLUE, 1, 1)).labels[0, 0])
    yellow_label = int(palette.assign(solid(YELLOW, 1, 1)).labels[0, 0])
    assert blue_label != yellow_label
    shades = palette.colours_bgr().astype(float)
    pure = np.array([BLUE, YELLOW, GREY, DARK, RED], float)
    nearest_pure = np.argmin(((shades[:, None] - pure[None]) ** 2).sum(-1), axis=1)  # per palette colour
    for img in parts(seed=3, n=3):
        seg = palette.assign(img)
        # a patch of flange between the band and the lower holes, and a patch of the band
        flange = seg.labels[H // 2 + 30 - 3: H // 2 + 30 + 4, W // 2 - 3: W // 2 + 4]
        band = seg.labels[H // 2 - 3: H // 2 + 4, W // 2 - 3: W // 2 + 4]
        assert not set(np.unique(flange)) & set(np.unique(band))
        assert (nearest_pure[flange] == 0).all()  # every flange label is a shade of blue
        assert (nearest_pure[band] == 1).all()  # every band label is a shade of yellow
        assert (flange == blue_label).mean() > 0.3
        assert (band == yellow_label).mean() > 0.3


def test_palette_from_centres_rebuilds_identical_lut(palette):
    rebuilt = Palette.from_centres(palette.centres_, palette.chroma_weight, palette.softness)
    np.testing.assert_array_equal(rebuilt.lut_labels_, palette.lut_labels_)
    np.testing.assert_allclose(rebuilt.lut_distance_, palette.lut_distance_, rtol=1e-6)
    img = parts(seed=4, n=1)[0]
    a, b = palette.assign(img), rebuilt.assign(img)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.distance, b.distance, rtol=1e-6)
    np.testing.assert_allclose(a.soft, b.soft, atol=1e-6)


def test_palette_far_colour_has_large_distance(palette):
    seg = palette.assign(np.array([[BLUE, YELLOW, GREY, MAGENTA, (0, 255, 0)]], np.uint8))
    near, far = seg.distance[0, :3], seg.distance[0, 3:]
    assert (far > 100.0).all(), far
    assert far.min() > 10 * near.max()


def test_palette_fit_is_deterministic(part_pixels, palette):
    again = Palette(n_colours=10, seed=0).fit(part_pixels)
    np.testing.assert_array_equal(again.centres_, palette.centres_)
    # centres come ordered darkest first (L channel ascending)
    assert (np.diff(palette.centres_[:, 0]) >= 0).all()


def test_a_palette_asked_for_more_colours_than_the_pixels_hold_gets_one_centre_a_colour():
    """k-means is asked for at most as many centres as there are distinct colours, counted over every pixel even
    where the first few thousand show fewer (a large background first, a small part's colours after it)."""
    background = np.full((6000, 3), 40, np.uint8)
    part = np.array([[20, 60, 220], [220, 200, 30]], np.uint8).repeat(300, axis=0)
    palette = Palette(n_colours=8, softness=0.0, balance=0.0, seed=0).fit(np.vstack([background, part]))
    assert len(palette.centres_) == 3
    # the fit resamples the pixels at random; k-means itself counts past the first rows when they hold fewer colours
    ordered = lab_weighted(np.vstack([background, part]), 2.0)
    assert len(kmeans_centres(ordered, 8, 1, 0)) == 3 and len(kmeans_centres(ordered[:6000], 8, 1, 0)) == 1
    seg = palette.assign(np.array([[(40, 40, 40), (20, 60, 220), (220, 200, 30)]], np.uint8))
    assert len(set(seg.labels.ravel().tolist())) == 3
    assert float(seg.distance.max()) < 5.0  # within the lookup table's quantisation of its own colour


def test_palette_without_softness_is_one_hot(part_pixels):
    hard = Palette(n_colours=6, softness=0.0, seed=0).fit(part_pixels[::7])
    seg = hard.assign(parts(seed=5, n=1)[0])
    np.testing.assert_array_equal(seg.soft.max(axis=-1), 1.0)
    np.testing.assert_array_equal(seg.soft.argmax(axis=-1), seg.labels)


def test_palette_memberships_hold_no_subnormal_values(part_pixels):
    """Subnormal floats slow every product over the channels several times; they are flushed to zero."""
    soft = Palette(n_colours=12, softness=0.5, seed=0).fit(part_pixels[::7]).lut_soft_
    tiny = np.finfo(np.float32).tiny
    assert not ((soft > 0) & (soft < tiny)).any()
    assert (soft == 0).any()  # far colours do get exactly zero membership
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)


def test_kmeans_segment_shape_and_colour_count():
    img = parts(seed=6, n=1, width=96, height=72)[0]
    out = kmeans_segment(img, k=4, attempts=1)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 4
    # the segmented image stays close to the original on average (it is a quantisation, not noise)
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 20


def test_kmeans_segment_reproduces_an_image_of_exactly_k_flat_colours():
    img = np.zeros((30, 30, 3), np.uint8)
    img[:, :10] = BLUE
    img[:, 10:20] = YELLOW
    img[:, 20:] = GREY
    out = kmeans_segment(img, k=3, attempts=2)
    np.testing.assert_array_equal(out, img)


# ---------------------------------------------------------------------------------------------- features


@pytest.mark.parametrize(
    "image_size, width, cells", [((256, 192), 128, 64), ((160, 120), 130, 40), ((100, 300), 97, 10), ((64, 64), 64, 64)]
)
def test_make_layout_is_grid_aligned(image_size, width, cells):
    lay = make_layout(image_size[0], image_size[1], width, cells, 3, 4, 4)
    assert lay.width % lay.stride == 0 and lay.height % lay.stride == 0
    assert lay.width // lay.stride == cells
    assert lay.grid == (lay.height // lay.stride, lay.width // lay.stride)
    assert lay.window == 3 * lay.stride
    # the aspect ratio is kept to within one stride
    assert abs(lay.height - lay.width * image_size[1] / image_size[0]) <= lay.stride


def _channels(palette: Palette, img: np.ndarray, novel: float = 50.0) -> np.ndarray:
    return pixel_channels(palette.assign(img), len(palette.centres_), novel)


@pytest.mark.parametrize("shape", [(96, 128, 14), (37, 53, 3), (1, 5, 2), (4, 6, 1), (9, 11, 200)])
def test_integral_image_matches_numpy_cumsum(shape: tuple[int, int, int]) -> None:
    """cv2.integral (in chunks past OpenCV's channel limit) equals numpy's double cumsum."""
    from inspector.features import _integral

    maps = np.random.default_rng(3).random(shape, dtype=np.float32)
    h, w, c = shape
    expected = np.zeros((h + 1, w + 1, c), dtype=np.float64)
    np.cumsum(np.cumsum(maps, axis=0, dtype=np.float64), axis=1, out=expected[1:, 1:])
    got = _integral(maps)
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)


def test_window_sums_are_the_means_over_each_window() -> None:
    """Every cell is the mean of its window, computed directly, with border windows shifted inside."""
    from inspector.features import _window_sums

    lay = make_layout(40, 30, 40, 10, 3, 4, 4)  # stride 4, window 12: windows overlap and hit every border
    maps = np.random.default_rng(4).random((lay.height, lay.width, 5), dtype=np.float32)
    got = _window_sums(maps, lay)
    gh, gw = lay.grid
    assert got.shape == (gh, gw, 5) and got.dtype == np.float32
    pad = (lay.window - lay.stride) // 2
    for gy in range(gh):
        for gx in range(gw):
            y0 = min(max(gy * lay.stride - pad, 0), lay.height - lay.window)
            x0 = min(max(gx * lay.stride - pad, 0), lay.width - lay.window)
            want = maps[y0:y0 + lay.window, x0:x0 + lay.window].astype(np.float64).mean(axis=(0, 1))
            np.testing.assert_allclose(got[gy, gx], want, rtol=1e-6)


def test_cell_features_shape_and_shares_sum_to_one(palette):
    lay = make_layout(W, H, 128, 64, 2, 4, 4)
    img = cv2.resize(parts(seed=7, n=1)[0], (lay.width, lay.height), interpolation=cv2.INTER_AREA)
    k = len(palette.centres_)
    ch = _channels(palette, img, novel=20.0)
    assert ch.shape == (lay.height, lay.width, k + 2)
    seg = palette.assign(img)
    np.testing.assert_array_equal(ch[..., :k], seg.soft)
    np.testing.assert_array_equal(ch[..., k + 1], seg.distance > 20.0)  # the novel mask, pixel by pixel
    assert 0 < ch[..., k + 1].mean() < 0.2
    cells = cell_features(ch, lay)
    gh, gw = lay.grid
    assert cells.shape == (gh, gw, k + 2) and cells.dtype == np.float32
    np.testing.assert_allclose(cells[..., :k].sum(axis=-1), 1.0, atol=1e-4)
    assert (cells >= -1e-6).all() and (cells <= 1 + 1e-6).all()


def test_boundary_density_zero_on_uniform_image_and_positive_at_edge(palette):
    lay = make_layout(128, 96, 128, 64, 2, 4, 4)
    k = len(palette.centres_)
    uniform = solid(BLUE, lay.height, lay.width)
    cells = cell_features(_channels(palette, uniform), lay)
    np.testing.assert_array_equal(cells[..., k], 0.0)

    edge = uniform.copy()
    edge[:, lay.width // 2:] = YELLOW
    cells = cell_features(_channels(palette, edge), lay)
    boundary = cells[..., k]
    col = (lay.width // 2) // lay.stride  # cell whose window covers the edge
    assert (boundary[:, col - 1: col + 1] > 0).any(axis=1).all()
    assert (boundary[:, :col - 3] == 0).all() and (boundary[:, col + 3:] == 0).all()


def test_novel_share_is_one_where_every_pixel_is_novel(palette):
    lay = make_layout(128, 96, 128, 64, 2, 4, 4)
    k = len(palette.centres_)
    img = solid(BLUE, lay.height, lay.width)
    img[:, : lay.width // 4] = MAGENTA  # the left quarter is a colour far from every palette colour
    cells = cell_features(_channels(palette, img, novel=50.0), lay)
    novel = cells[..., k + 1]
    quarter = (lay.width // 4) // lay.stride
    np.testing.assert_array_equal(novel[:, : quarter - 2], 1.0)
    np.testing.assert_array_equal(novel[:, quarter + 2:], 0.0)


def test_region_pooling_rows_sum_to_one(square_layout):
    for lay in (square_layout, make_layout(W, H, 128, 64, 2, 4, 4), make_layout(W, H, 96, 32, 3, 3, 5)):
        pool = region_pooling(lay)
        assert pool.shape == (1 + lay.n_rings + 1 + lay.coarse**2, lay.height * lay.width)
        np.testing.assert_allclose(pool.sum(axis=1), 1.0, atol=1e-4)
        assert (pool >= 0).all()
        # whole image, then rings and coarse cells that each partition the pixels
        member = pool > 0
        assert member[0].all()
        np.testing.assert_array_equal(member[1: 2 + lay.n_rings].sum(axis=0), 1)
        np.testing.assert_array_equal(member[2 + lay.n_rings:].sum(axis=0), 1)


def _rotation_pair(palette, square_layout):
    img = cv2.resize(parts(seed=8, n=1, width=160, height=160)[0], (square_layout.width, square_layout.height))
    pool = region_pooling(square_layout)
    k = len(palette.centres_)
    n_rot = 2 + square_layout.n_rings  # whole image and rings (the rotation-free regions)

    def feats(im):
        g = global_features(_channels(palette, np.ascontiguousarray(im)), pool)
        assert g.shape == (pool.shape[0] * (k + 2),)
        return g.reshape(pool.shape[0], k + 2)[:n_rot]

    return feats(img), feats(np.rot90(img, 2)), k


def test_global_features_shares_and_novel_are_rotation_free(palette, square_layout):
    a, b, k = _rotation_pair(palette, square_layout)
    np.testing.assert_allclose(a[:, :k], b[:, :k], atol=1e-5)  # segment shares
    np.testing.assert_allclose(a[:, k + 1], b[:, k + 1], atol=1e-5)  # novel share
    # the coarse-grid part is *not* rotation-free: a real part is not point-symmetric, so it must differ
    lay = square_layout
    img = cv2.resize(parts(seed=8, n=1, width=160, height=160)[0], (lay.width, lay.height))
    pool = region_pooling(lay)
    ga = global_features(_channels(palette, img), pool).reshape(pool.shape[0], -1)[2 + lay.n_rings:]
    gb = global_features(_channels(palette, np.ascontiguousarray(np.rot90(img, 2))), pool).reshape(
        pool.shape[0], -1)[2 + lay.n_rings:]
    assert np.abs(ga - gb).max() > 0.05


def test_global_features_boundary_is_exactly_rotation_free(palette, square_layout):
    """Regression: boundary pixels were marked only against the right/lower neighbour, so the boundary
    density of the whole image and rings changed (by ~0.01) under a 180-degree rotation."""
    a, b, k = _rotation_pair(palette, square_layout)
    np.testing.assert_allclose(a[:, k], b[:, k], atol=1e-5)


# ---------------------------------------------------------------------------------------------- profile: API


def test_fit_returns_self_and_learned_attributes_end_in_underscore(train_images):
    est = NormalProfile(seed=0)
    assert not [name for name in vars(est) if name.endswith("_")]  # nothing learned before fit
    assert est.fit(train_images[:10]) is est
    learned = {name for name in vars(est) if name.endswith("_")}
    for name in ("layout_", "palette_", "novel_distance_", "ref_cells_", "ref_global_", "threshold_",
                 "offset_", "calibration_", "oof_scores_", "n_train_"):
        assert name in learned, name
    assert set(vars(est)) - learned == {"params"}


def test_sklearn_conventions(profile):
    imgs = parts(seed=10, n=3) + parts(seed=11, n=3, defect="spot")
    scores = profile.anomaly_score(imgs)
    samples = profile.score_samples(imgs)
    decision = profile.decision_function(imgs)
    pred = profile.predict(imgs)
    assert scores.shape == (6,) and np.isfinite(scores).all()
    np.testing.assert_allclose(samples, -scores)
    np.testing.assert_allclose(decision, samples - profile.offset_)
    assert profile.offset_ == -profile.threshold_
    assert set(np.unique(pred)) <= {-1, 1}
    np.testing.assert_array_equal(pred, np.where(scores > profile.threshold_, -1, 1))
    assert (pred[3:] == -1).all()  # the spots
    s2, maps = profile.score_images(imgs)
    np.testing.assert_allclose(s2, scores)
    assert maps.shape == (6, *profile.layout_.grid)
    assert (maps >= 0).all()


def test_good_parts_mostly_pass(profile):
    scores = profile.anomaly_score(parts(seed=20, n=20))
    assert (scores > profile.threshold_).sum() <= 2, scores


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_kind_is_detected(profile, defect):
    scores = profile.anomaly_score(parts(seed=30 + DEFECTS.index(defect), n=10, defect=defect))
    assert (scores > profile.threshold_).sum() >= 8, scores


def test_defects_score_higher_than_good_parts(profile):
    good = profile.anomaly_score(parts(seed=21, n=10))
    bad = profile.anomaly_score(parts(seed=22, n=10, defect="spot"))
    assert np.median(bad) > np.max(good)


def test_other_image_size_is_resized_to_the_working_size(profile):
    big = parts(seed=23, n=2, width=2 * W, height=2 * H)
    bad = parts(seed=24, n=2, width=2 * W, height=2 * H, defect="scratch")
    scores, maps = profile.score_images(big + bad)
    assert maps.shape[1:] == profile.layout_.grid
    assert (scores[2:] > profile.threshold_).all() and (scores[2:] > scores[:2].max()).all()


@pytest.mark.parametrize("offset", [(25, 30), (-30, 25), (20, -25)])
def test_anomaly_map_locates_a_painted_spot(profile, offset):
    img = parts(seed=40, n=1)[0]
    centre = (W // 2 + offset[0], H // 2 + offset[1])
    cv2.circle(img, centre, 7, GREEN_SPOT, -1, cv2.LINE_AA)
    scores, maps = profile.score_images([img])
    assert scores[0] > profile.threshold_
    up = cv2.resize(maps[0].astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(np.argmax(up), up.shape)
    assert math.hypot(x - centre[0], y - centre[1]) <= 20, ((x, y), centre)


@pytest.mark.parametrize("offset", [(25, 30), (-30, -25)])
def test_a_defect_verdict_says_where_its_map_peaks_and_an_ok_one_says_nothing(profile, offset):
    """peak_x / peak_y: fractions of the photo's width and height where the anomaly map peaks (the station's
    same-place alarm compares them across parts), for a defect only."""
    from inspector.config import InputConfig
    from inspector.pipeline import Inspector

    judge = Inspector(profile, "v1", InputConfig())
    img = parts(seed=40, n=1)[0]
    good = judge.inspect_bytes(cv2.imencode(".png", img)[1].tobytes(), "good.png")
    assert good.verdict == "ok" and good.peak_x is None and good.peak_y is None
    centre = (W // 2 + offset[0], H // 2 + offset[1])
    cv2.circle(img, centre, 7, GREEN_SPOT, -1, cv2.LINE_AA)
    bad = judge.inspect_bytes(cv2.imencode(".png", img)[1].tobytes(), "bad.png")
    assert bad.verdict == "defect" and type(bad.peak_x) is float and json.dumps(bad.as_dict())
    assert abs(bad.peak_x - centre[0] / W) <= 0.06 and abs(bad.peak_y - centre[1] / H) <= 0.08, (bad, centre)


def test_anomaly_map_is_quiet_on_a_good_part(profile):
    good = parts(seed=41, n=1)[0]
    spotted = good.copy()
    cv2.circle(spotted, (W // 2 + 25, H // 2 + 30), 7, GREEN_SPOT, -1, cv2.LINE_AA)
    _, maps = profile.score_images([good, spotted])
    assert maps[1].max() > 2 * maps[0].max()


def test_nearest_distances_are_running_minima_of_cell_l1_distances() -> None:
    """Row k is each cell's smallest L1 distance to the first k + 1 picked references, as numpy computes it."""
    from inspector.profile import _nearest_distances

    rng = np.random.default_rng(5)
    ref = rng.random((9, 300, 7), dtype=np.float32)
    cells = rng.random((300, 7), dtype=np.float32)
    picks = np.array([4, 0, 8, 2, 7])
    got = _nearest_distances(ref, picks, cells)
    expected = np.minimum.accumulate(np.abs(ref[picks] - cells[None]).sum(axis=2), axis=0)
    assert got.shape == (5, 300) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (np.diff(got, axis=0) <= 0).all()


# ---------------------------------------------------------------------------------------------- calibration


def test_threshold_is_the_higher_quantile_of_oof_scores(profile, train_images):
    far = profile.params.false_alarm_rate
    oof = profile.oof_scores_  # the training parts', then their lighting copies' (variations.py)
    assert oof.shape == (len(train_images) * (1 + profile.params.lighting_copies),) and np.isfinite(oof).all()
    assert profile.threshold_ == float(np.quantile(oof, 1.0 - far, method="higher"))
    assert profile.threshold_ in oof  # "higher" picks an observed score
    cal = profile.calibration_
    assert cal.n_good == len(train_images) == profile.n_train_
    assert cal.threshold == profile.threshold_
    assert cal.false_alarm_rate == far
    assert cal.oof_false_alarm_rate == pytest.approx(float((oof > profile.threshold_).mean()))
    assert cal.oof_false_alarm_rate <= far


def test_larger_false_alarm_rate_gives_lower_or_equal_threshold(profile, train_images):
    loose = NormalProfile(seed=0, false_alarm_rate=0.2).fit(train_images)
    np.testing.assert_array_equal(loose.oof_scores_, profile.oof_scores_)
    assert loose.threshold_ <= profile.threshold_
    assert loose.threshold_ < profile.threshold_  # 20% vs 1% of 40 distinct scores cannot pick the same one
    assert loose.calibration_.oof_false_alarm_rate <= 0.2
    assert loose.calibration_.oof_false_alarm_rate >= profile.calibration_.oof_false_alarm_rate


@pytest.mark.parametrize("n", [0, 1])
def test_fit_needs_at_least_two_images(train_images, n):
    with pytest.raises(ValueError, match="at least 2"):
        NormalProfile(seed=0).fit(train_images[:n])


@pytest.mark.parametrize("n", [2, 20])
def test_fit_works_with_few_images(train_images, n):
    est = NormalProfile(seed=0).fit(iter(train_images[:n]))  # any iterable, not only a list
    assert est.calibration_.n_good == n
    assert np.isfinite(est.threshold_)
    assert est.ref_cells_.shape[0] == est.n_ref_ == n * (1 + est.params.lighting_copies)  # with lighting copies
    scores = est.anomaly_score(parts(seed=50, n=2, defect="spot"))
    assert np.isfinite(scores).all()
    if n == 20:
        assert (scores > est.threshold_).all()


def test_same_seed_and_data_give_identical_results(profile, train_images):
    again = NormalProfile(seed=0).fit(train_images)
    assert again.threshold_ == profile.threshold_
    np.testing.assert_array_equal(again.oof_scores_, profile.oof_scores_)
    np.testing.assert_array_equal(again.palette_.centres_, profile.palette_.centres_)
    imgs = parts(seed=60, n=3)
    np.testing.assert_array_equal(again.anomaly_score(imgs), profile.anomaly_score(imgs))
