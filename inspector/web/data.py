"""What the pages show, read from the Store: the filters of the queue, a page of the queue and its counts, a
part's neighbours in the queue, the numbers behind the plots. Reads, except `undo_review` (SQLAlchemy Core on the
store's engine: the Store has no way to take a review back); a review itself goes through `Store.add_review`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inspector import conditions
from inspector.stats import review_outcome
from inspector.store import Inspection, Review, Store, latest_reviews

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
    page: int = 1

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> QueueFilters:
        """From request arguments or form fields; BadFilter for a value outside its choices."""
        page = page_number(args.get("page") or "1")
        return cls(verdict=_choice(args, "verdict", VERDICT_CHOICES, cls.verdict),
                   review=_choice(args, "review", REVIEW_CHOICES, cls.review),
                   since=_choice(args, "since", SINCE_CHOICES, cls.since), station=place(args, "station"),
                   line=place(args, "line"), page=page)

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


def place(args: Mapping[str, str], key: str) -> str:
    """A station or line name filter ("" = all); BadFilter when longer than a name can be or not printable."""
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


@dataclass
class QueuePage:
    """One page of the queue: rows (each with `review` = latest decision and `last_review` = its full record)."""

    rows: list[dict[str, Any]]
    has_next: bool


def queue_page(store: Store, filters: QueueFilters, page_size: int) -> QueuePage:
    """The rows of the filtered queue for `filters.page`, newest first."""
    kwargs: dict[str, Any] = {"verdict": None if filters.verdict == "all" else filters.verdict,
                              "since": since_start(filters.since)}
    if filters.review == "unreviewed":
        kwargs["unreviewed"] = True
    elif filters.review != "all":
        kwargs["reviewed"] = filters.review
    rows = store.list(limit=page_size + 1, offset=(filters.page - 1) * page_size, station=filters.station or None,
                      line=filters.line or None, **kwargs)
    page = rows[:page_size]
    for row in page:
        history = store.reviews(row["id"]) if row["review"] else []
        row["last_review"] = history[-1] if history else None
    return QueuePage(rows=page, has_next=len(rows) > page_size)


def _queue_where(stmt: Any, latest: Any, filters: QueueFilters, review: bool = True) -> Any:
    """`stmt` narrowed by the queue's filters as Store.list applies them (verdict, since, station, line and, with
    `review`, the review state); `latest` is the latest_reviews() subquery joined into `stmt`."""
    if filters.verdict != "all":
        stmt = stmt.where(Inspection.verdict == filters.verdict)
    start = since_start(filters.since)
    if start is not None:
        stmt = stmt.where(Inspection.inspected_at >= start)
    if filters.station:
        stmt = stmt.where(Inspection.station == filters.station)
    if filters.line:
        stmt = stmt.where(Inspection.line == filters.line)
    if review and filters.review == "unreviewed":
        stmt = stmt.where(latest.c.decision.is_(None))
    elif review and filters.review != "all":
        stmt = stmt.where(latest.c.decision == filters.review)
    return stmt


def queue_counts(store: Store, filters: QueueFilters) -> dict[str, int]:
    """How many parts match the queue's verdict, since, station and line filters, by review state: "all",
    "unreviewed", "defect" (latest decision: a defect) and "good" (latest decision: good). One query."""
    latest = latest_reviews()
    stmt = (select(latest.c.decision, func.count()).select_from(Inspection)
            .outerjoin(latest, latest.c.inspection_id == Inspection.id).group_by(latest.c.decision))
    counts = dict.fromkeys(REVIEW_CHOICES, 0)
    with Session(store.engine) as session:
        for decision, n in session.execute(_queue_where(stmt, latest, filters, review=False)):
            counts["all"] += n
            counts["unreviewed" if decision is None else decision] += n
    return counts


def neighbour(store: Store, filters: QueueFilters, id: int, older: bool = True) -> int | None:
    """The id of the part after `id` in the filtered queue (newest first: the next older one), or before it with
    `older=False`; None at the end. `id` itself need not match the filters (it may just have been reviewed)."""
    latest = latest_reviews()
    stmt = select(Inspection.id).outerjoin(latest, latest.c.inspection_id == Inspection.id)
    stmt = _queue_where(stmt, latest, filters)
    stmt = (stmt.where(Inspection.id < id).order_by(Inspection.id.desc()) if older
            else stmt.where(Inspection.id > id).order_by(Inspection.id.asc()))
    with Session(store.engine) as session:
        return session.scalar(stmt.limit(1))


def page_of(store: Store, filters: QueueFilters, id: int, page_size: int) -> int:
    """The queue page (1 to MAX_PAGE) on which part `id` stands under these filters: one more than the number of
    full pages of matching parts newer than it."""
    latest = latest_reviews()
    stmt = select(func.count()).select_from(Inspection).outerjoin(latest, latest.c.inspection_id == Inspection.id)
    stmt = _queue_where(stmt, latest, filters).where(Inspection.id > id)
    with Session(store.engine) as session:
        newer = int(session.scalar(stmt) or 0)
    return min(MAX_PAGE, newer // max(1, page_size) + 1)


class UndoRefused(Exception):
    """A review cannot be undone (gone already, or not the newest decision on its part any more)."""


def undo_review(store: Store, review_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Delete review `review_id` when it still is the newest decision on its part, so the part is back to where it
    was before (the previous decision, or not reviewed); one write transaction. Returns (the deleted review, the
    decision that counts now or None); UndoRefused otherwise, saying why. Reviews are otherwise only added: this
    takes back a click that was just made, it does not rewrite history older than that."""
    table = Review.__table__
    with store.engine.execution_options(immediate=True).begin() as conn:
        found = conn.execute(select(table).where(table.c.id == review_id)).mappings().first()
        if found is None:
            raise UndoRefused("that review is gone already")
        found = dict(found)
        newest = conn.execute(select(func.max(table.c.id)).where(
            table.c.inspection_id == found["inspection_id"])).scalar()
        if newest != review_id:
            raise UndoRefused(f"part #{found['inspection_id']} was reviewed again since; nothing was undone")
        conn.execute(table.delete().where(table.c.id == review_id))
        before = conn.execute(select(table).where(table.c.inspection_id == found["inspection_id"])
                              .order_by(table.c.id.desc()).limit(1)).mappings().first()
    return found, dict(before) if before is not None else None


