"""Inspection statistics per hour, shift or day: a pure computation (counts in, period dicts out, no I/O).

`compute` counts rows: a row is a mapping with at least `inspected_at` (an aware datetime), `verdict` ("ok",
"defect" or "rejected") and `review` (the latest operator decision, "defect", "good" or None), as `Store.list`
returns them. `compute_from` gives the same periods from a database's counts per UTC time bucket
(`Store.bucket_counts`, SQL aggregates: no row leaves the database), which is what `inspector stats` uses; see
"from the database" below for why that is exact across DST changes and in any time zone.

Periods are in local wall-clock time (the system's local time zone, or `tz`):

- ``hour``: key ``"2026-11-30 14:00"``, from 14:00 to 15:00;
- ``day``: key ``"2026-11-30"``, from midnight to midnight;
- ``shift``: key ``"2026-11-30 late"``, from the shift's start to the next shift's start. A shift that runs
  past midnight (22:00 night to 06:00 early) belongs to the day it started: a part at 03:00 on 1 December
  is in ``"2026-11-30 night"``.

Per period:

- ``parts``: inspections recorded (ok + defect + rejected);
- ``ok``, ``defect``, ``rejected``: counts by verdict;
- ``rejected_by_reason``: the rejected parts per reason code (``lighting`` always present, 0 when none);
- ``defect_rate``: defect / (ok + defect), the share of judged parts flagged; rejected files were never
  judged and are left out (None when no part was judged);
- ``reviewed``: parts with at least one operator decision;
- ``confirmed_defects``: parts judged defect whose latest decision is "defect";
- ``false_alarms``: parts judged defect whose latest decision is "good";
- ``missed_defects``: parts judged ok whose latest decision is "defect" (not counted as confirmed);
- ``hours``: the length of the period in hours (real elapsed time: a day with a DST change has 23 or 25 of them,
  the hour repeated when clocks go back 2), cut to the reporting window (`since` .. `until`), so the current
  period and the one `since` falls into count only the time they cover;
- ``throughput_per_hour``: parts / hours (None when hours is 0).

Confirmed defects, false alarms and missed defects come from `review_outcome`, the one definition the review
page's stats (`web.data.stats_data`) count by too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

from inspector.errors import InspectorError

PERIODS = ("hour", "shift", "day")
VERDICTS = ("ok", "defect", "rejected")
COUNT_KEYS = ("parts", "ok", "defect", "rejected", "reviewed", "confirmed_defects", "false_alarms",
              "missed_defects")

ALWAYS_REASONS = ("lighting",)  # reasons listed in rejected_by_reason even when 0
Shifts = Sequence[tuple[int, str]]  # (minutes after midnight, name), as config.parse_shifts returns them
MAX_FILLED = 100_000  # fill_empty lists at most this many periods (over 11 years of hours)
DRIFT_WINDOW = 5_000  # `inspector stats` and the review page replay each station's newest parts, at most this many


_OUTCOMES = {("defect", "defect"): "confirmed", ("defect", "good"): "false_alarm", ("ok", "defect"): "missed"}
OUTCOME_KEYS = {"confirmed": "confirmed_defects", "false_alarm": "false_alarms", "missed": "missed_defects"}


def review_outcome(verdict: str, decision: str | None) -> str | None:
    """What an operator's latest decision makes of a verdict: the one definition of "confirmed defect" that
    `inspector stats` (via `compute`) and the review page's stats (`web.data.stats_data`) both count.

    "confirmed": judged defect and marked defect; "false_alarm": judged defect and marked good; "missed":
    judged ok and marked defect (a missed defect, not a confirmed one). None for anything else: no decision,
    judged ok and marked good, or rejected (never judged)."""
    return _OUTCOMES.get((verdict, decision))


class TooManyPeriods(InspectorError):
    """Listing every period of the window (fill_empty) would take more than MAX_FILLED periods."""


def _checked(by: str, shifts: Shifts) -> list[tuple[int, str]]:
    """The shifts sorted; ValueError for an unknown period, or `shift` without shifts."""
    if by not in PERIODS:
        raise ValueError(f"unknown period {by!r}: use one of {', '.join(PERIODS)}")
    if by == "shift" and not shifts:
        raise ValueError("stats by shift needs at least one shift")
    return sorted(shifts)


def _local(when: datetime, tz: tzinfo | None) -> datetime:
    """An aware datetime as naive local wall-clock time (system local time when tz is None)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when.isoformat()} refused: inspected_at must be timezone-aware")
    return when.astimezone(tz).replace(tzinfo=None)


