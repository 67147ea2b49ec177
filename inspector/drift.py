"""Drift of the conditions over the sequence of parts: a pure computation (numbers in, events out, no I/O).

Two things drift on a line without any single part looking wrong: the lighting (a lamp ages or fails, a camera's
exposure is changed) and the look of the parts (dirt on the lens, focus, a new batch of material). Each part
brings its exposure relative to the profile's reference (1.0 = as trained) and its anomaly score; the training
set gave a centre and a robust sd of both (`profile.json` -> "drift"; the score's: median and MAD of the held-out
scores; the exposure's, since the afternoon of 2026-12-07, `profile.balanced_spread`: the MAD's sd widened by the 5-95%
range's up to SPREAD_WIDEN, the centre where the winsorised z below average zero, because the castings' exposures are
skewed, a quarter of the good parts reading 1.8 MAD-sds darker, and centred on the median and the MAD the darker
side raised an alarm every ~800 good castings: 620 in 500,000 replayed through the real code, none since; profiles
saved before keep their median). Each value is standardised against them, z = (x - centre) / sd, winsorised to
+-WINSOR (one odd part, a defect, moves a statistic by at most WINSOR - k), and fed to CUSUMs (Page 1954):

- exposure: two-sided, on log exposure: S_low (darker) and S_high (brighter), k = 1.0, h = 10, in units of the
  training sd floored at EXPOSURE_SD_FLOOR (0.01 in log exposure, about 1%): a training set shot under one
  perfectly steady lamp must not make a 0.5% change an alarm;
- score: one-sided upward, k = 1.5, h = 10 (a score that falls is parts looking more like training: no alarm).

S_n = min(CAP * h, max(0, S_{n-1} + z_n - k)). An alarm is raised once, when S crosses above h, and cleared
when S falls back to h * CLEAR or below (hysteresis: it neither flaps near h nor stays up long after the lamp is
fixed; the cap at 2h keeps a long-lasting drift from taking hundreds of parts to clear). A rejected part has no
score and is skipped; a value that is None or not finite leaves its statistic unchanged.

Why CUSUM and not EWMA: the change to catch is a step of known minimum size (a lamp losing 10%, ln 0.9 = -0.105)
and CUSUM is the optimal detector of a step shift of a given size (Lorden 1971, Moustakides 1986); EWMA is
better at small drifts of unknown size, which here are not worth an alarm. k and h were chosen by computing
run lengths (Brook & Evans Markov chain, 600 states, checked against the published k = 0.5, h = 5 value of
930 one-sided, and by simulation); in-control average run length (ARL0, parts between false alarms):

| statistic | distribution of good parts' z | ARL0 |
|---|---|---|
| exposure, both sides | normal / Student t5 scaled to sd 1 | 1.3e9 / 2.1e7 |
| exposure, both sides | the same with the sd underestimated by 30% | 4.3e5 / 2.6e5 |
| score | normal / t5 | 1.3e14 / 1.4e10 |
| score | held-out scores of casting-impeller / mvtec bottle (train/good, robust z) | 3.5e9 / 5.8e5 |
| score | bottle with 1% / 5% defects among the parts | 1.8e5 / 1.1e4 |

Detection: a 10% darker lamp with a training sd of 0.03 is a 3.5 sd shift, noticed after 4.9 parts on average
(t5: 4.8); 2 sd (a 10% drop with sd 0.05, or 2% with a tight training set) after 10.8. A score shift of 3 sd is
noticed after 7.7 parts, 2 sd after 21. No alarm is ever raised in fewer than 4 parts (exposure; 5 for the score):
each part adds at most WINSOR - k. A Monte Carlo run of 1e8 part-steps agreed with the chain (exposure, sd
underestimated by 30%: 4.6e5 normal, 2.6e5 t5; bottle's scores 6.8e5). By simulation (tests/test_drift.py): 0
false alarms in 400,000 good parts (50,000 per training sd 0.005 / 0.01 / 0.02 / 0.03, normal and t5), and a x0.9
lamp from part 1000 on noticed after 4 to 7 parts (5 seeds per sd and distribution). The bottle's held-out
scores have a heavy right tail in robust units (2.4% beyond 4 sd), which is why the score's k is larger than the
exposure's. A line that turns out many defects (5% and more) raises the score alarm in time: parts look less
like training, which is what it says. The exposure floor here (0.01) is above the one profile.py stores (0.005):
with k = 1 a steady shift accumulates once it exceeds k * sd, so the floor sets the smallest lasting lighting
change worth an alarm. With a tight training set, a lasting change of 0.5% is noticed after 1.4e5 parts on
average (never, in practice), 1% after 125, 1.5% after 20, 2% after 11; a floor of 0.005 would halve those
sizes and alarm on a 0.5% change within ~125 parts.

Streaks of a station-wide cause. A judged part can be flagged with a reason that names a cause outside the part:
`blurred` (focus, motion blur), `size` (a camera moved or refocused, another product), `not_located` (an empty
fixture, a wrong product, a camera moved), `sensor` (a line across the whole photo: a stuck sensor column or row),
`misplaced` (parts lying off their place: the camera, its mount or the fixture moved, the trigger's timing),
`mirrored` (parts that pass mirrored: a camera set to mirror its image, parts of the other hand);
and an `ok` part can have passed only with its light evened out (a lamp dimmed on one side: `lit_unevenly`, from its
detail). One at a time they happen; when the camera is knocked out of focus every part is one. For each of them a
Bernoulli CUSUM (Reynolds & Stoumbos 1999) over the judged parts, x = 1 when the part has that reason: S_n = min(CAP
* h, max(0, S_{n-1} + x ln(p1/p0) + (1 - x) ln((1 - p1)/(1 - p0)))), with p0 = 0.02 (isolated parts), p1 = 0.5 (a
streak), h = 16: a part with the reason adds 3.22, one without takes 0.67 away; raised above h, cleared at h/2,
capped at 2h as above. They need no baseline (only the reasons). Run lengths (Markov chain on a 0.0005 grid,
agreeing with a 0.002 grid to 3 digits; simulated 1e7 to 3e7 parts at 5%, 10% and 30%: 2.2e5, 2384, 30.8), by the
share of parts with the reason:

| share of parts with the reason | 0.5% | 1% | 2% | 3% | 5% | 10% | 20% | 30% | 50% | every part |
|---|---|---|---|---|---|---|---|---|---|---|
| average run length (parts) | 1.9e11 | 4.1e9 | 6.8e7 | 5.5e6 | 2.0e5 | 2.4e3 | 85 | 31 | 13 | 5 (exactly) |

At 2 parts a second, 6.8e7 parts are over a year: isolated parts at 2% never alarm in practice (tests: 0 in 200,000
parts at 2%, each reason), a station where every part has the reason alarms at its 5th part, one where 30% of
the parts have it after 31 on average. After a streak (statistic at its cap 2h), 36 parts without the reason clear it.

Parts flagged at the same place in the photo (`same_place`). Dust or a drop on the lens or the station's window, a
scratch on it, a reflection, or a tool that marks every part alike: every part is flagged, each rightly on its own,
and nothing says why. A `defect` carries where its anomaly map peaks, as fractions of the photo's width and height
(`peak_x`, `peak_y`); a plain one (no reason: a `blurred` or `size` streak has its own alarm, a `not_located` part
no place) counts as x = 1 when that lies within PLACE_NEAR of both coordinates of where one of the PLACE_MEMORY
plain defects before it peaked, and feeds the same Bernoulli CUSUM as the streaks above. Parts flagged at places of
their own (real defects, which lie wherever the part has them) seldom count: a box of +-5% around each of 3 places
covers 3% of the photo, so at 5% defective parts with uniform places 0.14% of the parts count (simulated; run length
far beyond 1e11 parts by the table above), and defects gathered on a square tenth of the photo at 10% defective
2.3% (about 3e7). A mark on every part raises the alarm at the 6th part (the first only marks the place), one on
three parts in four after 9 on average. The alarm names the place where it was raised (kept while it lasts, moved
only by parts flagged near it), so the person sent to the station knows where to look; the parts stay flagged (a
mark on every part is a defect on every part until somebody has looked).

Where the parts lie (`placement_x`, `placement_y`). A camera, its mount or a fixture knocked a few percent aside moves
every part alike, by less than good parts may scatter one by one: on a product whose good parts lie up to 7% apart
(the casting) a part 3% off is not out of place by itself, yet most such parts are flagged, each as a plain defect.
Every located part records where it lies (`pos_x`, `pos_y`: shares of the photo's width and height from where the
profile's reference lies, register.Locator.where); the training set gave the median and spread of each
(Locator.place_spread_, robust_spread: the MAD's sd widened by the 5-95% range's, floored at POSITION_SD_FLOOR). Once
POSITION_PARTS parts lay somewhere, each axis's statistic is how far the median of the last POSITION_PARTS lies from
the training median, in spreads; above POSITION_LIMIT the alarm is raised, at POSITION_LIMIT * CLEAR or below it
clears. Not a CUSUM: positions have heavy tails (a texture that fools the phase correlation reads a good part 20%
off; the tyre's test photos lie 1.1% left of its training photos, 0.7 of their spreads, with a wider scatter),
and CUSUMs sized to notice a 3% knock on the casting (k = 1 or 1.5 spreads, h = 8 or 10) raised alarms on the tyre's
good photos every few hundred to few thousand parts (bootstrapped from them); the median of 49 ignores up to 24 wild
reads. Window and limit, chosen on the shared sets' positions bootstrapped (25, 35 or 49 parts; 1.5 to 2.5 spreads):
with 25 parts and 2 spreads the tyre's good photos raised an alarm every 400 parts and a casting knocked 3% aside
(1.85 spreads) was never noticed; with 49 and 1.5, bootstrapped, one alarm in 3e5 tyre parts and the casting
after 35 (replayed through the real code with 5% defective parts: 10 in 1e6 tyre parts; docs/line-conditions.md).
What it costs: a
knock is noticed only once half the window lies beyond the limit (25 parts for one well beyond it), and a move of
less than 1.5 spreads never is. Measured by replaying the shared sets' parts through the real code
(docs/line-conditions.md, "Where
the parts lie"). A `not_located` part has no position; a `mirrored` one is read
against the part mirrored; neither counts. A `misplaced` part counts: it lies where it was found.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inspector.verdicts import EVENED_DETAIL

WINSOR = 4.0  # standardised values are clipped to +-WINSOR
EXPOSURE_SD_FLOOR = 0.01  # smallest sd of log exposure used for standardising (about 1% of exposure)
EXPOSURE_K, EXPOSURE_H = 1.0, 10.0
SPREAD_WIDEN = 1.5  # robust_spread: a long tail may widen the MAD's sd by at most half
SCORE_K, SCORE_H = 1.5, 10.0
CAP = 2.0  # a statistic never exceeds CAP * h
CLEAR = 0.5  # an alarm clears when its statistic falls to CLEAR * h or below
RECENT = 0.1  # weight of the newest part in the `recent` exponentially weighted means shown to people
REASON_P0, REASON_P1, REASON_H = 0.02, 0.5, 16.0  # streak alarms: in-control and streak rates, alarm level
RECENT_PARTS = 20  # a streak alarm's recent level: how many of the last RECENT_PARTS parts have its reason
PLACE = "same_place"  # the signal of parts flagged at one place in the photo
PLACE_NEAR = 0.05  # two flagged parts peak at the same place within this share of the photo's width and its height
PLACE_MEMORY = 3  # ... when a part's peak is near that of one of the PLACE_MEMORY flagged parts before it
POSITION_PARTS = 49  # placement_x/_y: the median of where the last POSITION_PARTS located parts lay ...
POSITION_LIMIT = 1.5  # ... off where the good parts lay by more than this many of their spreads raises the alarm
POSITION_SD_FLOOR = 0.005  # smallest spread used (half a percent of the field: a fixture holding parts to a pixel must
# not make a 1% move an alarm; a camera knocked 2% aside is one)
POSITIONS = {"placement_x": 0, "placement_y": 1}  # -> the axis (0: across, 1: down)

EVENED = "evened"  # the cause of an ok part judged with its light evened out (its detail begins EVENED_DETAIL)
REASON_SIGNALS = {"camera_blurred": "blurred", "camera_size": "size", "not_located": "not_located",
                  "camera_sensor": "sensor", "camera_moved": "misplaced", "camera_mirrored": "mirrored",
                  "lit_unevenly": EVENED}  # -> the cause (a reason code, or EVENED)
MISREAD = frozenset({"misplaced", "mirrored"})  # reasons whose part's exposure and score are not fed (read against
# the reference out of place or mirrored: a bottle 15% to one side read "exposure 2.0x", which raised exposure_high
# before camera_moved; found by a review)
SIGNALS = ("exposure_low", "exposure_high", "score_high", *REASON_SIGNALS, PLACE, *POSITIONS)
MEANING = {
    "exposure_low": "lighting has drifted darker: check the lamp/camera exposure",
    "exposure_high": "lighting has drifted brighter: check the lamp/camera exposure",
    "score_high": "parts look less like the training set: check the camera (focus, dirt on the lens), the "
                  "lighting and the product",
    "camera_blurred": "most recent parts are blurred: check the camera's focus, the exposure time (parts moving) "
                      "and vibration",
    "camera_size": "most recent parts appear larger or smaller than trained: has the camera moved or been "
                   "refocused, or is this another product?",
    "not_located": "most recent parts were not found: empty fixture, wrong product, or the camera moved",
    "camera_sensor": "most recent parts show a line across the whole photo: a stuck sensor column or row (check the "
                     "camera's sensor and its cable), or a tool scratching every part alike",
    "camera_moved": "most recent parts lie off where the good parts lay: the camera, its mount or the fixture has "
                    "moved, or the trigger fires early or late; check them, or train a profile on photos of the new "
                    "place if it is meant",
    "camera_mirrored": "most recent parts look like the good parts mirrored: the camera set to mirror its image "
                       "(its reverse X / reverse Y setting), or parts of the other hand; check the camera's settings "
                       "and the parts",
    "lit_unevenly": "most recent parts passed only with their light evened out: a lamp dimmed or failed on one side, "
                    "or a lens or lamp changed; check the lamps",
    PLACE: "parts are flagged one after another at one place in the photo: dust, a drop or a scratch on the lens or "
           "the window, a reflection, or a tool marking every part alike; look at that place on the lens and on "
           "the parts",
    **{signal: f"recent parts lie {way} where the good parts lay in training: the camera, its mount or the "
               "fixture has moved, or the part stop or the trigger's timing changed; check them (parts near the "
               "photo's edge are judged on less of themselves), or train a profile on photos of the new place if it "
               "is meant" for signal, way in (("placement_x", "to one side of"), ("placement_y", "above or below"))},
}


@dataclass(frozen=True)
class Baseline:
    """What good parts looked like in training: median and robust sd of log exposure and of the score."""

    log_exposure_median: float
    log_exposure_sd: float
    score_median: float
    score_sd: float
    position: tuple[tuple[float, float], tuple[float, float]] | None = None  # ((median, spread) across, down),
    # shares of the photo's width and height (Locator.place_spread_); None: trained before it (positions not watched)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Baseline | None:
        """From profile.json metadata ("drift": {"log_exposure": [median, sd], "score": [median, sd]}); None when
        absent or malformed (a profile trained before drift monitoring)."""
        drift = meta.get("drift")
        if not isinstance(drift, Mapping):
            return None
        try:
            (em, es), (sm, ss) = drift["log_exposure"], drift["score"]
            values = [float(em), float(es), float(sm), float(ss)]
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(v) for v in values) or values[1] < 0 or values[3] <= 0:
            return None
        return cls(*values, position=_position_baseline(drift.get("position")))

    def position_z(self, axis: int, value: float) -> float:
        """How far a position (share of the field) lies from where the good parts lay, in their spreads (floored)."""
        assert self.position is not None
        median, spread = self.position[axis]
        return (value - median) / max(spread, POSITION_SD_FLOOR)

    @property
    def exposure_sd(self) -> float:
        """The sd of log exposure used for standardising (floored)."""
        return max(self.log_exposure_sd, EXPOSURE_SD_FLOOR)


@dataclass(frozen=True)
class DriftEvent:
    """An alarm raised or cleared on one statistic, at part `n` (1-based, counted since the monitor started)."""

    kind: str  # "raised" or "cleared"
    signal: str  # one of SIGNALS
    value: float  # the statistic after this part
    h: float  # its alarm level
    n: int
    at: Any = None  # whatever the caller passed to update (a datetime)
    ref: Any = None  # likewise (an inspection id)
    recent: float | None = None  # exposure_*: recent exposure (1.0 = as trained); score_high: recent score;
    # a streak signal: how many of the last RECENT_PARTS parts have its reason (same_place: are flagged at the spot)
    where: tuple[float, float] | None = None  # same_place: the spot (fractions of the photo's width and height)

    @property
    def meaning(self) -> str:
        """What the alarm means for the people on the line."""
        return MEANING[self.signal]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (at as ISO text when it has isoformat; ref as "id", the inspection id it names)."""
        at = self.at.isoformat() if hasattr(self.at, "isoformat") else self.at
        out = {"kind": self.kind, "signal": self.signal, "value": round(self.value, 4), "h": self.h, "n": self.n,
               "at": at, "id": self.ref, "recent": self.recent, "meaning": self.meaning}
        return out if self.where is None else {**out, "where": list(self.where)}


