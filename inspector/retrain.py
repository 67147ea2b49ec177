"""Retraining with a gate: a candidate profile built from what the active one knew plus what operators taught
it, compared with the active profile on every reviewed part and on specks pasted on good parts, and activated only
when it loses no caught defect, keeps the false-alarm budget and stays as sensitive.

Sources of the candidate's training set, in this order (a file's content counts once, by sha256):

1. the good images the active profile was trained on (its `training_images`, each found by its recorded
   `path`, else by name under `trained_from`); an image that is missing or whose sha256 changed is skipped;
2. every part whose latest review is "good" (a false alarm), read from its archived file (else its source
   path) and checked against the recorded sha256, in order of sha256 (so the candidate does not depend on the
   order in which parts happened to be committed);
3. the images in optional extra folders (`add_dirs`).

A part whose latest review is "defect" is never trained on, whatever source offers it. Every skipped file is
listed in the result with its reason.
Reviewed parts whose files retention deleted (`pruned_at`, inspector/retention.py) are neither trained on nor
re-scored; the result counts them (`pruned`) and says so in a warning.

The candidate is fitted and calibrated with the configured `[profile]` parameters and saved as a new version,
then both profiles re-score every reviewed part exactly as the watcher would (same decode, same threshold
test `score > threshold`). The active profile's figures come from this re-scoring, not from the verdicts
recorded earlier (which may come from older versions). For parts in the candidate's own training set the
candidate's plain score is in-sample, so the cross-fitted ("held out") score of each such part is reported
too, against the threshold the other training parts set (`NormalProfile.threshold_without`: below 100 parts the
candidate's own threshold is the largest held-out score, possibly this part's, which its score could never
exceed): it says whether the lesson generalises rather than whether it was memorised. The false-alarm budget on
the calibration images is each profile's own cross-fitted figure (`calibration_`).

The gate: the candidate is activated only when no confirmed defect that the active profile flags would be
missed by the candidate and its cross-fitted false-alarm rate is within the budget the active profile was
calibrated for (a candidate calibrated for a looser `[profile] false_alarm_rate` does not slip through), and
the specks the sensitivity probe (inspector/probe.py) pastes on the active profile's training images reach at
least SENSITIVITY_KEPT as far towards its threshold as towards the active profile's (when that reach is at least
SENSITIVITY_MIN: below, a warning says the probe could not compare), and, on the parts the lineage's first version
trained on, as far as towards that version's while the active one still does, so sensitivity is not given away a
little at each retrain (see sensitivity_verdict; a part cleared as good that is unusual, a
sticker, a real defect waved through, widens what the candidate accepts, and the confirmed defects alone do not
show it: found by an adversarial test, 8 of 8 small spots caught before such a retrain and 3 of 8 after), or
when `force` is given; and never when the active version changed while retraining ran, nor with
`activate=False` (a dry run: the result says what the gate would have done). A false alarm the candidate
clears only because it trained on it (held out, it still flags the part) is "memorised": listed in the
result, counted apart and said in a warning, so that it is not taken for a lesson learned. The candidate is
saved either way, so it can be activated later by hand.

Library code: no printing. `format_table` renders the result for the CLI.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector import imaging, pipeline, probe, profiles
from inspector.config import Config
from inspector.errors import DatasetError, ImageRejected, ProfileError
from inspector.pipeline import Inspector, Progress

if TYPE_CHECKING:
    from inspector.profile import NormalProfile
    from inspector.store import Store

SOURCES = ("profile", "false_alarm", "added")


@dataclass(frozen=True)
class Skipped:
    """A file left out of training or evaluation, and why."""

    source: str  # "profile", "false_alarm", "added" (training) or "review" (evaluation)
    item: str  # the file name, or "#id name" for an inspection
    reason: str


@dataclass(frozen=True)
class PartRow:
    """One reviewed part scored by the active profile (before) and the candidate (after)."""

    inspection_id: int
    name: str
    review: str  # the latest decision: "defect" (confirmed) or "good" (false alarm)
    path: str
    before_score: float
    before_threshold: float
    after_score: float
    after_threshold: float
    after_heldout: float | None = None  # the candidate's cross-fitted score, when the part is in its training set
    heldout_threshold: float | None = None  # ... and the threshold set without it (NormalProfile.threshold_without)

    @property
    def before_flagged(self) -> bool:
        """The active profile flags this part."""
        return self.before_score > self.before_threshold

    @property
    def after_flagged(self) -> bool:
        """The candidate flags this part."""
        return self.after_score > self.after_threshold

    @property
    def heldout_flagged(self) -> bool | None:
        """A candidate fitted without this part flags it (None when the part is not in the training set): its
        held-out score against the threshold the other parts set (the candidate's own is the largest held-out score
        of a small training set, this part's included, and could never be exceeded)."""
        if self.after_heldout is None:
            return None
        limit = self.after_threshold if self.heldout_threshold is None else self.heldout_threshold
        return self.after_heldout > limit

    @property
    def missed(self) -> bool:
        """A confirmed defect the active profile catches and the candidate would miss."""
        return self.review == "defect" and self.before_flagged and not self.after_flagged

    @property
    def memorised(self) -> bool:
        """A false alarm the candidate clears only because it was trained on it: held out, still flagged."""
        return (self.review == "good" and self.before_flagged and not self.after_flagged
                and self.heldout_flagged is True)

    @property
    def outcome(self) -> str:
        """What retraining does to this part, in words."""
        before, after = self.before_flagged, self.after_flagged
        if self.review == "defect":
            return {(True, True): "still caught", (True, False): "MISSED", (False, True): "now caught",
                    (False, False): "missed by both"}[(before, after)]
        if self.memorised:
            return "MEMORISED"
        return {(True, False): "cleared", (True, True): "still flagged", (False, True): "newly flagged",
                (False, False): "ok by both"}[(before, after)]


@dataclass(frozen=True)
class Figures:
    """One profile's figures on the reviewed parts and its calibration images."""

    version: str
    threshold: float
    n_train: int
    false_alarm_budget: float  # the configured false-alarm rate the threshold was set for
    cross_fitted_false_alarm_rate: float  # share of its own calibration images flagged when held out
    confirmed: int  # confirmed defects re-scored
    confirmed_caught: int
    false_alarms: int  # parts reviewed good re-scored
    false_alarms_cleared: int
    false_alarms_cleared_heldout: int | None = None  # candidate only: cleared by cross-fitted scores
    false_alarms_in_training: int = 0  # candidate only: reviewed-good parts in its training set
    false_alarms_memorised: int = 0  # candidate only: cleared in training, still flagged when held out
    specks_caught: tuple[int, ...] = ()  # the sensitivity probe: specks flagged, per size (probe.SIZES)
    specks_reach: float | None = None  # ... and their mean reach towards the threshold (1 = at it); None: no probe


@dataclass
class RetrainResult:
    """What retrain did: the candidate version, the comparison, and whether (and why) it was activated."""

    version: str  # the candidate, saved
    previous: str  # the version active when retraining started
    activated: bool
    forced: bool
    reason: str  # one line: why it was or was not activated
    before: Figures
    after: Figures
    parts: list[PartRow]
    missed: list[int]  # inspection ids of confirmed defects the active profile catches and the candidate misses
    sources: dict[str, int]  # training images per source ("profile", "false_alarm", "added") and "total"
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gate_passed: bool = False  # the gate allows the candidate (with or without activating it)
    dry_run: bool = False  # activate=False: never activated, `reason` says what the gate would have done
    over_budget: bool = False  # the candidate's cross-fitted false-alarm rate exceeds the active budget
    memorised: list[int] = field(default_factory=list)  # inspection ids of false alarms cleared only in training
    pruned: int = 0  # reviewed parts left out because retention deleted their files
    specks: int = 0  # the sensitivity probe: specks pasted per size (0: the probe did not run)
    lineage: Lineage | None = None  # the comparison with the lineage's first version, when there was one
    probe_status: str = "not_run"  # "compared", "too_weak" (nothing to compare) or "not_run" (no image to paste on)
    weaker_than: str = ""  # what a less sensitive candidate's reach fell short of
    less_sensitive: bool = False  # the probe's specks reach clearly less far towards the candidate's threshold

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "version": self.version, "previous": self.previous, "activated": self.activated, "forced": self.forced,
            "gate_passed": self.gate_passed, "dry_run": self.dry_run, "over_budget": self.over_budget,
            "memorised": self.memorised, "pruned": self.pruned, "less_sensitive": self.less_sensitive,
            "probe": {"status": self.probe_status, "sizes": list(probe.SIZES), "specks_per_size": self.specks,
                      "kept_at_least": SENSITIVITY_KEPT, "weaker_than": self.weaker_than or None,
                      "lineage": vars(self.lineage) if self.lineage else None},
            "reason": self.reason, "before": vars(self.before),
            "after": vars(self.after), "missed": self.missed,
            "sources": self.sources, "warnings": self.warnings,
            "skipped": [vars(s) for s in self.skipped],
            "parts": [{**vars(p), "outcome": p.outcome} for p in self.parts],
        }


