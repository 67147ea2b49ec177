"""Reads that do not grow with the log (issue 15, item 1).

* The SQL aggregates per time bucket (Store.bucket_counts folded by stats.compute_from) give exactly what the
  row-by-row computation (stats.compute over Store.list, what `inspector stats` did before) gives, on a varied log:
  hours across midnight and both DST changes of Europe/Berlin, half- and quarter-hour time zones, shifts that run
  past midnight or start off the hour, reviews superseded by later ones, two stations and lines. The review page's
  counts and defects plot likewise.
* The review queue pages by key: following its links visits every part exactly once while new parts arrive
  between the pages (and with many parts of one timestamp).
* `inspector export` streams the rows with their latest decision joined in SQL: the same CSV as the row-by-row
  export, and memory that does not grow with the rows.
* Migration 0007 upgrades and downgrades (SQLite; PostgreSQL when INSPECTOR_TEST_POSTGRES_URL is set).
* SQLite's query plans for the queue and the unreviewed list use the indexes (no scan of the inspections table).

Real databases (SQLite files in tmp_path; PostgreSQL through conftest.postgres_database), no mocks."""

from __future__ import annotations

import csv
import io
import random
import re
import sqlite3
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from inspector import cli, config, stats
from inspector.store import Base, Review, Selection, Store, alembic_config
from inspector.web import create_app, data

BERLIN = ZoneInfo("Europe/Berlin")
ZONES: list[tzinfo] = [BERLIN, ZoneInfo("Asia/Kolkata"), ZoneInfo("Asia/Kathmandu"), ZoneInfo("America/St_Johns"),
                       timezone.utc]
SHIFTS = {"three": [(360, "early"), (840, "late"), (1320, "night")], "off the hour": [(330, "A"), (1090, "B")]}
# Berlin's DST changes in 2026: 29 March 02:00 CET -> 03:00 CEST, 25 October 03:00 CEST -> 02:00 CET
WINDOWS = [(datetime(2026, 3, 28, 9, tzinfo=timezone.utc), datetime(2026, 3, 30, 9, tzinfo=timezone.utc)),
           (datetime(2026, 10, 24, 9, tzinfo=timezone.utc), datetime(2026, 10, 26, 9, tzinfo=timezone.utc))]
UNTIL = datetime(2026, 10, 26, 12, tzinfo=timezone.utc)
PLACES = [("s1", "L1"), ("s1", "L2"), ("s2", "L1")]


def part(i: int, at: datetime, verdict: str, place: tuple[str, str] = ("s1", "L1"), **kw: Any) -> dict[str, Any]:
    """An inspection row (sha256 from i; rejected ones may have a source_key instead)."""
    judged = verdict != "rejected"
    row = {"sha256": f"{i:064x}", "name": f"p{i}.jpg", "source_path": f"/in/p{i}.jpg", "received_at": at,
           "inspected_at": at, "verdict": verdict, "reason": None if judged else "truncated",
           "score": (2.0 + i % 7 if verdict == "defect" else 0.5 + i % 5 / 10) if judged else None,
           "threshold": 1.5 if judged else None, "profile_version": f"v{1 + i % 2}" if judged else None,
           "station": place[0], "line": place[1], "camera": "c"}
    return row | kw


def special_times() -> list[datetime]:
    """Instants on and next to period boundaries: local midnights and hours in each zone, shift starts, both sides
    of each DST change (the repeated hour of October twice), a microsecond before each."""
    times = []
    for lo, hi in WINDOWS:
        t = lo
        while t < hi:
            times += [t, t - timedelta(microseconds=1), t + timedelta(minutes=30), t + timedelta(minutes=45)]
            t += timedelta(hours=1)
    times += [datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc), datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc),
              datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=timezone.utc),
              datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)]
    return sorted(set(times))


