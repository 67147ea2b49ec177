"""The drift monitor (drift.py) joined to the profiles on disk: fed live by the watcher, replayed for
`inspector stats` and the review page's banner.

Each part's row names the profile version that judged it; that version's profile.json holds the baseline
("drift"). A version without one (trained before drift monitoring, or unreadable) is not monitored. One monitor
per station, started afresh whenever the station's profile version changes.

The monitor also watches streaks of judged parts whose reason names a station-wide cause (`blurred`, `size`,
`not_located`, `sensor`, `misplaced`, `mirrored`: drift.REASON_SIGNALS; and ok parts judged with their light
evened out), from the rows' reasons and details alone (drift.cause), parts flagged at the same place in the photo
(`same_place`, from the rows' `peak_x` and `peak_y`: drift.place), and where the parts lie (`placement_x` and
`placement_y`, from `pos_x` and `pos_y`: drift.lies, against a baseline that has "position"); they run wherever the
monitor runs.

The watcher's side (`ConditionsMonitor`, fed one recorded row at a time by the committer thread) logs a WARNING
when an alarm is raised and an INFO line when it clears, and a WARNING for parts rejected for lighting (and one
for parts rejected as `camera`: a photo of another shape, a camera replaced or re-set; and one for `ok` parts judged
with their light evened out, a lamp dimmed on one side): the first at once, then
at most one every LIGHTING_EVERY_S seconds, with the count since the previous one (a failed lamp rejects every
part; the log must not drown in it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from inspector import drift, verdicts
from inspector.errors import ProfileError

LIGHTING_EVERY_S = 10.0
LIGHTING_REASON = verdicts.LIGHTING
WARNED = (verdicts.LIGHTING, verdicts.CAMERA)  # rejections that say the line's conditions changed: a paced WARNING
EVENED_EVENT = "evened"  # ... and ok parts judged with their light evened out (a lamp dimmed on one side): likewise

Emit = Callable[..., None]  # emit(event, level, text, **fields), as WatchService._emit


class Baselines:
    """The drift baseline of each profile version, read once from its profile.json (None: not monitored)."""

    def __init__(self, models_dir: Path) -> None:
        """Read lazily from `models_dir`."""
        self.models_dir = models_dir
        self._cache: dict[str, drift.Baseline | None] = {}
        self.problems: dict[str, str] = {}  # version -> why it is not monitored

    def get(self, version: str) -> drift.Baseline | None:
        """The baseline of `version`, or None (the reason is in `problems`)."""
        if version not in self._cache:
            from inspector import profiles  # NumPy and OpenCV: only once a profile is read (not for no rows)

            try:
                baseline = drift.Baseline.from_meta(profiles.read_meta(self.models_dir, version))
                if baseline is None:
                    self.problems[version] = f"profile {version} has no drift baseline (trained before drift " \
                                             "monitoring; retrain to monitor it)"
            except ProfileError as exc:
                baseline = None
                self.problems[version] = str(exc)
            self._cache[version] = baseline
        return self._cache[version]


def replay_rows(rows: Iterable[Mapping[str, Any]], models_dir: Path) -> dict[str, drift.StationDrift]:
    """Replay recorded rows (oldest first, by id) through one monitor per station and product (each product's
    versions read from its own folder, issue 16); see drift.replay. The default product's monitors are keyed by
    the station, another product's by `station/product`."""
    by_product: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("product") != "":  # "" = no product could be told: never judged
            by_product.setdefault(r.get("product") or "default", []).append(r)
    out: dict[str, drift.StationDrift] = {}
    for product, some in by_product.items():
        folder = models_dir if product == "default" else models_dir / product
        baselines = Baselines(folder)
        versions = {r["profile_version"] for r in some if r.get("profile_version")}
        for station, sd in drift.replay(some, {v: baselines.get(v) for v in versions}).items():
            out[station if product == "default" else f"{station}/{product}"] = sd
    return out


def active_alarms(replayed: Mapping[str, drift.StationDrift]) -> list[dict[str, Any]]:
    """Every active alarm after a replay: station, signal, since (inspected_at of the part that raised it), the
    inspection id of that part, the recent level (a number and a text), what it watches and what it means; by
    station."""
    out = []
    for station in sorted(replayed):
        sd = replayed[station]
        if sd.monitor is None:
            continue
        for signal in sd.monitor.active:
            alarm = sd.monitor.alarms[signal]
            where = sd.monitor.spot if signal == drift.PLACE else None
            out.append({"station": station, "signal": signal, "since": alarm.since, "since_id": alarm.since_ref,
                        "profile_version": sd.profile_version, "recent": sd.monitor.recent(signal),
                        "what": drift.watched(signal),
                        "level": recent_level(drift.watched(signal), sd.monitor.recent(signal), where),
                        "meaning": drift.MEANING[signal],
                        **({"where": list(where)} if where is not None else {}),
                        **({"window": drift.POSITION_PARTS} if signal in drift.POSITIONS else {})})
    return out


