"""The retrain gate's sensitivity probe (inspector/probe.py) and its decision (retrain.sensitivity_verdict)."""

from __future__ import annotations

import numpy as np

from inspector import probe, retrain
from inspector.synthetic import make_part


def belt_photo(seed: int) -> np.ndarray:
    """A part in the top-left corner of a wide, plain belt: (240, 480, 3) BGR."""
    photo = np.full((240, 480, 3), (118, 120, 124), np.uint8)
    photo[:120, :160] = make_part(np.random.default_rng(seed), 160, 120)
    return photo


def test_specks_land_on_the_part_not_on_the_empty_belt() -> None:
    """Found by an adversarial test: with the part off-centre, the specks landed on the belt, which every profile
    flags, so a candidate blind on the part still passed. They land where the photo differs from its border colour."""
    photo = belt_photo(1)
    specks = probe.specks([photo] * 3)
    assert len(specks) == 3 * len(probe.SIZES)
    for speck in specks:
        changed = np.argwhere(np.any(speck.image != photo, axis=2))
        assert changed.size and changed[:, 0].max() < 120 and changed[:, 1].max() < 160, speck.size
    # deterministic: the same images give the same specks
    again = probe.specks([photo] * 3)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(specks, again))


def test_a_part_that_fills_the_photo_gets_specks_in_its_middle() -> None:
    rng = np.random.default_rng(0)
    texture = rng.integers(90, 110, (100, 200, 3), dtype=np.uint8)  # nothing stands out from the border
    for speck in probe.specks([texture]):
        changed = np.argwhere(np.any(speck.image != texture, axis=2))
        centre = changed.mean(axis=0)
        assert 15 <= centre[0] <= 85 and 30 <= centre[1] <= 170


def test_the_verdict_keeps_the_active_reach_and_the_lineage_first() -> None:
    kept = retrain.SENSITIVITY_KEPT
    assert retrain.sensitivity_verdict("v1", 1.5, 1.5 * kept + 0.01, None) == (False, "", "")
    less, against, note = retrain.sensitivity_verdict("v1", 1.5, 1.5 * kept - 0.01, None)
    assert less and against == "v1's 1.50" and note == ""
    # step by step: each step keeps 90% of the active one, two steps lose 19% of the first version's reach
    less, against, _ = retrain.sensitivity_verdict("v2", 1.35, 1.215, ("v1", 1.5))
    assert less and against == "v1's 1.50 (the first of this lineage)"
    # a lineage already below (a version activated by force): only a warning, compared with the active one
    less, _, note = retrain.sensitivity_verdict("v2", 1.0, 0.99, ("v1", 1.5))
    assert not less and note.startswith("this lineage has lost sensitivity since v1")
    assert retrain.sensitivity_verdict("v2", 1.0, 0.8, ("v1", 1.5))[0]  # and still refused for a further loss
    # nothing to compare
    assert retrain.sensitivity_verdict("v1", None, None, None)[2].startswith("the sensitivity probe did not run")
    assert retrain.sensitivity_verdict("v1", 0.05, 0.0, None)[2].startswith("the sensitivity probe could not compare")
