"""The verdict rules: what the line records for an assessed part (ok, defect or rejected, with a reason).

Pure: an Assessment and a threshold in, a verdict out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an annotation only: the reason codes are read by modules that never score (conditions.py)
    from inspector.profile import Assessment

LIGHTING = "lighting"  # reason: the part is lit beyond the tolerance (or photographed in grey for a colour product)
CAMERA = "camera"  # reason: the photo's shape is not the trained photos' (a camera replaced or re-set)
GROSS_EXPOSURE = (1.0 / 3.0, 3.0)  # exposure this far off the trained one: the light, not the part
GREY_FOR_COLOUR = "the photo is grey-scale while the trained parts are in colour: check the camera's colour mode"


def judge(found: Assessment, threshold: float) -> tuple[str, str | None, str | None]:
    """Verdict, reason code and detail for an assessed part.

    A part whose lighting is beyond the tolerance cannot be judged fairly: `rejected` / `lighting`, never a
    `defect` (a drifting lamp must not flood the review queue); so is a grey-scale photo of a product trained in
    colour (a camera switched to grey-scale: found by an adversarial test, it read as a colour cast or a defect),
    unless its light is grossly off (a black photo is grey too: the light is named).
    A photo whose shape (height to width) differs from the trained photos' is `rejected` / `camera` (a camera
    replaced or re-set: judged stretched, every part read as a defect; found by an adversarial test).
    A part that cannot be located (a missing, wrong or badly placed part) is a `defect` / `not_located`, never
    `ok`. Otherwise the score decides.
    """
    if found.framing is not None:  # the photo's shape: the part would be judged stretched, every part a defect
        return "rejected", CAMERA, found.framing
    gross = found.exposure is not None and not GROSS_EXPOSURE[0] <= found.exposure <= GROSS_EXPOSURE[1]
    # a camera switched to grey-scale: no colour to judge a colour product on; a black (or white) photo has no colour
    # either, but the light says why (a lamp out read "grey-scale: check the camera's colour mode"; found by a test)
    if found.grey_for_colour and not gross:
        return "rejected", LIGHTING, (f"{GREY_FOR_COLOUR}; the part cannot be judged fairly")
    # a part that cannot be located is judged on that first (a large defect also upsets the lighting estimate),
    # unless its light is grossly off (a lamp out leaves nothing to locate: that is no defect of the part)
    if not found.lighting_ok and (found.located or gross):
        exposure = f"exposure {found.exposure:.2f}x" if found.exposure is not None else "exposure unknown"
        return "rejected", LIGHTING, (f"{exposure} of the trained lighting, colour cast "
                                        f"{100 * found.colour_cast:.0f}%: beyond the tolerance, the part cannot "
                                        "be judged fairly")
    if not found.located:
        return "defect", "not_located", (f"the part does not match the trained parts wherever it is placed "
                                         f"(match {found.match:.2f})")
    return ("defect" if found.score > threshold else "ok"), None, None