def _aware(wall: datetime, tz: tzinfo | None) -> datetime:
    """A naive local wall-clock time as an aware datetime (system local time when tz is None)."""
    return wall.astimezone() if tz is None else wall.replace(tzinfo=tz)


def period_of(wall: datetime, by: str, shifts: Shifts = ()) -> tuple[str, datetime, datetime]:
    """The period holding local wall-clock time `wall`: (key, start, end), start and end naive local times.

    `shifts` (sorted by start, at least one) is needed for by="shift"; a time before the first shift's start
    belongs to the previous day's last shift."""
    if by == "hour":
        start = wall.replace(minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d %H:00"), start, start + timedelta(hours=1)
    if by == "day":
        start = datetime.combine(wall.date(), time())
        return start.strftime("%Y-%m-%d"), start, start + timedelta(days=1)
    if by == "shift":
        if not shifts:
            raise ValueError("stats by shift needs at least one shift")
        minute = wall.hour * 60 + wall.minute
        day: date = wall.date()
        index = max((i for i, (m, _) in enumerate(shifts) if m <= minute), default=None)
        if index is None:  # before the first shift starts: the previous day's last shift
            day, index = day - timedelta(days=1), len(shifts) - 1
        begin, name = shifts[index]
        start = datetime.combine(day, time()) + timedelta(minutes=begin)
        if index + 1 < len(shifts):
            end = datetime.combine(day, time()) + timedelta(minutes=shifts[index + 1][0])
        else:
            end = datetime.combine(day + timedelta(days=1), time()) + timedelta(minutes=shifts[0][0])
        return f"{day.isoformat()} {name}", start, end
    raise ValueError(f"unknown period {by!r}: use one of {', '.join(PERIODS)}")


def _span(start: datetime, end: datetime, tz: tzinfo | None) -> tuple[datetime, datetime]:
    """A period's naive local start and end as aware datetimes, each at its first occurrence (the hour repeated
    when clocks go back starts when it first began, whichever of its parts was seen first)."""
    return _aware(start.replace(fold=0), tz), _aware(end.replace(fold=0), tz)


def _empty(key: str, start: datetime, end: datetime) -> dict[str, Any]:
    """A period with nothing counted yet (start, end: aware)."""
    return {"period": key, "start": start, "end": end, **dict.fromkeys(COUNT_KEYS, 0),
            "rejected_by_reason": dict.fromkeys(ALWAYS_REASONS, 0)}


def _count(period: dict[str, Any], row: Mapping[str, Any]) -> None:
    """Add one inspection to a period's counts."""
    verdict, review = row["verdict"], row.get("review")
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}")
    period["parts"] += 1
    period[verdict] += 1
    if verdict == "rejected":
        reasons = period["rejected_by_reason"]
        reason = row.get("reason") or "unknown"
        reasons[reason] = reasons.get(reason, 0) + 1
    if review is not None:
        period["reviewed"] += 1
    outcome = review_outcome(verdict, review)
    if outcome is not None:
        period[OUTCOME_KEYS[outcome]] += 1


def _rates(period: dict[str, Any], hours: float) -> None:
    """Fill defect_rate, hours and throughput_per_hour from the counts."""
    judged = period["ok"] + period["defect"]
    period["defect_rate"] = period["defect"] / judged if judged else None
    period["hours"] = hours
    period["throughput_per_hour"] = period["parts"] / hours if hours > 0 else None