@dataclass(frozen=True)
class _Item:
    """A candidate training file."""

    source: str
    paths: tuple[Path, ...]  # tried in order; the first that exists is read
    label: str
    sha256: str | None = None  # expected content, when known
    inspection_id: int | None = None


@dataclass(frozen=True)
class _Loaded:
    """A training file read and decoded (image None when it was skipped)."""

    item: _Item
    path: Path | None
    sha256: str | None
    image: np.ndarray | None
    reason: str | None


# ---------------------------------------------------------------------------------------------- sources


def _profile_items(meta: dict[str, Any]) -> list[_Item]:
    """The training images recorded in a profile's metadata."""
    folders = meta.get("trained_from") or []
    folders = [folders] if isinstance(folders, str) else [f for f in folders if isinstance(f, str)]
    items = []
    for entry in meta.get("training_images") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
        paths = [Path(entry["path"])] if isinstance(entry.get("path"), str) else []
        paths += [Path(f) / name for f in folders if Path(f) / name not in paths]
        digest = entry.get("sha256") if isinstance(entry.get("sha256"), str) else None
        items.append(_Item("profile", tuple(paths), name, digest))
    return items


def _part_paths(row: dict[str, Any]) -> tuple[Path, ...]:
    """Where an inspected part's file may be: its archive path, then where it arrived."""
    return tuple(Path(p) for p in (row.get("archived_path"), row.get("source_path")) if p)