def fill_varied(store: Store, seed: int = 7, n: int = 1500) -> None:
    """A varied log: n parts at random times in both DST windows plus the special instants, 70% ok, 20% defect,
    10% rejected (lighting, truncated, no reason), on three (station, line) pairs; reviews on half the defects (a
    third of those superseded by a later decision) and on a tenth of the ok parts."""
    rng = random.Random(seed)
    times = special_times()
    for _ in range(n):
        lo, hi = rng.choice(WINDOWS)
        times.append(lo + (hi - lo) * rng.random())
    rows = []
    for i, at in enumerate(times):
        u = rng.random()
        verdict = "ok" if u < 0.7 else "defect" if u < 0.9 else "rejected"
        row = part(i, at, verdict, rng.choice(PLACES))
        if verdict == "rejected":
            row["reason"] = rng.choice(["lighting", "truncated", None])
            if rng.random() < 0.3:
                row.update(sha256=None, source_key=f"key-{i}")
        rows.append(row)
    ids = store.record(rows)
    reviews = []
    for id_, row in zip(ids, rows):
        decided = (row["verdict"] == "defect" and rng.random() < 0.5) or (row["verdict"] == "ok" and rng.random() < 0.1)
        if not decided:
            continue
        for k in range(1 + (rng.random() < 0.33)):
            reviews.append({"inspection_id": id_, "decision": rng.choice(["defect", "good"]), "note": f"n{k}",
                            "reviewer": "ana", "reviewed_at": row["inspected_at"] + timedelta(hours=1 + k)})
    rng.shuffle(reviews)  # review ids are not in inspection order
    store.add_reviews(reviews)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def varied(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store holding the varied log, on SQLite and (when configured) PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('varied') / 'inspector.db'}"
    else:
        url = request.getfixturevalue("postgres_database")()
    with Store(url) as store:
        fill_varied(store)
        yield store


# ---------------------------------------------------------------------------------------------- counts


def test_sql_aggregates_give_exactly_the_row_by_row_counts(varied: Store) -> None:
    widths: dict[str, set[int]] = {}
    compared = 0
    since_late = datetime(2026, 10, 24, 21, 17, 3, 250000, tzinfo=timezone.utc)
    # the log does not change during the test: each distinct read (the rows of a selection, its span, its
    # aggregates for one width and window) is made once and its result reused by every comparison that asks for
    # it again (hour, day and whole-hour shifts in Berlin and UTC all ask for the same hourly aggregates)
    listed: dict[Selection, list[dict[str, Any]]] = {}
    spans: dict[Selection, Any] = {}
    counted: dict[tuple[Selection, int, datetime, datetime], Any] = {}
    for tz in ZONES:
        places = [(None, None), ("s1", None), (None, "L1"), ("s2", "L1"), ("nobody", None)] if tz is BERLIN else \
            [(None, None), ("s2", "L1")]
        for by, shifts in [("hour", []), ("day", []), *(("shift", s) for s in SHIFTS.values())]:
            for since, fill_empty in ((None, False), (since_late, False), (since_late, True)):
                for station, line in places:
                    sel = Selection(since=since, station=station, line=line)

                    def count(width: int, lo: datetime, hi: datetime) -> Any:
                        widths.setdefault(str(tz), set()).add(width)
                        if (sel, width, lo, hi) not in counted:
                            counted[sel, width, lo, hi] = varied.bucket_counts(sel, width, lo, hi)
                        return counted[sel, width, lo, hi]

                    if sel not in listed:
                        listed[sel] = varied.list(since=since, station=station, line=line, limit=None)
                        spans[sel] = varied.time_span(sel)
                    old = stats.compute(listed[sel], by, shifts=shifts, tz=tz, since=since, until=UNTIL,
                                        fill_empty=fill_empty)
                    new = stats.compute_from(spans[sel], count, by, shifts=shifts, tz=tz, since=since,
                                             until=UNTIL, fill_empty=fill_empty)
                    assert new == old, (str(tz), by, shifts, since, station, line, fill_empty)
                    assert stats.totals(new) == stats.totals(old)
                    compared += 1
    assert compared == 4 * 3 * (5 + 4 * 2)
    assert sum(p["parts"] for p in stats.compute(varied.list(limit=None), "day", tz=BERLIN)) == varied.count()
    # whole-hour zones keep hour buckets across their DST changes; half- and quarter-hour zones, and shifts that
    # start off the hour (18:10), need narrower ones
    assert widths["Europe/Berlin"] == {3600, 300} and widths["UTC"] == {3600, 300}
    assert widths["Asia/Kolkata"] == {1800, 300} and widths["Asia/Kathmandu"] == {900, 300}