def compute(rows: Iterable[Mapping[str, Any]], by: str = "hour", *, shifts: Shifts = (), tz: tzinfo | None = None,
            since: datetime | None = None, until: datetime | None = None,
            fill_empty: bool = False) -> list[dict[str, Any]]:
    """Count `rows` per period (see the module docstring for the keys), oldest period first.

    `by` is "hour", "shift" or "day"; `shifts` the (minute, name) starts for "shift"; `tz` the time zone of the
    periods (None: the system's local time). `since` / `until` (aware) bound the reporting window: the first
    and last periods' `hours` are cut to it. Periods without parts are left out unless `fill_empty`, which
    lists every period from the one holding `since` (else the first part) to the one holding `until` (else
    the last part), at most MAX_FILLED of them (TooManyPeriods beyond). `start` and `end` in the result are
    aware datetimes in `tz` (or local time)."""
    shifts = _checked(by, shifts)
    periods: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, datetime] = {}
    last_seen: dict[str, datetime] = {}
    by_minute: dict[datetime, dict[str, Any]] = {}  # periods start on whole minutes: look each minute up once
    for row in rows:
        at = row["inspected_at"]
        minute = at.replace(second=0, microsecond=0)
        period = by_minute.get(minute)
        if period is None:
            key, start, end = period_of(_local(at, tz), by, shifts)
            period = periods.get(key)
            if period is None:
                period = periods[key] = _empty(key, *_span(start, end, tz))
                first_seen[key] = last_seen[key] = at
            by_minute[minute] = period
        key = period["period"]
        if at < first_seen[key]:
            first_seen[key] = at
        elif at > last_seen[key]:
            last_seen[key] = at
        _count(period, row)
    return _finish(periods, first_seen, last_seen, by, shifts, tz, since, until, fill_empty)


def _finish(periods: dict[str, dict[str, Any]], first_seen: dict[str, datetime], last_seen: dict[str, datetime],
            by: str, shifts: Shifts, tz: tzinfo | None, since: datetime | None, until: datetime | None,
            fill_empty: bool) -> list[dict[str, Any]]:
    """The periods counted so far (with the first and last inspected_at of each one's parts), completed: the
    empty ones with fill_empty, sorted, their hours and rates filled in."""
    lo = since if since is not None else min(first_seen.values(), default=None)
    hi = until if until is not None else max(last_seen.values(), default=None)
    if fill_empty and lo is not None and hi is not None:
        wall = _local(lo, tz)
        end_key = period_of(_local(hi, tz), by, shifts)[0]
        for listed in range(MAX_FILLED + 1):
            key, start, end = period_of(wall, by, shifts)
            if _aware(start, tz) > hi:
                break
            if listed == MAX_FILLED:
                raise TooManyPeriods(f"every {by} from {lo.date().isoformat()} to {hi.date().isoformat()} would be "
                                     f"more than {MAX_FILLED:,} periods: choose a later start or longer periods")
            if key not in periods:
                periods[key] = _empty(key, *_span(start, end, tz))
            if key == end_key:
                break
            wall = end
    out = sorted(periods.values(), key=lambda p: p["start"])
    for period in out:
        start, end = period["start"], period["end"]
        if since is not None:
            start = max(start, since)
        if until is not None:
            end = min(end, until)
        key = period["period"]
        if key in first_seen:  # never cut a period to less than the parts it holds (clocks can disagree)
            start, end = min(start, first_seen[key]), max(end, last_seen[key])
        # in UTC: aware datetimes of one zone subtract as wall-clock times (a day with a DST change has 23 or 25 h)
        _rates(period, max((end.astimezone(timezone.utc) - start.astimezone(timezone.utc)).total_seconds(), 0.0)
               / 3600.0)
    return out


