"""Mirrored parts (profile._mirrored): a part that would not pass, and passes mirrored, matching the good parts
clearly better so, is a `defect` / `mirrored` (a camera set to mirror its image, or a part of the other hand)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector import drift
from inspector.config import InputConfig
from inspector.pipeline import Inspector
from inspector.profile import NormalProfile
from inspector.synthetic import make_part

W, H = 256, 192


def handed(seed: int, n: int, **kw) -> list[np.ndarray]:
    """Parts with a large handed feature (a dark block over the part's upper right quarter): mirrored either way they
    match the reference far worse (a loss of ~0.4, past MIRROR_MIN)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        part = make_part(rng, W, H, **kw)
        cv2.rectangle(part, (W // 2 + 5, H // 2 - 70), (W // 2 + 70, H // 2 - 5), (40, 40, 45), -1)
        out.append(part)
    return out


def judge(profile: NormalProfile, image: np.ndarray):
    data = cv2.imencode(".png", np.ascontiguousarray(image))[1].tobytes()
    return Inspector(profile, "v1", InputConfig()).inspect_bytes(data, "part.png")


@pytest.fixture(scope="module")
def held() -> NormalProfile:
    return NormalProfile(rotation="off").fit(handed(1, 40))


def test_a_mirrored_part_is_named_with_the_way_it_is_mirrored(held: NormalProfile) -> None:
    """Good parts pass; mirrored left to right, or top to bottom, each is `defect` / `mirrored` saying which, with no
    place on the part recorded; a spotted part is a plain defect, as photographed and mirrored (mirrored back it
    does not pass)."""
    good = handed(2, 4)
    assert [judge(held, p).verdict for p in good] == ["ok"] * 4
    for part, (axis, way) in zip(good, ((1, "left to right"), (0, "top to bottom"), (1, "left to right"))):
        found = judge(held, np.flip(part, axis))
        assert (found.verdict, found.reason) == ("defect", "mirrored"), found
        assert f"mirrored {way}" in found.detail and "reverse X" in found.detail, found.detail
        assert found.peak_x is None and found.score > held.threshold_
    spotted = handed(3, 2, defect="spot")
    assert [(v.verdict, v.reason) for v in (judge(held, p) for p in spotted)] == [("defect", None)] * 2
    assert judge(held, np.flip(spotted[0], 1)).reason != "mirrored"


def test_a_symmetric_product_is_never_named_mirrored() -> None:
    """make_part's flange is the same mirrored left to right: mirrored, a good part passes as it is, and a spotted
    one stays a plain defect (mirrored, it matches no better, so it is not even tried)."""
    profile = NormalProfile(rotation="off").fit([make_part(np.random.default_rng(5 + i), W, H) for i in range(30)])
    good = make_part(np.random.default_rng(99), W, H)
    assert judge(profile, good[:, ::-1]).verdict == "ok"
    rng = np.random.default_rng(7)
    for _ in range(4):
        spotted = make_part(rng, W, H, defect="spot")
        assert (judge(profile, spotted).reason, judge(profile, spotted[:, ::-1]).reason) == (None, None)


def test_a_freely_turning_part_is_named_mirrored_whatever_its_turn() -> None:
    """rotation `any`: a mirrored part turned by any angle is named (top to bottom is left to right turned half a
    turn: one flip is tried)."""
    train = handed(11, 40)
    profile = NormalProfile(rotation="any").fit(train)
    part = handed(12, 1)[0]
    for angle in (0.0, 70.0, 200.0):
        m = cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), angle, 1.0)
        turned = cv2.warpAffine(np.ascontiguousarray(part[:, ::-1]), m, (W, H), borderMode=cv2.BORDER_REPLICATE)
        found = judge(profile, turned)
        assert (found.verdict, found.reason) == ("defect", "mirrored"), (angle, found)


def test_a_streak_of_mirrored_parts_raises_camera_mirrored() -> None:
    assert drift.REASON_SIGNALS["camera_mirrored"] == "mirrored"
    assert "reverse X" in drift.MEANING["camera_mirrored"]