def _position_baseline(value: Any) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The "position" entry of a drift record, [[median, spread] across, [median, spread] down]; None when absent or
    malformed (its positions are then not watched, the rest of the baseline still is)."""
    try:
        (mx, sx), (my, sy) = value
        out = ((float(mx), float(sx)), (float(my), float(sy)))
    except (TypeError, ValueError):
        return None
    flat = [v for pair in out for v in pair]
    return out if all(math.isfinite(v) for v in flat) and sx > 0 and sy > 0 else None


def robust_spread(values: Iterable[float]) -> tuple[float, float]:
    """(median, spread) of good parts' values, the spread 1.4826 x the median absolute deviation widened up to
    SPREAD_WIDEN times by the 5-95% range / 3.29 (both an sd for a normal scatter; the range is wider where the values
    have a long tail, as hand-placed tyres' positions (1.46x) and the castings' exposures (1.27x) do, and much wider
    where a few are odd: 6-10% of training photos at 0.6x made it 7x, and a lamp 15% darker went unnoticed; found by
    an adversarial test); for fewer than two values, the one (or 0.0) and a spread of 0.0."""
    x = [float(v) for v in values if math.isfinite(v)]
    if len(x) < 2:
        return (x[0] if x else 0.0), 0.0
    median = statistics.median(x)
    mad = 1.4826 * statistics.median(abs(v - median) for v in x)
    cuts = statistics.quantiles(x, n=20, method="inclusive")  # 5%, 10%, ..., 95% (NumPy's default interpolation)
    return median, max(mad, min((cuts[-1] - cuts[0]) / 3.29, SPREAD_WIDEN * mad))


def standardise(value: float, median: float, sd: float) -> float:
    """(value - median) / sd, winsorised to +-WINSOR."""
    return min(WINSOR, max(-WINSOR, (value - median) / sd))


def bernoulli_llr(hit: bool, p0: float = REASON_P0, p1: float = REASON_P1) -> float:
    """One part's log-likelihood ratio of rate p1 against p0 (hit: the part has the reason)."""
    return math.log(p1 / p0) if hit else math.log((1.0 - p1) / (1.0 - p0))


