"""The fine pass (inspector/fine.py and its use in profile.py): small defects the 128 px working image averages away.

Parts are rendered in memory with inspector.synthetic at 768 x 576 and judged with a fine pass 384 px across (three
times the working width); the specks pasted are 10 px across in the photo, under one working pixel.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from inspector import profiles
from inspector.config import Config, ConfigError, from_dict
from inspector.fine import (_ECC_CRITERIA, FINE_MAX_IMAGES, FinePart, VariationModel, _ecc, _half, _register,
                            fine_matrix, pick_learners)
from inspector.pipeline import Inspector, decode_for_training, fit_profile, need_for
from inspector import imaging
from inspector.profile import NormalProfile, fine_frame
from inspector.synthetic import make_part

W, H = 768, 576
FINE = 384


def parts(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [make_part(rng, W, H) for _ in range(n)]


def speck(image: np.ndarray, x: int, y: int, diameter: int, factor: float = 0.5) -> np.ndarray:
    """A soft dark spot (brightness x factor) of `diameter` px centred at (x, y)."""
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.circle(mask, (x, y), diameter // 2, 1.0, -1, cv2.LINE_AA)
    out = image.astype(np.float32) * (1.0 - (1.0 - factor) * mask[..., None])
    return np.clip(out, 0, 255).astype(np.uint8)


def on_flange(rng: np.random.Generator) -> tuple[int, int]:
    """A random place on the part's plain blue flange, away from the label band, holes and marker."""
    r = 70 * min(W, H) / 192
    while True:
        a = rng.uniform(0, 2 * math.pi)
        d = rng.uniform(0.3, 0.55) * r
        x, y = W / 2 + d * math.cos(a), H / 2 + d * math.sin(a)
        if abs(y - H / 2) > 0.3 * r and min(abs(x - W / 2 - s * 45 * r / 70) for s in (-1, 1)) > 0.2 * r:
            return int(x), int(y)


@pytest.fixture(scope="module")
def train() -> list[np.ndarray]:
    return parts(0, 40)


@pytest.fixture(scope="module")
def fine_profile(train) -> NormalProfile:
    return NormalProfile(fine_width=FINE).fit(train)


@pytest.fixture(scope="module")
def coarse_profile(train) -> NormalProfile:
    return NormalProfile(fine_width=0).fit(train)


@pytest.fixture(scope="module")
def specked() -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    rng = np.random.default_rng(7)
    goods = parts(1, 12)
    places = [on_flange(rng) for _ in goods]
    return [speck(g, x, y, 10) for g, (x, y) in zip(goods, places)], places


def test_specks_under_a_working_pixel_are_caught_by_the_fine_pass_only(fine_profile, coarse_profile, specked):
    images, _ = specked
    assert fine_profile.fine_ is not None and fine_profile.fine_.size == (FINE, 288)
    caught_fine = (fine_profile.anomaly_score(images) > fine_profile.threshold_).mean()
    caught_coarse = (coarse_profile.anomaly_score(images) > coarse_profile.threshold_).mean()
    assert caught_fine >= 0.9
    assert caught_coarse <= 0.25  # the reason for the fine pass: the working image does not see them


def test_good_parts_stay_within_the_budget_with_the_fine_pass(fine_profile):
    goods = parts(2, 30)
    assert (fine_profile.anomaly_score(goods) > fine_profile.threshold_).sum() <= 2


def test_the_map_is_at_the_fine_size_and_marks_the_speck_where_it_was_photographed(fine_profile, specked):
    images, places = specked
    scores, maps = fine_profile.score_images(images[:4])
    assert maps.shape == (4, 288, FINE)
    for amap, (x, y) in zip(maps, places[:4]):
        py, px = np.unravel_index(int(np.argmax(amap)), amap.shape)
        assert math.hypot(px - x * FINE / W, py - y * FINE / W) <= 4.0


