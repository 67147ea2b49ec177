"""The verdict depends on the part, not on the light or the placement (issue 10), through the whole scoring
path: NormalProfile.assess and the Inspector's verdicts on real encoded files."""

from __future__ import annotations

import io
import math
import re
import time

import cv2
import numpy as np
import pytest

from inspector.config import InputConfig
from inspector.pipeline import Inspector
from inspector.profile import Assessment, NormalProfile
from inspector.verdicts import EVENED_DETAIL, judge
from inspector.register import rotation_matrix
from inspector.synthetic import make_part
from inspector.photometry import SMOOTH
from test_photometry import side_lamp, vignetted

W, H = 256, 192


def _lit(image: np.ndarray, gain: float = 1.0, offset: float = 0.0, gamma: float = 1.0,
         tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """255 * (x / 255) ** gamma * gain * tint + offset, clipped to uint8."""
    x = 255.0 * (image.astype(np.float64) / 255.0) ** gamma * gain * np.array(tint) + offset
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _placed(image: np.ndarray, angle: float, dx: float, dy: float) -> np.ndarray:
    """Turned about the centre and moved, border replicated."""
    m = rotation_matrix(angle, *image.shape[:2])
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def fitted() -> NormalProfile:
    rng = np.random.default_rng(11)
    return NormalProfile(rotation="small").fit([make_part(rng, W, H) for _ in range(60)])


@pytest.fixture(scope="module")
def good() -> list[np.ndarray]:
    rng = np.random.default_rng(12)
    return [make_part(rng, W, H) for _ in range(12)]


def _inspect(profile: NormalProfile, image: np.ndarray):
    data = cv2.imencode(".png", image)[1].tobytes()
    return Inspector(profile, "v1", InputConfig()).inspect_bytes(data, "part.png")


CHANGES = {
    "gain 0.9": dict(gain=0.9), "gain 1.1": dict(gain=1.1), "offset -10": dict(offset=-10.0),
    "offset +10": dict(offset=10.0), "warm": dict(tint=(0.95, 1.0, 1.05)), "gamma 0.9": dict(gamma=0.9),
    "gamma 1.1": dict(gamma=1.1),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_good_parts_stay_ok_under_each_tolerated_lighting(fitted: NormalProfile, good: list[np.ndarray],
                                                          change: str) -> None:
    verdicts = [_inspect(fitted, _lit(img, **CHANGES[change])) for img in good]
    assert [v.verdict for v in verdicts].count("ok") >= len(good) - 1, [(v.verdict, v.reason) for v in verdicts]


def test_a_defect_is_still_found_under_another_lighting(fitted: NormalProfile) -> None:
    rng = np.random.default_rng(13)
    spotted = [make_part(rng, W, H, defect="spot") for _ in range(6)]
    for change in ("gain 0.9", "warm", "gamma 1.1"):
        assert all(_inspect(fitted, _lit(img, **CHANGES[change])).verdict == "defect" for img in spotted), change


def test_beyond_the_tolerance_the_part_is_rejected_for_lighting(fitted: NormalProfile, good: list[np.ndarray]) -> None:
    for gain in (0.5, 1.7):
        v = _inspect(fitted, _lit(good[0], gain=gain))
        assert (v.verdict, v.reason) == ("rejected", "lighting"), v
        assert v.exposure == pytest.approx(gain, rel=0.05)
        assert v.score is None and "cannot be judged fairly" in v.detail


def test_a_grey_scale_photo_of_a_colour_part_names_the_cameras_colour_mode(fitted: NormalProfile,
                                                                          good: list[np.ndarray]) -> None:
    """Found by an adversarial test: a camera switched to grey-scale was rejected for a "colour cast", and the
    warning sent the engineer to the lamp. A black photo (a lamp out, a padding alpha composited) is grey too, but
    read "grey-scale: check the camera's colour mode": a light grossly off is named instead."""
    grey = cv2.cvtColor(cv2.cvtColor(good[0], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    v = _inspect(fitted, grey)
    assert (v.verdict, v.reason) == ("rejected", "lighting"), v
    assert v.detail == ("the photo is grey-scale while the trained parts are in colour: check the camera's colour "
                        "mode; the part cannot be judged fairly") and v.score is None
    assert "colour mode" not in (_inspect(fitted, _lit(good[0], gain=0.5)).detail or "")  # a colour photo: the lamp
    rng = np.random.default_rng(14)  # a grey product's profile: a grey photo is what it expects
    grey_parts = [cv2.cvtColor(cv2.cvtColor(make_part(rng, W, H), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
                  for _ in range(30)]
    grey_profile = NormalProfile().fit(grey_parts[:24])
    dark = _inspect(grey_profile, _lit(grey_parts[24], gain=0.5))
    assert (dark.verdict, dark.reason) == ("rejected", "lighting") and "colour mode" not in dark.detail
    for gain in (0.0, 0.01):  # a black photo (a lamp out) has no colour either, but the light says why
        black = _inspect(fitted, _lit(good[0], gain=gain))
        assert (black.verdict, black.reason) == ("rejected", "lighting"), black
        assert black.detail.startswith(f"exposure {black.exposure:.2f}x of the trained lighting"), black.detail


def test_an_empty_fixture_on_a_grey_belt_is_a_part_not_located_not_a_camera_in_grey_mode(
        fitted: NormalProfile, good: list[np.ndarray]) -> None:
    """Found by an adversarial test: an empty photo of a colour product's station (a grey belt, a white backlight)
    has no colour, and was rejected as "grey-scale: check the camera's colour mode", so an empty fixture sent the
    engineer to the camera and no `not_located` streak was raised. No part is there: a `defect` / `not_located`,
    its detail saying the photo is grey too; a grey photo of the part itself still names the colour mode."""
    rng = np.random.default_rng(16)
    level = rng.normal(float(np.median(good[0])), 3.0, good[0].shape[:2])  # a grey belt: alike in every channel
    belt = np.repeat(np.clip(np.rint(level), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    for empty in (belt, np.full_like(good[0], 235)):
        v = _inspect(fitted, empty)
        assert (v.verdict, v.reason) == ("defect", "not_located"), v
        assert v.detail.endswith("the photo is grey-scale too: if every part says so, check the camera's colour mode")
    grey = cv2.cvtColor(cv2.cvtColor(good[1], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert (_inspect(fitted, grey).verdict, _inspect(fitted, grey).reason) == ("rejected", "lighting")


def test_a_photo_whose_fourth_channel_is_zero_padding_is_judged_on_its_colours(fitted: NormalProfile,
                                                                             good: list[np.ndarray]) -> None:
    """Found by an adversarial test: a camera writing RGBX PNGs with the 4th channel 0 had every part composited to
    black and rejected as "grey-scale" (or "exposure 0.00x"). An alpha 0 everywhere is padding."""
    for part in good[:3]:
        v = _inspect(fitted, np.dstack([part, np.zeros(part.shape[:2], np.uint8)]))
        assert (v.verdict, v.reason) == ("ok", None), v
        assert v.exposure == pytest.approx(_inspect(fitted, part).exposure)


def test_a_16bit_photo_in_the_low_bits_names_the_cameras_bit_depth(fitted: NormalProfile,
                                                                   good: list[np.ndarray]) -> None:
    """Found by an adversarial test: a 12-bit camera writing right-aligned 16-bit PNGs (values 0..4095) was rejected
    as "exposure 0.06x", which sends the engineer to the lamp. Where the camera depth its values fit in explains the
    dark reading, the detail names it; a full-range 16-bit photo is judged as before, and a black one (a lamp out) is
    still named by its exposure."""
    def sixteen(image: np.ndarray, top: float) -> bytes:
        return cv2.imencode(".png", np.rint(image.astype(np.float64) * top / 255.0).astype(np.uint16))[1].tobytes()

    inspector = Inspector(fitted, "v1", InputConfig())
    for depth in (10, 12, 14):
        v = inspector.inspect_bytes(sixteen(good[0], 2 ** depth - 1), "part.png")
        assert (v.verdict, v.reason) == ("rejected", "lighting"), v
        assert v.detail.startswith(f"the photo is 16-bit but its values are all below {2 ** depth}: a {depth}-bit "
                                   "camera writing its samples unscaled? Scaled to 16 bits it reads exposure 1.0"), v
    assert inspector.inspect_bytes(sixteen(good[0], 65535), "part.png").verdict == "ok"
    out = inspector.inspect_bytes(sixteen(good[0], 65535 * 0.002), "part.png")
    assert (out.verdict, out.reason) == ("rejected", "lighting") and out.detail.startswith("exposure 0.00x"), out


def test_the_camera_depth_named_is_the_one_that_explains_the_reading_best() -> None:
    """Found by a review: a dark product from a 12-bit camera (its brightest value below 1024, so its values fit in
    10 bits) read "exposure 0.06x" because only the smallest depth was tried (scaled from 10 bits it reads 4x)."""
    def detail(exposure: float, bits: int) -> str:
        found = Assessment(0.0, np.zeros((2, 2), np.float32), True, 1.0, 0.0, (0.0, 0.0), exposure, 0.0, 0.0, False,
                           used_bits=bits)
        return judge(found, 1.0)[2]

    assert "a 12-bit camera" in detail(1 / 16, 10) and "reads exposure 1.00x" in detail(1 / 16, 10)
    assert "a 14-bit camera" in detail(1 / 4, 12)
    assert "a 10-bit camera" in detail(1 / 64, 10)
    assert detail(0.002, 10).startswith("exposure 0.00x")  # no depth explains it: the light


def test_red_and_blue_swapped_is_named_and_a_lamps_colour_is_not_taken_for_it() -> None:
    """Found by an adversarial test: a camera set to RGB instead of BGR read as a lamp's colour cast. Swapped back,
    its red and blue have the trained colours and follow the reference more closely than as photographed; a lamp's
    colour (warm, cool, magenta) fits best as photographed and is still named as a colour cast."""
    rng = np.random.default_rng(21)

    def close_up() -> np.ndarray:  # the flange fills the photo: its colours, not the grey belt, set the cast
        return np.ascontiguousarray(make_part(rng, W, H)[46:146, 68:188])

    profile = NormalProfile(rotation="small").fit([close_up() for _ in range(30)])
    for part in [close_up() for _ in range(3)]:
        swapped = _inspect(profile, np.ascontiguousarray(part[..., ::-1]))
        assert (swapped.verdict, swapped.reason) == ("rejected", "lighting"), swapped
        assert swapped.detail.startswith("red and blue look swapped: swapped back, the part has the trained colours "
                                         "(as photographed, colour cast "), swapped.detail
        assert "camera's colour order (RGB or BGR)" in swapped.detail
        for tint in ((0.8, 1.0, 1.25), (1.25, 1.0, 0.8), (1.2, 0.85, 1.2)):
            lamp = _inspect(profile, _lit(part, tint=tint))
            assert (lamp.verdict, lamp.reason) == ("rejected", "lighting"), (tint, lamp)
            assert "colour cast" in lamp.detail and "swapped" not in lamp.detail, (tint, lamp.detail)


def test_the_exposure_is_recorded_for_each_part(fitted: NormalProfile, good: list[np.ndarray]) -> None:
    v = _inspect(fitted, _lit(good[1], gain=0.9))
    base = _inspect(fitted, good[1])
    assert v.exposure / base.exposure == pytest.approx(0.9, rel=0.01)
    assert v.as_dict()["exposure"] == v.exposure


def test_good_parts_placed_differently_stay_ok(fitted: NormalProfile, good: list[np.ndarray]) -> None:
    moves = [(8, 12, -9), (-7, -15, 10), (4, 20, 6)]
    verdicts = [_inspect(fitted, _placed(img, *m)) for img in good[:6] for m in moves]
    assert [v.verdict for v in verdicts].count("ok") >= len(verdicts) - 1, [(v.verdict, v.reason) for v in verdicts]


def test_a_missing_part_is_a_defect_never_ok(fitted: NormalProfile) -> None:
    belt = np.zeros((H, W, 3), np.uint8)
    belt[:] = (118, 120, 124)
    belt = np.clip(belt + np.random.default_rng(0).normal(0, 3, belt.shape), 0, 255).astype(np.uint8)
    v = _inspect(fitted, belt)
    assert v.verdict == "defect" and v.reason in ("not_located", None), v


def test_the_map_marks_the_defect_where_it_was_photographed(fitted: NormalProfile) -> None:
    rng = np.random.default_rng(21)
    part = make_part(rng, W, H)
    moved = _placed(part, 7, 18, -10)
    cv2.circle(moved, (90, 120), 9, (60, 160, 60), -1)  # a green speck, placed after the move
    found = fitted.assess([moved])[0]
    gh, gw = found.anomaly_map.shape
    y, x = np.unravel_index(np.argmax(found.anomaly_map), found.anomaly_map.shape)
    stride = fitted.layout_.stride * (W / fitted.layout_.width)  # map cell -> photo pixels
    assert abs((x + 0.5) * stride - 90) <= 2 * stride and abs((y + 0.5) * stride - 120) <= 2 * stride


def test_a_profile_saved_before_registration_still_loads_and_judges(good: list[np.ndarray]) -> None:
    rng = np.random.default_rng(11)
    # format 1 had no texture channels or lighting copies either
    fitted = NormalProfile(rotation="small", texture_weight=0.0, lighting_copies=0).fit(
        [make_part(rng, W, H) for _ in range(30)])
    meta, arrays = fitted.get_state()
    old_meta = {k: v for k, v in meta.items() if k not in ("registration", "lighting", "drift")}
    old_meta["format_version"] = 1
    old_arrays = {k: v for k, v in arrays.items() if k not in ("register_reference", "lighting_reference",
                                                              "lighting_weights")}
    old = NormalProfile.from_state(old_meta, old_arrays)
    assert old.locator_ is None and old.lighting_ is None
    found = old.assess([good[0]])[0]
    assert found.exposure is None and found.located and found.lighting_ok


def test_the_drift_baseline_is_saved_with_the_profile(fitted: NormalProfile) -> None:
    meta, _ = fitted.get_state()
    drift = meta["drift"]
    centre, spread = drift["log_exposure"]  # the centre: where the good parts' winsorised values average zero
    assert abs(centre) < spread and 0.004 < spread < 0.2
    assert drift["score"][1] > 0
    again = NormalProfile.from_state(*fitted.get_state())
    assert again.get_state()[0]["drift"] == drift


def test_a_narrow_strip_trains_without_registration() -> None:
    rng = np.random.default_rng(31)
    strips = [np.ascontiguousarray(make_part(rng, 256, 192)[90:106]) for _ in range(12)]  # 256 x 16: 128 x 8 working
    profile = NormalProfile().fit(strips)
    assert profile.locator_ is None
    assert np.isfinite(profile.assess([strips[0]])[0].score)
    # nor is blur judged there: nothing says the part is there, and an empty belt would read as blurred
    assert profile.focus_ is None and profile.assess([np.full_like(strips[0], 90)])[0].blurred is None


@pytest.mark.parametrize("field,value", [("match_limit", float("nan")), ("exposure_bounds", [0.1, 0.2]),
                                         ("cast_limit", -1.0), ("ceiling", 40), ("offset", [0.0, 2.0]),
                                         ("offset", [float("nan"), 0.01]), ("offset", [0.0]), ("offset", "01"),
                                         ("offset", [-2.0, 0.01]), ("offset", [0.0, 0.0])])
def test_broken_saved_conditions_are_refused(fitted: NormalProfile, field: str, value) -> None:
    meta, arrays = fitted.get_state()
    section = "registration" if field == "match_limit" else "lighting"
    meta = {**meta, section: {**meta[section], field: value}}
    with pytest.raises(ValueError):
        NormalProfile.from_state(meta, arrays)


def test_with_shading_a_part_lit_from_one_side_is_judged_on_its_content() -> None:
    rng = np.random.default_rng(12)
    train = [make_part(rng, W, H) for _ in range(40)]
    side = [side_lamp(make_part(rng, W, H), 0.8, 1.2) for _ in range(4)]
    spotted = [side_lamp(make_part(rng, W, H, defect="spot"), 0.8, 1.2) for _ in range(4)]
    plain = NormalProfile(rotation="off", shading=False, even_light=False).fit(train)
    shaded = NormalProfile(rotation="off", shading=True).fit(train)
    # without the field the lamp alone flags good parts; with it they pass and the spotted ones are still caught
    assert (plain.anomaly_score(side) > plain.threshold_).all()
    assert (shaded.anomaly_score(side) <= shaded.threshold_).all()
    assert (shaded.anomaly_score(spotted) > shaded.threshold_).all()
    # saved and loaded, it judges alike; a profile saved before the setting existed loads without the field
    again = NormalProfile.from_state(*shaded.get_state())
    assert again.lighting_.shading and np.allclose(again.anomaly_score(side), shaded.anomaly_score(side))
    meta, arrays = plain.get_state()
    params = {k: v for k, v in meta["params"].items() if k != "shading"}
    light = {k: v for k, v in meta["lighting"].items() if k != "shading"}
    old = NormalProfile.from_state(dict(meta, params=params, lighting=light), arrays)
    assert not old.params.shading and not old.lighting_.shading
    assert (old.anomaly_score(side) > old.threshold_).all()
    # one saved with shading = true before "auto" existed (the setting in its params only) keeps the field
    meta, arrays = shaded.get_state()
    light = {k: v for k, v in meta["lighting"].items() if k != "shading"}
    assert NormalProfile.from_state(dict(meta, lighting=light), arrays).lighting_.shading
    with pytest.raises(ValueError, match="shading"):
        NormalProfile.from_state(dict(meta, lighting={**meta["lighting"], "shading": "yes"}), arrays)


def test_shading_auto_is_on_where_parts_turn_freely_and_off_where_a_fixture_holds_them() -> None:
    """The default `shading = "auto"`: a part turned by hand under a lamp from one side has its lit side anywhere
    once registered, so the field is divided out; a fixtured part keeps the plain tone curve. The choice is saved
    with the profile."""
    rng = np.random.default_rng(51)
    parts = [make_part(rng, W, H) for _ in range(16)]
    turned = [_placed(p, float(a), 0.0, 0.0) for p, a in zip(parts, rng.uniform(0.0, 360.0, len(parts)))]
    free = NormalProfile().fit(turned)  # rotation "auto" finds that they turn freely
    assert free.locator_.mode_ == "any"
    held = NormalProfile(rotation="off").fit(parts)
    assert free.params.shading == "auto" and free.lighting_.shading
    assert held.params.shading == "auto" and not held.lighting_.shading
    for profile in (free, held):
        again = NormalProfile.from_state(*profile.get_state())
        assert again.lighting_.shading == profile.lighting_.shading
    assert not NormalProfile(rotation="any", shading=False).fit(turned).lighting_.shading


def test_with_the_smooth_field_a_lamp_dimmed_on_one_side_or_a_vignetting_is_judged_on_the_content() -> None:
    """`shading = "smooth"` divides each part by its smooth field (a tilt across the part and a vignetting): a lamp
    20% dimmer on one side and 20% brighter on the other, or a lens darkening the corners by 40%, flags good parts
    without it (on the shared sets a 10% side lamp flagged 33% of good castings); with it they pass and a spot is
    still caught."""
    rng = np.random.default_rng(12)
    train = [make_part(rng, W, H) for _ in range(40)]
    plain = NormalProfile(rotation="off", shading=False, even_light=False).fit(train)
    smooth = NormalProfile(rotation="off", shading=SMOOTH).fit(train)
    assert smooth.lighting_.shading == SMOOTH
    for change in (lambda p: side_lamp(p, 0.8, 1.2), lambda p: vignetted(p, 0.4)):
        parts = [change(make_part(rng, W, H)) for _ in range(4)]
        spotted = [change(make_part(rng, W, H, defect="spot")) for _ in range(4)]
        assert (plain.anomaly_score(parts) > plain.threshold_).any()
        assert [_inspect(smooth, p).verdict for p in parts] == ["ok"] * 4
        assert [_inspect(smooth, p).verdict for p in spotted] == ["defect"] * 4


def test_a_blurred_photo_is_a_defect_naming_the_blur(fitted: NormalProfile,
                                                     good: list[np.ndarray]) -> None:
    """Found by an adversarial test: a camera out of focus or a part moving during the exposure flagged every good
    part as a plain defect. A flagged part whose photo is blurred says so (`defect` / `blurred`)."""
    for part in good[:3]:
        found = _inspect(fitted, cv2.GaussianBlur(part, (0, 0), 2.5))
        assert (found.verdict, found.reason) == ("defect", "blurred"), found
        assert found.detail.startswith("the photo is blurred: its detail is "), found.detail
        assert _inspect(fitted, part).verdict == "ok"
    spotted = make_part(np.random.default_rng(3), W, H, defect="spot")
    assert _inspect(fitted, spotted).verdict == "defect"  # a defect is no blur
    meta, arrays = fitted.get_state()
    again = NormalProfile.from_state(meta, arrays)
    blurred = cv2.GaussianBlur(good[0], (0, 0), 2.5)
    assert _inspect(again, blurred).reason == "blurred"
    old = NormalProfile.from_state({k: v for k, v in meta.items() if k != "focus"}, arrays)  # saved before
    assert old.focus_ is None and _inspect(old, blurred).reason is None
    for bad in ({"low": float("nan")}, {"low": "0"}, {}, [0.0]):
        with pytest.raises(ValueError, match="focus"):
            NormalProfile.from_state(dict(meta, focus=bad), arrays)
    with pytest.raises(ValueError, match="focus"):
        NormalProfile.from_state(meta, {k: v for k, v in arrays.items() if k != "focus_typical"})
    with pytest.raises(ValueError, match="focus_typical"):
        NormalProfile.from_state(meta, dict(arrays, focus_typical=np.ones((3, 3), np.float32)))


def test_a_quieter_camera_is_no_blur_and_its_defects_stay_defects() -> None:
    """Found by an adversarial test: the blocks read for detail included the plain belt's camera noise, so a camera
    with less noise (sd 0.5 or 1 against the trained 3) read as blurred and its defects were rejected as `camera`."""
    rng = np.random.default_rng(1)
    profile = NormalProfile().fit([make_part(rng, W, H) for _ in range(60)])
    for noise in (0.5, 1.0):
        for defect in ("spot", "scratch"):
            found = _inspect(profile, make_part(rng, W, H, defect=defect, noise=noise))
            assert found.verdict == "defect", found


def test_a_part_much_larger_or_smaller_than_the_good_ones_is_a_defect_naming_the_size(fitted: NormalProfile,
                                                                                      good: list[np.ndarray]) -> None:
    """Found by an adversarial test: once the scale search reached 6%, parts 6% larger passed as good (a part of
    another size, or a camera moved, judged at the trained size). Past SIZE_TOLERANCE the part is a defect, saying
    so: a wrong part is a defect (as one not located is)."""
    for part in good[:3]:
        for zoom, word in ((1.06, "larger"), (0.94, "smaller")):
            m = rotation_matrix(0.0, H, W, zoom)
            zoomed = cv2.warpAffine(part, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            found = _inspect(fitted, zoomed)
            assert (found.verdict, found.reason) == ("defect", "size"), found
            assert re.match(rf"the part appears [456]% {word} than the good parts: a part of another", found.detail)
        m = rotation_matrix(0.0, H, W, 1.015)
        assert _inspect(fitted, cv2.warpAffine(part, m, (W, H), borderMode=cv2.BORDER_REPLICATE)).verdict == "ok"


def test_blur_is_judged_after_the_light_and_the_location_and_only_where_it_would_flag() -> None:
    def verdict(score: float, located: bool = True, lighting_ok: bool = True) -> tuple[str, str | None]:
        found = Assessment(score, np.zeros((2, 2), np.float32), located, 0.9, 0.0, (0.0, 0.0), 1.0, 0.0, 0.0,
                           lighting_ok, blurred="the photo is blurred")
        return judge(found, 1.0)[:2]

    assert verdict(2.0) == ("defect", "blurred")
    assert verdict(0.5) == ("ok", None)  # a blur the product bears: judged
    assert verdict(2.0, located=False) == ("defect", "not_located")  # a missing part is a defect
    assert verdict(2.0, lighting_ok=False) == ("rejected", "lighting")


def test_the_scale_search_past_3_percent_is_saved_with_the_profile(fitted: NormalProfile) -> None:
    meta, arrays = fitted.get_state()
    assert meta["registration"]["further_scales"] is True
    assert NormalProfile.from_state(meta, arrays).locator_.further_
    before = {k: v for k, v in meta["registration"].items() if k != "further_scales"}
    assert not NormalProfile.from_state(dict(meta, registration=before), arrays).locator_.further_


def test_the_smooth_field_is_saved_with_the_profile(good: list[np.ndarray]) -> None:
    rng = np.random.default_rng(13)
    smooth = NormalProfile(rotation="small", shading=SMOOTH).fit([make_part(rng, W, H) for _ in range(30)])
    again = NormalProfile.from_state(*smooth.get_state())
    assert again.lighting_.shading == SMOOTH and again.params.shading == SMOOTH
    lit = [side_lamp(p, 0.85, 1.15) for p in good[:3]]
    assert np.allclose(again.anomaly_score(lit), smooth.anomaly_score(lit))
    meta, arrays = smooth.get_state()
    assert meta["format_version"] == 5  # an older build reads 1-4: it says the profile is newer than it reads
    with pytest.raises(ValueError, match="shading"):
        NormalProfile.from_state(dict(meta, lighting={**meta["lighting"], "shading": "smoothly"}), arrays)


def test_on_a_dark_product_an_offset_it_cannot_tell_from_a_gain_is_rejected_not_flagged() -> None:
    """A black part (typical grey level ~20): 10 levels more black is +50% there, which normalisation cannot tell
    precisely from a gain; such a part must be `rejected` for its lighting, never a flood of `defect`s, while a
    tolerated gain is still judged."""
    rng = np.random.default_rng(41)
    dark = [_lit(make_part(rng, W, H), gain=0.15) for _ in range(40)]
    profile = NormalProfile(rotation="none").fit(dark[:30])
    assert profile.lighting_.typical_level_ * 255 < 30
    profile = NormalProfile.from_state(*profile.get_state())  # a narrow grey range saves and loads
    lifted = [_inspect(profile, _lit(img, offset=10.0)) for img in dark[30:]]
    assert [(v.verdict, v.reason) for v in lifted] == [("rejected", "lighting")] * len(lifted)
    brighter = [_inspect(profile, _lit(img, gain=1.1)) for img in dark[30:]]
    assert [v.verdict for v in brighter].count("ok") >= len(brighter) - 1, [(v.verdict, v.reason) for v in brighter]


def test_a_profile_saved_before_the_black_level_line_judges_by_grey_levels(fitted: NormalProfile,
                                                                          good: list[np.ndarray]) -> None:
    """Profiles saved before 2026-12-04 have no black-level record: they keep the curve bent through each grey
    level's departure they were calibrated with; new ones follow the black level's line."""
    meta, arrays = fitted.get_state()
    assert fitted.lighting_.offset_ref_ is not None and meta["lighting"]["offset"][1] > 0
    light = {k: v for k, v in meta["lighting"].items() if k != "offset"}
    old = NormalProfile.from_state(dict(meta, lighting=light), arrays)
    assert old.lighting_.offset_ref_ is None
    lifted = _lit(good[0], offset=10.0)
    work = fitted.working_image(lifted)
    by_levels, by_line = old.lighting_.estimate(work), fitted.lighting_.estimate(work)
    assert by_line.offset == pytest.approx(10.0, abs=3.0) and by_line.bend > 0
    assert not np.array_equal(by_levels.lut, by_line.lut)
    assert np.isfinite(old.anomaly_score([lifted])).all()


def _grey(image: np.ndarray) -> np.ndarray:
    """A grey product: the part's grey levels in all three channels."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def test_a_small_speck_is_the_cells_business_not_the_whole_image_comparison() -> None:
    # A speck of 0.1% of the area in a colour no good part had: the cells mark it; the whole-image comparison,
    # meant for changes of the whole part, moves less than half as far (with a spread floor of 1e-3 of the area
    # for shares that never varied, it moved nearly as far as the cells: 22-30 against 29-31 standard units).
    rng = np.random.default_rng(41)
    profile = NormalProfile(rotation="small").fit([_grey(make_part(rng, W, H)) for _ in range(60)])

    def z_terms(image: np.ndarray) -> tuple[float, float]:
        aligned, placement = profile._place(profile.working_image(profile.display_image(image)))
        work, _ = profile._relight(aligned)
        cells, globs = profile._featurise([work])
        valid = None if placement is None else profile._valid_cells(placement)[None]
        local, glob, _ = profile._terms(cells, globs, valid=valid)
        return (float((local[0] - profile.local_stats_[0]) / profile.local_stats_[1]),
                float((glob[0] - profile.global_stats_[0]) / profile.global_stats_[1]))

    for _ in range(5):
        part = _grey(make_part(rng, W, H))
        specked = part.copy()
        cv2.circle(specked, (W // 2 + 20, H // 2), 4, (40, 40, 220), -1)  # 0.1% of the area, a red no part has
        (_, g0), (local, g1) = z_terms(part), z_terms(specked)
        assert local > 10.0, local
        assert g1 - g0 < 0.5 * local, (g0, g1, local)


def test_a_photo_of_another_shape_is_rejected_naming_the_camera(fitted: NormalProfile, good: list[np.ndarray]) -> None:
    """Found by an adversarial test: a camera replaced or re-set to another aspect ratio (a 4:3 crop, a wider field,
    a sensor turned by 90 degrees) had every part resized to the trained shape, judged stretched and flagged as a
    defect with no reason. Such a photo is rejected (`camera`) and the detail names both shapes; the same shape at
    another resolution is judged as before."""
    part = good[0]
    assert _inspect(fitted, part).verdict == "ok"
    bigger = cv2.resize(part, (W * 3 // 2, H * 3 // 2), interpolation=cv2.INTER_AREA)  # same shape, more pixels
    assert _inspect(fitted, bigger).verdict == "ok"
    for other in (part[:, (W - H) // 2:(W + H) // 2], np.ascontiguousarray(np.rot90(part)),
                  cv2.copyMakeBorder(part, 0, 0, 40, 40, cv2.BORDER_REPLICATE)):
        got = _inspect(fitted, other)
        h, w = other.shape[:2]
        assert (got.verdict, got.reason) == ("rejected", "camera"), (other.shape, got)
        assert got.detail.startswith(f"the photo is {w}x{h} ({w / h:.3g}:1) while the parts were trained on "
                                     f"{W / H:.3g}:1 photos: a camera replaced")
    # a profile saved before the trained shapes were recorded knows them from its working size
    meta, arrays = fitted.get_state()
    assert meta["aspect_range"] == [H / W, H / W]
    old = NormalProfile.from_state({k: v for k, v in meta.items() if k != "aspect_range"}, arrays)
    assert old.assess([part])[0].framing is None and old.assess([part[:, 32:-32]])[0].framing is not None
    with pytest.raises(ValueError):
        NormalProfile.from_state({**meta, "aspect_range": [0.8, 0.7]}, arrays)


def test_a_photo_turned_by_its_exif_orientation_names_it(fitted: NormalProfile, good: list[np.ndarray]) -> None:
    """Found by an adversarial test: a camera writing EXIF orientation inconsistently had its photos turned by 90
    degrees on decoding and rejected as "camera replaced, re-cropped or set to another resolution", without a word
    about the orientation. The `camera` detail now says the EXIF orientation turned it, and whether the photo as
    stored has the trained shape."""
    from PIL import Image

    def with_orientation(image: np.ndarray, orientation: int) -> bytes:
        exif = Image.Exif()
        exif[0x0112] = orientation
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image[..., ::-1])).save(out, "JPEG", exif=exif.tobytes(), quality=95)
        return out.getvalue()

    inspector = Inspector(fitted, "v1", InputConfig())
    assert inspector.inspect_bytes(with_orientation(good[0], 1), "part.jpg").verdict == "ok"
    for orientation in (6, 8):
        v = inspector.inspect_bytes(with_orientation(good[0], orientation), "part.jpg")
        assert (v.verdict, v.reason) == ("rejected", "camera"), v
        assert v.detail.startswith(f"the photo is {H}x{W} ({H / W:.3g}:1) once turned by its EXIF orientation; as "
                                   f"stored, {W}x{H}, it has the trained shape ({W / H:.3g}:1)"), v.detail
    squarer = inspector.inspect_bytes(with_orientation(good[0][:, 16:-16], 6), "part.jpg")  # no trained shape either
    assert squarer.reason == "camera", squarer
    w = W - 32
    turned = f"the photo is {H}x{w} ({H / w:.3g}:1) once turned by its EXIF orientation (stored {w}x{H})"
    assert squarer.detail.startswith(f"{turned} while the parts were trained on"), squarer.detail


def test_a_brighter_lamp_is_allowed_only_the_offset_its_black_shows(fitted: NormalProfile,
                                                                    good: list[np.ndarray]) -> None:
    """Found by an adversarial test: the tolerance added a whole `max_offset` (15 levels at the part's typical level)
    to `max_exposure_change` for every part, so a lamp 25-40% brighter, black where it was, was judged (and flooded
    the review queue with defects) while 20% was the documented limit. A part is allowed the offset its own black
    shows: a plain x1.35 is rejected for lighting, a black lifted by 15 levels is still judged."""
    low, high = (math.exp(b) for b in fitted.exposure_range_)
    brighter = [_inspect(fitted, _lit(img, gain=1.35)) for img in good]
    read = float(np.median([v.exposure for v in brighter]))  # beyond 20% over the brightest training part, within
    assert high * (1 + fitted.params.max_exposure_change) < read < math.exp(fitted.exposure_bounds_[1])  # the old 40%
    assert sum((v.verdict, v.reason) == ("rejected", "lighting") for v in brighter) >= len(good) - 1, [
        (v.verdict, v.reason, v.exposure) for v in brighter]
    lifted = [_inspect(fitted, _lit(img, offset=15.0)) for img in good]
    assert [v.verdict for v in lifted].count("ok") >= len(good) - 1, [(v.verdict, v.reason) for v in lifted]
    meta, arrays = fitted.get_state()  # a profile saved before: the whole allowance, as it was judged then
    old = NormalProfile.from_state({**meta, "lighting": {k: v for k, v in meta["lighting"].items()
                                                         if k != "exposure_range"}}, arrays)
    assert old.exposure_range_ is None and old.assess([_lit(good[0], gain=1.35)])[0].lighting_ok


@pytest.mark.parametrize("size", [(600, 88), (300, 40)])
def test_photos_whose_shape_is_off_the_cell_grid_are_not_taken_for_another_camera(tmp_path, size) -> None:
    """Found by a review: training images reach the profile resized to the fine or working size, whose height is
    rounded to whole cells, and the Inspector checked the part already resized: 600 x 88 and 300 x 40 photos (a strip
    camera) were rejected as `camera`, every one of them."""
    from inspector import pipeline
    from inspector.config import Config

    w, h = size
    rng = np.random.default_rng(5)
    files = []
    for i in range(14):
        strip = cv2.resize(make_part(rng, W, H), (w, w * H // W))[(w * H // W - h) // 2:][:h]
        files.append(tmp_path / f"s{i}.png")
        cv2.imwrite(str(files[-1]), strip)
    cfg = Config()
    training = pipeline.load_training_images(files[:12], cfg)
    profile = pipeline.fit_profile(training.images, cfg.profile)
    inspector = Inspector(profile, "v1", cfg.input)
    for path in files[12:]:
        got = inspector.inspect_file(path)
        assert got.reason != "camera", got.detail
    squarer = tmp_path / "squarer.png"
    cv2.imwrite(str(squarer), cv2.imread(str(files[13]))[:, : w * 3 // 4])
    assert inspector.inspect_file(squarer).reason == "camera"


def test_a_much_brighter_lamp_on_a_bright_part_is_read_from_its_pixels_at_the_top() -> None:
    """Found by an adversarial test: the exposure is read on blocks without clipped pixels, so under a much brighter
    lamp a bright part left only its darkest blocks to read and a casting under x1.6 read 1.16 (never rejected, and
    the drift record said so). The share of pixels at the top against the good parts' own says how bright it is
    at least: x1.6 reads 1.6, and x1.1 (tolerated) still reads 1.1."""
    def bright(rng: np.random.Generator) -> np.ndarray:
        grey = cv2.cvtColor(make_part(rng, W, H), cv2.COLOR_BGR2GRAY).astype(np.float64)
        return cv2.cvtColor(np.clip(120 + 0.5 * grey, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)

    rng = np.random.default_rng(3)
    profile = NormalProfile().fit([bright(rng) for _ in range(30)])
    parts = [bright(rng) for _ in range(8)]
    for gain, ok in ((1.1, True), (1.6, False)):
        found = profile.assess([np.clip(np.rint(p * gain), 0, 255).astype(np.uint8) for p in parts])
        assert all(abs(f.exposure / gain - 1) < 0.04 for f in found), (gain, [round(f.exposure, 2) for f in found])
        assert all(f.lighting_ok is ok for f in found)
    meta, arrays = profile.get_state()
    again = NormalProfile.from_state(meta, arrays)
    assert np.allclose(again.lighting_.top_share_, profile.lighting_.top_share_, atol=1e-6)
    old = NormalProfile.from_state({**meta, "lighting": {k: v for k, v in meta["lighting"].items()
                                                         if k != "top_share"}}, arrays)
    assert old.lighting_.top_share_ is None  # a profile saved before: read as it was
    for broken in ([0.5] * 255, [0.1] + [0.5] * 255, ["x"] * 256):
        with pytest.raises(ValueError):
            NormalProfile.from_state({**meta, "lighting": {**meta["lighting"], "top_share": broken}}, arrays)


def _station(profile: NormalProfile, parts: list[np.ndarray]) -> np.ndarray:
    """The light field the parts share on the photo (the median of their own), as the Inspector keeps it."""
    return np.median(np.stack([f.light_field for f in profile.assess(parts)]), axis=0)


def _stained(image: np.ndarray, f: float = -0.2) -> np.ndarray:
    """A stain over the right half of the photo: darker (or brighter) by f, with a hard edge."""
    out = image.astype(np.float64)
    out[:, image.shape[1] // 2:] *= 1.0 + f
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_a_flagged_part_lit_unevenly_is_judged_again_with_the_stations_light_evened_out() -> None:
    """`even_light` (opt-in): a part flagged only because a lamp is dimmed on one side (or the lens darkens the
    corners) is judged again divided by the smooth field the station's recent parts share, its lighting read afresh;
    it passes, saying how it was lit. A defect on a part under the same lamp is still caught; without a station field
    nothing is evened; a profile saved before the setting existed judges as it did."""
    rng = np.random.default_rng(12)
    train = [make_part(rng, W, H) for _ in range(40)]
    good = [make_part(rng, W, H) for _ in range(6)]
    spotted = [make_part(rng, W, H, defect="spot") for _ in range(4)]
    plain = NormalProfile(rotation="off", shading=False, even_light=False).fit(train)
    evening = NormalProfile(rotation="off", shading=False, even_light=True).fit(train)
    assert evening.params.even_light and not evening.lighting_.shading
    lamps = (lambda im: side_lamp(im, 0.8, 1.2), lambda im: side_lamp(im, 1.2, 0.8), lambda im: vignetted(im, 0.45))
    for lamp in lamps:
        lit = [lamp(p) for p in good]
        assert (plain.anomaly_score(lit) > plain.threshold_).all()  # the lamp alone flags them
        assert all(f.evened is None and f.score > evening.threshold_ for f in evening.assess(lit))  # no station
        station = _station(evening, lit)
        found = evening.assess(lit, station)
        assert all(f.score <= evening.threshold_ for f in found), [f.score for f in found]
        assert all(f.evened and f.evened.startswith("lit unevenly") for f in found)
        assert all(judge(f, evening.threshold_) == ("ok", None, f.evened) for f in found)
        caught = evening.assess([lamp(p) for p in spotted], station)
        assert all(f.score > evening.threshold_ and f.evened is None for f in caught)
    lit = [side_lamp(p, 0.8, 1.2) for p in good]
    station = _station(evening, lit)
    assert "brighter on the right" in evening.assess(lit[:1], station)[0].evened
    # as trained: the same scores, nothing evened (only flagged parts get the second look)
    clean = _station(evening, good)
    assert np.allclose([f.score for f in evening.assess(good, clean)], plain.anomaly_score(good))
    assert all(f.evened is None for f in evening.assess(good + spotted, clean))
    # saved and loaded alike; saved before the setting: judged as before
    again = NormalProfile.from_state(*evening.get_state())
    assert np.allclose([f.score for f in again.assess(lit, station)], [f.score for f in evening.assess(lit, station)])
    meta, arrays = evening.get_state()
    params = {k: v for k, v in meta["params"].items() if k != "even_light"}
    old = NormalProfile.from_state(dict(meta, params=params), arrays)
    assert not old.params.even_light
    assert np.allclose([f.score for f in old.assess(lit, station)], plain.anomaly_score(lit))


def test_a_stain_over_half_a_part_is_not_evened_away() -> None:
    """Per part, a stain over half of it is a smooth field too: evened by its own field, a darker half passed (found
    by an adversarial test: 20 of 20 stained tyres, 17 of 20 bottles). Evened only by the field the station's parts
    share, and only where its own agrees, it stays a defect, under the trained light and under a side lamp."""
    rng = np.random.default_rng(13)
    train = [make_part(rng, W, H) for _ in range(40)]
    good = [make_part(rng, W, H) for _ in range(6)]
    evening = NormalProfile(rotation="off", shading=False, even_light=True).fit(train)
    for lamp in (lambda im: im, lambda im: side_lamp(im, 0.85, 1.15)):
        station = _station(evening, [lamp(p) for p in good])
        for f in (-0.35, 0.3):  # (a -20% stain on the side the lamp brightens evens the part out: no one can see it)
            found = evening.assess([lamp(_stained(p, f)) for p in good], station)
            assert all(a.score > evening.threshold_ and a.evened is None for a in found), [a.score for a in found]


def test_the_inspector_evens_a_part_by_the_field_its_recent_parts_share() -> None:
    """On the line: the Inspector keeps the median of the last STATION_PARTS parts' own fields; once a lamp dims on
    one side, the first parts are flagged until STATION_AGREE of the recent parts show it, then they pass evened; a
    part stained over half stays a defect."""
    from inspector.pipeline import STATION_AGREE, STATION_PARTS

    rng = np.random.default_rng(14)
    train = [make_part(rng, W, H) for _ in range(40)]
    insp = Inspector(NormalProfile(rotation="off", shading=False, even_light=True).fit(train), "v1", InputConfig())

    def png(image: np.ndarray) -> bytes:
        return cv2.imencode(".png", image)[1].tobytes()

    for i in range(6):
        assert insp.inspect_bytes(png(make_part(rng, W, H)), f"clean{i}.png").verdict == "ok"
    verdicts = [insp.inspect_bytes(png(side_lamp(make_part(rng, W, H), 0.8, 1.2)), f"lit{i}.png")
                for i in range(2 * STATION_PARTS)]
    first = [v.verdict for v in verdicts[:STATION_AGREE]]
    later = verdicts[STATION_PARTS:]
    assert first == ["defect"] * len(first)  # too few recent parts show the lamp yet
    assert all(v.verdict == "ok" and v.detail.startswith("lit unevenly") for v in later), [v.verdict for v in later]
    stained = insp.inspect_bytes(png(side_lamp(_stained(make_part(rng, W, H), 0.3), 0.8, 1.2)), "stained.png")
    assert stained.verdict == "defect" and stained.detail is None
    # after a pause the lamp may have been fixed: fields older than STATION_MAX_AGE_S do not count
    from inspector.pipeline import STATION_MAX_AGE_S

    assert insp.station_field() is not None
    assert insp.station_field(now=time.monotonic() + STATION_MAX_AGE_S + 1.0) is None


def test_a_smooth_defect_on_two_parts_in_three_never_becomes_the_stations_light() -> None:
    """A faulty step upstream that darkens one side of two parts in three, softly, reads as a lamp on each of them; a
    bare majority's median made it the station's field (5 of 9 such parts: found by a review) and the parts after it
    passed as evened. The station's field needs STATION_AGREE of its parts to agree: these stay defects, while the
    same darkening on every part (a lamp, or a fault on every part: the `lit_unevenly` alarm says so) is evened."""
    from inspector.pipeline import STATION_AGREE, STATION_PARTS

    rng = np.random.default_rng(14)  # (the previous test's line: its lamp flags every part)
    train = [make_part(rng, W, H) for _ in range(40)]
    insp = Inspector(NormalProfile(rotation="off", shading=False, even_light=True).fit(train), "v1", InputConfig())

    def png(image: np.ndarray) -> bytes:
        return cv2.imencode(".png", image)[1].tobytes()

    verdicts = []
    for i in range(3 * STATION_PARTS):
        part = make_part(rng, W, H)
        darkened = i % 3 != 2
        photo = png(side_lamp(part, 0.8, 1.2) if darkened else part)
        verdicts.append((darkened, insp.inspect_bytes(photo, f"{i}.png")))
    assert all(v.verdict == "defect" for darkened, v in verdicts if darkened), [v.verdict for _, v in verdicts]
    # none evened: the darkened parts are plain defects; a clean one may be a chance false alarm, or lie a little
    # further off than the good parts lay and pass moved back (named misplaced)
    assert all(v.reason is None and v.detail is None for darkened, v in verdicts if darkened), verdicts
    assert all(v.reason in (None, "misplaced") for darkened, v in verdicts if not darkened), verdicts
    assert not any((v.detail or "").startswith(EVENED_DETAIL) for _, v in verdicts), [v.detail for _, v in verdicts]
    assert insp.station_field() is None  # any 9 in a row: 6 darkened, 3 not (never STATION_AGREE alike)
    assert STATION_PARTS - STATION_AGREE < STATION_PARTS // 2  # agreement, not a bare majority
    for i in range(STATION_PARTS):  # on every part: it is the station's light now
        insp.inspect_bytes(png(side_lamp(make_part(rng, W, H), 0.8, 1.2)), f"all{i}.png")
    assert insp.station_field() is not None
    last = insp.inspect_bytes(png(side_lamp(make_part(rng, W, H), 0.8, 1.2)), "last.png")
    assert last.verdict == "ok" and last.detail.startswith("lit unevenly")


def test_the_second_look_evens_the_fine_pass_too_and_keeps_the_light_as_first_read() -> None:
    """At 320 px the fine pass runs: it is divided by the same field (in the profile's frame, before the tone curve),
    or the lamp alone keeps the part flagged there. The exposure, black level and lighting verdict recorded are those
    first read: a second look changes the score only (found by a review: the second reading narrowed the exposure
    bounds and turned defects into lighting rejections, and mixed two readings in the drift monitor's input)."""
    rng = np.random.default_rng(21)
    train = [make_part(rng, 320, 240) for _ in range(40)]
    good = [make_part(rng, 320, 240) for _ in range(4)]
    spotted = [make_part(rng, 320, 240, defect="spot") for _ in range(3)]
    plain = NormalProfile(rotation="off", shading=False, even_light=False).fit(train)
    evening = NormalProfile(rotation="off", shading=False, even_light=True).fit(train)
    assert evening.fine_ is not None and evening.evens_light()
    lit = [side_lamp(p, 0.85, 1.15) for p in good]  # (x0.8 .. x1.2 clips a bright part's right side at white)
    station = _station(evening, lit)
    before, after = plain.assess(lit), evening.assess(lit, station)
    assert all(f.score > plain.threshold_ for f in before)
    assert all(f.score <= evening.threshold_ and f.evened for f in after), [f.score for f in after]
    for b, a in zip(before, after):
        assert (a.exposure, a.offset, a.colour_cast, a.lighting_ok) == (b.exposure, b.offset, b.colour_cast,
                                                                        b.lighting_ok)
        assert a.anomaly_map.shape == b.anomaly_map.shape == evening.map_shape
    assert all(f.score > evening.threshold_ for f in evening.assess([side_lamp(p, 0.85, 1.15) for p in spotted],
                                                                   station))


def test_how_an_evened_part_was_lit_is_said_as_on_the_photo_whatever_its_turn() -> None:
    """The field is read in the profile's frame; a part turned by hand under a lamp brighter on the photo's right is
    said to be brighter on the right, not where its frame put the lamp (found by a review: "at the bottom" for a part
    turned by 90 degrees)."""
    rng = np.random.default_rng(41)
    train = [_placed(make_part(rng, W, H), float(a), 0.0, 0.0) for a in rng.uniform(0.0, 360.0, 40)]
    evening = NormalProfile(rotation="any", shading=False, even_light=True).fit(train)
    assert evening.locator_.mode_ == "any" and evening.evens_light()
    lit = [side_lamp(_placed(make_part(rng, W, H), a, 0.0, 0.0), 0.75, 1.25) for a in (90.0, -93.0, 177.0, 30.0)]
    station = _station(evening, lit)  # on the photo: the lamp's, whatever the parts' turns
    said = [f.evened for f in evening.assess(lit, station) if f.evened is not None]
    assert len(said) >= 3 and all("brighter on the right" in s and "at the" not in s for s in said), said
