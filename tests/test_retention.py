"""Retention (issue 15, item 2): `inspector prune` and inspector/retention.py on real files and a real SQLite log.

Rows are recorded through the Store with inspected_at set in the past (the watcher sets it to the commit time);
their files lie in the archive as the watcher leaves them. The database is read back with plain sqlite3.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command

from inspector import cli, config, imaging, retention
from inspector.store import Store, alembic_config

NOW = datetime.now(timezone.utc)


class Station:
    """A site folder with config, inbox, archive, overlays and a verdict log filled through the Store."""

    def __init__(self, root: Path, **retention_keys: object) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "inbox").mkdir(exist_ok=True)
        keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in retention_keys.items())
        self.config = root / "config.toml"
        self.config.write_text('[database]\nurl = "sqlite:///inspector.db"\n\n[station]\nname = "st-1"\n\n'
                               f"[retention]\n{keys}")
        self.cfg = config.load(self.config)
        self.archive, self.overlays, self.inbox = root / "archive", root / "overlays", root / "inbox"
        self.store = Store(self.cfg.database.url)
        self.n = 0

    def add(self, verdict: str, age_days: float, size: int = 1000, review: str | None = None,
            overlay: bool = False, station: str = "st-1", path: Path | None = None, when: datetime = NOW) -> int:
        """One committed part: its file in archive/<verdict>/<date>/ (or at `path`) and its row."""
        self.n += 1
        at = when - timedelta(days=age_days)
        data = b"\xff\xd8\xff" + self.n.to_bytes(4, "big") + os.urandom(size - 7)  # a JPEG by its first bytes
        if path is None:
            path = self.archive / verdict / at.strftime("%Y-%m-%d") / f"p{self.n:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digest = imaging.sha256_hex(data)
        over = None
        if overlay:
            self.overlays.mkdir(exist_ok=True)
            over = self.overlays / f"{digest}.png"
            over.write_bytes(b"\x89PNG\r\n\x1a\n" + b"o" * 300)
        (row_id,) = self.store.record([{
            "sha256": digest, "name": path.name, "source_path": str(self.inbox / path.name),
            "archived_path": str(path), "overlay_path": str(over) if over else None, "size": size,
            "received_at": at, "inspected_at": at, "verdict": verdict, "score": 1.0, "threshold": 2.0,
            "profile_version": "v1", "station": station, "line": "L1", "camera": "c"}])
        if review:
            self.store.add_review(row_id, review, "anna")
        return row_id

    def rows(self) -> dict[int, dict]:
        """Every row, read with plain sqlite3."""
        con = sqlite3.connect(f"file:{self.root / 'inspector.db'}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        try:
            return {r["id"]: dict(r) for r in con.execute("SELECT * FROM inspections")}
        finally:
            con.close()

    def prune(self, *extra: str, capsys: pytest.CaptureFixture | None = None) -> dict:
        """`inspector prune --json` through the CLI; its JSON."""
        assert cli.main(["prune", "--config", str(self.config), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out) if capsys else {}

    def files(self) -> set[Path]:
        """Every file under the archive and overlays folders."""
        out = set()
        for top in (self.archive, self.overlays):
            for folder, _, names in os.walk(top):
                out |= {Path(folder) / n for n in names}
        return out


@pytest.fixture
def station(tmp_path: Path) -> Station:
    s = Station(tmp_path / "site")
    yield s
    s.store.close()


def path_of(s: Station, row_id: int) -> Path:
    return Path(s.store.get(row_id)["archived_path"])


def test_prune_deletes_exactly_the_ok_files_past_their_days_keeps_defects_and_reviewed_and_records_pruned_at(
        station: Station, capsys: pytest.CaptureFixture) -> None:
    s = station
    old_ok = [s.add("ok", 40), s.add("ok", 31)]
    young_ok = [s.add("ok", 29.9), s.add("ok", 1)]
    defect = s.add("defect", 400, overlay=True)
    reviewed_ok = s.add("ok", 400, review="defect")  # a missed defect: retraining material, kept for ever
    reviewed_defect = s.add("defect", 400, review="good")
    old_rejected, young_rejected = s.add("rejected", 91), s.add("rejected", 89)
    before = s.files()

    started = datetime.now(timezone.utc)
    out = s.prune(capsys=capsys)
    ended = datetime.now(timezone.utc)

    gone = {path_of(s, i) for i in (*old_ok, old_rejected)}
    assert s.files() == before - gone
    assert out["files"] == {"ok": 2, "rejected": 1} and out["total_bytes"] == 3000 and out["marked"] == 3
    rows = s.rows()
    assert len(rows) == 9  # every row stays
    assert {i for i, r in rows.items() if r["pruned_at"] is not None} == {*old_ok, old_rejected}
    for i in old_ok:  # when the prune ran (not NOW, the module's import time: a busy suite reaches this test later)
        pruned_at = datetime.fromisoformat(rows[i]["pruned_at"]).replace(tzinfo=timezone.utc)
        assert started - timedelta(seconds=1) <= pruned_at <= ended + timedelta(seconds=1)
    for i in (*young_ok, defect, reviewed_ok, reviewed_defect, young_rejected):
        assert path_of(s, i).exists() and rows[i]["pruned_at"] is None
    assert Path(s.store.get(defect)["overlay_path"]).exists()
    again = s.prune(capsys=capsys)  # nothing more is due
    assert again["total_files"] == 0 and again["marked"] == 0


def test_dry_run_deletes_nothing_and_says_what_would_go_and_how_many_bytes(station: Station,
                                                                           capsys: pytest.CaptureFixture) -> None:
    s = station
    ids = [s.add("ok", 35, size=2000), s.add("ok", 60, size=3000), s.add("ok", 3)]
    before = s.files()
    out = s.prune("--dry-run", capsys=capsys)
    assert out["dry_run"] and out["files"] == {"ok": 2} and out["total_bytes"] == 5000 and out["marked"] == 0
    assert s.files() == before and all(r["pruned_at"] is None for r in s.rows().values())

    assert cli.main(["prune", "--config", str(s.config), "--dry-run", "--list"]) == 0
    text = capsys.readouterr().out
    assert "would delete 2 files (4.9 KB)" in text
    assert f"#{ids[0]} ok 2000 {path_of(s, ids[0])}" in text and str(path_of(s, ids[2])) not in text


def test_never_deletes_outside_the_archive_a_changed_file_another_stations_or_an_uncommitted_verdict(
        station: Station, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    s = station
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    in_inbox = s.add("ok", 100, path=s.inbox / "still_here.jpg")  # a row naming a file in the watch folder
    outside = s.add("ok", 100, path=elsewhere / "x.jpg")
    dotdot = s.add("ok", 100, path=elsewhere / "y.jpg")
    with sqlite3.connect(s.root / "inspector.db") as con:  # a recorded path that climbs out of the archive
        con.execute("UPDATE inspections SET archived_path = ? WHERE id = ?",
                    (f"{s.archive}/ok/../../../elsewhere/y.jpg", dotdot))
    (s.archive / "ok").mkdir(parents=True, exist_ok=True)
    (s.archive / "ok" / "linked").symlink_to(elsewhere, target_is_directory=True)
    via_link = s.add("ok", 100, path=elsewhere / "z.jpg")
    with sqlite3.connect(s.root / "inspector.db") as con:
        con.execute("UPDATE inspections SET archived_path = ? WHERE id = ?", (f"{s.archive}/ok/linked/z.jpg", via_link))
    changed = s.add("ok", 100)
    path_of(s, changed).write_bytes(b"another, shorter file")
    other_station = s.add("ok", 100, station="st-2")
    unrecorded = s.archive / "ok" / "no-row.jpg"
    unrecorded.write_bytes(b"a file with no row")
    # a verdict being committed right now: its row is in an open transaction, with a date long past
    pending = s.archive / "ok" / "pending.jpg"
    pending.write_bytes(b"p" * 10)
    writer = sqlite3.connect(s.root / "inspector.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO inspections (sha256, name, source_path, archived_path, size, received_at, "
                   "inspected_at, verdict, station, line, camera) VALUES (?, 'pending.jpg', 'x', ?, 10, ?, ?, 'ok', "
                   "'st-1', 'L1', 'c')", ("e" * 64, str(pending), "2000-01-01 00:00:00.000000",
                                          "2000-01-01 00:00:00.000000"))
    try:
        before = s.files() | {s.inbox / "still_here.jpg"}
        report = retention.prune(s.store, retention.Policy.from_config(s.cfg.retention),
                                 retention.Roots.from_config(s.cfg))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert report.total_files == 0 and report.marked == 0
    assert report.kept == {"outside": 4, "changed": 1}
    assert all(p.exists() for p in before) and pending.exists() and unrecorded.exists()
    assert (elsewhere / "x.jpg").exists() and (elsewhere / "y.jpg").exists() and (elsewhere / "z.jpg").exists()
    assert all(r["pruned_at"] is None for r in s.rows().values())
    assert {in_inbox, outside, other_station} <= set(s.rows())


def test_a_file_replaced_by_another_of_the_same_size_is_not_deleted_and_is_reported(
        station: Station, capsys: pytest.CaptureFixture) -> None:
    s = station
    replaced, kept_company, due = s.add("ok", 100, size=5000), s.add("ok", 100, size=5000), s.add("ok", 100, size=5000)
    impostor = path_of(s, replaced)
    other = b"\xff\xd8\xff" + os.urandom(5000 - 3)  # another part's bytes, the same size as the recorded one
    assert len(other) == impostor.stat().st_size and imaging.sha256_hex(other) != s.store.get(replaced)["sha256"]
    impostor.write_bytes(other)
    path_of(s, kept_company).write_bytes(path_of(s, due).read_bytes())  # a copy of another recorded part
    # a file rejected unread has no sha256 (its identity is the source key): checked by size only, as before
    unread = s.archive / "rejected" / "unread.jpg"
    unread.parent.mkdir(parents=True)
    unread.write_bytes(b"\x00" * 10)
    (unread_id,) = s.store.record([{
        "sha256": None, "source_key": "inode:1:2", "name": "unread.jpg", "source_path": str(s.inbox / "unread.jpg"),
        "archived_path": str(unread), "size": 10, "received_at": NOW - timedelta(days=100),
        "inspected_at": NOW - timedelta(days=100), "verdict": "rejected", "reason": "unreadable", "station": "st-1",
        "line": "L1", "camera": "c"}])

    dry = s.prune("--dry-run", capsys=capsys)
    assert dry["files"] == {"ok": 1, "rejected": 1} and dry["kept"] == {"other_content": 2}
    out = s.prune(capsys=capsys)

    assert impostor.read_bytes() == other and path_of(s, kept_company).exists()  # neither is deleted
    assert not path_of(s, due).exists() and not unread.exists()
    assert out["files"] == {"ok": 1, "rejected": 1} and out["kept"] == {"other_content": 2}
    assert out["kept_files"] == [{"id": replaced, "reason": "other_content", "path": str(impostor)},
                                 {"id": kept_company, "reason": "other_content", "path": str(path_of(s, kept_company))}]
    rows = s.rows()
    assert rows[replaced]["pruned_at"] is None and rows[kept_company]["pruned_at"] is None
    assert rows[due]["pruned_at"] is not None and rows[unread_id]["pruned_at"] is not None
    assert cli.main(["prune", "--config", str(s.config)]) == 0  # the text says so, naming the file
    text = capsys.readouterr().out
    assert "2 not the recorded part (another sha256)" in text and f"#{replaced} not the recorded part" in text
    assert str(impostor) in text


def test_a_file_swapped_while_it_is_hashed_is_not_deleted(station: Station, monkeypatch: pytest.MonkeyPatch) -> None:
    s = station
    row = s.add("ok", 100, size=3000)
    path = path_of(s, row)
    original = path.read_bytes()
    digest = retention._digest

    def swap_then_hash(fd: int) -> str:  # the recorded part's bytes are read, then another file takes its name
        result = digest(fd)
        path.unlink()
        path.write_bytes(b"\xff\xd8\xff" + os.urandom(len(original) - 3))
        return result

    monkeypatch.setattr(retention, "_digest", swap_then_hash)
    report = retention.prune(s.store, retention.Policy(), retention.Roots.from_config(s.cfg))
    assert report.kept == {"changed": 1} and report.total_files == 0
    assert path.exists() and path.read_bytes() != original and s.rows()[row]["pruned_at"] is None


def test_defect_days_take_the_overlay_along_samples_stay_and_a_missing_file_is_recorded(tmp_path: Path,
                                                                                       capsys) -> None:
    s = Station(tmp_path / "site", defect_days=10, ok_sample_every=3, reviewed_days=50)
    try:
        defect = s.add("defect", 20, overlay=True)
        young_defect = s.add("defect", 5, overlay=True)
        oks = [s.add("ok", 40) for _ in range(6)]
        reviewed = s.add("defect", 40, review="defect")  # reviewed: kept max(10, 50) days
        old_reviewed = s.add("defect", 60, review="defect")
        gone = s.add("ok", 40)
        path_of(s, gone).unlink()  # someone deleted it already
        overlay = Path(s.store.get(defect)["overlay_path"])
        out = s.prune(capsys=capsys)
        rows = s.rows()
        assert not path_of(s, defect).exists() and not overlay.exists()
        assert Path(s.store.get(young_defect)["overlay_path"]).exists() and path_of(s, young_defect).exists()
        samples = [i for i in oks if i % 3 == 0]
        assert samples and all(path_of(s, i).exists() and rows[i]["pruned_at"] is None for i in samples)
        assert all(not path_of(s, i).exists() and rows[i]["pruned_at"] for i in oks if i % 3)
        assert path_of(s, reviewed).exists() and not path_of(s, old_reviewed).exists()
        assert out["missing"] == 1 and rows[gone]["pruned_at"] is not None
        assert out["overlays"] == 1 and out["files"] == {"defect": 2, "ok": 6 - len(samples)}
    finally:
        s.store.close()


def test_the_walk_pages_by_id_and_stops_at_the_first_batch_of_young_rows(station: Station) -> None:
    s = station
    old = [s.add("ok", 40, size=10) for _ in range(30)]
    rows = [{"sha256": f"{i:064x}", "name": "n", "source_path": "x", "archived_path": f"/nowhere/{i}", "size": 1,
             "received_at": NOW, "inspected_at": NOW, "verdict": "ok", "station": "st-1", "line": "L1", "camera": "c"}
            for i in range(3000)]
    s.store.record(rows)  # 3,000 newer rows after them: never read
    batches: list[int] = []
    report = retention.prune(s.store, retention.Policy(), retention.Roots.from_config(s.cfg), batch=7,
                             progress=lambda r: batches.append(r.last_id))
    assert report.files == {"ok": 30}
    assert report.rows == len(batches) * 7 <= 30 + 2 * 7 and batches == sorted(batches)
    assert all(not path_of(s, i).exists() for i in old)


def test_rows_stamped_in_the_future_by_a_clock_set_right_later_do_not_stop_the_walk(station: Station) -> None:
    """A station clock ahead for a while, then set right: a stretch of rows stamped later than the rows after them.
    The walk must not stop at them, or nothing after them goes until they age (an adversarial test: 505 rows a year
    ahead stopped every prune, the early one too, and the disk filled), nor once they are no longer in the future
    but still young (a review: the same stall, later)."""
    s = station
    ahead = [s.add("ok", -265, size=10) for _ in range(20)]  # stamped 265 days in the future
    old = [s.add("ok", 99, size=10) for _ in range(5)]  # recorded after the clock was set right, 99 days ago
    aged = [s.add("ok", 10, size=10) for _ in range(20)]  # another stretch: 40 days ahead then, 10 days old now
    older = [s.add("ok", 49, size=10) for _ in range(5)]
    young = s.add("ok", 1, size=10)
    report = retention.prune(s.store, retention.Policy(), retention.Roots.from_config(s.cfg), batch=7)
    assert report.files == {"ok": 10}
    assert all(not path_of(s, i).exists() for i in (*old, *older))
    assert all(path_of(s, i).exists() for i in (*ahead, *aged, young))


def test_the_early_policy_prunes_ok_parts_ahead_but_keeps_reviewed_ones_on_their_own_schedule(
        station: Station) -> None:
    """Disk low: ok files go after early_keep_days instead of ok_days, but a part an operator decided on keeps its
    own schedule, max(ok_days, reviewed_days) (an adversarial test found a missed defect marked by an operator,
    the best material for retraining, pruned at 20 days where its policy kept it 30)."""
    s = Station(station.root.parent / "early", ok_days=30, reviewed_days=14)
    try:
        plain = s.add("ok", 20, size=10)
        missed = s.add("ok", 20, size=10, review="defect")
        cleared = s.add("ok", 20, size=10, review="good")
        too_young = s.add("ok", 5, size=10)
        late_reviewed = s.add("ok", 31, size=10, review="defect")
        policy = retention.Policy.from_config(s.cfg.retention)
        early = policy.early(7)
        assert (early.days("ok", False, plain), early.days("ok", True, missed)) == (7, 30)
        assert early.days("defect", False, 99) == policy.days("defect", False, 99) == 0
        report = retention.prune(s.store, early, retention.Roots.from_config(s.cfg))
        assert report.files == {"ok": 2}
        assert not path_of(s, plain).exists() and not path_of(s, late_reviewed).exists()
        assert all(path_of(s, i).exists() for i in (missed, cleared, too_young))
    finally:
        s.store.close()


def test_a_bad_name_file_is_deleted_where_its_row_records_the_name_escaped(station: Station,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """A file whose name is not valid UTF-8 is recorded with \\xNN escapes (the database holds text): the file the
    escapes stand for is checked (size, sha256) and deleted, not recorded as already gone while it stays for ever
    (an adversarial test). A file of another content at that path stays."""
    s = station
    folder = s.archive / "rejected" / "2026-01-01"
    folder.mkdir(parents=True)
    raw = os.fsencode(folder) + b"/caf\xe9_1.jpg"
    data = b"\xff\xd8\xff" + os.urandom(100)
    with open(raw, "wb") as fh:
        fh.write(data)
    other_raw = os.fsencode(folder) + b"/caf\xe9_2.jpg"
    with open(other_raw, "wb") as fh:
        fh.write(os.urandom(103))  # the same size, another content
    empty_raw = os.fsencode(folder) + b"/caf\xe9_0.jpg"
    open(empty_raw, "wb").close()  # rejected unread (empty): no sha256, checked by size only (a review)
    at = NOW - timedelta(days=100)
    ids = s.store.record([{
        "sha256": imaging.sha256_hex(data if n == 1 else b"x" * n) if n else None, "source_key": None if n else "k0",
        "name": f"caf\\xe9_{n}.jpg", "source_path": "x", "archived_path": imaging.printable(os.fsdecode(path)),
        "size": 103 if n else 0, "received_at": at, "inspected_at": at, "verdict": "rejected", "reason": "bad_name",
        "station": "st-1", "line": "L1", "camera": "c"} for n, path in ((1, raw), (2, other_raw), (0, empty_raw))])
    assert s.store.get(ids[0])["archived_path"].endswith("caf\\xe9_1.jpg")
    assert cli.main(["prune", "--config", str(s.config), "--list"]) == 0
    listing = capsys.readouterr().out
    assert not os.path.lexists(raw) and os.path.lexists(other_raw) and not os.path.lexists(empty_raw)
    rows = s.rows()
    assert rows[ids[0]]["pruned_at"] is not None and rows[ids[1]]["pruned_at"] is None
    assert "caf\\xe9_1.jpg" in listing and "already gone" not in listing  # the listing escapes the bad byte
    assert "not the recorded part" in listing and "caf\\xe9_2.jpg" in listing


def test_names_that_could_forge_lines_are_escaped_in_the_listing_and_the_summary(station: Station,
                                                                                capsys: pytest.CaptureFixture) -> None:
    """`prune --list` and the summary's "left although" lines escape control characters as `inspector list` does: a
    name with a line break cannot forge a line, nor a terminal escape reach the terminal (an adversarial test)."""
    s = station
    forged = s.add("ok", 40, size=10, path=s.archive / "ok" / "d" / "good\n#99 defect 123 forged.jpg")
    swapped = s.add("ok", 40, size=10, path=s.archive / "ok" / "d" / "red\x1b[31m.jpg")
    path_of(s, swapped).write_bytes(b"y" * 10)  # the same size, another content: left and listed
    assert cli.main(["prune", "--config", str(s.config), "--list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and not any(line.startswith("#99") for line in out.splitlines())
    assert f"#{forged} ok 10 " in out and "good\\n#99 defect 123 forged.jpg" in out
    assert "red\\x1b[31m.jpg" in out


def test_a_simulated_month_keeps_the_archive_under_its_budget_and_loses_no_row(tmp_path: Path) -> None:
    """45 days of a line, pruned once a day: 20 ok parts a day, 1 defect (with overlay), 1 ok part reviewed. The
    archive never holds more than the policy's budget: 31 days of ok parts plus every defect and reviewed part."""
    s = Station(tmp_path / "site", ok_days=30, rejected_days=0)
    start = NOW - timedelta(days=60)
    size, per_day, inserted = 2000, 20, 0
    try:
        for day in range(45):
            noon = start + timedelta(days=day, hours=12)
            for _ in range(per_day):
                s.add("ok", 0, size=size, when=noon)
            s.add("defect", 0, size=size, overlay=True, when=noon)
            s.add("ok", 0, size=size, review="good", when=noon)
            inserted += per_day + 2
            report = retention.prune(s.store, retention.Policy(ok_days=30, rejected_days=0),
                                     retention.Roots.from_config(s.cfg), now=noon + timedelta(hours=6))
            parts = [p for p in s.files() if p.suffix == ".jpg"]
            budget = (min(day + 1, 31) * per_day + 2 * (day + 1)) * size
            assert sum(p.stat().st_size for p in parts) <= budget, f"day {day}"
            assert len(s.rows()) == inserted
            if day >= 30:
                assert report.files == {"ok": per_day}, f"day {day}: one day's ok parts go each day"
        rows = s.rows().values()
        assert sum(1 for r in rows if r["pruned_at"]) == (45 - 30) * per_day
        assert all(Path(r["archived_path"]).exists() for r in rows if r["verdict"] == "defect")
    finally:
        s.store.close()


