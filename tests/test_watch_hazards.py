"""The watch service against the faults of issue 11 that lost or falsified verdicts, and its rough edges: the
database file deleted or replaced under it, writers that pause with the file open, a second watcher on the
same folder, names at the length limit, a removed inbox, a repaired corruption and a stop while degraded. Real
`inspector watch` processes, real files, real signals; the database is read with plain sqlite3."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from inspector import cli
from watchkit import Site, make_site, part_jpeg, start, stop, wait_for, wait_started


@pytest.fixture
def site(tmp_path: Path, models: Path) -> Site:
    """A fresh station folder using the shared models."""
    return make_site(tmp_path / "site", models)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def log_text(site: Site) -> str:
    return site.log.read_text(errors="replace") if site.log.exists() else ""


def inbox_parts(site: Site) -> list[str]:
    return sorted(p.name for p in site.inbox.glob("*.jpg"))


def empty_database(path: Path) -> None:
    """A database at the current schema, made by the CLI (as an operator would), at `path`."""
    cfg = path.parent / f"{path.name}.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{path}"\n')
    assert cli.main(["db", "upgrade", "--config", str(cfg)]) == 0


# ------------------------------------------------------------------ item 1: the database file deleted or replaced


def test_a_deleted_database_file_holds_the_parts_until_a_database_is_back(site: Site) -> None:
    """The operator deletes inspector.db while the watcher runs. Parts that arrive then must not be recorded
    into the deleted file (nobody can read it) and archived as if recorded: they stay in the folder, nothing
    creates a database behind the operator's back, and once a database is there again they are recorded."""
    a, b, c = part_jpeg(11_001), part_jpeg(11_002), part_jpeg(11_003)
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / "a.jpg").write_bytes(a)
        wait_for(lambda: len(site.rows()) == 1 and not inbox_parts(site), 30, "a recorded and archived", proc, site)
        site.db.unlink()
        (site.inbox / "b.jpg").write_bytes(b)
        (site.inbox / "c.jpg").write_bytes(c)
        wait_for(lambda: "was deleted or moved away" in log_text(site) or not inbox_parts(site), 30,
                 "the deletion noticed (or, wrongly, b and c archived)", proc, site)
        time.sleep(1.5)  # time for a wrong archive move
        assert inbox_parts(site) == ["b.jpg", "c.jpg"]  # held: no row anyone can read, so no move
        assert not site.db.exists()  # no empty database made behind the operator's back
        rescued = list(site.root.glob("inspector.db.rescued-*"))  # the deleted file's verdicts, saved
        assert len(rescued) == 1
        con = sqlite3.connect(rescued[0])
        assert [r[0] for r in con.execute("SELECT sha256 FROM inspections")] == [sha(a)]
        con.close()
        empty_database(site.db)  # the operator makes a new database
        wait_for(lambda: len(site.rows()) == 2 and not inbox_parts(site), 60, "b and c recorded", proc, site)
        assert proc.poll() is None
    finally:
        assert stop(proc) == 0
    rows = site.rows()
    assert sorted(r["sha256"] for r in rows) == sorted([sha(b), sha(c)])
    for r in rows:
        assert sha(Path(r["archived_path"]).read_bytes()) == r["sha256"]
    assert "database available again" in log_text(site)