def test_bucket_width_follows_the_time_zone_and_the_periods() -> None:
    lo, hi = WINDOWS[1]
    hour = stats.period_bounds("hour")
    assert stats.bucket_width(lo, hi, hour, BERLIN) == 3600  # the repeated hour of 25 October is a whole UTC hour
    assert stats.bucket_width(lo, hi, hour, ZoneInfo("Asia/Kolkata")) == 1800
    assert stats.bucket_width(lo, hi, stats.period_bounds("shift", SHIFTS["off the hour"]), BERLIN) == 300  # 18:10
    assert stats.bucket_width(lo, hi, stats.period_bounds("shift", [(367, "odd")]), BERLIN) == 60
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # +10:30 / +11: its DST change moves the clock by 30 minutes
    april = (datetime(2026, 4, 4, 12, tzinfo=timezone.utc), datetime(2026, 4, 5, 12, tzinfo=timezone.utc))
    assert stats.bucket_width(*april, stats.period_bounds("day"), lord_howe) == 1800


def test_the_review_page_counts_and_defects_plot_match_the_rows(varied: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")  # the plot's bars are local days, hours or 5 minutes
    time.tzset()
    try:
        for since, now in (("all", UNTIL), ("24h", datetime(2026, 10, 25, 9, 10, tzinfo=timezone.utc)),
                           ("1h", datetime(2026, 10, 25, 1, 20, tzinfo=timezone.utc)),
                           ("7d", datetime(2026, 3, 30, 20, tzinfo=timezone.utc))):
            for station in ("", "s2"):
                page = data.stats_data(varied, since, now, station=station)
                start = data.since_start(since, now)
                rows = varied.list(since=start, station=station or None, limit=None)
                expected = dict.fromkeys(("ok", "defect", "rejected", "confirmed", "false_alarm", "missed"), 0)
                reasons = {"lighting": 0}
                for r in rows:
                    expected[r["verdict"]] += 1
                    outcome = stats.review_outcome(r["verdict"], r["review"])
                    if outcome:
                        expected[outcome] += 1
                    if r["verdict"] == "rejected":
                        reasons[r["reason"] or "unknown"] = reasons.get(r["reason"] or "unknown", 0) + 1
                assert page.counts == expected and page.rejected_by_reason == reasons, (since, station)
                defects = [(r["inspected_at"], r["review"], 1) for r in rows if r["verdict"] == "defect"]
                assert page.defect_total == len(defects)
                assert bars(page.defects, page) == bars(defects, page), (since, station)
    finally:
        monkeypatch.undo()
        time.tzset()


def bars(defects: list[tuple[datetime, str | None, int]], page: data.StatsData) -> dict[tuple[int, str], int]:
    """The defects plot's bars (bar index, review state) -> height, binned as plots.defects_png bins them."""
    from inspector.web import plots

    end = page.end.astimezone().replace(tzinfo=None)
    first_wall = (page.start or page.end).astimezone().replace(tzinfo=None)
    width, _ = plots.bin_width(end - first_wall)
    first = plots._floor(first_wall, width)
    count = int((end - first) / width) + 1
    out: dict[tuple[int, str], int] = {}
    for at, decision, n in defects:
        i = int((at.astimezone().replace(tzinfo=None) - first) / width)
        if not 0 <= i < count:
            continue
        key = (i, {"defect": "confirmed", "good": "false alarm"}.get(decision or "", "unreviewed"))
        out[key] = out.get(key, 0) + n
    return out


# ---------------------------------------------------------------------------------------------- the queue


def keyed_store(tmp_path: Path, n: int = 300) -> tuple[Store, list[int]]:
    """A store of n parts of two stations, a third of them defects, with a run of 40 parts of one timestamp."""
    store = Store(f"sqlite:///{tmp_path / 'queue.db'}")
    t0 = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)
    rows = [part(i, t0 + timedelta(seconds=i // 40 * 7 if 100 <= i < 140 else i * 7), "defect" if i % 3 else "ok",
                 PLACES[i % 3]) for i in range(n)]
    return store, store.record(rows)


def walk(store: Store, sel: Selection, size: int, between: Callable[[int], None]) -> list[int]:
    """Every id the queue shows page after page from the newest, following each page's next start."""
    seen: list[int] = []
    filters = None
    start = None
    for page_no in range(1000):
        rows = store.page(sel, start=start, limit=size + 1)
        seen += [r["id"] for r in rows[:size]]
        if len(rows) <= size:
            return seen
        start = (rows[size]["inspected_at"], rows[size]["id"])
        between(page_no)
    raise AssertionError(f"no end after 1000 pages ({filters})")


@pytest.mark.parametrize("sel", [Selection(), Selection(verdict="defect", review="unreviewed"),
                                 Selection(verdict="defect", station="s2"), Selection(review="good")],
                         ids=["all", "unreviewed defects", "defects of s2", "false alarms"])
def test_keyset_pages_visit_every_part_once_while_parts_arrive(tmp_path: Path, sel: Selection) -> None:
    store, ids = keyed_store(tmp_path)
    for id_ in ids[::5]:
        store.add_review(id_, "good", "ana")
    reviewed = sel.review if sel.review in ("defect", "good") else None
    before = {r["id"] for r in store.list(verdict=sel.verdict, station=sel.station, reviewed=reviewed,
                                          unreviewed=sel.review == "unreviewed", limit=None)}
    t0 = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)
    counter = iter(range(10_000, 20_000))

    def arrive(page_no: int) -> None:  # new parts between pages: newest, tied with a seen part, older than all
        at = [datetime(2026, 11, 3, tzinfo=timezone.utc) + timedelta(seconds=page_no), t0 + timedelta(seconds=700),
              t0 - timedelta(days=1, seconds=page_no)]
        new = store.record([part(next(counter), a, "defect", PLACES[2]) for a in at])
        for id_ in new:
            if sel.review == "good":
                store.add_review(id_, "good", "ana")

    seen = walk(store, sel, 7, arrive)
    assert len(seen) == len(set(seen)), "a part shown twice"
    assert before <= set(seen), f"{len(before - set(seen))} parts never shown"
    keys = [store.key(i) for i in seen]
    assert keys == sorted(keys, reverse=True), "newest first by (inspected_at, id)"
    store.close()