def test_migration_0008_adds_pruned_at_and_the_partial_index_and_downgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with Store(url, migrate=False) as s:
        with s.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0007")
        with s.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO inspections (sha256, name, source_path, archived_path, received_at, "
                                 "inspected_at, verdict, station, line, camera) VALUES ('a', 'n', 's', '/a/x', "
                                 "'2026-01-01', '2026-01-01', 'ok', 'st', 'l', 'c')")
    with Store(url) as s:
        assert s.revision() == "0013"
        assert s.get(1)["pruned_at"] is None
        con = sqlite3.connect(tmp_path / "m.db")
        sql = con.execute("SELECT sql FROM sqlite_master WHERE name = 'ix_inspections_unpruned'").fetchone()[0]
        plan = con.execute("EXPLAIN QUERY PLAN SELECT id FROM inspections WHERE pruned_at IS NULL AND archived_path "
                           "IS NOT NULL AND id > 0 ORDER BY id LIMIT 10").fetchall()
        con.close()
        assert "WHERE pruned_at IS NULL AND archived_path IS NOT NULL" in sql
        assert "ix_inspections_unpruned" in str(plan)
        with s.engine.execution_options(immediate=True).begin() as conn:
            command.downgrade(alembic_config(conn), "0007")
        assert s.revision() == "0007" and s.count() == 1
        with s.engine.connect() as conn:
            cols = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(inspections)")}
        assert "pruned_at" not in cols


