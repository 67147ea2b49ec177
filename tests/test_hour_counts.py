"""The counts kept per UTC hour (migration 0010, `hour_counts`; issue 15 item 1): exact, transactional, and what the
whole-hour reads sum.

* The table holds exactly what the rows say (per hour, station, line, product, verdict, reason and latest decision;
  the first and last inspected_at of each hour and kind of part) after recording, marking, re-marking and undoing,
  on a real SQLite file and on PostgreSQL (INSPECTOR_TEST_POSTGRES_URL; skipped with the reason when unset).
* Store.bucket_counts (whole hours from the table, the partial edge hours from the rows) gives what a count of the
  rows in Python gives, for windows that start and end off the hour, buckets of an hour, a day and one bucket for
  everything; buckets narrower than an hour (half-hour time zones, shifts that start off the hour) are counted
  from the rows and never read the table.
* Two writers recording parts into the same hours, and two marking and re-marking the same parts, at the same time
  (threads with a Store each: their own connections): no count is lost.
* Migration 0010 fills the table from an existing log (rows and reviews written at 0009), and downgrades.

No mocks: every database is real."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from test_reads_at_scale import WINDOWS, part, varied  # noqa: F401 - varied: the fixture with its varied log

from inspector import stats
from inspector.store import HOUR, HourCount, Selection, Store, alembic_config, hour_of
from inspector.web import data

WHOLE = data.WHOLE


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A function that makes an empty database: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        counter = iter(range(100))
        return lambda: f"sqlite:///{tmp_path / f'db{next(counter)}.db'}"
    return request.getfixturevalue("postgres_database")


# ---------------------------------------------------------------------------------------------- the reference


def table(store: Store) -> dict[tuple[Any, ...], int]:
    """hour_counts as {key: n}, the keys whose count is 0 (every part moved to another decision) left out."""
    t = HourCount.__table__.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.hour, t.station, t.line, t.product, t.verdict, t.reason, t.decision, t.n))
        return {tuple(r[:7]): int(r[7]) for r in rows if r[7] != 0}


def first_last(store: Store) -> dict[tuple[Any, ...], tuple[datetime, datetime]]:
    """The first and last inspected_at per hour and kind of part (decision left aside) that hour_counts holds."""
    t = HourCount.__table__.c
    key = (t.hour, t.station, t.line, t.product, t.verdict, t.reason)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(*key, sa.func.min(t.first_at), sa.func.max(t.last_at)).group_by(*key))
        return {tuple(r[:6]): (r[6], r[7]) for r in rows}


def from_rows(store: Store) -> tuple[dict[tuple[Any, ...], int], dict[tuple[Any, ...], tuple[datetime, datetime]]]:
    """What hour_counts must hold, counted in Python from every row and its latest decision (Store.list)."""
    counts: dict[tuple[Any, ...], int] = {}
    ends: dict[tuple[Any, ...], tuple[datetime, datetime]] = {}
    for r in store.list(limit=None):
        reason = (r["reason"] or "") if r["verdict"] == "rejected" else ""
        kind = (hour_of(r["inspected_at"]), r["station"], r["line"], r["product"], r["verdict"], reason)
        counts[(*kind, r["review"] or "")] = counts.get((*kind, r["review"] or ""), 0) + 1
        at = r["inspected_at"]
        ends[kind] = (min(ends[kind][0], at), max(ends[kind][1], at)) if kind in ends else (at, at)
    return counts, ends


def assert_table_matches_rows(store: Store) -> None:
    """hour_counts holds exactly the counts, first and last the rows give."""
    counts, ends = from_rows(store)
    assert table(store) == counts
    assert first_last(store) == ends


def reference(rows: list[dict[str, Any]], width: int, lo: datetime, hi: datetime,
              counts: bool = True) -> dict[int, dict[str, Any]]:
    """What Store.bucket_counts returns, counted in Python from the rows (Store.list) inspected from lo to hi."""
    out: dict[int, dict[str, Any]] = {}
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for r in rows:
        at = r["inspected_at"]
        if not lo <= at <= hi:
            continue
        wanted = counts or r["verdict"] == "defect" or r["review"] is not None
        if not wanted:
            continue
        b = out.setdefault((at - epoch) // timedelta(seconds=width),
                           {"parts": 0, "first": None, "last": None, "defect": 0, "rejected": {}, "reviewed": {}})
        if counts:
            b["parts"] += 1
            b["first"] = at if b["first"] is None else min(b["first"], at)
            b["last"] = at if b["last"] is None else max(b["last"], at)
            if r["verdict"] == "rejected":
                b["rejected"][r["reason"] or "unknown"] = b["rejected"].get(r["reason"] or "unknown", 0) + 1
        b["defect"] += r["verdict"] == "defect"
        if r["review"] is not None:
            b["reviewed"][(r["verdict"], r["review"])] = b["reviewed"].get((r["verdict"], r["review"]), 0) + 1
    return out


def reads_of_the_table(store: Store, read: Callable[[], Any]) -> int:
    """How many statements a read runs that read hour_counts."""
    seen: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", keep)
    try:
        read()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", keep)
    return sum("hour_counts" in s for s in seen)


# ---------------------------------------------------------------------------------------------- the tests


def test_the_table_holds_what_the_rows_say(varied: Store) -> None:
    assert_table_matches_rows(varied)
    assert sum(table(varied).values()) == varied.count()


def test_bucket_counts_from_the_table_equal_the_rows_for_windows_off_the_hour(varied: Store) -> None:
    rng = random.Random(3)
    rows = varied.list(limit=None)
    first, last = varied.time_span(Selection()) or (None, None)
    assert first is not None and last is not None
    windows = [(first, last), *WINDOWS]
    for _ in range(12):  # random windows, to the microsecond, inside and across both DST windows
        a, b = sorted(first + (last - first) * rng.random() for _ in range(2))
        windows.append((a, b))
    lo0, hi0 = WINDOWS[1]
    windows += [(lo0 + timedelta(minutes=17, microseconds=1), hi0 - timedelta(microseconds=1)),  # partial edges
                (lo0, lo0 + HOUR - timedelta(microseconds=1)),  # exactly one whole hour
                (lo0 + timedelta(minutes=5), lo0 + timedelta(minutes=50))]  # inside one hour: rows only
    used = 0
    for lo, hi in windows:
        for width in (3600, 86400, WHOLE):
            for station, line, product in ((None, None, None), ("s1", None, None), ("s2", "L1", "default"),
                                           (None, None, "nothing")):
                sel = Selection(station=station, line=line, product=product)
                mine = [r for r in rows if (station is None or r["station"] == station)
                        and (line is None or r["line"] == line) and (product is None or r["product"] == product)]
                for counts in (True, False):
                    got = varied.bucket_counts(sel, width, lo, hi, counts)
                    assert got == reference(mine, width, lo, hi, counts), (lo, hi, width, sel, counts)
        whole = lo + (datetime.min.replace(tzinfo=timezone.utc) - lo) % HOUR + HOUR <= hi + timedelta(microseconds=1)
        used += (reads_of_the_table(varied, lambda: varied.bucket_counts(Selection(), 3600, lo, hi)) > 0) == whole
    assert used == len(windows)  # a window holding a whole hour reads the table, one without does not


def test_buckets_narrower_than_an_hour_are_counted_from_the_rows(varied: Store) -> None:
    """Half-hour time zones and shifts that start off the hour need buckets narrower than an hour: the table, kept
    per UTC hour, cannot answer for them, and the rows are counted as before."""
    lo, hi = WINDOWS[0]
    rows = varied.list(limit=None)
    for width in (1800, 900, 300, 60):
        got = varied.bucket_counts(Selection(), width, lo, hi)
        assert got == reference(rows, width, lo, hi)
        assert reads_of_the_table(varied, lambda: varied.bucket_counts(Selection(), width, lo, hi)) == 0
    bounds = stats.period_bounds("shift", [(330, "A"), (1090, "B")])  # 05:30 and 18:10
    assert stats.bucket_width(lo, hi, bounds, timezone.utc) == 300
    assert reads_of_the_table(varied, lambda: varied.bucket_counts(Selection(), 3600, lo, hi)) == 1


def t(hours: float) -> datetime:
    """A time `hours` after 2026-11-02 08:00 UTC."""
    return datetime(2026, 11, 2, 8, tzinfo=timezone.utc) + timedelta(hours=hours)


def test_marking_remarking_and_undoing_move_the_part_between_decisions(new_url: Callable[[], str]) -> None:
    from inspector.web.data import UndoRefused, undo_review

    with Store(new_url()) as store:
        ids = store.record([part(i, t(i / 4), "defect" if i % 2 else "ok", product="cap" if i % 3 else None)
                            for i in range(12)])
        assert_table_matches_rows(store)
        store.add_review(ids[1], "defect", "ana")
        store.add_review(ids[1], "good", "ben")  # re-marked: a false alarm now, no more a confirmed defect
        store.add_review(ids[1], "good", "ben")  # the same decision again: nothing moves
        store.add_review(ids[2], "defect", "ana")  # a missed defect
        assert_table_matches_rows(store)
        decided = [r for r in table(store).items() if r[0][6]]
        assert sorted((k[4], k[6], n) for k, n in decided) == [("defect", "good", 1), ("ok", "defect", 1)]
        latest = store.add_review(ids[3], "defect", "ana")
        store.add_review(ids[3], "good", "ben", at=t(5))
        with pytest.raises(UndoRefused):
            undo_review(store, latest["id"])  # not the newest decision: refused, nothing moves
        newest = store.reviews(ids[3])[-1]
        assert undo_review(store, newest["id"])[1]["decision"] == "defect"  # back to the first decision
        assert_table_matches_rows(store)
        only = store.add_review(ids[5], "good", "ana")
        assert undo_review(store, only["id"])[1] is None  # back to no decision
        with pytest.raises(UndoRefused):
            undo_review(store, only["id"])  # gone already
        assert_table_matches_rows(store)
        many = [{"inspection_id": ids[i % 6], "decision": ("defect", "good")[i % 2], "reviewer": "cy", "note": None,
                 "reviewed_at": t(9)} for i in range(14)]
        assert len(store.add_reviews(many)) == 14  # several decisions on one part in one batch: the last counts
        assert_table_matches_rows(store)
        with pytest.raises(KeyError):
            store.add_reviews([{**many[0], "inspection_id": 10**9}])
        with pytest.raises(ValueError):
            store.add_reviews([{**many[0], "decision": "maybe"}])
        assert_table_matches_rows(store)  # a refused batch leaves nothing behind
        assert store.record([part(0, t(0), "ok")]) == [None]  # a part recorded again is not counted again
        assert_table_matches_rows(store)


def test_other_writes_leave_the_counts_alone(new_url: Callable[[], str]) -> None:
    """Archiving, publishing and pruning change columns the counts do not group by; rows are never deleted."""
    with Store(new_url()) as store:
        ids = store.record([part(i, t(i), "ok") for i in range(4)])
        before = table(store)
        store.set_archived(ids[0], "/archive/a.jpg")
        store.update_archived(ids[1], "/archive/b.jpg", None)
        store.mark_published(ids)
        with store.engine.begin() as conn:  # what retention.prune writes: pruned_at, nothing else
            conn.execute(sa.text("UPDATE inspections SET pruned_at = :at"), {"at": t(30)})
        assert table(store) == before
        assert_table_matches_rows(store)


@pytest.mark.parametrize("writers", [2])
def test_concurrent_writers_lose_no_count(new_url: Callable[[], str], writers: int) -> None:
    """Two writers (each its own Store and connections, as two stations on one database) record parts into the
    same hours and kinds at the same time, then mark and re-mark the same parts at the same time."""
    url = new_url()
    with Store(url) as store:
        pass
    batches, size = 25, 20
    errors: list[BaseException] = []
    start = threading.Barrier(writers, timeout=60)

    def record(w: int) -> None:
        try:
            with Store(url) as mine:
                start.wait()
                for b in range(batches):
                    rows = [part(10_000 * w + 100 * b + i, t((b * size + i) % 7 / 3), ("ok", "defect", "rejected")[i % 3])
                            for i in range(size)]
                    mine.record(rows)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    run(record, writers)
    assert not errors, errors
    with Store(url) as store:
        ids = [r["id"] for r in store.list(limit=None)]
        assert len(ids) == writers * batches * size
        assert_table_matches_rows(store)

        def mark(w: int) -> None:
            try:
                with Store(url) as mine:
                    rng = random.Random(w)
                    start.wait()
                    for _ in range(60):
                        chosen = rng.sample(ids[:40], 3)
                        mine.add_reviews([{"inspection_id": i, "decision": rng.choice(["defect", "good"]),
                                           "reviewer": f"w{w}", "note": None, "reviewed_at": t(20)} for i in chosen])
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        run(mark, writers)
        assert not errors, errors
        assert_table_matches_rows(store)


def run(target: Callable[[int], None], writers: int) -> None:
    """Run target(0) .. target(writers - 1) in threads at once and wait for them."""
    threads = [threading.Thread(target=target, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)


def stored(store: Store, value: Any) -> Any:
    """A value as the database stores it, for a plain INSERT: on SQLite a datetime as the naive UTC text the Store
    writes ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    if store.dialect == "sqlite" and isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def test_migration_0010_fills_the_table_from_an_existing_log(new_url: Callable[[], str]) -> None:
    """A log written at 0009 (rows and reviews, two decisions on some parts) is counted by the upgrade; the
    downgrade drops the table and the upgrade fills it again."""
    url = new_url()
    with Store(url, migrate=False) as store:
        with store.engine.execution_options(immediate=True).begin() as conn:
            command.upgrade(alembic_config(conn), "0009")
        rng = random.Random(5)
        rows = []
        for i in range(400):
            verdict = rng.choice(["ok", "ok", "defect", "rejected"])
            row = part(i, t(rng.random() * 30) + timedelta(microseconds=rng.randrange(10**6)), verdict,
                       rng.choice([("s1", "L1"), ("s2", "L1")]), product=rng.choice(["default", "cap"]))
            if verdict == "rejected":
                row["reason"] = rng.choice(["lighting", None, ""])
            rows.append(row)
        rows.append(part(999, datetime(2026, 11, 2, 9, 59, 59, 999999, tzinfo=timezone.utc), "ok"))  # the hour's end
        rows.append(part(998, datetime(2026, 11, 2, 10, tzinfo=timezone.utc), "defect"))  # the next hour's start
        inspections = sa.table("inspections", *(sa.column(c) for c in rows[0]), sa.column("id"))
        reviews = sa.table("reviews", *(sa.column(c) for c in ("inspection_id", "decision", "reviewer",
                                                                  "reviewed_at")))
        with store.engine.begin() as conn:  # at 0009: the rows as that schema takes them (no hour_counts yet)
            for row in rows:
                conn.execute(sa.insert(inspections).values(**{k: stored(store, v) for k, v in row.items()}))
            ids = list(conn.execute(sa.select(inspections.c.id)).scalars())
            for id_ in rng.sample(ids, 120):
                for k in range(rng.choice([1, 1, 2, 3])):
                    conn.execute(sa.insert(reviews).values(inspection_id=id_, decision=rng.choice(["defect", "good"]),
                                                           reviewer="ana", reviewed_at=stored(store, t(40 + k))))
    with Store(url) as store:
        assert store.revision() == "0013"
        assert_table_matches_rows(store)
        expected = reference(store.list(limit=None), 3600, *store.time_span(Selection()))
        assert store.bucket_counts(Selection(), 3600, *store.time_span(Selection())) == expected
        with store.engine.execution_options(immediate=True).begin() as conn:
            command.downgrade(alembic_config(conn), "0009")
        assert not sa.inspect(store.engine).has_table("hour_counts") and store.count() == 402
        assert store.upgrade() == "0013"
        assert_table_matches_rows(store)
