"""What the pages show, read from the Store: the filters of the queue, a page of the queue and its counts, a
part's neighbours in the queue, the numbers behind the plots. Reads, except `undo_review` (Store.undo_review); a
review itself goes through `Store.add_review`.

The queue is ordered by the key (inspected_at, id), newest first, and paged by it: a page starts at the key of its
first part (`start` in its URL; none for the newest page) and the next page at the key of the part after its last
one, so no page is found by skipping rows (OFFSET) however deep it is. Counts and the defects plot come from SQL
aggregates (Store.review_counts, Store.bucket_counts), the score histogram from the newest MAX_SCORES scored parts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from inspector import conditions, stats
from inspector.stats import review_outcome
from inspector.store import MAX_ID, Inspection, Key, Selection, Store, latest_decision

VERDICT_CHOICES = ("defect", "ok", "rejected", "all")
REVIEW_CHOICES = ("all", "unreviewed", "defect", "good")
SINCE_CHOICES: dict[str, timedelta | None] = {"1h": timedelta(hours=1), "8h": timedelta(hours=8),
                                              "24h": timedelta(hours=24), "7d": timedelta(days=7), "all": None}
MAX_PAGE = 10_000


class BadFilter(ValueError):
    """A filter value outside its choices (the view answers 400)."""


def _choice(args: Mapping[str, str], key: str, choices: Any, default: str) -> str:
    """args[key] when it is one of choices, the default when absent or empty; BadFilter otherwise."""
    value = args.get(key) or default
    if value not in choices:
        raise BadFilter(f"{key} must be one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class QueueFilters:
    """The queue's filters and page; `query()` gives them back as URL parameters (defaults left out)."""

    verdict: str = "defect"
    review: str = "unreviewed"  # what is left to do; "all" shows the reviewed ones too
    since: str = "all"
    station: str = ""  # "" = every station
    line: str = ""  # "" = every line
    product: str = ""  # "" = every product (issue 16)
    page: int = 1  # the page's number, as shown (the page itself is found by `start`)
    start: str = ""  # the key of the page's first part (key_text); "" = the newest page

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> QueueFilters:
        """From request arguments or form fields; BadFilter for a value outside its choices. A page number without
        a start (an old link) is the first page."""
        page = page_number(args.get("page") or "1")
        start = args.get("start") or ""
        parse_key(start)
        return cls(verdict=_choice(args, "verdict", VERDICT_CHOICES, cls.verdict),
                   review=_choice(args, "review", REVIEW_CHOICES, cls.review),
                   since=_choice(args, "since", SINCE_CHOICES, cls.since), station=place(args, "station"),
                   line=place(args, "line"), product=place(args, "product"), page=page if start else 1, start=start)

    def query(self, **change: Any) -> dict[str, Any]:
        """URL parameters for these filters with `change` applied, defaults omitted."""
        values = {**asdict(self), **change}
        defaults = asdict(QueueFilters())
        return {k: v for k, v in values.items() if v != defaults[k]}


def page_number(text: str) -> int:
    """A page number from 1 to MAX_PAGE written in ASCII digits; BadFilter for anything else ("²", "١", "+1",
    thousands of digits)."""
    if not (0 < len(text) <= len(str(MAX_PAGE)) and text.isascii() and text.isdigit()) \
            or not 1 <= int(text) <= MAX_PAGE:
        raise BadFilter(f"page must be a number from 1 to {MAX_PAGE}")
    return int(text)


_KEY_TEXT = re.compile(r"([0-9]{8}T[0-9]{6}\.[0-9]{6})Z-([0-9]{1,19})")


def key_text(key: Key) -> str:
    """A queue key as URL text: the UTC time to the microsecond, then the id ("20261202T072055.104956Z-4711")."""
    at, id = key
    return f"{at.astimezone(timezone.utc):%Y%m%dT%H%M%S.%f}Z-{id}"


