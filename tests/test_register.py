"""Registration (inspector/register.py) on generated parts: shifts and turns are found, maps are drawn back on
the part as photographed, and something that is not the part does not match."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector import register
from inspector.register import Locator, Placement, grey, rotation_matrix
from inspector.synthetic import make_part

W, H = 128, 96


def _placed(image: np.ndarray, angle: float, dx: float, dy: float) -> np.ndarray:
    """The image turned by `angle` degrees about its centre and moved by (dx, dy) pixels, border replicated."""
    m = rotation_matrix(angle, *image.shape[:2])
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _tabbed(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """n generated parts with a dark tab on one side (the flange alone looks nearly the same turned by 180)."""
    out = []
    for _ in range(n):
        part = make_part(rng, W, H)
        cv2.rectangle(part, (88, 40), (100, 52), (30, 30, 30), -1)
        out.append(part)
    return out


@pytest.fixture(scope="module")
def parts() -> list[np.ndarray]:
    """24 parts with a tab (_tabbed)."""
    return _tabbed(np.random.default_rng(7), 24)


def _undo_error(loc: Locator, part: np.ndarray, angle: float, dx: float, dy: float) -> tuple[float, float]:
    """Angle (degrees) and largest displacement (pixels) between placing a part and placing it moved."""
    forward = rotation_matrix(angle, H, W)
    forward[:, 2] += (dx, dy)
    moved = np.vstack([loc.locate(_placed(part, angle, dx, dy)).matrix, [0, 0, 1]]) @ np.vstack([forward, [0, 0, 1]])
    still = np.vstack([loc.locate(part).matrix, [0, 0, 1]])
    diff = moved @ np.linalg.inv(still)  # identity when both land on the same place of the reference
    corners = np.array([[30, 25, 1], [W - 30, 25, 1], [30, H - 25, 1], [W - 30, H - 25, 1]], float)
    moved_by = np.abs(corners @ diff[:2].T - corners[:, :2]).max()
    angle_left = (np.degrees(np.arctan2(diff[1, 0], diff[0, 0])) + 180) % 360 - 180
    return abs(angle_left), float(moved_by)


@pytest.mark.parametrize("angle,dx,dy", [(0, 7, -5), (6, -9, 4), (-9, 3, 8)])
def test_small_turns_and_shifts_are_found(parts: list[np.ndarray], angle: float, dx: float, dy: float) -> None:
    loc = Locator("small").fit(parts[:20])
    for part in parts[20:]:
        angle_left, moved_by = _undo_error(loc, part, angle, dx, dy)
        assert angle_left < 1.0 and moved_by < 1.5, (angle_left, moved_by)


@pytest.mark.parametrize("angle", [37.0, 143.0, 251.0])
def test_any_turn_is_found(parts: list[np.ndarray], angle: float) -> None:
    loc = Locator("any").fit(parts[:20])
    for part in parts[20:]:
        angle_left, moved_by = _undo_error(loc, part, angle, 5, -4)
        assert angle_left < 1.5 and moved_by < 2.0, (angle_left, moved_by)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_turn_is_found_on_parts_placed_anywhere_within_10_percent(seed: int) -> None:
    """Parts placed by hand, in training and on the line: turned any way and moved up to max_shift (10% of the field)
    each way. Turned about the frame's centre, a part lying off it moves further than that (8% off and turned half a
    turn: 16%); before the search also ran on the part first brought to the centre, 12, 6 and 2 of these 60 were read
    more than 3 degrees off at seeds 1, 2 and 3 (10, 5 and 2 of them half a turn)."""
    rng = np.random.default_rng(seed)
    parts = _tabbed(rng, 40)

    def anywhere() -> tuple[float, float, float]:
        return float(rng.uniform(0, 360)), float(rng.uniform(-0.1, 0.1) * W), float(rng.uniform(-0.1, 0.1) * H)

    loc = Locator("any").fit([_placed(p, *anywhere()) for p in parts[:30]])
    errors = [_undo_error(loc, part, *anywhere()) for part in parts[30:] for _ in range(6)]
    angles = np.array([a for a, _ in errors])
    assert (angles > 3.0).sum() <= 2 and np.median(angles) < 1.0, np.round(np.sort(angles)[-5:], 1)


def test_the_reference_centre_is_where_the_good_parts_lie(parts: list[np.ndarray]) -> None:
    """`any`: the point the reference's part turns about (read as half the shift to itself turned half a turn) is
    where the training parts lie, within 3 px (this part's marker and tab are off its centre), and a part lying there
    is found turned half a turn."""
    loc = Locator("any").fit([_placed(p, float(a), 10.0, -6.0) for p, a in zip(parts[:20], range(0, 360, 18))])
    (cx, cy), _ = loc._round_reference()
    assert abs(cx - ((W - 1) / 2 + 10.0)) < 3.0 and abs(cy - ((H - 1) / 2 - 6.0)) < 3.0, (cx, cy)
    angle_left, moved_by = _undo_error(loc, parts[21], 200.0, 10.0, -6.0)
    assert angle_left < 1.5 and moved_by < 2.0, (angle_left, moved_by)


def test_auto_chooses_any_only_when_training_parts_turn(parts: list[np.ndarray]) -> None:
    assert Locator("auto").fit(parts[:20]).mode_ == "off"  # held by a fixture: not moved
    rng = np.random.default_rng(1)
    turned = [_placed(p, rng.uniform(0, 360), 0, 0) for p in parts[:20]]
    assert Locator("auto").fit(turned).mode_ == "any"


class _Choosing(Locator):
    """A Locator that records how many images `auto` chose its search on."""

    def _choose_mode(self, greys):  # type: ignore[no-untyped-def]
        self.chosen_on = len(greys)
        return super()._choose_mode(greys)


def test_auto_chooses_on_a_sample_and_a_set_mode_chooses_nothing(parts: list[np.ndarray],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Trying every search on every training image was most of a large fit's registration: `auto` tries them on
    up to MODE_SAMPLE images, and comes to the same choice; a mode set in the profile tries nothing."""
    monkeypatch.setattr(register, "MODE_SAMPLE", 8)
    rng = np.random.default_rng(1)
    turned = [_placed(p, rng.uniform(0, 360), 0, 0) for p in parts[:20]]
    for images, mode in ((parts[:20], "off"), (turned, "any")):
        loc = _Choosing("auto").fit(images)
        assert (loc.chosen_on, loc.mode_) == (8, mode)
        assert all(p.match >= loc.match_limit_ for p in loc.train_placements_)
        assert len(loc.train_placements_) == 20  # every image is still placed with the chosen search
    fixed = _Choosing("any").fit(turned)
    assert not hasattr(fixed, "chosen_on") and fixed.mode_ == "any"


def test_something_else_does_not_match(parts: list[np.ndarray]) -> None:
    loc = Locator("small").fit(parts[:20])
    assert all(loc.locate(p).match >= loc.match_limit_ for p in parts[20:])
    belt = np.full((H, W, 3), (118, 120, 124), np.uint8)
    noise = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    squares = np.kron((np.indices((6, 8)).sum(axis=0) % 2) * 200 + 30, np.ones((16, 16)))
    checks = np.repeat(squares[..., None], 3, axis=2).astype(np.uint8)
    for other in (belt, noise, checks):
        assert loc.locate(other).match < loc.match_limit_


def test_maps_are_drawn_back_on_the_part_as_photographed() -> None:
    amap = np.zeros((12, 16), np.float32)
    amap[3, 10] = 1.0  # a hot cell at reference pixel (10 * 8 + 3.5, 3 * 8 + 3.5)
    m = rotation_matrix(0.0, 96, 128)
    m[:, 2] += (16.0, -8.0)  # the part lies 16 px left and 8 px lower in its photo than in the reference
    back = Locator.unwarp_map(amap, Placement(m, 1.0), stride=8)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert (y, x) == (4, 8)


def test_locating_leaves_the_image_untouched(parts: list[np.ndarray]) -> None:
    loc = Locator("any").fit(parts[:20])
    image = parts[21].copy()
    loc.locate(image)
    np.testing.assert_array_equal(image, parts[21])
    reference = loc.ref_.copy()
    loc.locate(parts[22])  # OpenCV 5.0's phaseCorrelate writes into its inputs: the reference must survive
    np.testing.assert_array_equal(loc.ref_, reference)


def test_an_unknown_rotation_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="rotation must be one of"):
        Locator("sideways")