def test_the_review_page_says_file_pruned_instead_of_a_broken_image(station: Station) -> None:
    from inspector.web import make_server, urls

    s = station
    kept = s.add("defect", 1)
    pruned = s.add("defect", 1, overlay=True)
    when = datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc)
    with sqlite3.connect(s.root / "inspector.db") as con:
        con.execute("UPDATE inspections SET pruned_at = ? WHERE id = ?", (when.strftime("%Y-%m-%d %H:%M:%S"), pruned))
    for p in (path_of(s, pruned), Path(s.store.get(pruned)["overlay_path"])):
        p.unlink()
    server = make_server(s.cfg, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = urls(server)[0].rstrip("/")

        def get(path: str, accept: str) -> tuple[int, str]:
            request = urllib.request.Request(base + path, headers={"Accept": accept})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.headers["Content-Type"]
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        day = when.astimezone().strftime("%Y-%m-%d")
        assert get(f"/image/{kept}", "image/*")[0] == 200
        code, body = get(f"/image/{pruned}", "image/svg+xml,image/*")
        assert code == 410 and "<svg" in body and f"file pruned on {day}" in body
        code, body = get(f"/overlay/{pruned}", "text/plain")
        assert code == 410 and body.startswith(f"part #{pruned}: overlay pruned on {day}")
        with urllib.request.urlopen(f"{base}/inspections/{pruned}", timeout=10) as response:
            assert "File pruned on" in response.read().decode()
    finally:
        try:
            server.trigger.pull_trigger(server.close)  # closed inside its own loop
        except OSError:  # its trigger's pipe already closed (EBADF, once in a CI run of 2026-12-07, after every
            server.close()  # assertion above had passed; not traced: waitress closes it when the pipe reports an error)
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()


def test_retrain_skips_pruned_parts_and_says_how_many(tmp_path: Path, models: Path) -> None:
    import shutil

    from inspector import retrain
    from watchkit import part_jpeg

    shutil.copytree(models, tmp_path / "models")
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(f'[models]\ndir = "{tmp_path / "models"}"\n\n[database]\nurl = "sqlite:///inspector.db"\n')
    cfg = config.load(cfg_path)
    archive = tmp_path / "archive"
    archive.mkdir()
    with Store(cfg.database.url) as store:
        ids = []
        for i in range(3):
            data = part_jpeg(70_000 + i, "spot" if i == 2 else None)
            (archive / f"fa{i}.jpg").write_bytes(data)
            (row_id,) = store.record([{
                "sha256": imaging.sha256_hex(data), "name": f"fa{i}.jpg", "source_path": "x",
                "archived_path": str(archive / f"fa{i}.jpg"), "size": len(data), "received_at": NOW,
                "inspected_at": NOW - timedelta(days=400), "verdict": "defect", "score": 5.0, "threshold": 3.0,
                "profile_version": "v1", "station": "s", "line": "l", "camera": "c"}])
            store.add_review(row_id, "good" if i < 2 else "defect", "anna")
            ids.append(row_id)
        report = retention.prune(store, retention.Policy(defect_days=100, reviewed_days=300),
                                 retention.Roots(archive, tmp_path / "overlays", tmp_path / "inbox"))
        assert report.files == {"defect": 3}  # reviewed parts past reviewed_days go too
        (archive / "fa1.jpg").write_bytes(part_jpeg(70_001))  # one restored by hand: still pruned, not used
        (archive / "fa0.jpg").write_bytes(part_jpeg(70_000))
        with sqlite3.connect(tmp_path / "inspector.db") as con:
            con.execute("UPDATE inspections SET pruned_at = NULL WHERE id = ?", (ids[0],))
        result = retrain.retrain(cfg, store, activate=False)
    assert result.pruned == 2 and result.as_dict()["pruned"] == 2
    assert any("2 reviewed part(s) skipped: their files were pruned" in w for w in result.warnings)
    assert result.sources["false_alarm"] == 1
    assert not any(s.item.endswith("fa1.jpg") for s in result.skipped)  # left out as pruned, not as "missing"
    assert "2 reviewed part(s) skipped" in retrain.format_table(result)


def test_prune_and_migration_0008_on_postgres(postgres_database, tmp_path: Path) -> None:
    """The same rules on PostgreSQL: the partial index is created with its condition, the migrated schema equals
    the model, pruned_at is recorded in one executemany per batch (skips without INSPECTOR_TEST_POSTGRES_URL)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from inspector.store import Base

    url = postgres_database()
    archive = tmp_path / "archive"
    with Store(url) as store:
        assert store.revision() == "0013"
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            where = conn.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE indexname = "
                                         "'ix_inspections_unpruned'").scalar_one()
        assert "WHERE ((pruned_at IS NULL) AND (archived_path IS NOT NULL))" in where
        ids = {}
        for name, verdict, days in (("old", "ok", 40), ("young", "ok", 2), ("defect", "defect", 400)):
            path = archive / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(name.encode() * 10)
            at = NOW - timedelta(days=days)
            (ids[name],) = store.record([{
                "sha256": imaging.sha256_hex(path.read_bytes()), "name": path.name, "source_path": "x",
                "archived_path": str(path),
                "size": path.stat().st_size, "received_at": at, "inspected_at": at, "verdict": verdict,
                "station": "st-1", "line": "l", "camera": "c"}])
        report = retention.prune(store, retention.Policy(), retention.Roots(archive, tmp_path / "o", None, "st-1"))
        assert report.files == {"ok": 1} and report.marked == 1
        assert store.get(ids["old"])["pruned_at"] is not None and not (archive / "old.jpg").exists()
        assert store.get(ids["young"])["pruned_at"] is None and (archive / "young.jpg").exists()
        assert (archive / "defect.jpg").exists()
        with store.engine.execution_options(immediate=True).begin() as conn:
            command.downgrade(alembic_config(conn), "0007")
        assert store.revision() == "0007" and store.count() == 3


def test_a_part_dropped_again_after_its_file_was_pruned_is_archived_and_recorded_again(tmp_path: Path,
                                                                                      models: Path) -> None:
    """The same content arriving after retention deleted its part's file (a camera re-sending, an operator dropping
    an old photo) gets no second verdict; its file is archived as the part's again, the row says where and is no
    longer marked pruned, and the next prune deletes it (an adversarial test: it was moved to the old path, logged as
    an interrupted run, and kept for ever while the review page said "file pruned")."""
    from watchkit import atomic_drop, make_site, part_jpeg, start, stop, wait_for

    site = make_site(tmp_path / "site", models)
    data = part_jpeg(1)
    proc = start(site)
    try:
        atomic_drop(site.inbox, "p1.jpg", data)
        wait_for(lambda: site.rows() and site.rows()[0]["archived_path"] and not list(site.inbox.iterdir()), 60,
                 "the first verdict, archived", proc, site)
        con = sqlite3.connect(site.db)
        with con:
            con.execute("UPDATE inspections SET inspected_at = ?", ((NOW - timedelta(days=400)).isoformat(" "),))
        con.close()
        assert cli.main(["prune", "--config", str(site.config)]) == 0
        (row,) = site.rows()
        assert row["pruned_at"] is not None and not os.path.lexists(row["archived_path"])
        for name in ("p1-again.jpg", "p1-again-2.jpg"):  # two copies at once: one is the part's file again, the
            (site.inbox / f".{name}").write_bytes(data)  # other its copy (a review: it kept its plain name, named
        for name in ("p1-again.jpg", "p1-again-2.jpg"):  # by no row, and stayed for ever)
            os.rename(site.inbox / f".{name}", site.inbox / name)
        wait_for(lambda: "archived again" in site.log.read_text() and not list(site.inbox.iterdir())
                 and len(site.archived_files()) == 2, 60, "both copies archived", proc, site)
        (row,) = site.rows()
        assert row["pruned_at"] is None and Path(row["archived_path"]).read_bytes() == data
        assert "interrupted run" not in site.log.read_text()
        copies = [p for p in site.archived_files() if "__copy-" in p.name]
        assert len(copies) == 1 and copies[0].parent == Path(row["archived_path"]).parent
    finally:
        assert stop(proc) == 0
    assert cli.main(["prune", "--config", str(site.config)]) == 0
    (row,) = site.rows()
    assert row["pruned_at"] is not None and not os.path.lexists(row["archived_path"])
    assert site.archived_files() == []


def test_copies_of_a_part_are_archived_beside_it_and_go_with_it(tmp_path: Path, models: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """The same content dropped again under other names (a failed lamp's identical black frames, a camera
    re-sending) gets no second verdict; each copy is archived beside its part's file as <stem>__copy-<sha>, and
    goes with that file when the policy deletes it, checked by size and sha256 (an adversarial test: copies kept
    their own names, no row named them, and they stayed for ever). A file named like a copy with another content
    stays, and is listed."""
    from watchkit import atomic_drop, make_site, part_jpeg, start, stop, wait_for

    site = make_site(tmp_path / "site", models)
    data, other = part_jpeg(1), part_jpeg(2)
    proc = start(site)
    try:
        atomic_drop(site.inbox, "frame_0.jpg", data)
        wait_for(lambda: site.rows() and site.rows()[0]["archived_path"] and not list(site.inbox.iterdir()), 60,
                 "the first verdict, archived", proc, site)
        for n in (1, 2, 3):
            atomic_drop(site.inbox, f"frame_{n}.jpg", data)
        atomic_drop(site.inbox, "another.jpg", other)
        wait_for(lambda: len(site.archived_files()) == 5 and not list(site.inbox.iterdir()), 60,
                 "the copies archived", proc, site)
    finally:
        assert stop(proc) == 0
    rows = site.rows()
    assert len(rows) == 2
    (first,) = [r for r in rows if r["name"] == "frame_0.jpg"]
    folder = Path(first["archived_path"]).parent
    tag = first["sha256"][:12]
    copies = sorted(p.name for p in folder.iterdir() if "__copy-" in p.name)
    assert copies == [f"frame_{n}__copy-{tag}.jpg" for n in (1, 2, 3)]
    (folder / f"frame_1__copy-{tag}.jpg").write_bytes(other[: len(data)].ljust(len(data), b"\0"))  # not a copy now
    con = sqlite3.connect(site.db)
    with con:
        con.execute("UPDATE inspections SET inspected_at = ? WHERE id = ?",
                    ((NOW - timedelta(days=400)).isoformat(" "), first["id"]))
    con.close()
    assert cli.main(["prune", "--config", str(site.config), "--list"]) == 0
    out = capsys.readouterr().out
    assert "copies of those parts (the same content dropped again): 2 files" in out
    assert out.count(f"#{first['id']} copy ") == 2
    left = sorted(p.name for p in site.archived_files())
    assert left == sorted([f"frame_1__copy-{tag}.jpg", Path(next(r for r in rows if r["name"] == "another.jpg")
                                                               ["archived_path"]).name])
    assert "not the recorded part" in out


def test_a_copy_of_a_part_with_a_bad_name_is_archived_as_its_copy(tmp_path: Path, models: Path) -> None:
    """A part whose name is not valid UTF-8 is recorded with \\xNN escapes; a copy of it dropped later is its copy,
    beside its file, not taken for the part itself and moved to a file named with the escapes (a review), and both
    go when the policy deletes the part."""
    from watchkit import make_site, part_jpeg, start, stop, wait_for

    site = make_site(tmp_path / "site", models)
    data = part_jpeg(1)
    proc = start(site)
    try:
        with open(os.fsencode(site.inbox) + b"/caf\xe9.jpg", "wb") as fh:
            fh.write(data)
        wait_for(lambda: site.rows() and site.rows()[0]["archived_path"] and not os.listdir(site.inbox), 60,
                 "the part archived", proc, site)
        with open(os.fsencode(site.inbox) + b"/caf\xe9-2.jpg", "wb") as fh:
            fh.write(data)
        wait_for(lambda: len(site.archived_files()) == 2 and not os.listdir(site.inbox), 60, "the copy archived",
                 proc, site)
    finally:
        assert stop(proc) == 0
    (row,) = site.rows()
    names = sorted(os.fsencode(p.name) for p in site.archived_files())
    assert names == sorted([b"caf\xe9.jpg", b"caf\xe9-2__copy-" + row["sha256"][:12].encode() + b".jpg"])
    con = sqlite3.connect(site.db)
    with con:
        con.execute("UPDATE inspections SET inspected_at = ?", ((NOW - timedelta(days=400)).isoformat(" "),))
    con.close()
    assert cli.main(["prune", "--config", str(site.config)]) == 0
    assert site.archived_files() == []