# ---------------------------------------------------------------------------------------------- from the database
# A database counts its rows per UTC time bucket of WIDTH seconds (Store.bucket_counts: SQL aggregates, no rows
# leave it); the buckets are folded into periods here. That is exact when every bucket lies wholly inside one
# period, which `bucket_width` checks for each bucket of the window: an hour suits whole-hour time zones and shifts
# across DST changes (a change falls on a whole UTC hour there); half-hour zones, quarter-hour ones and shifts that
# start off the hour get narrower buckets; a minute is what `compute` assumed of every zone.

WIDTHS = (3600, 1800, 900, 300, 60)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class Bucket:
    """The parts of one stretch of time that lies wholly inside one period: `at` (aware; the stretch's start),
    their counts (COUNT_KEYS), rejections by reason, and the first and last inspected_at among them."""

    at: datetime
    first: datetime
    last: datetime
    counts: dict[str, int]
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


Bounds = Callable[[datetime], tuple[datetime, datetime]]  # naive local wall time -> its period's (start, end)


def _instants(wall: datetime, tz: tzinfo | None) -> list[datetime]:
    """The UTC instants at which local time reaches the naive wall time `wall` (two when clocks go back over it,
    the moment of the change when they jump over it)."""
    return sorted({_aware(wall.replace(fold=fold), tz).astimezone(timezone.utc) for fold in (0, 1)})


def _offset(at: datetime, tz: tzinfo | None) -> timedelta | None:
    """The UTC offset of `tz` (None: local time) at an aware instant."""
    return at.astimezone(tz).utcoffset()


def _change_in(a: datetime, b: datetime, tz: tzinfo | None) -> datetime | None:
    """The instant in (a, b) at which the UTC offset changes (to the microsecond), None when it does not (one
    change at most between two boundaries of a period: hours, shifts and days are shorter than the time between
    two changes)."""
    if _offset(a, tz) == _offset(b - timedelta(microseconds=1), tz):
        return None
    lo, hi = a, b - timedelta(microseconds=1)  # offset(lo) != offset(hi): bisect to the first instant of the new one
    while hi - lo > timedelta(microseconds=1):
        mid = lo + (hi - lo) / 2
        if _offset(mid, tz) == _offset(lo, tz):
            lo = mid
        else:
            hi = mid
    return hi


def bucket_width(lo: datetime, hi: datetime, bounds: Bounds, tz: tzinfo | None = None,
                 widths: Sequence[int] = WIDTHS) -> int:
    """The widest of `widths` (seconds) whose UTC buckets from `lo` to `hi` each lie wholly inside one period,
    periods being given by `bounds` (a naive local wall time in `tz`, None: the system's local time -> its period's
    start and end); the narrowest when none does. A bucket lies in one period when no period boundary (each instant
    local time reaches one) and no change of the UTC offset falls strictly inside it: so the width must divide the
    epoch seconds of each of those instants from lo to hi (one look per period, not per bucket)."""
    instants: list[datetime] = []
    wall, _end = bounds(_local(lo, tz))
    while True:
        reached = _instants(wall, tz)
        instants += reached
        if reached[0] > hi:
            break
        _start, wall = bounds(wall)
    for a, b in zip(instants, instants[1:]):
        if a < b:
            change = _change_in(a, b, tz)
            if change is not None:
                instants.append(change)
    for width in widths:
        if all(t.microsecond == 0 and int(t.timestamp()) % width == 0 for t in instants):
            return width
    return widths[-1]


def period_bounds(by: str, shifts: Shifts = ()) -> Bounds:
    """`bounds` for bucket_width: the start and end of the period (hour, shift or day) holding a local wall time."""
    shifts = sorted(shifts)

    def bounds(wall: datetime) -> tuple[datetime, datetime]:
        _key, start, end = period_of(wall, by, shifts)
        return start, end

    return bounds