def test_a_replaced_database_file_is_noticed_and_the_new_file_used(site: Site, tmp_path: Path) -> None:
    """The operator puts another database file in place of inspector.db (a restored backup). Verdicts after
    that go into the file at the path, the one everybody else reads, and the new file's own rows survive."""
    backup = tmp_path / "backup.db"
    empty_database(backup)
    con = sqlite3.connect(backup)
    con.execute("INSERT INTO inspections (sha256, name, source_path, received_at, inspected_at, verdict, station, "
                "line, camera) VALUES (hex(randomblob(32)), 'old.jpg', '/old.jpg', '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00', 'ok', 's', 'l', 'c')")
    con.commit()
    con.close()
    a, b = part_jpeg(12_001), part_jpeg(12_002)
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / "a.jpg").write_bytes(a)
        wait_for(lambda: len(site.rows()) == 1 and not inbox_parts(site), 30, "a recorded", proc, site)
        os.replace(backup, site.db)
        (site.inbox / "b.jpg").write_bytes(b)
        # (reading the new file before the watcher let go of the old one could apply the old file's WAL to it)
        wait_for(lambda: "is there again: a different file" in log_text(site) or not inbox_parts(site), 30,
                 "the new file opened (or, wrongly, b archived)", proc, site)
        wait_for(lambda: any(r["name"] == "b.jpg" for r in site.rows()) and not inbox_parts(site), 30,
                 "b recorded in the new file", proc, site)
    finally:
        assert stop(proc) == 0
    rows = site.rows()
    assert [r["name"] for r in rows] == ["old.jpg", "b.jpg"]  # the backup's row kept, b added, a is in the old file
    assert rows[1]["sha256"] == sha(b) and Path(rows[1]["archived_path"]).read_bytes() == b
    con = sqlite3.connect(site.db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    assert "was replaced by another file" in log_text(site)


# ------------------------------------------------------------------ item 2: writers that pause with the file open

WRITER = r"""
import sys, time
path, how, source = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(source, "rb").read()
half = len(data) // 2
if how == "late":  # opens (creates) the file and writes it 3 s later
    with open(path, "wb") as fh:
        time.sleep(3.0)
        fh.write(data)
elif how == "pause":  # a 2 s pause in the middle, the file held open
    with open(path, "wb") as fh:
        fh.write(data[:half])
        fh.flush()
        time.sleep(2.0)
        fh.write(data[half:])
elif how == "reopen":  # writes the first half and closes, then opens again to append the rest
    with open(path, "wb") as fh:
        fh.write(data[:half])
    time.sleep(0.4)
    with open(path, "ab") as fh:
        fh.write(data[half:])
"""


@pytest.mark.parametrize("how", ["late", "pause", "reopen"])
def test_a_writer_that_pauses_gets_one_verdict_of_the_whole_file(tmp_path: Path, models: Path, how: str) -> None:
    """Each writer leaves the file empty or half-written for longer than settle_s. The file must not be
    rejected (empty, truncated) and moved out from under its writer: one verdict, of the complete bytes."""
    site = make_site(tmp_path / "site", models, settle_s=1.0)
    data = part_jpeg(15_001)
    source = tmp_path / "part.bin"
    source.write_bytes(data)
    proc = start(site)
    try:
        wait_started(site, proc)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(site.inbox / "w.jpg"), how, str(source)])
        assert writer.wait(timeout=60) == 0
        wait_for(lambda: site.rows() and not inbox_parts(site), 60, "a verdict and the file archived", proc, site)
        time.sleep(1.5)  # time for a wrong second verdict
    finally:
        assert stop(proc) == 0
    rows = site.rows()
    assert [(r["verdict"], r["reason"], r["sha256"]) for r in rows] == [("ok", None, sha(data))]
    assert Path(rows[0]["archived_path"]).read_bytes() == data
    assert len(site.archived_files()) == 1


# ------------------------------------------------------------------ item 3: two watchers on one folder


def test_a_second_watcher_on_the_same_folder_is_refused_unless_both_share_it(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models)
    other = make_site(tmp_path / "other", models, dir=str(site.inbox))  # its own config and database
    first = start(site)
    try:
        wait_started(site, first)
        done = subprocess.run([sys.executable, "-m", "inspector", "watch", "--config", str(other.config)],
                              cwd=other.root, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done.stderr  # a configuration error
        [line] = done.stderr.strip().splitlines()
        assert str(site.inbox) in line and f"pid {first.pid}" in line and "shared = true" in line
    finally:
        assert stop(first) == 0
    # with shared = true on both, they run side by side
    site.write_config(shared=True)
    other.write_config(shared=True, dir=str(site.inbox))
    procs = [start(site), start(other)]
    try:
        wait_started(site, procs[0], count=2)
        wait_started(other, procs[1])
        assert all(p.poll() is None for p in procs)
    finally:
        assert [stop(p) for p in procs] == [0, 0]


def test_an_archive_path_another_station_filled_in_is_not_cleared(tmp_path: Path, models: Path) -> None:
    """The station records part x with its planned archive path, but before it can move the file someone else
    (another station) has moved it to exactly that path. The row must keep the path, not be cleared to NULL
    while the file is in the archive."""
    site = make_site(tmp_path / "site", models)
    site.config.write_text(site.config.read_text().replace('url = "sqlite:///inspector.db"',
                                                           'url = "sqlite:///inspector.db"\nbusy_timeout_ms = 200'))
    data = part_jpeg(13_001)  # judged ok by the test models
    proc = start(site)
    try:
        wait_started(site, proc)
        blocker = sqlite3.connect(site.db, isolation_level=None, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")  # the commit waits: the archive path is planned, the move not done
        try:
            (site.inbox / "x.jpg").write_bytes(data)
            wait_for(lambda: "database unavailable" in log_text(site), 30, "the commit held", proc, site)
            target = site.archive / "ok" / datetime.now().astimezone().strftime("%Y-%m-%d") / "x.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(site.inbox / "x.jpg", target)  # the other station's move
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_for(lambda: site.rows(), 30, "the verdict", proc, site)
        time.sleep(1.0)  # time for a wrong correction of the row
    finally:
        assert stop(proc) == 0
    [row] = site.rows()
    assert row["verdict"] == "ok" and row["archived_path"] == str(target)
    assert target.read_bytes() == data


# ------------------------------------------------------------------ item 11: names at the length limit


def test_two_parts_with_a_name_at_the_length_limit_are_both_archived(site: Site) -> None:
    """Two different parts named with 246 bytes (multi-byte characters) on one day: the second needs a content
    tag, which must not push its name past 255 bytes or split a character."""
    name = "ä" * 121 + ".jpg"
    assert len(name.encode()) == 246
    first, second = part_jpeg(14_001), part_jpeg(14_002)  # both judged ok by the test models
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / name).write_bytes(first)
        wait_for(lambda: len(site.rows()) == 1 and not inbox_parts(site), 30, "the first archived", proc, site)
        (site.inbox / name).write_bytes(second)
        wait_for(lambda: len(site.rows()) == 2 and not inbox_parts(site), 30, "the second archived", proc, site)
    finally:
        assert stop(proc) == 0
    rows = site.rows()
    assert [r["sha256"] for r in rows] == [sha(first), sha(second)]
    for r in rows:
        assert Path(r["archived_path"]).read_bytes() == (first if r["sha256"] == sha(first) else second)
    tagged = os.fsencode(Path(rows[1]["archived_path"]).name)
    assert len(tagged) <= 255 and tagged.decode("utf-8").endswith(f"__{sha(second)[:12]}.jpg")
    assert "File name too long" not in log_text(site)


def test_the_days_archive_folder_taken_away_is_made_again_at_once(site: Site, tmp_path: Path) -> None:
    """Found by an adversarial test: an operator moved today's archive folder away (onto a USB stick, say); the next
    part of that verdict failed to archive ("No such file or directory" naming the part itself) and waited in the
    inbox for the next rescan, because the folder was remembered as made."""
    site.write_config(rescan_s=600.0)  # no rescan would move it within the test's wait
    first, second = part_jpeg(14_011), part_jpeg(14_012)  # both judged ok by the test models
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / "first.jpg").write_bytes(first)
        wait_for(lambda: len(site.rows()) == 1 and not inbox_parts(site), 30, "the first archived", proc, site)
        day = Path(site.rows()[0]["archived_path"]).parent
        day.rename(tmp_path / "usb-stick")
        (site.inbox / "second.jpg").write_bytes(second)
        wait_for(lambda: len(site.rows()) == 2 and not inbox_parts(site), 30, "the second archived at once", proc,
                 site)
    finally:
        assert stop(proc) == 0
    assert (tmp_path / "usb-stick" / "first.jpg").read_bytes() == first
    assert Path(site.rows()[1]["archived_path"]) == day / "second.jpg" and (day / "second.jpg").read_bytes() == second
    assert "cannot archive" not in log_text(site)