def _zoomed(image: np.ndarray, scale: float) -> np.ndarray:
    """The image magnified by `scale` about its centre (a camera moved closer or refocused), border replicated."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, rotation_matrix(0.0, h, w, scale), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _scale_of(p: Placement) -> float:
    return p.scale


@pytest.mark.parametrize("rotation", ["off", "small"])
def test_a_part_photographed_larger_or_smaller_is_brought_to_the_trained_scale(parts: list[np.ndarray],
                                                                               rotation: str) -> None:
    loc = Locator(rotation).fit(parts[:16])
    assert loc.scale_limit_ is not None
    scaled = []
    for part in parts[16:]:
        assert _scale_of(loc.locate(part)) == pytest.approx(1.0, abs=1e-6)  # at the trained scale: not scaled
        for zoom in (1.03, 0.97):
            scaled.append((zoom, _scale_of(loc.locate(_zoomed(part, zoom)))))
    # generated parts differ from each other, and a turn refined by ECC absorbs part of a zoom: measured 16 of 16
    # brought back with a fixture (`off`), 13 of 16 with `small` (the rest left unscaled, never scaled wrongly)
    right = [z for z, s in scaled if abs(s - 1.0 / z) < 0.011]
    assert len(right) >= (15 if rotation == "off" else 12), scaled
    assert all(abs(s - 1.0 / z) < 0.011 or s == pytest.approx(1.0, abs=1e-6) for z, s in scaled), scaled


@pytest.mark.parametrize("zoom", [1.05, 0.95])
def test_a_camera_moved_5_percent_closer_or_further_is_searched_beyond_3_percent(parts: list[np.ndarray],
                                                                                 zoom: float) -> None:
    """Past an end of SCALES the search goes on while the match rises (FURTHER_SCALES): a camera moved 5% closer
    flagged 15 of 20 good bottles of the shared set, now 1."""
    loc = Locator("off").fit(parts[:16])
    found = [_scale_of(loc.locate(_zoomed(part, zoom))) for part in parts[16:]]
    assert sum(abs(s - 1.0 / zoom) < 0.011 for s in found) == len(found) == 8, found
    assert all(abs(s - 1.0 / zoom) < 0.011 or s == pytest.approx(1.0, abs=1e-6) for s in found), found


def test_a_locator_saved_before_the_search_past_3_percent_keeps_within_it(parts: list[np.ndarray]) -> None:
    """Its scale limit was learned within SCALES: searched further on the line, good parts it would not have scaled
    are (found by a review: 7 of 262 good castings scaled and flagged). A profile saves that it searches further."""
    fitted = Locator("off").fit(parts[:16])
    assert fitted.further_
    old = Locator("off").set_state(fitted.mode_, fitted.ref_, fitted.match_limit_, fitted.scale_limit_)
    again = Locator("off").set_state(fitted.mode_, fitted.ref_, fitted.match_limit_, fitted.scale_limit_, True)
    for part in parts[16:20]:
        assert abs(_scale_of(old.locate(_zoomed(part, 1.05))) - 0.97) < 1e-6  # the end of SCALES
        assert abs(_scale_of(again.locate(_zoomed(part, 1.05))) - 1.0 / 1.05) < 0.011


def test_a_scaled_placement_is_taken_only_when_it_matches_better_than_unscaled(parts: list[np.ndarray]) -> None:
    """Where every good part matches worse scaled (sharp generated parts), the learned limit is negative; a scaled
    placement that matches worse than the part as it lay is never taken (one was: found by an adversarial test on a
    ringed product), while one that matches better by more than the good parts gain is (a 1.5% zoom)."""
    fitted = Locator("off").fit(parts[:16])
    saved = Locator("off").set_state(fitted.mode_, fitted.ref_, fitted.match_limit_, -0.5, True)
    for part in parts[16:24]:
        found, lay = saved.locate(part), saved.locate_grey(grey(part))
        assert found.match >= lay.match
        assert _scale_of(found) == pytest.approx(1.0, abs=1e-6) or found.match > lay.match


def test_a_locator_saved_before_the_scale_search_never_scales(parts: list[np.ndarray]) -> None:
    fitted = Locator("off").fit(parts[:16])
    old = Locator("off").set_state(fitted.mode_, fitted.ref_, fitted.match_limit_)
    assert old.scale_limit_ is None
    assert _scale_of(old.locate(_zoomed(parts[20], 1.03))) == 1.0
    with pytest.raises(ValueError, match="scale limit"):
        Locator("off").set_state(fitted.mode_, fitted.ref_, fitted.match_limit_, float("nan"))


def _of_varied_size(parts: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """The parts each photographed up to 6% larger or smaller: a product whose good parts differ in size (a cast or
    cut part), so that a moved camera looks like one of them."""
    rng = np.random.default_rng(seed)
    return [_zoomed(part, float(rng.uniform(0.94, 1.06))) for part in parts]


@pytest.mark.parametrize("rotation", ["off", "small"])
def test_the_scale_search_is_off_where_good_parts_differ_in_size_as_much_as_a_moved_camera(
        parts: list[np.ndarray], rotation: str) -> None:
    """Where good parts gain from a scale by their content as much as a camera moved 5% makes them gain, the search
    cannot tell the two apart, and a scale read on the line is noise: the placed castings of the shared set found 0-3%
    of their good parts magnified 5%, while good ones were read 6% smaller and flagged `size`. It is kept where good
    parts 5% off are found (SCALE_SEEN), which the profile saves."""
    steady = Locator(rotation).fit(parts[:16])
    assert steady.scale_seen_ is not None and steady.scale_seen_ >= register.SCALE_SEEN
    assert steady.scale_limit_ is not None
    assert _scale_of(steady.locate(_zoomed(parts[20], 1.05))) < 0.975  # brought back (`small`'s ECC takes ~1%)
    varied = _of_varied_size(parts, 3)
    loose = Locator(rotation).fit(varied[:16])
    assert loose.scale_seen_ is not None and loose.scale_seen_ < register.SCALE_SEEN, loose.scale_seen_
    assert loose.scale_limit_ is None  # never scales, as a profile saved before the search
    found = [_scale_of(loose.locate(_zoomed(part, zoom))) for part in varied[16:] for zoom in (1.05, 0.95)]
    assert found == pytest.approx([1.0] * len(found), abs=1e-6), found
    again = Locator(rotation).set_state(loose.mode_, loose.ref_, loose.match_limit_, loose.scale_limit_, True,
                                        scale_seen=loose.scale_seen_)
    assert again.scale_seen_ == loose.scale_seen_ and again.scale_limit_ is None
    for bad in (1.5, -0.1, float("nan"), True, "0.3"):
        with pytest.raises(ValueError, match="scale seen"):
            Locator(rotation).set_state(loose.mode_, loose.ref_, loose.match_limit_, None, True, scale_seen=bad)


def test_a_profile_saves_whether_its_scale_search_is_on(parts: list[np.ndarray]) -> None:
    """The share found is saved with the profile (registration "scale_seen"); a search found off stays off once
    loaded, and `inspector eval` says which (scale_search)."""
    from inspector.profile import NormalProfile  # noqa: PLC0415 - the rest of this file needs registration only

    profile = NormalProfile(rotation="off").fit(_of_varied_size(parts, 3))
    meta, arrays = profile.get_state()
    assert meta["registration"]["scale_limit"] is None
    assert meta["registration"]["scale_seen"] == profile.locator_.scale_seen_ < register.SCALE_SEEN
    loaded = NormalProfile.from_state(meta, arrays)
    assert loaded.locator_.scale_limit_ is None and loaded.locator_.scale_seen_ == profile.locator_.scale_seen_
    older = dict(meta, registration={k: v for k, v in meta["registration"].items() if k != "scale_seen"})
    assert NormalProfile.from_state(older, arrays).locator_.scale_seen_ is None