def buckets_from(aggregates: Mapping[int, Mapping[str, Any]], width: int) -> list[Bucket]:
    """Buckets from Store.bucket_counts' aggregates (bucket k: [k * width, (k + 1) * width) seconds since the
    epoch; parts, defect, rejected by reason, reviewed by (verdict, latest decision)), oldest first. Review
    outcomes are counted by `review_outcome`, as `compute` counts them."""
    out = []
    for k, a in sorted(aggregates.items()):
        rejected = sum(a["rejected"].values())
        counts = dict.fromkeys(COUNT_KEYS, 0)
        counts.update(parts=a["parts"], defect=a["defect"], rejected=rejected,
                      ok=a["parts"] - a["defect"] - rejected, reviewed=sum(a["reviewed"].values()))
        for (verdict, decision), n in a["reviewed"].items():
            outcome = review_outcome(verdict, decision)
            if outcome is not None:
                counts[OUTCOME_KEYS[outcome]] += n
        out.append(Bucket(_EPOCH + timedelta(seconds=k * width), a["first"], a["last"], counts, dict(a["rejected"])))
    return out


def compute_buckets(buckets: Iterable[Bucket], by: str = "hour", *, shifts: Shifts = (), tz: tzinfo | None = None,
                    since: datetime | None = None, until: datetime | None = None,
                    fill_empty: bool = False) -> list[dict[str, Any]]:
    """What `compute` returns for the rows the buckets count (each bucket wholly inside one period: see
    bucket_width), from their counts alone."""
    shifts = _checked(by, shifts)
    periods: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, datetime] = {}
    last_seen: dict[str, datetime] = {}
    for bucket in buckets:
        key, start, end = period_of(_local(bucket.at, tz), by, shifts)
        period = periods.get(key)
        if period is None:
            period = periods[key] = _empty(key, *_span(start, end, tz))
            first_seen[key], last_seen[key] = bucket.first, bucket.last
        else:
            first_seen[key], last_seen[key] = min(first_seen[key], bucket.first), max(last_seen[key], bucket.last)
        for name in COUNT_KEYS:
            period[name] += bucket.counts.get(name, 0)
        reasons = period["rejected_by_reason"]
        for reason, n in bucket.rejected_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + n
    return _finish(periods, first_seen, last_seen, by, shifts, tz, since, until, fill_empty)


Count = Callable[[int, datetime, datetime], Mapping[int, Mapping[str, Any]]]  # (width, lo, hi) -> aggregates


def compute_from(span: tuple[datetime, datetime] | None, count: Count, by: str = "hour", *, shifts: Shifts = (),
                 tz: tzinfo | None = None, since: datetime | None = None, until: datetime | None = None,
                 fill_empty: bool = False) -> list[dict[str, Any]]:
    """`compute` over a database's aggregates instead of its rows: `span` is the first and last inspected_at of
    the rows to count (None: there are none), `count(width, lo, hi)` their aggregates per UTC bucket of `width`
    seconds (Store.bucket_counts). The width is the widest that keeps each bucket inside one period."""
    _checked(by, shifts)
    buckets: list[Bucket] = []
    if span is not None:
        lo, hi = span
        width = bucket_width(lo, hi, period_bounds(by, shifts), tz)
        buckets = buckets_from(count(width, lo, hi), width)
    return compute_buckets(buckets, by, shifts=shifts, tz=tz, since=since, until=until, fill_empty=fill_empty)


def totals(periods: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sums of `periods` (as `compute` returns them), with the rates recomputed from the sums: defect_rate
    over every judged part, throughput over the summed hours of the periods."""
    total: dict[str, Any] = {"period": "total", **dict.fromkeys(COUNT_KEYS, 0),
                             "rejected_by_reason": dict.fromkeys(ALWAYS_REASONS, 0)}
    hours = 0.0
    for period in periods:
        for key in COUNT_KEYS:
            total[key] += period[key]
        for reason, n in period.get("rejected_by_reason", {}).items():
            total["rejected_by_reason"][reason] = total["rejected_by_reason"].get(reason, 0) + n
        hours += period["hours"]
    _rates(total, hours)
    return total