# ------------------------------------------------------------------ item 12: the inbox removed


def test_a_removed_inbox_is_reported_once_and_watched_again_when_back(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models, stats_every_s=0)
    proc = start(site)
    try:
        wait_started(site, proc)
        before = len(log_text(site).splitlines())
        site.inbox.rmdir()
        wait_for(lambda: len(log_text(site).splitlines()) > before, 30, "the watcher to notice", proc, site)
        time.sleep(5.0)
        lines = log_text(site).splitlines()[before:]
        assert len(lines) <= 3, "\n".join(lines[:10])
        assert proc.poll() is None
        site.inbox.mkdir()
        (site.inbox / "back.jpg").write_bytes(part_jpeg(16_001))
        wait_for(lambda: site.rows() and not inbox_parts(site), 60, "a part judged in the new inbox", proc, site)
        wait_for(lambda: "is there again" in log_text(site), 30, "the observer back on the new inbox", proc, site)
    finally:
        assert stop(proc) == 0


# ------------------------------------------------------------------ item 17: an undone corruption, SIGTERM degraded


def corrupt(db: Path) -> bytes:
    """Checkpoint the WAL into the file, then overwrite every page after the first in place with noise;
    returns the original bytes (to undo it)."""
    con = sqlite3.connect(db, timeout=30)
    assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    con.close()
    original = db.read_bytes()
    with open(db, "r+b") as fh:
        fh.seek(4096)
        fh.write(os.urandom(len(original) - 4096))
    return original


def test_an_undone_corruption_is_recovered_without_a_restart(site: Site) -> None:
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / "a.jpg").write_bytes(part_jpeg(16_002))
        wait_for(lambda: len(site.rows()) == 1 and not inbox_parts(site), 30, "a recorded", proc, site)
        original = corrupt(site.db)
        (site.inbox / "b.jpg").write_bytes(part_jpeg(17_001))
        wait_for(lambda: "database unavailable" in log_text(site), 30, "the corruption noticed", proc, site)
        assert inbox_parts(site) == ["b.jpg"]
        with open(site.db, "r+b") as fh:  # undone, in place
            fh.write(original)
        wait_for(lambda: len(site.rows()) == 2 and not inbox_parts(site), 30, "b recorded after the repair",
                 proc, site)
    finally:
        assert stop(proc) == 0


def test_sigterm_while_degraded_stops_promptly_and_keeps_the_part(site: Site) -> None:
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / "a.jpg").write_bytes(part_jpeg(13_002))
        wait_for(lambda: len(site.rows()) == 1 and not inbox_parts(site), 30, "a recorded", proc, site)
        corrupt(site.db)
        (site.inbox / "b.jpg").write_bytes(part_jpeg(17_001))
        # degraded for a while: the backoff between attempts has grown to seconds
        wait_for(lambda: "retrying in 4.0 s" in log_text(site), 60, "the backoff to grow", proc, site)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 1  # liveness bound; 1: stopped with a verdict not recorded
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert inbox_parts(site) == ["b.jpg"]  # the part waits for the next start
    assert "stopped with verdicts not recorded" in log_text(site)