def _label(row: dict[str, Any]) -> str:
    """How a reviewed part is named in messages."""
    return f"#{row['id']} {row.get('name') or ''}".rstrip()


def _read(paths: Sequence[Path], expected: str | None, max_bytes: int) -> tuple[Path | None, bytes | None, str]:
    """Read the first existing path whose content matches `expected` (when given); else (None, None, reason)."""
    reason = "no file recorded"
    missing: list[str] = []
    for path in paths:
        if not os.path.lexists(path):  # every place looked named (the archive first: it named the inbox alone)
            missing.append(imaging.printable(path))
            reason = f"missing: {' nor '.join(missing)}"
            continue
        try:
            data = imaging.read_file(path, max_bytes)
        except ImageRejected as exc:
            reason = str(exc)
            continue
        if expected is not None and imaging.sha256_hex(data) != expected:
            reason = f"changed since it was recorded (sha256 differs): {imaging.printable(path)}"
            continue
        return path, data, ""
    return None, None, reason


def _load(items: Sequence[_Item], cfg: Config, progress: Progress | None) -> list[_Loaded]:
    """Read, verify and decode training files in parallel (OpenCV releases the GIL), in the given order."""

    def one(item: _Item) -> _Loaded:
        path, data, reason = _read(item.paths, item.sha256, cfg.input.max_bytes)
        if data is None:
            return _Loaded(item, None, None, None, reason)
        try:
            image = pipeline.decode_for_training(data, cfg.input, cfg.profile)
        except ImageRejected as exc:
            return _Loaded(item, path, None, None, str(exc))
        return _Loaded(item, path, imaging.sha256_hex(data), image, None)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results: Iterable[_Loaded] = pool.map(one, items)
        if progress is not None:
            results = progress(results, total=len(items))
        return list(results)


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Scored:
    row: dict[str, Any]
    path: Path | None
    before: float | None
    after: float | None
    reason: str


def _score_parts(rows: Sequence[dict[str, Any]], before: Inspector, after: Inspector, cfg: Config,
                 progress: Progress | None) -> list[_Scored]:
    """Re-score each reviewed part with both profiles, exactly as the watcher judges a file."""

    def one(row: dict[str, Any]) -> _Scored:
        if row.get("verdict") == "rejected" or not row.get("sha256"):
            return _Scored(row, None, None, None, "a rejected file, not a judged image")
        path, data, reason = _read(_part_paths(row), row["sha256"], cfg.input.max_bytes)
        if data is None or path is None:
            return _Scored(row, None, None, None, reason)
        b = before.inspect_bytes(data, row.get("name") or path.name, digest=row["sha256"])
        a = after.inspect_bytes(data, row.get("name") or path.name, digest=row["sha256"])
        if b.score is None or a.score is None:
            return _Scored(row, path, None, None, f"{b.reason or a.reason}: {b.detail or a.detail}")
        return _Scored(row, path, b.score, a.score, "")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results: Iterable[_Scored] = pool.map(one, rows)
        if progress is not None:
            results = progress(results, total=len(rows))
        return list(results)