def test_the_review_page_links_carry_the_key(tmp_path: Path, cfg_for: Callable[[Path, str], config.Config]) -> None:
    store, ids = keyed_store(tmp_path, 120)
    app = create_app(cfg_for(tmp_path, store.url), store)
    client = app.test_client()
    todo = {r["id"] for r in store.list(verdict="defect", unreviewed=True, limit=None)}
    seen: list[int] = []
    path = "/"
    pages = []
    for _ in range(100):
        html = client.get(path, headers={"Host": "localhost"}).text
        pages.append((path, html))
        seen += [int(i) for i in re.findall(r'<article class="part[^"]*" id="part-(\d+)"', html)]
        store.record([part(50_000 + len(seen), datetime(2026, 11, 4, tzinfo=timezone.utc) + timedelta(
            seconds=len(seen)), "defect")])  # a new part between pages
        found = re.search(r'<a href="([^"]+)">older →</a>', html)
        if not found:
            break
        path = found.group(1).replace("&amp;", "&")
        assert "start=" in path and "offset" not in path
    assert sorted(seen) == sorted(todo) and len(seen) == len(set(seen))
    # "← newer" goes back to the page before, as it was
    path2, html2 = pages[2]
    back = re.search(r'<a href="([^"]+)">← newer</a>', html2).group(1).replace("&amp;", "&")
    cards = re.findall(r'id="part-(\d+)"', client.get(back, headers={"Host": "localhost"}).text)
    assert cards == re.findall(r'id="part-(\d+)"', pages[1][1])
    assert client.get("/?start=2026-11-02", headers={"Host": "localhost"}).status_code == 400
    assert client.get("/?start=20261102T080000.000000Z-٣", headers={"Host": "localhost"}).status_code == 400
    store.close()


@pytest.fixture
def cfg_for() -> Callable[[Path, str], config.Config]:
    """A config for a database URL (review page on localhost, 7 parts a page)."""
    import dataclasses

    def make(folder: Path, url: str) -> config.Config:
        cfg = config.load(None)
        return dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, url=url),
                                   models=dataclasses.replace(cfg.models, dir=folder / "models"),
                                   web=dataclasses.replace(cfg.web, page_size=7))

    return make


# ---------------------------------------------------------------------------------------------- export


def expected_csv(store: Store, **filters: Any) -> str:
    """The CSV the row-by-row export wrote: every row (oldest first) and, per reviewed row, its review history."""
    rows = sorted(store.list(limit=None, **filters), key=lambda r: r["id"])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(cli._EXPORT_KEYS + cli._EXPORT_REVIEW_KEYS)
    for row in rows:
        history = store.reviews(row["id"]) if row["review"] is not None else []
        last = history[-1] if history else {}
        review = (last.get("decision"), last.get("reviewer"), last.get("note"), last.get("reviewed_at"), len(history))
        writer.writerow([cli._csv_value(row.get(k)) for k in cli._EXPORT_KEYS] + [cli._csv_value(v) for v in review])
    return out.getvalue()