@pytest.mark.parametrize("size", [(FINE, 288), (324, 243), (480, 361)])  # shrunk by 2, 2 (odd height), 3
def test_refine_recovers_a_known_move(size):
    w, h = size
    rng = np.random.default_rng(4)
    base = cv2.resize(make_part(rng, W, H, noise=0.0), (w, h), interpolation=cv2.INTER_AREA)
    model = VariationModel((w, h), 2)
    model.set_state(base.astype(np.float32), np.ones_like(base, np.float32), 1.0)
    move = cv2.getRotationMatrix2D((w / 2, h / 2), 2.0, 1.0)
    move[:, 2] += (5.0 * w / FINE, -3.0 * w / FINE)
    photo = cv2.warpAffine(base, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    found = model.refine(photo, np.eye(2, 3))
    # found maps the photo back into the frame: found after move is the identity near the centre
    both = np.vstack([found, [0, 0, 1]]) @ np.vstack([move, [0, 0, 1]])
    centre = both @ np.array([w / 2, h / 2, 1.0])
    assert math.hypot(centre[0] - w / 2, centre[1] - h / 2) < 0.7 * w / FINE
    assert abs(math.degrees(math.atan2(both[1, 0], both[0, 0]))) < 0.2


def test_refine_takes_a_strip_thinner_than_its_shrink_factor():
    """A fine image 1 px high (a line-scan strip) is registered without error, as before the whole-factor shrink."""
    model = VariationModel((400, 1), 2)
    strip = np.tile(np.linspace(0, 255, 400, dtype=np.float32)[None, :, None], (1, 1, 3))
    model.set_state(strip, np.ones_like(strip), 1.0)
    assert model.template_.shape == (1, 200)
    found = model.refine(strip.astype(np.uint8), np.eye(2, 3))
    assert found.shape == (2, 3) and np.isfinite(found).all()


@pytest.mark.parametrize("size", [(162, 121), (107, 80), (60, 45)])
def test_register_coarse_to_fine_lands_where_full_size_ecc_does(size):
    """Registration at half size and two steps at full size find the motion that 30 full-size ECC steps find (within
    0.02 px), and the true one; an image under twice _HALF_MIN px is registered at full size only."""
    w, h = size
    rng = np.random.default_rng(7)
    part = cv2.resize(make_part(rng, 4 * w, 4 * h, noise=0.0), (w, h), interpolation=cv2.INTER_AREA)
    template = cv2.cvtColor(part, cv2.COLOR_BGR2GRAY).astype(np.float32)
    for angle, dx, dy in [(0.0, 0.0, 0.0), (1.5, 2.3, -1.7), (-3.0, -4.6, 3.2)]:
        truth = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        truth[:, 2] += (dx, dy)
        moved = cv2.warpAffine(template, truth, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)  # moved(x) = template(truth x)
        found = _register(template, moved, _half(template))
        assert (_half(template) is None) == (min(w, h) < 64)
        single = cv2.findTransformECC(template, moved, np.eye(2, 3, dtype=np.float32), cv2.MOTION_EUCLIDEAN,
                                      _ECC_CRITERIA, None, 3)[1]
        centre = np.array([w / 2, h / 2, 1.0])
        assert np.hypot(*(found @ centre - single @ centre)) < 0.02, (angle, dx, dy)
        # ECC finds W with moved(W x) = template(x): the inverse of truth
        inverse = cv2.invertAffineTransform(truth)
        assert np.hypot(*(found @ centre - inverse @ centre)) < 0.1, (angle, dx, dy)


def test_ecc_leaves_its_start_warp_as_given():
    """OpenCV writes its steps into the warp it is handed; the start a caller falls back on must stay as it was."""
    rng = np.random.default_rng(3)
    template = cv2.GaussianBlur(rng.random((80, 100)).astype(np.float32), (9, 9), 3)
    moved = np.roll(template, 2, axis=1)
    start = np.eye(2, 3, dtype=np.float32)
    found = _ecc(template, moved, start, _ECC_CRITERIA)
    assert found is not None and abs(found[0, 2] - 2.0) < 0.1
    assert np.array_equal(start, np.eye(2, 3, dtype=np.float32))


def test_fine_matrix_keeps_pixel_centres():
    shift = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    fine = fine_matrix(shift, 4.0)
    assert np.allclose(fine, [[1.0, 0.0, 4.0], [0.0, 1.0, 0.0]])
    turn = cv2.getRotationMatrix2D((10.0, 5.0), 30.0, 1.0)
    point = np.array([3.0, 7.0, 1.0])
    # a working pixel's centre maps where the matching fine pixels' centre maps
    assert np.allclose(fine_matrix(turn, 4.0) @ np.array([4 * 3.0 + 1.5, 4 * 7.0 + 1.5, 1.0]),
                       4 * (turn @ point) + 1.5)


def test_fine_frame_is_off_without_detail_and_capped_at_the_photo():
    assert fine_frame(W, H, Config().profile) == (320, 240)  # on by default, at 2.5x the working width
    assert fine_frame(2592, 1944, Config().profile) == (320, 240)  # a 5 MP JPEG's 1/8 decode (324 px) covers it
    assert fine_frame(W, H, NormalProfile(fine_width=0).params) is None  # off
    assert fine_frame(W, H, NormalProfile(fine_width=512).params) == (512, 384)
    on = NormalProfile(fine_width=1024).params
    assert fine_frame(W, H, on) == (W, H)  # capped at the photo's width
    assert fine_frame(300, 225, on) is None  # under 2.5x the working width: little to add


def test_a_photo_a_few_percent_over_the_fine_width_is_compared_at_its_own_width():
    """A 5 MP JPEG's 1/8 decode is 324 x 243: the fine pass runs on it as decoded (bringing it to 320 cost 0.6 ms a
    part and only blurred it); a photo more than 10% over the fine width is still brought to it."""
    p = Config().profile
    assert fine_frame(324, 243, p) == (324, 243)
    assert fine_frame(352, 264, p) == (352, 264)
    assert fine_frame(353, 265, p) == (320, 240)
    assert fine_frame(400, 300, p) == (320, 240)
    rng = np.random.default_rng(6)
    cfg = Config()
    jpegs = [cv2.imencode(".jpg", make_part(rng, 2592, 1944))[1].tobytes() for _ in range(6)]
    images = [decode_for_training(d, cfg.input, p) for d in jpegs]
    assert {img.shape for img in images} == {(243, 324, 3)}
    fitted = fit_profile(images, p)
    assert fitted.fine_.size == (324, 243) and fitted.decode_size == (324, 243)
    verdict = Inspector(fitted, "v1", cfg.input).inspect_bytes(jpegs[0], "part.jpg", keep_image=True)
    assert verdict.image.shape == (243, 324, 3) and verdict.anomaly_map.shape == (243, 324)
    assert verdict.verdict == "ok"


def test_the_variation_model_learns_from_a_bounded_sample():
    learners = pick_learners(5000)
    assert len(learners) == FINE_MAX_IMAGES
    assert learners[0] == 0 and learners[-1] == 4999
    assert pick_learners(3) == [0, 1, 2]


def test_save_and_load_keep_the_fine_pass(tmp_path, fine_profile, specked):
    images, _ = specked
    version = profiles.save(tmp_path, fine_profile)
    loaded = profiles.load(tmp_path, version).profile
    assert loaded.fine_ is not None and loaded.fine_.size == fine_profile.fine_.size
    assert np.allclose(loaded.anomaly_score(images[:3]), fine_profile.anomaly_score(images[:3]))


def test_a_profile_saved_before_fine_width_existed_loads_without_a_fine_pass(coarse_profile, specked):
    """Its params lack fine_width: it had no fine pass, so it loads as off (not as today's default) and judges as
    before; a retrain from its params would not switch the fine pass on behind the operator's back."""
    meta, arrays = coarse_profile.get_state()
    params = dict(meta["params"])
    del params["fine_width"]
    loaded = NormalProfile.from_state(dict(meta, params=params), arrays)
    assert loaded.params.fine_width == 0 and loaded.fine_ is None
    images, _ = specked
    assert np.allclose(loaded.anomaly_score(images[:3]), coarse_profile.anomaly_score(images[:3]))


def test_the_fine_term_adds_only_what_lies_beyond_the_cells_top_quantile(fine_profile, specked):
    """Score = cells + max(0, mapped fine - margin), the margin being the cells' (1 - budget) quantile of held-out good
    parts; a profile saved with [offset, gain] only (before the margin) keeps the larger of the two terms."""
    images, _ = specked
    offset, gain, margin = fine_profile.fine_stats_
    local, glob = _cell_terms(fine_profile, images)
    fine = np.array([fine_profile.fine_.assess(fine_profile._fine_part(im, None, None))[0] for im in images])
    cells = fine_profile._combine(local, glob)
    mapped = offset + gain * fine
    assert np.allclose(fine_profile._combine(local, glob, fine), cells + np.maximum(mapped - margin, 0.0))
    meta, arrays = fine_profile.get_state()
    old = NormalProfile.from_state(dict(meta, fine=dict(meta["fine"], stats=[offset, gain])), arrays)
    assert np.allclose(old._combine(local, glob, fine), np.maximum(cells, mapped))


def _cell_terms(profile: NormalProfile, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Raw local and global terms of images as the profile sees them (no registration or lighting: fixtured)."""
    cells, globs = profile._featurise(profile.working_image(profile.display_image(im)) for im in images)
    local, glob, _ = profile._terms(cells, globs)
    return local, glob


def test_a_profile_with_a_damaged_fine_pass_is_refused(fine_profile):
    meta, arrays = fine_profile.get_state()
    bad = dict(arrays, fine_spread=-np.abs(arrays["fine_spread"]) - 1.0)
    with pytest.raises(ValueError, match="negative"):
        NormalProfile.from_state(meta, bad)
    bad = dict(arrays, fine_mean=arrays["fine_mean"][:-1])
    with pytest.raises(ValueError, match="fine_mean has shape"):
        NormalProfile.from_state(meta, bad)
    meta_bad = dict(meta, fine=dict(meta["fine"], stats=[0.0, -1.0]))
    with pytest.raises(ValueError, match="fine stats"):
        NormalProfile.from_state(meta_bad, arrays)


def test_training_images_are_decoded_and_held_at_the_fine_size(tmp_path):
    rng = np.random.default_rng(5)
    data = cv2.imencode(".jpg", make_part(rng, 2048, 1536))[1].tobytes()
    cfg = Config()
    on = NormalProfile(fine_width=512).params
    assert need_for(imaging.probe(data, cfg.input.max_pixels), on)[0] == 512
    assert decode_for_training(data, cfg.input, on).shape == (384, 512, 3)
    off = NormalProfile(fine_width=0).params
    assert decode_for_training(data, cfg.input, off).shape[1] < 512  # off: the working size's decode


def test_the_service_path_judges_with_the_fine_pass(train, specked):
    images, _ = specked
    cfg = Config()
    on = NormalProfile(fine_width=FINE).params
    jpeg = [cv2.imencode(".png", img)[1].tobytes() for img in train[:30]]
    fitted = fit_profile([decode_for_training(d, cfg.input, on) for d in jpeg], on)
    inspector = Inspector(fitted, "v1", cfg.input)
    verdict = inspector.inspect_bytes(cv2.imencode(".png", images[0])[1].tobytes(), "speck.png", keep_image=True)
    assert verdict.verdict == "defect"
    assert verdict.anomaly_map.shape == (288, FINE) and verdict.image.shape == (288, FINE, 3)


def test_config_checks_fine_width(tmp_path):
    with pytest.raises(ConfigError, match="fine_width"):
        from_dict({"profile": {"fine_width": 64}}, tmp_path)
    assert from_dict({"profile": {"fine_width": 512}}, tmp_path).profile.fine_width == 512