def cause(row: Mapping[str, Any]) -> str | None:
    """The station-wide cause a recorded part carries: its reason code, EVENED for an ok part judged with its light
    evened out, else None."""
    if row.get("verdict") == "ok" and str(row.get("detail") or "").startswith(EVENED_DETAIL):
        return EVENED
    return row.get("reason")


def place(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """Where a recorded part was flagged, (x, y) as fractions of the photo's width and height; None unless it is a
    plain `defect` (no reason) with a peak recorded."""
    if row.get("verdict") != "defect" or row.get("reason") is not None:
        return None
    x, y = row.get("peak_x"), row.get("peak_y")
    if not isinstance(x, numbers.Real) or not isinstance(y, numbers.Real):
        return None
    return (float(x), float(y)) if math.isfinite(x) and math.isfinite(y) else None


def lies(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """Where a recorded part lay, (x, y) as shares of the photo's width and height from where the profile's reference
    lies; None unless both are recorded and finite (a part not found, or judged before they were recorded)."""
    x, y = row.get("pos_x"), row.get("pos_y")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (x, y)):
        return None
    return (float(x), float(y)) if math.isfinite(x) and math.isfinite(y) else None


def near(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two places lie within PLACE_NEAR of each other in both coordinates."""
    return abs(a[0] - b[0]) <= PLACE_NEAR and abs(a[1] - b[1]) <= PLACE_NEAR


def watched(signal: str) -> str:
    """What a signal watches: "exposure", "score", the reason code of a streak signal, PLACE, "pos_x" or
    "pos_y"."""
    if signal == PLACE:
        return PLACE
    if signal in POSITIONS:
        return "pos_x" if POSITIONS[signal] == 0 else "pos_y"
    if signal in REASON_SIGNALS:
        return REASON_SIGNALS[signal]
    return "exposure" if signal.startswith("exposure") else "score"


def cusum_step(s: float, z: float, k: float, h: float) -> float:
    """One step of an upward CUSUM, capped at CAP * h."""
    return min(CAP * h, max(0.0, s + z - k))


@dataclass
class _Alarm:
    """An upward CUSUM with its alarm state."""

    k: float
    h: float
    s: float = 0.0
    active: bool = False
    since: Any = None  # `at` of the part that raised it
    since_ref: Any = None
    since_n: int | None = None

    def step(self, z: float) -> str | None:
        """Add one standardised value (the sum capped at CAP * h); "raised", "cleared" or None."""
        return self.level(cusum_step(self.s, z, self.k, self.h))

    def level(self, value: float) -> str | None:
        """Set the statistic (a CUSUM's sum, or a level such as placement_x/_y's median, as it is: a median has no
        memory to cap); "raised", "cleared" or None."""
        self.s = value
        if not self.active and self.s > self.h:
            self.active = True
            return "raised"
        if self.active and self.s <= CLEAR * self.h:
            self.active = False
            return "cleared"
        return None


@dataclass
class DriftMonitor:
    """CUSUMs of one station's parts against one profile's baseline (a new profile needs a new monitor)."""

    baseline: Baseline
    n: int = 0  # parts seen (judged parts only)
    alarms: dict[str, _Alarm] = field(default_factory=lambda: {
        "exposure_low": _Alarm(EXPOSURE_K, EXPOSURE_H), "exposure_high": _Alarm(EXPOSURE_K, EXPOSURE_H),
        "score_high": _Alarm(SCORE_K, SCORE_H), **{s: _Alarm(0.0, REASON_H) for s in (*REASON_SIGNALS, PLACE)},
        **{s: _Alarm(0.0, POSITION_LIMIT) for s in POSITIONS}})
    recent_log_exposure: float | None = None
    recent_score: float | None = None
    recent_reasons: deque[str | None] = field(default_factory=lambda: deque(maxlen=RECENT_PARTS))
    places: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=PLACE_MEMORY))  # last flagged
    recent_places: deque[tuple[float, float] | None] = field(default_factory=lambda: deque(maxlen=RECENT_PARTS))
    spot: tuple[float, float] | None = None  # where the latest counted part peaked; frozen near it while raised
    # where the last located parts lay (shares of the field), with a baseline that has "position"
    positions: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=POSITION_PARTS))
    sides: dict[str, float] = field(default_factory=dict)  # placement_x/_y: the side (+1 right or below, -1) raised

    def update(self, exposure: float | None, score: float | None, at: Any = None, ref: Any = None,
               reason: str | None = None, place: tuple[float, float] | None = None,
               lies: tuple[float, float] | None = None) -> list[DriftEvent]:
        """Feed one judged part (exposure relative to the reference, anomaly score, reason code, where it was
        flagged, where it lay); the alarms raised or cleared. A part with none of the first three is skipped."""
        b = self.baseline
        if reason in MISREAD:  # its light and score were read against the part out of place or mirrored
            exposure = score = None
        has_exposure = exposure is not None and math.isfinite(exposure) and exposure > 0
        has_score = score is not None and math.isfinite(score)
        if not (has_exposure or has_score or reason is not None):
            return []
        self.n += 1
        steps: list[tuple[str, str | None]] = []
        if has_exposure:
            log_e = math.log(exposure)
            self.recent_log_exposure = _ewma(self.recent_log_exposure, log_e)
            z = standardise(log_e, b.log_exposure_median, b.exposure_sd)
            steps += [("exposure_low", self.alarms["exposure_low"].step(-z)),
                      ("exposure_high", self.alarms["exposure_high"].step(z))]
        if has_score:
            self.recent_score = _ewma(self.recent_score, float(score))
            z = standardise(float(score), b.score_median, b.score_sd)
            steps.append(("score_high", self.alarms["score_high"].step(z)))
        steps += self._reason_steps(reason)
        steps.append((PLACE, self._place_step(place)))
        steps += self._position_steps(None if reason in ("not_located", "mirrored") else lies)
        events = []
        for signal, kind in steps:
            if kind is None:
                continue
            alarm = self.alarms[signal]
            if kind == "raised":
                alarm.since, alarm.since_ref, alarm.since_n = at, ref, self.n
            events.append(DriftEvent(kind, signal, alarm.s, alarm.h, self.n, at, ref, self.recent(signal),
                                     self.spot if signal == PLACE else None))
        return events

    def _place_step(self, place: tuple[float, float] | None) -> str | None:
        """Step the same-place alarm with where one part was flagged (None: not a plain defect)."""
        hit = place is not None and any(near(place, p) for p in self.places)
        if place is not None:
            self.places.append(place)
        # the spot follows the counted parts, but while the alarm is up only those near it (a chance match of two
        # real defects elsewhere must not move the place the banner names)
        if hit and (self.spot is None or not self.alarms[PLACE].active or near(place, self.spot)):
            self.spot = place
        self.recent_places.append(place)
        return self.alarms[PLACE].step(bernoulli_llr(hit))

    def _position_steps(self, lies: tuple[float, float] | None) -> list[tuple[str, str | None]]:
        """Step placement_x/_y with where one part lay (None: not located, read mirrored, or not recorded): once
        POSITION_PARTS parts lay somewhere, each axis's statistic is how far their median lies from where the good
        parts lay, in the good parts' spreads (floored)."""
        b = self.baseline
        if b.position is None or lies is None or not all(math.isfinite(v) for v in lies):
            return []
        self.positions.append((float(lies[0]), float(lies[1])))
        if len(self.positions) < POSITION_PARTS:
            return []
        steps: list[tuple[str, str | None]] = []
        for signal, axis in POSITIONS.items():
            z = b.position_z(axis, statistics.median(p[axis] for p in self.positions))
            alarm = self.alarms[signal]
            kind = alarm.level(abs(z))
            if kind is None and alarm.active and z * self.sides.get(signal, 0.0) < 0:
                kind = "raised"  # over to the other side while up (a camera set back too far): raised again, naming
                # the new side (found by a review: the log went on naming the first)
            if kind == "raised":
                self.sides[signal] = math.copysign(1.0, z)
            steps.append((signal, kind))
        return steps

    def _reason_steps(self, reason: str | None) -> list[tuple[str, str | None]]:
        """Step each streak alarm (Bernoulli CUSUM) with one part's reason."""
        self.recent_reasons.append(reason)
        return [(s, self.alarms[s].step(bernoulli_llr(reason == r))) for s, r in REASON_SIGNALS.items()]

    def recent(self, signal: str) -> float | None:
        """The recent level behind a signal: exposure (1.0 = as trained) for exposure_*, the score for score_high,
        how many of the last RECENT_PARTS parts have the reason for a streak signal (are flagged at one place), for
        placement_x/_y how far the last POSITION_PARTS located parts' median lies from where the good parts lay (share
        of the photo's width or height; positive: right, below; None until POSITION_PARTS parts)."""
        if signal in POSITIONS:
            if len(self.positions) < POSITION_PARTS or self.baseline.position is None:
                return None
            axis = POSITIONS[signal]
            return round(statistics.median(p[axis] for p in self.positions) - self.baseline.position[axis][0], 4)
        if signal == PLACE:
            if not self.recent_places:
                return None
            spot = self.spot
            return 0 if spot is None else sum(p is not None and near(p, spot) for p in self.recent_places)
        if signal in REASON_SIGNALS:
            return self.recent_reasons.count(REASON_SIGNALS[signal]) if self.recent_reasons else None
        if signal == "score_high":
            return None if self.recent_score is None else round(self.recent_score, 4)
        return None if self.recent_log_exposure is None else round(math.exp(self.recent_log_exposure), 4)

    @property
    def active(self) -> list[str]:
        """The signals whose alarm is active."""
        return [s for s in SIGNALS if self.alarms[s].active]

    def state(self) -> dict[str, Any]:
        """JSON-able state: parts seen, each statistic with its levels and alarm, recent exposure and score."""
        stats = {}
        for signal in SIGNALS:
            a = self.alarms[signal]
            since = a.since.isoformat() if hasattr(a.since, "isoformat") else a.since
            stats[signal] = {"value": round(a.s, 4), "k": a.k, "h": a.h, "active": a.active,
                             "since": since if a.active else None, "since_ref": a.since_ref if a.active else None}
        return {"parts": self.n, "statistics": stats, "active": self.active,
                "recent_exposure": self.recent("exposure_low"), "recent_score": self.recent("score_high"),
                "recent_reasons": {s: self.recent(s) for s in (*REASON_SIGNALS, PLACE)},
                "recent_position": [self.recent(s) for s in POSITIONS],
                "spot": [round(v, 4) for v in self.spot] if self.spot and self.alarms[PLACE].active else None,
                "baseline": {"log_exposure": [self.baseline.log_exposure_median, self.baseline.exposure_sd],
                             "score": [self.baseline.score_median, self.baseline.score_sd],
                             "position": None if self.baseline.position is None else [
                                 [m, max(sd, POSITION_SD_FLOOR)] for m, sd in self.baseline.position]}}


def _ewma(previous: float | None, value: float) -> float:
    """Exponentially weighted mean with weight RECENT on the newest value."""
    return value if previous is None else previous + RECENT * (value - previous)


@dataclass
class StationDrift:
    """The outcome of replaying one station's parts: the monitor at the end, and every event on the way."""

    station: str
    profile_version: str | None = None  # of the last part replayed
    monitor: DriftMonitor | None = None  # None: the last profile has no baseline
    events: list[DriftEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary: current statistics, alarms raised, whether an alarm is active."""
        raised = [e for e in self.events if e.kind == "raised"]
        state = self.monitor.state() if self.monitor is not None else None
        return {"station": self.station, "profile_version": self.profile_version, "monitored": state is not None,
                "alarm_active": bool(state and state["active"]), "active": state["active"] if state else [],
                "alarms_raised": len(raised), "events": [e.as_dict() for e in self.events], "state": state}


def replay(rows: Iterable[Mapping[str, Any]], baselines: Mapping[str, Baseline | None]) -> dict[str, StationDrift]:
    """Replay recorded parts (dicts with station, profile_version, verdict, exposure, score, and optionally reason,
    id and inspected_at), in the order given (by id), through one monitor per station, started afresh whenever the
    station's profile version changes; rejected parts and versions without a baseline are skipped."""
    out: dict[str, StationDrift] = {}
    for row in rows:
        station = row["station"]
        sd = out.get(station)
        if sd is None:
            sd = out[station] = StationDrift(station)
        version = row.get("profile_version")
        if row["verdict"] == "rejected" or version is None:
            continue
        if version != sd.profile_version:
            sd.profile_version = version
            baseline = baselines.get(version)
            sd.monitor = DriftMonitor(baseline) if baseline is not None else None
        if sd.monitor is not None:
            sd.events += sd.monitor.update(row.get("exposure"), row.get("score"), row.get("inspected_at"),
                                           row.get("id"), cause(row), place(row), lies(row))
    return out