def export_store(tmp_path: Path, n: int, url: str | None = None) -> tuple[Store, Path]:
    """A store of n parts with awkward text (formulas, quotes, new lines, non-ASCII) and reviews, and its config
    (SQLite in tmp_path unless `url`)."""
    url = url or f"sqlite:///{tmp_path / 'export.db'}"
    store = Store(url)
    t0 = datetime(2026, 11, 5, 6, tzinfo=timezone.utc)
    awkward = ["=SUM(A1)", "+1", "-2", "@x", "\tx", "plain", 'say "hi", then\nleave', "Teil-ä"]
    rows = []
    for i in range(n):
        row = part(i, t0 + timedelta(seconds=i * 3, microseconds=0 if i % 4 else 123456),
                   ["ok", "defect", "rejected"][i % 3], PLACES[i % 3], name=f"{awkward[i % len(awkward)]}{i}.jpg",
                   detail=awkward[(i + 3) % len(awkward)] if i % 3 == 2 else None, exposure=None if i % 5 else 0.97)
        if i % 3 == 2 and i % 2:
            row.update(sha256=None, source_key=f"inode:{i}")
        rows.append(row)
    ids = store.record(rows)
    for k, id_ in enumerate(ids[1::3][::4]):
        store.add_review(id_, "good", "ana", note=awkward[k % len(awkward)])
        if k % 3 == 0:
            store.add_review(id_, "defect", "bén", note=None, at=t0 + timedelta(days=1, seconds=k))
    store.add_review(ids[0], "defect", "eve", note="=HYPERLINK(\"http://evil\")")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n[models]\ndir = "{tmp_path / "models"}"\n')
    return store, cfg


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_export_streams_the_same_csv_as_the_row_by_row_export(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              request: pytest.FixtureRequest, backend: str) -> None:
    url = request.getfixturevalue("postgres_database")() if backend == "postgresql" else None
    store, cfg = export_store(tmp_path, 3000, url)
    since = datetime(2026, 11, 5, 7, tzinfo=timezone.utc)
    for argv, filters in ((["--csv", "all.csv"], {}),
                          (["--csv", "d.csv", "--verdict", "defect", "--since", since.isoformat()],
                           {"verdict": "defect", "since": since}),
                          (["--csv", "s.csv", "--station", "s2"], {"station": "s2"})):
        target = tmp_path / argv[1]
        argv[1] = str(target)
        assert cli.main(["export", *argv, "--config", str(cfg)]) == 0
        assert target.read_bytes().decode("utf-8") == expected_csv(store, **filters), argv
    assert f"wrote 3000 rows to {tmp_path / 'all.csv'}" in capsys.readouterr().out
    store.close()


def test_export_memory_does_not_grow_with_the_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    peaks = {}
    for n in (2000, 7000):
        folder = tmp_path / str(n)
        folder.mkdir()
        store, cfg = export_store(folder, n)
        store.close()
        tracemalloc.start()
        assert cli.main(["export", "--csv", str(folder / "out.csv"), "--config", str(cfg)]) == 0
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    capsys.readouterr()
    # 5,000 rows more (3.5 times the rows, seven batches instead of two): the peak stays within a megabyte of
    # itself (holding the rows took ~1 KB per row more, ~5 MB here)
    assert peaks[7000] < peaks[2000] + 1_000_000, peaks


# ---------------------------------------------------------------------------------------------- migration 0007

NEW_INDEXES = {"ix_inspections_inspected_at_id": ["inspected_at", "id"],
               "ix_inspections_verdict_inspected_at_id": ["verdict", "inspected_at", "id"],
               "ix_inspections_station_line_verdict_inspected_at": ["station", "line", "verdict", "inspected_at"]}