def parse_key(text: str) -> Key | None:
    """A queue key from its URL text (None for ""); BadFilter for anything else."""
    if not text:
        return None
    found = _KEY_TEXT.fullmatch(text)
    try:
        if found is None or not 0 < int(found.group(2)) <= MAX_ID:
            raise ValueError(text)
        at = datetime.strptime(found.group(1), "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc)
    except ValueError:
        raise BadFilter("start must be a queue position like 20261202T072055.104956Z-4711") from None
    return at, int(found.group(2))


def _key(row: Mapping[str, Any]) -> Key:
    """A row's queue key (inspected_at, id)."""
    return row["inspected_at"], row["id"]


def place(args: Mapping[str, str], key: str) -> str:
    """A station, line or product name filter ("" = all); BadFilter when longer than a name can be or not
    printable."""
    value = (args.get(key) or "").strip()
    if len(value) > 64:
        raise BadFilter(f"{key} names are at most 64 characters")
    if not value.isprintable():
        raise BadFilter(f"{key} names hold no control characters")
    return value


def since_start(since: str, now: datetime | None = None) -> datetime | None:
    """The start of a time range ("24h" -> now - 24 h), None for "all"."""
    span = SINCE_CHOICES[since]
    return None if span is None else (now or datetime.now(timezone.utc)) - span


def selection(filters: QueueFilters, now: datetime | None = None) -> Selection:
    """The Store selection of the queue's filters."""
    return Selection(verdict=None if filters.verdict == "all" else filters.verdict,
                     since=since_start(filters.since, now), station=filters.station or None,
                     line=filters.line or None, review=None if filters.review == "all" else filters.review,
                     product=filters.product or None)


@dataclass
class QueuePage:
    """One page of the queue: rows (each with `review` = latest decision and `last_review` = its full record), the
    start of the next (older) page, None at the end, and of the previous (newer) one, None on the first page ("":
    the previous page is the first)."""

    rows: list[dict[str, Any]]
    has_next: bool
    next_start: str | None = None
    prev_start: str | None = None


def queue_page(store: Store, filters: QueueFilters, page_size: int) -> QueuePage:
    """The rows of the filtered queue from `filters.start` on, newest first (an index range from the key, never
    an OFFSET), with the starts of the pages beside it."""
    sel = selection(filters)
    start = parse_key(filters.start)
    rows = store.page(sel, start=start, limit=page_size + 1)
    page = rows[:page_size]
    for row in page:
        history = store.reviews(row["id"]) if row["review"] else []
        row["last_review"] = history[-1] if history else None
    next_start = key_text(_key(rows[page_size])) if len(rows) > page_size else None
    prev_start = None
    if start is not None:
        newer = store.page(sel, start=start, newer=True, limit=page_size + 1)  # nearest first
        if newer:  # the previous page starts page_size parts up, unless that is the top: the first page
            prev_start = key_text(_key(newer[page_size - 1])) if len(newer) > page_size else ""
    return QueuePage(rows=page, has_next=next_start is not None, next_start=next_start, prev_start=prev_start)


def queue_counts(store: Store, filters: QueueFilters) -> dict[str, int]:
    """How many parts match the queue's verdict, since, station and line filters, by review state: "all",
    "unreviewed", "defect" (latest decision: a defect) and "good" (latest decision: good). A count over an index
    range and the latest reviews of those parts."""
    return store.review_counts(replace(selection(filters), review=None))


def neighbour(store: Store, filters: QueueFilters, id: int, older: bool = True) -> int | None:
    """The id of the part after `id` in the filtered queue (newest first: the next older one), or before it with
    `older=False`; None at the end. `id` itself need not match the filters (it may just have been reviewed)."""
    key = store.key(id)
    if key is None:
        return None
    if older:  # keys below (inspected_at, id): at or below (inspected_at, id - 1)
        rows = store.page(selection(filters), start=(key[0], key[1] - 1), limit=1)
    else:
        rows = store.page(selection(filters), start=key, newer=True, limit=1)
    return rows[0]["id"] if rows else None


def queue_at(store: Store, filters: QueueFilters, id: int, page_size: int) -> QueueFilters:
    """The filters (start and number) of a queue page that shows part `id`: the page the reader is on when it is
    there, the next one when it comes right after it, else the page starting at it, numbered by the parts before
    it (counted up to MAX_PAGE pages)."""
    key = store.key(id)
    if key is None:
        return replace(filters, page=1, start="")
    sel = selection(filters)
    rows = store.page(sel, start=parse_key(filters.start), limit=page_size + 1)
    ids = [r["id"] for r in rows]
    if id in ids[:page_size]:
        return filters
    if ids[page_size:] == [id]:
        return replace(filters, page=min(MAX_PAGE, filters.page + 1), start=key_text(key))
    newer = store.count_newer(sel, key, MAX_PAGE * page_size)
    if newer < page_size:
        return replace(filters, page=1, start="")
    return replace(filters, page=min(MAX_PAGE, newer // page_size + 1), start=key_text(key))


class UndoRefused(Exception):
    """A review cannot be undone (gone already, or not the newest decision on its part any more)."""


def undo_review(store: Store, review_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Delete review `review_id` when it still is the newest decision on its part, so the part is back to where it
    was before (the previous decision, or not reviewed; its hour counts too); one write transaction
    (Store.undo_review). Returns (the deleted review, the decision that counts now or None); UndoRefused
    otherwise, saying why. Reviews are otherwise only added: this takes back a click that was just made, it does
    not rewrite history older than that."""
    try:
        return store.undo_review(review_id)
    except KeyError:
        raise UndoRefused("that review is gone already") from None
    except ValueError as exc:
        raise UndoRefused(str(exc)) from None


MAX_SCORES = 50_000  # the score histogram uses at most this many of the newest scored parts in the range


@dataclass
class StatsData:
    """The numbers behind the stats page and its plots, for one time range."""

    start: datetime | None
    end: datetime
    # the defects per stretch of time, each stretch inside one bar of the defects plot: (its start, the latest
    # decision, how many); SQL aggregates, not one entry per defect
    defects: list[tuple[datetime, str | None, int]] = field(default_factory=list)
    defect_total: int = 0
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # "ok", "defect", "false alarm" -> scores
    scores_capped: bool = False  # True when only the newest MAX_SCORES parts are in `scores`
    counts: dict[str, int] = field(default_factory=dict)  # verdicts; confirmed, false_alarm, missed (latest review)
    threshold: float | None = None  # of the most recently judged part
    profile_version: str | None = None
    versions: list[str] = field(default_factory=list)  # profile versions that judged the parts in `scores`
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # "lighting" always present


PARTS = ("counts", "defects", "scores")  # what stats_data reads: the page's tiles, the defects plot, the scores plot
WHOLE = 2**33  # seconds: one bucket holds every time from 1970 to 2242 (Store.bucket_counts for a whole range)


def stats_data(store: Store, since: str, now: datetime | None = None, station: str = "", line: str = "",
               parts: tuple[str, ...] = PARTS, product: str = "") -> StatsData:
    """The parts' counts (SQL aggregates), the defects per stretch of time by latest decision (SQL aggregates per
    time bucket) and the scores of the newest MAX_SCORES judged parts, for the parts inspected in the range `since`
    (of one station, line and/or product, when given; else of all of them together); only the `parts` asked for."""
    end = now or datetime.now(timezone.utc)
    data = StatsData(start=since_start(since, end), end=end,
                     counts=dict.fromkeys(("ok", "defect", "rejected", "confirmed", "false_alarm", "missed"), 0),
                     rejected_by_reason={"lighting": 0})
    sel = Selection(since=data.start, station=station or None, line=line or None, product=product or None)
    span = store.time_span(sel)
    if since == "all" and span is not None:
        data.start = span[0]  # "all" starts at the first part
    if span is not None and "counts" in parts:
        _count_parts(data, store.bucket_counts(sel, WHOLE, *span))
    if span is not None and "defects" in parts:
        _count_defects(data, store, sel, span)
    if "scores" in parts:
        _sample_scores(data, store, sel)
    return data


def _count_parts(data: StatsData, aggregates: Mapping[int, Mapping[str, Any]]) -> None:
    """Fill the counts and rejections by reason from Store.bucket_counts' aggregates."""
    for a in aggregates.values():
        rejected = sum(a["rejected"].values())
        data.counts["ok"] += a["parts"] - a["defect"] - rejected
        data.counts["defect"] += a["defect"]
        data.counts["rejected"] += rejected
        for reason, n in a["rejected"].items():
            data.rejected_by_reason[reason] = data.rejected_by_reason.get(reason, 0) + n
        for (verdict, decision), n in a["reviewed"].items():
            outcome = review_outcome(verdict, decision)  # the definition `inspector stats` counts by, too
            if outcome is not None:
                data.counts[outcome] += n


def _bar_bounds(width: timedelta) -> stats.Bounds:
    """The defects plot's bar holding a naive local wall time, as (start, end), for bars of `width` (a day, an hour
    or minutes; as plots.defects_png floors them)."""
    def bounds(wall: datetime) -> tuple[datetime, datetime]:
        if width >= timedelta(days=1):
            start = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        elif width >= timedelta(hours=1):
            start = wall.replace(minute=0, second=0, microsecond=0)
        else:
            step = int(width.total_seconds() // 60)
            start = wall.replace(minute=wall.minute - wall.minute % step, second=0, microsecond=0)
        return start, start + width

    return bounds


def _count_defects(data: StatsData, store: Store, sel: Selection, span: tuple[datetime, datetime]) -> None:
    """Fill `defects`: defects per UTC time bucket by latest decision, each bucket inside one bar of the plot
    (the plot's bars are local days, hours or 5 minutes: see plots.bin_width)."""
    from inspector.web.plots import bin_width  # the plot's module (matplotlib): only the plot asks for defects

    local = (data.end.astimezone().replace(tzinfo=None), (data.start or data.end).astimezone().replace(tzinfo=None))
    bar, _unit = bin_width(local[0] - local[1])
    widths = [w for w in stats.WIDTHS if w <= bar.total_seconds()]
    width = stats.bucket_width(span[0], span[1], _bar_bounds(bar), None, widths)
    for k, a in sorted(store.bucket_counts(sel, width, *span, counts=False).items()):
        at = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=k * width)
        confirmed, cleared = a["reviewed"].get(("defect", "defect"), 0), a["reviewed"].get(("defect", "good"), 0)
        for decision, n in (("defect", confirmed), (None, a["defect"] - confirmed - cleared), ("good", cleared)):
            if n:
                data.defects.append((at, decision, n))
        data.defect_total += a["defect"]


def _sample_scores(data: StatsData, store: Store, sel: Selection) -> None:
    """Fill the scores of the newest MAX_SCORES judged parts (walking down the ids), the profile versions that
    judged them, and the threshold and version of the newest judged part."""
    decision = case((Inspection.verdict == "defect", latest_decision(Inspection.id)), else_=None).label("decision")
    rows = store.newest(sel, (Inspection.verdict, Inspection.score, Inspection.profile_version, decision),
                        MAX_SCORES + 1, Inspection.score.is_not(None), verdicts=("ok", "defect"))
    data.scores_capped = len(rows) > MAX_SCORES
    groups: dict[str, list[float]] = {"ok": [], "defect": [], "false alarm": []}
    for row in rows[:MAX_SCORES]:
        groups["false alarm" if row["verdict"] == "defect" and row["decision"] == "good" else row["verdict"]].append(
            row["score"])
    data.scores = {k: np.asarray(v, dtype=float) for k, v in groups.items()}
    data.versions = sorted({r["profile_version"] for r in rows[:MAX_SCORES] if r["profile_version"] is not None})
    newest = store.newest(replace(sel, since=None), (Inspection.threshold, Inspection.profile_version), 1,
                          Inspection.threshold.is_not(None))
    if newest:
        data.threshold, data.profile_version = float(newest[0]["threshold"]), newest[0]["profile_version"]


DRIFT_WINDOW = stats.DRIFT_WINDOW  # the banner replays at most this many of each station's newest parts


def newest_id(store: Store) -> int | None:
    """The id of the newest inspection (None when there is none)."""
    with Session(store.engine) as session:
        return session.scalar(select(func.max(Inspection.id)))


def drift_alarms(store: Store, models_dir: Path, window: int = DRIFT_WINDOW) -> list[dict[str, Any]]:
    """The drift alarms active now, from replaying each station's newest `window` parts through the drift
    monitor (conditions.active_alarms). A drift lasting longer than the window is still reported (the monitor
    finds it again within a few parts), with `since` at the first alarm inside the window."""
    return conditions.active_alarms(conditions.replay_rows(store.drift_rows(Selection(), window), models_dir))