def recent_level(what: str, recent: float | None, where: tuple[float, float] | None = None) -> str:
    """How a drifting signal ("exposure", "score", a reason code or drift.PLACE) stands lately, for people: "recent
    exposure 0.89x of training", "reason blurred on 17 of the last 20 parts" (drift.RECENT_PARTS), "flagged 30%
    from the left and 35% from the top of the photo on 18 of the last 20 parts", or just its name when not known."""
    if recent is None:
        return what
    if what == drift.PLACE:
        at = "" if where is None else f" {where[0]:.0%} from the left and {where[1]:.0%} from the top of the photo"
        return f"flagged{at} on {recent:g} of the last {drift.RECENT_PARTS} parts"
    if what == "exposure":
        return f"recent exposure {recent:.2f}x of training"
    if what == "score":
        return f"recent score {recent:.3f}"
    if what in ("pos_x", "pos_y"):
        across = what == "pos_x"
        way = ("right" if recent > 0 else "left") if across else ("below" if recent > 0 else "above")
        side = "width" if across else "height"
        return (f"the median of the last {drift.POSITION_PARTS} parts lies {abs(recent):.1%} of the photo's {side} "
                f"{way}{' of' if across else ''} where the good parts lay")
    if what == drift.EVENED:
        return f"evened out to pass on {recent:g} of the last {drift.RECENT_PARTS} parts"
    return f"reason {what} on {recent:g} of the last {drift.RECENT_PARTS} parts"


def describe(event: drift.DriftEvent) -> str:
    """One line for an alarm raised or cleared."""
    what = drift.watched(event.signal)
    level = recent_level(what, event.recent, event.where)
    part = f"part #{event.ref}" if event.ref is not None else f"part {event.n}"
    shift = what in ("pos_x", "pos_y")
    if event.kind == "raised":
        if shift:
            return f"drift alarm: {event.meaning} ({level}; {event.value:.1f} > {event.h:g} spreads at {part})"
        return f"drift alarm: {event.meaning} ({level}; CUSUM {event.value:.1f} > {event.h:g} at {part})"
    if shift:
        return (f"drift alarm cleared: {event.signal.replace('_', ' ')} back where the good parts lay ({level}; "
                f"{event.value:.1f} <= {drift.CLEAR * event.h:g} spreads at {part})")
    back = ("back within the training range" if what in ("exposure", "score") else
            "parts no longer flagged at that place" if what == drift.PLACE else f"back to isolated {what} parts")
    return (f"drift alarm cleared: {event.signal.replace('_', ' ')} {back} ({level}; "
            f"CUSUM {event.value:.1f} <= {drift.CLEAR * event.h:g} at {part})")


class ConditionsMonitor:
    """The watcher's drift monitor and lighting warnings; `observe` every recorded row, in commit order."""

    def __init__(self, models_dir: Path, emit: Emit, *, clock: Callable[[], float] = time.monotonic,
                 lighting_every_s: float = LIGHTING_EVERY_S) -> None:
        """Log through `emit`; `clock` (seconds) paces the lighting warnings."""
        self.baselines = Baselines(models_dir)
        self.emit = emit
        self.clock = clock
        self.lighting_every_s = lighting_every_s
        self.version: str | None = None
        self.monitor: drift.DriftMonitor | None = None
        self._pending = dict.fromkeys((*WARNED, EVENED_EVENT), 0)
        self._warned_at: dict[str, float] = {}  # when the last warning of each reason was logged
        self._last: dict[str, Mapping[str, Any]] = {}

    def observe(self, row: Mapping[str, Any]) -> None:
        """Feed one recorded row (a dict as the watcher records it, with its id)."""
        if row.get("verdict") == "rejected":
            if row.get("reason") in self._pending:
                self._pending[row["reason"]] += 1
                self._last[row["reason"]] = row
            self._flush_lighting()
            return
        cause = drift.cause(row)
        if cause == drift.EVENED:
            self._pending[EVENED_EVENT] += 1
            self._last[EVENED_EVENT] = row
        self._flush_lighting()
        version = row.get("profile_version")
        if version is None:
            return
        if version != self.version:
            self._switch(version)
        if self.monitor is None:
            return
        for event in self.monitor.update(row.get("exposure"), row.get("score"), row.get("inspected_at"),
                                         row.get("id"), cause, drift.place(row), drift.lies(row)):
            level = logging.WARNING if event.kind == "raised" else logging.INFO
            self.emit("drift", level, describe(event), **event.as_dict(), profile_version=version)

    @property
    def active(self) -> list[str]:
        """The signals whose alarm is up now (none while the profile has no baseline)."""
        return self.monitor.active if self.monitor is not None else []

    def _switch(self, version: str) -> None:
        """A new profile version: start a fresh monitor against its baseline."""
        if self.monitor is not None and self.monitor.active:
            self.emit("drift", logging.INFO, f"drift alarm reset ({', '.join(self.monitor.active)}): profile "
                                             f"switched {self.version} -> {version}", kind="reset",
                      profile_version=version)
        self.version = version
        baseline = self.baselines.get(version)
        self.monitor = drift.DriftMonitor(baseline) if baseline is not None else None
        if baseline is None:
            self.emit("drift", logging.INFO, f"drift monitoring off: {self.baselines.problems.get(version)}",
                      kind="off", profile_version=version)

    def _flush_lighting(self) -> None:
        """Log the lighting (and camera) rejections waiting, when the last such warning is old enough."""
        now = self.clock()
        for reason, n in self._pending.items():
            at = self._warned_at.get(reason)
            if not n or (at is not None and now - at < self.lighting_every_s):
                continue
            last = self._last.get(reason) or {}
            span = f" in the last {now - at:.0f} s" if at is not None else ""
            hint = ("" if reason != LIGHTING_REASON or "colour mode" in str(last.get("detail"))
                    else ": check the lamp/camera exposure")
            what = "judged ok with the light evened out" if reason == EVENED_EVENT else f"rejected for {reason}"
            self.emit(reason, logging.WARNING,
                      f"{n} part{'s' if n != 1 else ''} {what}{span} (latest #{last.get('id')} "
                      f"{last.get('name')}: {last.get('detail')}){hint}",
                      count=n, id=last.get("id"), detail=last.get("detail"))
            self._pending[reason], self._warned_at[reason] = 0, now