def check_migration_0007(url: str) -> None:
    """0006 -> 0007 adds the read indexes (and drops the plain inspected_at one) on a log with rows; 0007 -> 0006
    puts it back; the rows survive both ways, and at the head the schema is the ORM's and the queue reads."""
    table = sa.table("inspections", *(sa.column(c) for c in (
        "sha256", "name", "source_path", "received_at", "inspected_at", "verdict", "station", "line", "camera")))
    t0 = datetime(2026, 11, 6, 8, tzinfo=timezone.utc)

    def indexes(s: Store) -> dict[str, list[str]]:
        return {i["name"]: i["column_names"] for i in sa.inspect(s.engine).get_indexes("inspections")}

    def migrate(s: Store, step: Callable[..., None], revision: str) -> None:
        with s.engine.execution_options(immediate=True).begin() as conn:
            step(alembic_config(conn), revision)
        assert s.revision() == revision

    with Store(url, migrate=False) as s:
        migrate(s, command.upgrade, "0006")
        with s.engine.begin() as conn:  # rows as 0006 holds them (later columns do not exist yet)
            conn.execute(table.insert(), [
                {"sha256": f"{i:064x}", "name": f"p{i}.jpg", "source_path": f"/in/p{i}.jpg", "received_at": t0,
                 "inspected_at": (t0 + timedelta(minutes=i)).replace(tzinfo=None) if s.dialect == "sqlite" else
                 t0 + timedelta(minutes=i), "verdict": "defect" if i % 2 else "ok", "station": "s", "line": "l",
                 "camera": "c"} for i in range(20)])
        assert "ix_inspections_inspected_at" in indexes(s) and not set(NEW_INDEXES) & set(indexes(s))
        migrate(s, command.upgrade, "0007")
        assert {k: indexes(s).get(k) for k in NEW_INDEXES} == NEW_INDEXES
        assert "ix_inspections_inspected_at" not in indexes(s)
        assert s.count() == 20
        migrate(s, command.downgrade, "0006")
        assert indexes(s)["ix_inspections_inspected_at"] == ["inspected_at"] and not set(NEW_INDEXES) & set(indexes(s))
        assert s.count() == 20
    with Store(url) as s:  # to the head again
        assert {k: indexes(s).get(k) for k in NEW_INDEXES} == NEW_INDEXES
        with s.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == [], s.dialect
        newest = s.page(Selection(verdict="defect"), limit=3)
        assert [r["name"] for r in newest] == ["p19.jpg", "p17.jpg", "p15.jpg"]


def test_migration_0007_on_sqlite(tmp_path: Path) -> None:
    check_migration_0007(f"sqlite:///{tmp_path / 'm.db'}")


def test_migration_0007_on_postgres(postgres_database: Callable[[], str]) -> None:
    check_migration_0007(postgres_database())


# ---------------------------------------------------------------------------------------------- query plans


def plans(store: Store, read: Callable[[], Any]) -> list[str]:
    """SQLite's EXPLAIN QUERY PLAN lines of every SELECT a read runs."""
    statements: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", keep)
    try:
        read()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", keep)
    assert statements
    con = sqlite3.connect(store.file)
    try:
        return [f"{i}: {row[3]}" for i, (sql, params) in enumerate(statements)
                for row in con.execute("EXPLAIN QUERY PLAN " + sql, params)]
    finally:
        con.close()


def test_the_queue_and_the_unreviewed_list_use_indexes(tmp_path: Path) -> None:
    store, ids = keyed_store(tmp_path, 200)
    for id_ in ids[::7]:
        store.add_review(id_, "defect", "ana")
    start = store.key(ids[150])
    reads = {
        "queue: unreviewed defects": lambda: store.page(Selection(verdict="defect", review="unreviewed"), limit=8),
        "queue: unreviewed defects, a later page": lambda: store.page(
            Selection(verdict="defect", review="unreviewed"), start=start, limit=8),
        "queue: every verdict of a week": lambda: store.page(
            Selection(since=datetime(2026, 11, 1, tzinfo=timezone.utc)), start=start, limit=8),
        "queue: the page before": lambda: store.page(Selection(verdict="defect"), start=start, newer=True, limit=8),
        "queue counts": lambda: store.review_counts(Selection(verdict="defect")),
        "list --unreviewed --verdict defect": lambda: store.list(verdict="defect", unreviewed=True),
        "list --verdict defect --since 8h": lambda: store.list(verdict="defect",
                                                               since=datetime(2026, 11, 2, 8, 10, tzinfo=timezone.utc)),
        "stats": lambda: store.bucket_counts(Selection(), 3600, *store.time_span(Selection())),
        "stats of one station": lambda: store.bucket_counts(Selection(station="s2"), 3600,
                                                            *store.time_span(Selection())),
    }
    for label, read in reads.items():
        lines = plans(store, read)
        assert not [x for x in lines if "SCAN inspections" in x], (label, lines)
        assert not [x for x in lines if "TEMP B-TREE FOR ORDER BY" in x], (label, lines)
        assert not [x for x in lines if re.search(r"SCAN (reviews|newer)", x) and "queue" in label
                    and "counts" not in label], (label, lines)
    unreviewed = plans(store, lambda: store.list(unreviewed=True))  # newest first by id: the table in id order
    assert not [x for x in unreviewed if "TEMP B-TREE" in x], unreviewed
    assert [x for x in unreviewed if "SEARCH reviews USING COVERING INDEX ix_reviews_inspection_id_id" in x]
    store.close()