MAX_SCORES = 50_000  # the score histogram uses at most this many of the newest scored parts in the range


@dataclass
class StatsData:
    """The numbers behind the stats page and its plots, for one time range."""

    start: datetime | None
    end: datetime
    defect_times: list[datetime] = field(default_factory=list)  # inspected_at of each defect
    defect_reviews: list[str | None] = field(default_factory=list)  # latest decision of each defect
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # "ok", "defect", "false alarm" -> scores
    scores_capped: bool = False  # True when only the newest MAX_SCORES parts are in `scores`
    counts: dict[str, int] = field(default_factory=dict)  # verdicts; confirmed, false_alarm, missed (latest review)
    threshold: float | None = None  # of the most recently judged part
    profile_version: str | None = None
    versions: list[str] = field(default_factory=list)  # profile versions that judged parts in the range
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # "lighting" always present


def stats_data(store: Store, since: str, now: datetime | None = None, station: str = "", line: str = "") -> StatsData:
    """Counts (aggregated in the database), the time and review of every defect, and the scores of the newest
    MAX_SCORES judged parts, for the parts inspected in the range `since` (of one station and/or line, when
    given; else of all of them together)."""
    data = StatsData(start=since_start(since, now or datetime.now(timezone.utc)),
                     end=now or datetime.now(timezone.utc))
    latest = latest_reviews()
    joined = select().select_from(Inspection).outerjoin(latest, latest.c.inspection_id == Inspection.id)
    if data.start is not None:
        joined = joined.where(Inspection.inspected_at >= data.start)
    if station:
        joined = joined.where(Inspection.station == station)
    if line:
        joined = joined.where(Inspection.line == line)
    counts_q = joined.add_columns(Inspection.verdict, latest.c.decision, func.count(),
                                  func.min(Inspection.inspected_at)).group_by(Inspection.verdict, latest.c.decision)
    defects_q = (joined.add_columns(Inspection.inspected_at, latest.c.decision)
                 .where(Inspection.verdict == "defect").order_by(Inspection.id))
    scores_q = (joined.add_columns(Inspection.verdict, Inspection.score, latest.c.decision)
                .where(Inspection.score.is_not(None), Inspection.verdict.in_(("ok", "defect")))
                .order_by(Inspection.id.desc()).limit(MAX_SCORES + 1))
    versions_q = joined.add_columns(Inspection.profile_version).where(
        Inspection.profile_version.is_not(None)).distinct()
    reasons_q = joined.add_columns(Inspection.reason, func.count()).where(
        Inspection.verdict == "rejected").group_by(Inspection.reason)
    newest_q = (select(Inspection.threshold, Inspection.profile_version).where(Inspection.threshold.is_not(None))
                .order_by(Inspection.id.desc()).limit(1))
    if station:
        newest_q = newest_q.where(Inspection.station == station)
    if line:
        newest_q = newest_q.where(Inspection.line == line)
    with Session(store.engine) as session:
        count_rows = session.execute(counts_q).all()
        defect_rows = session.execute(defects_q).all()
        score_rows = session.execute(scores_q).all()
        data.versions = sorted(v for (v,) in session.execute(versions_q))
        newest = session.execute(newest_q).first()
        reason_rows = session.execute(reasons_q).all()
    counts = dict.fromkeys(("ok", "defect", "rejected", "confirmed", "false_alarm", "missed"), 0)
    for verdict, decision, n, _first in count_rows:
        counts[verdict] += n
        outcome = review_outcome(verdict, decision)  # the definition `inspector stats` counts by, too
        if outcome is not None:
            counts[outcome] += n
    firsts = [first for *_, first in count_rows if first is not None]
    if since == "all" and firsts:
        data.start = min(firsts)  # "all" starts at the first part
    data.counts = counts
    data.rejected_by_reason = {"lighting": 0}
    for reason, n in reason_rows:
        data.rejected_by_reason[reason or "unknown"] = data.rejected_by_reason.get(reason or "unknown", 0) + n
    data.defect_times = [at for at, _ in defect_rows]
    data.defect_reviews = [decision for _, decision in defect_rows]
    data.scores_capped = len(score_rows) > MAX_SCORES
    groups: dict[str, list[float]] = {"ok": [], "defect": [], "false alarm": []}
    for verdict, score, decision in score_rows[:MAX_SCORES]:
        groups["false alarm" if verdict == "defect" and decision == "good" else verdict].append(score)
    data.scores = {k: np.asarray(v, dtype=float) for k, v in groups.items()}
    if newest is not None:
        data.threshold, data.profile_version = float(newest[0]), newest[1]
    return data