def _heldout(candidate: NormalProfile, found: tuple[float, int] | None) -> dict[str, float | None]:
    """A reviewed part's held-out score in the candidate (when it trained on it) and the threshold set without it."""
    if found is None:
        return {"after_heldout": None, "heldout_threshold": None}
    score, index = found
    return {"after_heldout": score, "heldout_threshold": candidate.threshold_without(index)}


def _figures(stored: profiles.StoredProfile, parts: Sequence[PartRow], after: bool, *,
             specks: probe.Sensitivity | None) -> Figures:
    """A profile's figures over the compared parts (after=True: the candidate's columns) and the probe's specks."""
    prof = stored.profile
    cal = prof.calibration_
    defects = [p for p in parts if p.review == "defect"]
    goods = [p for p in parts if p.review == "good"]
    flagged = (lambda p: p.after_flagged) if after else (lambda p: p.before_flagged)
    heldout = None
    in_training = memorised = 0
    if after:  # a part in the training set counts by its cross-fitted score, any other by its plain score
        in_training = sum(1 for p in goods if p.after_heldout is not None)
        heldout = sum(1 for p in goods if not (p.after_flagged if p.heldout_flagged is None else p.heldout_flagged))
        memorised = sum(1 for p in goods if p.memorised)
    return Figures(
        version=stored.version, threshold=prof.threshold_, n_train=prof.n_train_,
        false_alarm_budget=cal.false_alarm_rate, cross_fitted_false_alarm_rate=cal.oof_false_alarm_rate,
        confirmed=len(defects), confirmed_caught=sum(1 for p in defects if flagged(p)),
        false_alarms=len(goods), false_alarms_cleared=sum(1 for p in goods if not flagged(p)),
        false_alarms_cleared_heldout=heldout, false_alarms_in_training=in_training,
        false_alarms_memorised=memorised, specks_caught=specks.flagged if specks else (),
        specks_reach=specks.reach if specks else None,
    )


SENSITIVITY_KEPT = 0.85  # the candidate's specks must reach at least this share of the active profile's reach
SENSITIVITY_MIN = 0.1  # ... when the active profile's reach is at least this (below, the probe cannot tell)


@dataclass(frozen=True)
class Lineage:
    """The probe's comparison with the lineage's first version, on the specks pasted on its training images."""

    version: str  # the first version of the active profile's lineage
    reach: float  # its specks' mean reach
    active_reach: float  # the active profile's, on the same specks
    candidate_reach: float  # the candidate's


def _weak(value: float | None) -> bool:
    """A reach the probe cannot compare with (not run, not finite, or too low to tell)."""
    return value is None or not math.isfinite(value) or value < SENSITIVITY_MIN


def sensitivity_verdict(active: str, before: float | None, after: float | None,
                        lineage: Lineage | None = None) -> tuple[str, bool, str, str]:
    """The probe's part of the gate from the specks' mean reach towards each profile's threshold (None: the probe
    did not run): (status "compared" / "too_weak" / "not_run", less sensitive, what it is weaker than, a warning or
    ""). The candidate must keep SENSITIVITY_KEPT of the active profile's reach, and of the lineage's first
    version's (on that version's parts) while the active one still keeps it, so sensitivity is not given away a
    little at each retrain; once the active one is below it, a warning says so."""
    if before is None or after is None:
        return "not_run", False, "", (f"the sensitivity probe did not run: none of the images {active} was trained "
                                      "on can be read, so no speck can be pasted on a part both profiles know; the "
                                      "gate did not check whether the candidate still sees small defects")
    if _weak(before) or not math.isfinite(after):
        return "too_weak", False, "", (f"the sensitivity probe could not compare: the specks pasted on good parts "
                                       f"reach {before:.2f} of the way to {active}'s threshold (under "
                                       f"{SENSITIVITY_MIN}, or not a number) and {after:.2f} to the candidate's")
    if after < SENSITIVITY_KEPT * before:
        return "compared", True, f"{active}'s {before:.2f}", ""
    if lineage is None or _weak(lineage.reach) or not math.isfinite(lineage.active_reach + lineage.candidate_reach):
        return "compared", False, "", ""
    first, kept = lineage.version, SENSITIVITY_KEPT * lineage.reach
    if lineage.active_reach >= kept:
        if lineage.candidate_reach < kept:
            return "compared", True, (f"{first}'s {lineage.reach:.2f} on {first}'s own parts, where it reaches "
                                      f"{lineage.candidate_reach:.2f} (the first version of this lineage)"), ""
        return "compared", False, "", ""
    return "compared", False, "", (f"this lineage has lost sensitivity since {first}: on {first}'s parts the "
                                   f"specks reach {lineage.active_reach:.2f} of the way to {active}'s threshold "
                                   f"against {lineage.reach:.2f} to {first}'s, so the candidate is compared with "
                                   f"{active} only")