def test_counts_of_a_window_walk_only_the_reviews_of_its_parts(tmp_path: Path) -> None:
    """The stats and queue counts of a window (24 h of a long log) read the latest reviews from the window's first
    inspection id on, a range of reviews (inspection_id, id), not every review of the log; a window that starts at
    the log's first part needs no bound for the queue counts (finding it would read the whole index). The stats'
    rows are an edge of whole hours here (the log is 23 minutes long): bounded on both sides by the ids of that
    stretch (test_hour_counts has the whole hours)."""
    store, ids = keyed_store(tmp_path, 200)
    for id_ in ids[::5]:
        store.add_review(id_, "defect", "ana")
    window = Selection(since=store.key(ids[150])[0])
    everything = Selection(since=store.key(ids[0])[0])
    bounded = re.compile(r"SEARCH reviews USING (COVERING )?INDEX ix_reviews_inspection_id_id \(inspection_id>\?"
                         r"( AND inspection_id<\?)?\)")
    for label, read in {
        "stats": lambda sel: store.bucket_counts(sel, 3600, *store.time_span(sel)),
        "stats of one station": lambda sel: store.bucket_counts(replace(sel, station="s2"), 3600,
                                                                *store.time_span(sel)),
        "queue counts": lambda sel: store.review_counts(replace(sel, verdict="defect")),
    }.items():
        lines = plans(store, lambda: read(window))
        assert [x for x in lines if bounded.search(x)], (label, lines)
        assert not [x for x in lines if "SCAN reviews" in x], (label, lines)
        if label == "queue counts":
            assert not [x for x in plans(store, lambda: read(everything)) if bounded.search(x)], label
    counts = store.review_counts(replace(window, verdict="defect"))
    in_window = [i for i in ids[150:] if store.get(i)["verdict"] == "defect"]
    assert counts["defect"] == len([i for i in in_window if i in ids[::5]]) and counts["all"] == len(in_window)
    store.close()


def test_bench_db_times_every_read_with_its_cpu_on_a_small_log() -> None:
    """`inspector bench --db` end to end on 3,000 rows (SQLite): every CLI read, both exports and every review page
    timed, each with its CPU seconds (the figure that does not grow with the machine's other load); the exports
    count the rows of their windows (2 parts per second: 7 days hold them all, 24 h the last 172,800 s)."""
    from inspector.tooling import dbbench

    result = dbbench.run(3000, runs=1)
    assert result["rows"] == 3000 and result["database"] == "sqlite"
    assert set(result["cli"]) == set(dbbench.cli_reads(datetime.now(timezone.utc)))
    for label, r in [*result["cli"].items(), *result["export"].items()]:
        assert r["seconds"] > 0 and 0 < r["cpu_s"] and 0 < r["peak_mb"] < 1000, (label, r)
    assert [r["rows"] for r in result["export"].values()] == [3000, 3000]
    assert result["pages"] and all(p["seconds"] > 0 and p["cpu_s"] > 0 for p in result["pages"].values())
    assert "| CPU seconds |" in dbbench.markdown(result)


def test_postgres_counts_run_without_jit_and_leave_the_sessions_setting_alone(
        postgres_database: Callable[[], str]) -> None:
    """The counts' read transaction turns PostgreSQL's JIT compilation off for itself only (SET LOCAL): on a log of
    millions of rows its cost estimates start a compilation that takes longer than the index reads it compiles."""
    with Store(postgres_database(), pool_size=1) as store:
        with store.engine.connect() as conn:
            default = conn.exec_driver_sql("SHOW jit").scalar()
        with store._snapshot() as conn:
            assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
        with store.engine.connect() as conn:  # the same pooled connection, after the transaction
            assert conn.exec_driver_sql("SHOW jit").scalar() == default
        assert store.review_counts(Selection()) == {"all": 0, "unreviewed": 0, "defect": 0, "good": 0}