DRIFT_WINDOW = 5_000  # the banner replays at most this many of each station's newest parts
_DRIFT_COLUMNS = (Inspection.id, Inspection.station, Inspection.profile_version, Inspection.verdict,
                  Inspection.reason, Inspection.exposure, Inspection.score, Inspection.inspected_at)


def newest_id(store: Store) -> int | None:
    """The id of the newest inspection (None when there is none)."""
    with Session(store.engine) as session:
        return session.scalar(select(func.max(Inspection.id)))


def drift_alarms(store: Store, models_dir: Path, window: int = DRIFT_WINDOW) -> list[dict[str, Any]]:
    """The drift alarms active now, from replaying each station's newest `window` parts through the drift
    monitor (conditions.active_alarms). A drift lasting longer than the window is still reported (the monitor
    finds it again within a few parts), with `since` at the first alarm inside the window."""
    rows: list[dict[str, Any]] = []
    with Session(store.engine) as session:
        stations = [s for (s,) in session.execute(select(Inspection.station).distinct())]
        for station in stations:
            stmt = (select(*_DRIFT_COLUMNS).where(Inspection.station == station).order_by(Inspection.id.desc())
                    .limit(window))
            rows += reversed([dict(r._mapping) for r in session.execute(stmt)])
    return conditions.active_alarms(conditions.replay_rows(rows, models_dir))