def _lineage_root(models_dir: Path, active: profiles.StoredProfile) -> tuple[profiles.StoredProfile | None, str]:
    """The first version of the active profile's lineage (followed through `retrained_from`) when it is another one
    and loads, and a warning when the lineage cannot be followed to it (a version deleted or damaged, a loop)."""
    seen, meta, first = {active.version}, active.meta, None
    while isinstance(meta.get("retrained_from"), str):
        version = meta["retrained_from"]
        if version in seen:
            return None, f"the sensitivity probe could not follow this lineage: it loops at {version}"
        seen.add(version)
        try:
            meta = profiles.read_meta(models_dir, version)
        except ProfileError as exc:
            return None, f"the sensitivity probe could not follow this lineage to its first version: {exc}"
        first = version
    if first is None:
        return None, ""
    try:
        return profiles.load(models_dir, first), ""
    except ProfileError as exc:
        return None, f"the sensitivity probe could not compare with {first}, the first version of this lineage: {exc}"


# ---------------------------------------------------------------------------------------------- retrain


def retrain(cfg: Config, store: Store, add_dirs: Sequence[Path] = (), force: bool = False, note: str = "",
            progress: Progress | None = None, activate: bool = True, product: str | None = None) -> RetrainResult:
    """Build, save, compare and (when the gate allows, or `force`) activate a candidate profile; with
    `activate=False` nothing is activated (a dry run: `gate_passed` and `reason` say what the gate decided).

    `progress`, when given, wraps iterables like tqdm (`progress(iterable, total=N)`): once for reading the
    training images and once for re-scoring the reviewed parts. Raises NoActiveProfile/ProfileError when
    there is no usable active profile, DatasetError when an extra folder is missing or empty, when there is
    nothing new to train on, or when none of the active profile's training images can be found and no extra
    folder is given; DatasetError/DatabaseError propagate with one-line messages. `product` (issue 16): only the
    reviews of that product's parts are read (None: every part, as before products); `cfg.models.dir` is that
    product's folder."""
    models_dir = cfg.models.dir
    active = profiles.load(models_dir)
    reviewed = sorted(store.list(reviewed="good", limit=None, product=product)
                      + store.list(reviewed="defect", limit=None, product=product), key=lambda r: r["id"])
    confirmed = {r["sha256"]: r for r in reviewed if r["review"] == "defect" and r.get("sha256")}
    # retention deleted their files (inspector/retention.py): neither trained on nor re-scored, only counted
    pruned = [r for r in reviewed if r.get("pruned_at") is not None]
    reviewed = [r for r in reviewed if r.get("pruned_at") is None]

    items = _profile_items(active.meta)
    # false alarms in content order, not id order: ids follow which worker or station committed first, and the
    # candidate (its palette sample and cross-fitting folds) must not change with that
    items += [_Item("false_alarm", _part_paths(r), _label(r), r.get("sha256"), r["id"])
              for r in sorted(reviewed, key=lambda r: (r.get("sha256") or "", r["id"])) if r["review"] == "good"]
    for folder in add_dirs:
        files = pipeline.list_images(Path(folder), cfg.input.patterns)
        if not files:
            raise DatasetError(f"no images matching {', '.join(cfg.input.patterns)} in {folder}")
        items += [_Item("added", (f,), str(f)) for f in files]

    skipped: list[Skipped] = []
    warnings: list[str] = []
    if pruned:
        warnings.append(f"{len(pruned)} reviewed part(s) skipped: their files were pruned by retention "
                        "([retention] reviewed_days)")
    chosen: list[_Loaded] = []
    seen: set[str] = set()
    now_defects = 0  # images of the active profile's training set an operator has since confirmed as defects
    for loaded in _load(items, cfg, progress):
        item = loaded.item
        if loaded.image is None or loaded.sha256 is None:
            skipped.append(Skipped(item.source, item.label, loaded.reason or "unreadable"))
        elif loaded.sha256 in confirmed:
            now_defects += item.source == "profile"
            skipped.append(Skipped(item.source, item.label,
                                   f"the same image is confirmed defect {_label(confirmed[loaded.sha256])}"))
        elif loaded.sha256 not in seen:  # the same content from two sources counts once (the first)
            seen.add(loaded.sha256)
            chosen.append(loaded)
    counts = {s: sum(1 for c in chosen if c.item.source == s) for s in SOURCES}
    counts["total"] = len(chosen)

    n_recorded = sum(1 for i in items if i.source == "profile")
    if counts["profile"] == 0 and not add_dirs:
        detail = (f"none of the {n_recorded} images it was trained on can be read"
                  if n_recorded else "it records no training images")
        raise DatasetError(f"cannot retrain profile {active.version}: {detail}; give a folder of good images "
                           "to add (--add DIR) or train a new profile")
    gone = n_recorded - counts["profile"] - now_defects  # (or repeated: the same content counts once)
    if gone > 0:
        warnings.append(f"{gone} of the {n_recorded} images profile {active.version} was trained on were not found "
                        "or have changed; the candidate does not learn from them")
    if now_defects:
        warnings.append(f"{now_defects} of the {n_recorded} images profile {active.version} was trained on are "
                        "confirmed defects now; the candidate does not learn from them")
    if counts["false_alarm"] + counts["added"] == 0:
        added = ("none of the images of the folder added is new (trained on already, a confirmed defect, or "
                 "unreadable: see the files skipped)" if add_dirs
                 else "no folder of good images was added")  # (it said "no folder was added" when one was)
        raise DatasetError(f"nothing new to train on: no readable part is marked good (a false alarm) and {added}")

    candidate = pipeline.fit_profile([c.image for c in chosen if c.image is not None], cfg.profile)
    extra = {
        "note": note,
        "retrained_from": active.version,
        "sources": counts,
        "trained_from": sorted({str(c.path.parent.resolve()) for c in chosen if c.path is not None}),
        "training_images": [
            {"name": c.path.name if c.path else c.item.label, "sha256": c.sha256,
             "path": str(c.path.resolve()) if c.path else None, "source": c.item.source,
             **({"inspection_id": c.item.inspection_id} if c.item.inspection_id is not None else {})}
            for c in chosen
        ],
        "skipped": len(skipped),
        "config": str(cfg.source) if cfg.source else None,
        **({"product": product} if product is not None else {}),
    }
    version = profiles.save(models_dir, candidate, extra)
    stored = profiles.StoredProfile(version, candidate, extra)

    heldout = {c.sha256: (float(candidate.oof_scores_[i]), i) for i, c in enumerate(chosen)}
    scored = _score_parts(reviewed, Inspector(active.profile, active.version, cfg.input),
                          Inspector(candidate, version, cfg.input), cfg, progress)
    parts: list[PartRow] = []
    for s in scored:
        if s.before is None or s.after is None:
            skipped.append(Skipped("review", _label(s.row), s.reason))
            continue
        parts.append(PartRow(
            inspection_id=s.row["id"], name=s.row.get("name") or "", review=s.row["review"],
            path=imaging.printable(s.path) if s.path else "", before_score=s.before,
            before_threshold=active.profile.threshold_, after_score=s.after, after_threshold=candidate.threshold_,
            **_heldout(candidate, heldout.get(s.row["sha256"])),
        ))
    unchecked = sum(1 for s in scored if s.row["review"] == "defect" and s.before is None)
    if unchecked:
        warnings.append(f"{unchecked} confirmed defect(s) could not be re-checked (file missing or changed); "
                        "the gate did not see them")
    if not any(p.review == "defect" for p in parts):
        warnings.append("no confirmed defect could be re-checked: the gate had nothing to compare")

    missed = [p.inspection_id for p in parts if p.missed]
    memorised = [p.inspection_id for p in parts if p.memorised]
    # the probe's specks go on the active profile's own training images (both profiles learned them; with an older
    # lineage, those the lineage's first version learned too), in content order, so the same candidate meets the
    # same specks whatever order the parts were committed in
    root, trouble = _lineage_root(models_dir, active)
    if trouble:
        warnings.append(trouble)
    known = sorted((c for c in chosen if c.item.source == "profile" and c.image is not None),
                   key=lambda c: c.sha256 or "")
    specks = probe.specks([c.image for c in known])
    sense_before = probe.measure(active.profile, specks) if specks else None
    sense_after = probe.measure(candidate, specks) if specks else None
    lineage = None
    if root is not None and specks:  # the lineage's first version, on the parts it trained on too
        first = {im.get("sha256") for im in root.meta.get("training_images") or [] if isinstance(im, dict)}
        common = probe.specks([c.image for c in known if c.sha256 in first])
        if len(common) >= 2 * len(probe.SIZES):
            lineage = Lineage(root.version, probe.measure(root.profile, common).reach,
                              probe.measure(active.profile, common).reach, probe.measure(candidate, common).reach)
        else:
            warnings.append(f"the sensitivity probe could not compare with {root.version}, the first version of "
                            "this lineage: fewer than 2 of its training images are still here")
    before_fig = _figures(active, parts, after=False, specks=sense_before)
    after_fig = _figures(stored, parts, after=True, specks=sense_after)
    n_specks = len(specks) // len(probe.SIZES)
    probe_status, less_sensitive, weaker_than, note = sensitivity_verdict(
        active.version, sense_before.reach if sense_before else None, sense_after.reach if sense_after else None,
        lineage)
    if note:
        warnings.append(note)
    caught = before_fig.confirmed_caught
    ids = ", ".join(f"#{i}" for i in missed)
    # the budget the line runs with: the active profile's (a candidate calibrated for a looser configured rate
    # meets its own budget by construction, which says nothing)
    budget = before_fig.false_alarm_budget
    rate = after_fig.cross_fitted_false_alarm_rate
    over_budget = rate > budget + 1e-12
    if memorised:
        n_cleared = after_fig.false_alarms_cleared
        warnings.append(f"memorised, not learned: {len(memorised)} of the {n_cleared} false alarm(s) {version} clears "
                        f"({', '.join(f'#{i}' for i in memorised)}) are cleared only because it was trained on them; "
                        "held out it still flags them, so similar parts will still be flagged")
    refusals = []
    if missed:
        refusals.append(f"{len(missed)} confirmed defect(s) that {active.version} catches would be missed by "
                        f"{version} ({ids})")
    if over_budget:
        refusals.append(f"its cross-fitted false-alarm rate {_pct(rate)} is over the budget of {_pct(budget)} "
                        f"{active.version} was calibrated for")
    if less_sensitive and sense_after is not None and sense_before is not None:
        unusual = sorted((p for p in parts if p.memorised), key=lambda p: -(p.after_heldout or 0.0))
        suspects = (f"; parts marked good that it still flags held out, the likeliest cause: "
                    f"{', '.join(f'#{p.inspection_id}' for p in unusual)}" if unusual else
                    "; no part marked good stands out held out: check the parts marked good and any added folder")
        refusals.append(f"it is less sensitive: specks pasted on good parts reach {sense_after.reach:.2f} of the way "
                        f"to its threshold against {weaker_than} (at least {SENSITIVITY_KEPT:.0%} kept); it "
                        f"flags {sum(sense_after.flagged)} of {len(specks)} where {active.version} flags "
                        f"{sum(sense_before.flagged)}{suspects}")
    passed = ""
    if not refusals:
        passed = ("no confirmed defect could be re-checked, so the gate had nothing to compare"
                  if before_fig.confirmed == 0 else
                  f"it still catches every confirmed defect {active.version} catches ({caught} of "
                  f"{before_fig.confirmed})")
        passed += f"; its cross-fitted false alarms are within budget ({_pct(rate)} of {_pct(budget)})"
        if after_fig.false_alarms:
            passed += (f"; held out it clears {after_fig.false_alarms_cleared_heldout} of {after_fig.false_alarms} "
                       "false alarm(s)")
            if memorised:
                passed += f"; {len(memorised)} cleared only in training: memorised"
    activated = False
    if not activate:
        verdict = (f"would refuse it: {'; '.join(refusals)}" if refusals else f"would activate it: {passed}")
        reason = f"not activated (dry run): {version} is saved; the gate {verdict}"
    elif refusals and not force:
        reason = f"not activated: {'; '.join(refusals)}; {active.version} stays active (--force activates it anyway)"
    else:
        now = profiles.active_version(models_dir)
        if now != active.version:
            reason = (f"not activated: the active profile changed from {active.version} to {now} while "
                      f"retraining ran; {version} is saved")
        else:
            profiles.activate(models_dir, version)
            activated = True
            if missed:
                reason = (f"{version} activated by force although it misses {len(missed)} confirmed defect(s) "
                          f"that {active.version} catches ({ids})"
                          + "".join(f"; {r}" for r in refusals[1:]))
            elif refusals:
                reason = f"{version} activated by force although {'; '.join(refusals)}"
            else:
                reason = f"{version} activated: {passed}"
    return RetrainResult(
        version=version, previous=active.version, activated=activated, forced=bool(activate and force and refusals),
        reason=reason, before=before_fig, after=after_fig, parts=parts, missed=missed, sources=counts,
        skipped=skipped, warnings=warnings, gate_passed=not refusals, dry_run=not activate, over_budget=over_budget,
        memorised=memorised, pruned=len(pruned), specks=n_specks, less_sensitive=less_sensitive,
        lineage=lineage, probe_status=probe_status, weaker_than=weaker_than,
    )


