"""The verdict rules: what the line records for an assessed part (ok, defect or rejected, with a reason).

Pure: an Assessment and a threshold in, a verdict out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an annotation only: the reason codes are read by modules that never score (conditions.py)
    from inspector.profile import Assessment

LIGHTING = "lighting"  # reason: the part is lit beyond the tolerance (or photographed in grey for a colour product)
CAMERA = "camera"  # reason: the photo's shape is not the trained photos' (a camera replaced or re-set)
BLURRED = "blurred"  # reason: a flagged part whose photo has lost the good parts' detail (focus, motion blur)
SIZE = "size"  # reason: the part is larger or smaller than the good parts (a part of another size, a camera moved)
SENSOR = "sensor"  # reason: a part that would not pass, whose photo has a line across it (a stuck sensor line?)
MISPLACED = "misplaced"  # reason: a part that would not pass, found further off its place than the profile allows
# (or, held by a fixture, beyond where the good parts lay, passing once moved back)
MIRRORED = "mirrored"  # reason: a part that would not pass, and passes mirrored (a part of the other hand, or a camera
# set to mirror its image)
EVENED_DETAIL = "lit unevenly"  # how the detail of an ok part judged with its light evened out begins
GROSS_EXPOSURE = (1.0 / 3.0, 3.0)  # exposure this far off the trained one: the light, not the part
GREY_FOR_COLOUR = "the photo is grey-scale while the trained parts are in colour: check the camera's colour mode"
CAMERA_DEPTHS = (10, 12, 14)  # bits a camera may write into a 16-bit photo unscaled (right-aligned); not 8: a photo
# in the low 8 bits decodes to 0 and 1, black, whose exposure reads at its floor whatever the light


def judge(found: Assessment, threshold: float) -> tuple[str, str | None, str | None]:
    """Verdict, reason code and detail for an assessed part.

    A part whose lighting is beyond the tolerance cannot be judged fairly: `rejected` / `lighting`, never a
    `defect` (a drifting lamp must not flood the review queue); so is a grey-scale photo of a product trained in
    colour (a camera switched to grey-scale: found by an adversarial test, it read as a colour cast or a defect),
    unless its light is grossly off (a black photo is grey too: the light is named) or no part is found there (an
    empty fixture on a grey belt is grey too: `not_located`, its detail saying the photo is grey).
    A part that would not pass, found further off its place than the profile allows and matching the good parts
    once moved back (or, for a product held by a fixture, beyond where its good parts lay, passing once moved back
    and lit as trained), is a `defect` / `misplaced`, saying where it lies (register.Locator.off_place): before its
    lighting, which a part out of place upsets (found by an adversarial test: a bottle in a fixture photographed 5-20%
    to one side was rejected for "exposure 2.0x"), and before `not_located`, which it explains; unless the light is
    grossly off (then no place can be found either).
    A part that would not pass and passes mirrored (left to right, or top to bottom), matching the good parts clearly
    better so, is a `defect` / `mirrored` (found by an adversarial test: a camera set to mirror read every tyre as
    not located and every bottle as a plain defect; a part of the other hand is a wrong part), named alike.
    A 16-bit photo that reads grossly dark, but within GROSS_EXPOSURE once scaled from the camera bit depth its values
    fit in, names that depth (a 12-bit camera writing its samples unscaled read "exposure 0.06x"; adversarial test).
    A colour cast that red and blue swapped back undo names the camera's colour order (it read as a lamp's colour).
    A photo whose shape (height to width) differs from the trained photos' is `rejected` / `camera` (a camera
    replaced or re-set: judged stretched, every part read as a defect; found by an adversarial test).
    A located part, lit within the tolerance, that would not pass and whose photo has a line across its whole length
    is a `defect` / `sensor`, naming the line (a stuck sensor column read as a `size` defect or a plain one: found
    by an adversarial test; a defect, not a rejection: a streak along a strip product looks alike; see sensor.py).
    A located part found larger or smaller than the good parts beyond SIZE_TOLERANCE (the scale search reaches 6%;
    a profile whose search cannot see a moved camera has it off, and never says `size`) is a `defect` / `size`: a
    part of another size is a wrong part (found by an adversarial test: such parts passed as good), and a camera
    moved closer makes every part one, each saying so.
    A located part whose photo has lost the detail good parts show (out of focus, motion blur) and that is flagged
    is a `defect` / `blurred`, saying so (found by an adversarial test: a 15 px motion blur flagged 33-100% of good
    parts as plain defects); never `rejected`: another product, located, also reads as blurred, and a wrong part is a
    defect. One the blur leaves within the threshold is `ok` (how much blur a product bears varies).
    A part that cannot be located (a missing, wrong or badly placed part) is a `defect` / `not_located`, never
    `ok`. Otherwise the score decides; an `ok` part that was flagged as lit and came within the threshold with its
    light evened out (a lamp dimmed on one side) carries how it was lit as its detail.
    """
    if found.framing is not None:  # the photo's shape: the part would be judged stretched, every part a defect
        return "rejected", CAMERA, found.framing
    gross = found.exposure is not None and not GROSS_EXPOSURE[0] <= found.exposure <= GROSS_EXPOSURE[1]
    # a camera switched to grey-scale: no colour to judge a colour product on; a black (or white) photo has no colour
    # either, but the light says why (a lamp out read "grey-scale: check the camera's colour mode"; found by a test);
    # so has an empty fixture on a grey belt or a white backlight: no part is there (found by an adversarial test:
    # an empty backlit station read "check the camera's colour mode", and no `not_located` streak was raised)
    if found.grey_for_colour and not gross and found.located:
        return "rejected", LIGHTING, (f"{GREY_FOR_COLOUR}; the part cannot be judged fairly")
    if found.mirrored is not None and not gross:  # as for a part out of place (below): its lighting is misread
        return "defect", MIRRORED, (f"the part looks like the good parts mirrored {found.mirrored}: mirrored back, it "
                                    "passes. A part of the other hand, or the camera set to mirror its image (its "
                                    "reverse X / reverse Y setting): if every part says so, check the camera")
    if found.off_place is not None and not gross:  # its lighting and its location read a part out of place
        return "defect", MISPLACED, found.off_place
    # a part that cannot be located is judged on that first (a large defect also upsets the lighting estimate),
    # unless its light is grossly off (a lamp out leaves nothing to locate: that is no defect of the part)
    if not found.lighting_ok and (found.located or gross):
        exposure = f"exposure {found.exposure:.2f}x" if found.exposure is not None else "exposure unknown"
        depth = _unscaled_depth(found)
        if depth is not None and found.exposure is not None:  # the camera's bit depth, not the lamp
            return "rejected", LIGHTING, _unscaled(depth, found.exposure)
        if found.red_blue_swapped:  # the camera's colour order, not the lamp's colour (found by an adversarial test)
            return "rejected", LIGHTING, (f"red and blue look swapped: swapped back, the part has the trained colours "
                                            f"(as photographed, colour cast {100 * found.colour_cast:.0f}%): check the "
                                            "camera's colour order (RGB or BGR); the part cannot be judged fairly")
        return "rejected", LIGHTING, (f"{exposure} of the trained lighting, colour cast "
                                        f"{100 * found.colour_cast:.0f}%: beyond the tolerance, the part cannot "
                                        "be judged fairly")
    if found.sensor_line is not None:  # a line across the photo: before the size and the location it upsets
        return "defect", SENSOR, found.sensor_line
    if not found.located:
        grey = ("; the photo is grey-scale too: if every part says so, check the camera's colour mode"
                if found.grey_for_colour else "")
        return "defect", "not_located", (f"the part does not match the trained parts wherever it is placed "
                                         f"(match {found.match:.2f}){grey}")
    if found.resized is not None:  # a part of another size (or a camera moved): a wrong part is a defect
        return "defect", SIZE, found.resized
    if found.blurred is not None and found.score > threshold:  # flagged, and the photo says why it may be
        return "defect", BLURRED, found.blurred
    if found.score > threshold:
        return "defect", None, None
    return "ok", None, found.evened  # how it was lit, when only its light evened out brought it within the threshold


def _unscaled_depth(found: Assessment) -> int | None:
    """The camera depth its values fit in whose scaling brings a grossly dark 16-bit photo nearest the trained
    exposure, within GROSS_EXPOSURE; None if none does. Every depth its values fit in is tried: a dark 12-bit photo
    whose values fit in 10 bits read "exposure 0.06x" when only the smallest was (found by a review)."""
    if found.used_bits is None or found.exposure is None or found.exposure >= GROSS_EXPOSURE[0]:
        return None
    fits = [d for d in CAMERA_DEPTHS if found.used_bits <= d
            and GROSS_EXPOSURE[0] <= found.exposure * _scale(d) <= GROSS_EXPOSURE[1]]
    return min(fits, key=lambda d: abs(math.log(found.exposure * _scale(d))), default=None)


def _scale(depth: int) -> float:
    """What a sample of `depth` bits is multiplied by to span 16 bits (16.004 for 12)."""
    return 65535.0 / (2 ** depth - 1)


def _unscaled(depth: int, exposure: float) -> str:
    """The detail for a 16-bit photo whose values are a `depth`-bit camera's samples, unscaled."""
    return (f"the photo is 16-bit but its values are all below {2 ** depth}: a {depth}-bit camera writing its "
            f"samples unscaled? Scaled to 16 bits it reads exposure {exposure * _scale(depth):.2f}x, as it is "
            f"{exposure:.2f}x of the trained lighting: if so, set the camera to scale them to 16 bits (or to write "
            "8-bit photos), else the light is that dim; the part cannot be judged fairly")