# ---------------------------------------------------------------------------------------------- table


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def format_table(result: RetrainResult) -> str:
    """The before/after table the CLI prints: sources, one line per reviewed part, figures, and the decision."""
    r, b, a = result, result.before, result.after
    s = r.sources
    n_skipped = sum(1 for sk in r.skipped if sk.source != "review")
    lines = [f"candidate {r.version} from {r.previous}: {s['profile']} images of {r.previous} + {s['false_alarm']} "
             f"parts marked good + {s['added']} added = {s['total']} good images"
             + (f" ({n_skipped} files skipped, listed below)" if n_skipped else "")]
    lines.append("")
    if r.parts:
        name_w = min(32, max(len("part"), *(len(p.name) for p in r.parts)))
        head = (f"{'id':>6}  {'part':<{name_w}}  {'review':<6}  {b.version + ' score':>11} {'verdict':<7}  "
                f"{a.version + ' score':>11} {'verdict':<7}  outcome")
        lines.append(head)
        for p in r.parts:
            verdict_b = "defect" if p.before_flagged else "ok"
            verdict_a = "defect" if p.after_flagged else "ok"
            tail = p.outcome
            if p.after_heldout is not None:
                tail += f" (in training; held out {p.after_heldout:.2f}: {'defect' if p.heldout_flagged else 'ok'})"
            lines.append(f"{'#' + str(p.inspection_id):>6}  {_clip(p.name, name_w):<{name_w}}  {p.review:<6}  "
                         f"{p.before_score:>11.2f} {verdict_b:<7}  {p.after_score:>11.2f} {verdict_a:<7}  {tail}")
    else:
        lines.append("no reviewed part could be re-scored")
    lines.append("")
    cleared_after = f"{a.false_alarms_cleared} of {a.false_alarms}"
    if a.false_alarms_in_training:
        cleared_after += f" (held out: {a.false_alarms_cleared_heldout} of {a.false_alarms})"
    if a.false_alarms_memorised:
        cleared_after += f", {a.false_alarms_memorised} only memorised"
    over = f", OVER {b.version}'s budget {_pct(b.false_alarm_budget)}" if r.over_budget else ""
    table = [
        ("", f"{b.version} (active)", f"{a.version} (candidate)"),
        ("threshold", f"{b.threshold:.3f}", f"{a.threshold:.3f}"),
        ("confirmed defects caught", f"{b.confirmed_caught} of {b.confirmed}", f"{a.confirmed_caught} of {a.confirmed}"),
        ("false alarms cleared", f"{b.false_alarms_cleared} of {b.false_alarms}", cleared_after),
        ("good training images", str(b.n_train), str(a.n_train)),
        ("cross-fitted false alarms", f"{_pct(b.cross_fitted_false_alarm_rate)} (budget {_pct(b.false_alarm_budget)})",
         f"{_pct(a.cross_fitted_false_alarm_rate)} (budget {_pct(a.false_alarm_budget)}{over})"),
    ]
    if r.specks and b.specks_reach is not None and a.specks_reach is not None:
        n = r.specks * len(b.specks_caught)
        less = ", LESS SENSITIVE" if r.less_sensitive else ""
        table.append(("specks: reach (probe)", f"{b.specks_reach:.2f}", f"{a.specks_reach:.2f}{less}"))
        table.append(("specks flagged", f"{sum(b.specks_caught)} of {n}", f"{sum(a.specks_caught)} of {n}"))
        if r.lineage is not None:
            first = r.lineage
            table.append((f"specks: reach on {first.version}'s parts", f"{first.active_reach:.2f} ({first.version} "
                          f"{first.reach:.2f})", f"{first.candidate_reach:.2f}"))
    w0 = max(len(t[0]) for t in table)
    w1 = max(len(t[1]) for t in table)
    lines += [f"{t[0]:<{w0}}  {t[1]:<{w1}}  {t[2]}".rstrip() for t in table]
    if r.skipped:
        lines.append("")
        lines += [f"skipped ({sk.source}) {sk.item}: {sk.reason}" for sk in r.skipped]
    if r.warnings:
        lines.append("")
        lines += [f"warning: {w}" for w in r.warnings]
    lines.append("")
    lines.append(r.reason)
    return "\n".join(lines)
