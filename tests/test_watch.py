"""The watch service as a real process: half-written files, renames, backlog, duplicates, bad input,
signals, live profile switches and a concurrent reader. Every test asserts on the database, read with
plain sqlite3."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector import cli
from inspector.store import Store
from watchkit import (
    Site, atomic_drop, drop_dac_override, make_site, part_jpeg, run_once, start, stop, wait_for, wait_started,
)

OBSERVERS = ["native", "polling"]


@pytest.fixture
def site(tmp_path: Path, models: Path) -> Site:
    """A fresh station folder using the shared models."""
    return make_site(tmp_path / "site", models)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def by_sha(site: Site) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in site.rows():
        out.setdefault(r["sha256"], []).append(r)
    return out


def big_jpeg(target_bytes: int = 5 * 1024 * 1024) -> bytes:
    """A 5 MP JPEG of a part with sensor noise, at least target_bytes long."""
    rng = np.random.default_rng(5)
    part = cv2.resize(cv2.imdecode(np.frombuffer(part_jpeg(77), np.uint8), cv2.IMREAD_COLOR), (2592, 1944))
    noisy = np.clip(part.astype(np.int16) + rng.normal(0, 28, part.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok and buf.size >= target_bytes, buf.size
    return buf.tobytes()


@pytest.mark.parametrize("observer", OBSERVERS)
def test_slow_write_gives_one_verdict_of_the_complete_file(site: Site, observer: str) -> None:
    """A 5 MB JPEG written in 64 KB chunks with 20 ms pauses: one verdict, sha256 of the whole file."""
    data = big_jpeg()
    proc = start(site, "--observer", observer)
    try:
        wait_started(site, proc)
        with open(site.inbox / "slow.jpg", "wb") as fh:
            for i in range(0, len(data), 64 * 1024):
                fh.write(data[i:i + 64 * 1024])
                fh.flush()
                time.sleep(0.02)
        rows = wait_for(site.rows, 60, "a verdict", proc, site)
        time.sleep(1.0)  # time for any wrong second verdict to land
        rows = site.rows()
        assert len(rows) == 1, rows
        assert rows[0]["sha256"] == sha(data)
        assert rows[0]["verdict"] in ("ok", "defect") and rows[0]["size"] == len(data)
        assert (rows[0]["width"], rows[0]["height"]) == (2592, 1944)
        assert Path(rows[0]["archived_path"]).read_bytes() == data
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("observer", OBSERVERS)
def test_rename_into_folder_gives_one_verdict(site: Site, observer: str) -> None:
    proc = start(site, "--observer", observer)
    try:
        wait_started(site, proc)
        data = part_jpeg(1)
        atomic_drop(site.inbox, "renamed.jpg", data)
        wait_for(site.rows, 30, "a verdict", proc, site)
        time.sleep(0.8)
        rows = site.rows()
        assert [r["sha256"] for r in rows] == [sha(data)]
        assert rows[0]["name"] == "renamed.jpg"
        assert not (site.inbox / "renamed.jpg").exists()
        assert Path(rows[0]["archived_path"]).parent.parent.name == rows[0]["verdict"]
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("observer", OBSERVERS)
def test_backlog_dropped_while_stopped_is_judged_at_start(site: Site, observer: str) -> None:
    payloads = {f"p{i:03d}.jpg": part_jpeg(100 + i) for i in range(100)}
    for name, data in payloads.items():
        (site.inbox / name).write_bytes(data)
    proc = start(site, "--observer", observer)
    try:
        wait_for(lambda: len(site.rows()) >= 100, 120, "100 verdicts", proc, site)
    finally:
        assert stop(proc) == 0
    rows = site.rows()
    assert len(rows) == 100
    assert {r["sha256"] for r in rows} == {sha(d) for d in payloads.values()}
    assert {r["station"] for r in rows} == {"test-station"} and {r["camera"] for r in rows} == {"cam-A"}
    assert not any(site.inbox.glob("*.jpg"))
    assert len(site.archived_files()) == 100
    assert len({r["inspected_at"] for r in rows}) < 100  # written in batches: a batch shares its commit time


def test_once_judges_the_backlog_and_exits(site: Site) -> None:
    for i in range(5):
        (site.inbox / f"b{i}.jpg").write_bytes(part_jpeg(300 + i))
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    assert len(site.rows()) == 5
    assert "#1 " in done.stderr and "stopped: 5 verdicts" in done.stderr


def test_same_content_five_times_gives_one_verdict(site: Site) -> None:
    data = part_jpeg(2)
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / "first.jpg").write_bytes(data)
        wait_for(site.rows, 30, "the first verdict", proc, site)
        (site.inbox / "second.jpg").write_bytes(data)  # same bytes, other name
        atomic_drop(site.inbox, "third.jpg", data)  # renamed into place
        shutil.copy(site.archived_files()[0], site.inbox / "first.jpg")  # the same file dropped again
        (site.inbox / "fifth.jpg").write_bytes(data)  # re-saved: written, then written again with the same bytes
        (site.inbox / "fifth.jpg").write_bytes(data)
        wait_for(lambda: len(site.archived_files()) == 5 and not any(site.inbox.glob("*.jpg")), 30,
                 "all five copies archived", proc, site)
    finally:
        assert stop(proc) == 0
    rows = site.rows()
    assert len(rows) == 1 and rows[0]["sha256"] == sha(data)
    assert all(p.read_bytes() == data for p in site.archived_files())
    assert site.log.read_text().count("duplicate") >= 4


def test_bad_input_is_rejected_with_its_reason_and_the_service_goes_on(tmp_path: Path, models: Path) -> None:
    """0-byte, truncated, not an image, over the pixel cap, symlinks, FIFO, directory, no read permission,
    a non-UTF-8 name: each is one `rejected` row with its reason, moved to rejected/, and the service keeps going."""
    site = make_site(tmp_path / "site", models)
    with open(site.config, "a") as fh:
        fh.write("\n[input]\nmax_pixels = 100000\n")
    good = part_jpeg(3)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(part_jpeg(4))
    big = cv2.imencode(".jpg", cv2.resize(cv2.imdecode(np.frombuffer(part_jpeg(5), np.uint8), 1), (400, 300)))[1]
    inbox = site.inbox
    (inbox / "empty.jpg").write_bytes(b"")
    (inbox / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (inbox / "notes.jpg").write_bytes(b"this is not an image\n" * 10)
    (inbox / "huge.jpg").write_bytes(big.tobytes())
    (inbox / "inside-target.dat").write_bytes(part_jpeg(6))  # not a pattern match itself
    (inbox / "link-inside.jpg").symlink_to(inbox / "inside-target.dat")
    (inbox / "link-outside.jpg").symlink_to(outside)
    (inbox / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (inbox / "link-dir.jpg").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(inbox / "fifo.jpg")
    (inbox / "folder.jpg").mkdir()
    (inbox / "secret.jpg").write_bytes(part_jpeg(7))
    (inbox / "secret.jpg").chmod(0)
    with open(os.fsencode(inbox) + b"/caf\xe9-latin1.jpg", "wb") as fh:
        fh.write(part_jpeg(8))
    expected = {"empty.jpg": "empty", "truncated.jpg": "truncated", "notes.jpg": "not_an_image",
                "huge.jpg": "too_large", "link-inside.jpg": "symlink", "link-outside.jpg": "symlink",
                "dangling.jpg": "symlink", "link-dir.jpg": "symlink", "fifo.jpg": "not_a_file", "folder.jpg": "not_a_file",
                "secret.jpg": "unreadable", "caf\\xe9-latin1.jpg": "bad_name"}
    log = open(site.log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "inspector", "watch", "--config", str(site.config)],
                            cwd=site.root, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=drop_dac_override if os.geteuid() == 0 else None)
    try:
        wait_for(lambda: len(site.rows()) >= len(expected), 60, "every bad input recorded", proc, site)
        assert proc.poll() is None, "the service stopped on bad input"
        (inbox / "after.jpg").write_bytes(good)
        wait_for(lambda: any(r["name"] == "after.jpg" for r in site.rows()), 30, "a good part after", proc, site)
    finally:
        assert stop(proc) == 0
    rows = {r["name"]: r for r in site.rows()}
    assert rows["after.jpg"]["verdict"] in ("ok", "defect")
    for name, reason in expected.items():
        assert rows[name]["verdict"] == "rejected", name
        assert rows[name]["reason"] == reason, (name, rows[name]["reason"], rows[name]["detail"])
        assert rows[name]["archived_path"] and "/rejected/" in rows[name]["archived_path"], name
    assert rows["caf\\xe9-latin1.jpg"]["sha256"] == sha(part_jpeg(8))
    names = {p.name for p in (site.archive / "rejected").rglob("*")}
    assert {"empty.jpg", "fifo.jpg", "folder.jpg", "link-outside.jpg", "secret.jpg"} <= names
    assert any(os.fsencode(n) == b"caf\xe9-latin1.jpg" for n in names)
    assert outside.read_bytes() == part_jpeg(4)  # a symlink is moved, never its target
    assert (inbox / "inside-target.dat").exists()
    assert not [p for p in inbox.iterdir() if p.name != "inside-target.dat"]
    assert len(rows) == len(expected) + 1


def test_live_profile_switch_without_restart(tmp_path: Path, models: Path) -> None:
    own = tmp_path / "models"
    shutil.copytree(models, own)
    site = make_site(tmp_path / "site", own)
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / "a.jpg").write_bytes(part_jpeg(20))
        wait_for(lambda: len(site.rows()) == 1, 30, "first verdict", proc, site)
        assert cli.main(["profiles", "activate", "v2", "--config", str(site.config)]) == 0
        (site.inbox / "b.jpg").write_bytes(part_jpeg(21))
        wait_for(lambda: len(site.rows()) == 2, 30, "second verdict", proc, site)
        assert cli.main(["profiles", "activate", "v1", "--config", str(site.config)]) == 0
        (site.inbox / "c.jpg").write_bytes(part_jpeg(22))
        wait_for(lambda: len(site.rows()) == 3, 30, "third verdict", proc, site)
        good = tmp_path / "more-good"
        good.mkdir()
        for i in range(8):
            (good / f"m{i}.jpg").write_bytes(part_jpeg(60_000 + i))
        assert cli.main(["train", str(good), "--config", str(site.config)]) == 0  # trains and activates v3
        (site.inbox / "d.jpg").write_bytes(part_jpeg(23))
        wait_for(lambda: len(site.rows()) == 4, 30, "fourth verdict", proc, site)
    finally:
        assert stop(proc) == 0
    assert [r["profile_version"] for r in site.rows()] == ["v1", "v2", "v1", "v3"]
    assert "profile switched: v1 -> v2" in site.log.read_text()


def test_sigterm_and_sigint_finish_in_flight_work_and_exit_zero(site: Site) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        base = len([r for r in site.rows() if r["name"].startswith(f"s{signum}-")])
        proc = start(site)
        wait_started(site, proc, count=1 + (signum == signal.SIGINT))
        for i in range(30):
            (site.inbox / f"s{signum}-{i}.jpg").write_bytes(part_jpeg(400 + 100 * signum + i))
        wait_for(lambda: len([r for r in site.rows() if r["name"].startswith(f"s{signum}-")]) > base, 30, "verdicts to start landing", proc, site)
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 0
        rows = [r for r in site.rows() if r["name"].startswith(f"s{signum}-")]
        # everything judged was committed and archived; what was not taken yet is still in the inbox
        left = {p.name for p in site.inbox.glob(f"s{signum}-*.jpg")}
        assert len(rows) + len(left) == 30
        assert not {r["name"] for r in rows} & left
        assert all(Path(r["archived_path"]).exists() for r in rows)
    assert "finishing parts in flight" in site.log.read_text()


def test_a_reader_process_does_not_lock_out_the_watcher(site: Site) -> None:
    """A second process reads the database over and over from before the first part arrives until the watcher has
    judged all 150 (and logged its throughput): the watcher is never locked out, the reader never fails."""
    reader_code = (
        "import os, sqlite3, sys, time\n"
        "db, done = sys.argv[1], sys.argv[2]; end = time.monotonic() + float(sys.argv[3]); n = 0\n"
        "while time.monotonic() < end and not os.path.exists(done):\n"
        "    try:\n"
        "        con = sqlite3.connect(db, timeout=0.05)\n"
        "        con.execute('SELECT count(*) FROM inspections').fetchone()\n"
        "        con.execute('SELECT * FROM inspections ORDER BY id DESC LIMIT 50').fetchall()\n"
        "        con.close(); n += 1\n"
        "    except sqlite3.OperationalError as e:\n"
        "        if 'no such table' not in str(e): print('reader error', e, flush=True)\n"
        "print('reads', n, flush=True)\n"
    )
    proc = start(site)
    try:
        wait_started(site, proc)
        done = site.root / "reader-done"
        reader = subprocess.Popen([sys.executable, "-c", reader_code, str(site.db), str(done), "120"],
                                  stdout=subprocess.PIPE, text=True)
        for i in range(150):
            (site.inbox / f"r{i:03d}.jpg").write_bytes(part_jpeg(1000 + i))
        wait_for(lambda: len(site.rows()) == 150, 90, "150 verdicts", proc, site)
        wait_for(lambda: "throughput " in site.log.read_text(), 30, "a throughput line", proc, site)
        done.touch()  # the reader stops once the watcher's work is done (it read all the while)
        out, _ = reader.communicate(timeout=60)
    finally:
        assert stop(proc) == 0
    log = site.log.read_text()
    assert "locked" not in log and "degraded" not in log and "unavailable" not in log
    assert "throughput " in log and "parts/s" in log
    assert int(out.split()[-1]) > 50, out  # the reader really kept reading
    assert "reader error" not in out or "locked" not in out


def test_crash_states_are_finished_without_a_second_verdict(site: Site) -> None:
    """The two states a crash can leave: judged and committed but not moved (row + file), and judged but not
    committed (file only). A restart moves the first without a new row and judges the second once."""
    data_committed, data_pending = part_jpeg(30), part_jpeg(31)
    (site.inbox / "committed.jpg").write_bytes(data_committed)
    (site.inbox / "pending.jpg").write_bytes(data_pending)
    # make the first state with the real service: judge only committed.jpg, then put it back as if never moved
    (site.inbox / "pending.jpg").rename(site.root / "pending.hold")
    assert run_once(site).returncode == 0
    row = site.rows()[0]
    os.replace(row["archived_path"], site.inbox / "committed.jpg")
    (site.root / "pending.hold").rename(site.inbox / "pending.jpg")
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    rows = site.rows()
    assert sorted(r["sha256"] for r in rows) == sorted([sha(data_committed), sha(data_pending)])
    assert Path(rows[0]["archived_path"]).read_bytes() == data_committed
    assert "archived after an interrupted run" in done.stderr
    assert not any(site.inbox.iterdir())


@pytest.mark.parametrize("judge_in", ["processes", "threads"])
def test_defects_get_an_overlay_and_leave_in_place_mode_keeps_files(tmp_path: Path, models: Path,
                                                                     judge_in: str) -> None:
    site = make_site(tmp_path / "site", models, archive=False, judge_in=judge_in)
    (site.inbox / "bad.jpg").write_bytes(part_jpeg(40, defect="spot"))
    (site.inbox / "good.jpg").write_bytes(part_jpeg(41))
    for n in (2, 0):  # the second run must not judge the same files again
        done = run_once(site)
        assert done.returncode == 0, done.stderr
        assert f"stopped: {n} verdicts" in done.stderr
        assert f"2 workers judging in {judge_in}" in done.stderr
    rows = {r["name"]: r for r in site.rows()}
    assert len(rows) == 2 and rows["bad.jpg"]["verdict"] == "defect"
    overlay = Path(rows["bad.jpg"]["overlay_path"])
    assert overlay.exists() and cv2.imread(str(overlay)) is not None
    assert rows["good.jpg"]["overlay_path"] is None or rows["good.jpg"]["verdict"] == "defect"
    assert (site.inbox / "bad.jpg").exists() and (site.inbox / "good.jpg").exists()
    assert rows["bad.jpg"]["archived_path"] is None


def test_start_errors_are_one_line(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", tmp_path / "no-models")
    done = subprocess.run([sys.executable, "-m", "inspector", "watch", "--config", str(site.config)],
                          cwd=site.root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4 and done.stderr.startswith("inspector: error: no active profile")
    site = make_site(tmp_path / "site2", models)
    done = subprocess.run([sys.executable, "-m", "inspector", "watch", str(tmp_path / "absent"), "--config",
                           str(site.config)], cwd=site.root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "watch folder not found" in done.stderr


def test_a_second_signal_stops_at_once_and_loses_nothing(site: Site) -> None:
    """With the database held by another writer, a graceful stop waits for the commit; a second signal ends
    the process at once, and every part is either recorded or still in the folder."""
    import sqlite3

    proc = start(site)
    wait_started(site, proc)
    blocker = sqlite3.connect(site.db, isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database: nothing can be committed
    names = [f"q{i:03d}.jpg" for i in range(20)]
    try:
        for i, name in enumerate(names):
            (site.inbox / name).write_bytes(part_jpeg(700 + i))
        time.sleep(2.0)  # parts are judged and wait for the commit
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None, "the graceful stop should still be waiting to commit"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert site.rows() == []  # nothing could be committed ...
    assert sorted(p.name for p in site.inbox.glob("*.jpg")) == names  # ... so every part is still waiting
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    assert sorted(r["name"] for r in site.rows()) == names and not any(site.inbox.glob("*.jpg"))
    assert "second signal SIGTERM: stopping now" in site.log.read_text()


def test_a_database_outage_holds_verdicts_and_loses_nothing(tmp_path: Path, models: Path) -> None:
    """Another writer holds the database longer than the busy timeout: the watcher reports it is degraded,
    retries with backoff, and records every part once the database is back."""
    import sqlite3

    site = make_site(tmp_path / "site", models)
    text = site.config.read_text().replace('url = "sqlite:///inspector.db"',
                                           'url = "sqlite:///inspector.db"\nbusy_timeout_ms = 200')
    site.config.write_text(text)
    proc = start(site)
    try:
        wait_started(site, proc)
        blocker = sqlite3.connect(site.db, isolation_level=None, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            for i in range(10):
                (site.inbox / f"o{i}.jpg").write_bytes(part_jpeg(800 + i))
            wait_for(lambda: "database unavailable" in site.log.read_text(), 30, "the degraded warning", proc, site)
            time.sleep(2.0)
            assert proc.poll() is None and site.rows() == []
            assert len(list(site.inbox.glob("*.jpg"))) == 10  # held: nothing moved before it is recorded
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_for(lambda: len(site.rows()) == 10, 60, "every verdict after the outage", proc, site)
    finally:
        assert stop(proc) == 0
    assert not any(site.inbox.glob("*.jpg")) and len(site.archived_files()) == 10


def test_a_failed_archive_move_is_retried_and_the_row_follows_the_file(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models, rescan_s=0.5)
    site.archive.mkdir()
    for verdict in ("ok", "defect"):
        (site.archive / verdict).write_bytes(b"in the way")  # a file where the archive folder must go
    proc = start(site)
    try:
        wait_started(site, proc)
        (site.inbox / "m.jpg").write_bytes(part_jpeg(900))
        wait_for(lambda: "cannot archive" in site.log.read_text(), 30, "the failed move", proc, site)
        # the row is corrected right after the failure is logged: it must say the file is not archived
        wait_for(lambda: [r["archived_path"] for r in site.rows()] == [None], 10, "archived_path cleared", proc, site)
        assert (site.inbox / "m.jpg").exists()
        for verdict in ("ok", "defect"):
            (site.archive / verdict).unlink()
        wait_for(lambda: not (site.inbox / "m.jpg").exists(), 30, "the retried move", proc, site)
    finally:
        assert stop(proc) == 0
    [row] = site.rows()
    assert Path(row["archived_path"]).read_bytes() == part_jpeg(900)


def test_recursive_mode_judges_parts_in_sub_folders(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models, recursive=True)
    (site.inbox / "2026.11.30" / "cam2").mkdir(parents=True)  # folders are descended, even named like files
    (site.inbox / "top.jpg").write_bytes(part_jpeg(950))
    (site.inbox / "2026.11.30" / "cam2" / "deep.jpg").write_bytes(part_jpeg(951))
    with open(site.config, "a") as fh:
        fh.write('patterns = ["*.*"]\n')
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    assert sorted(r["name"] for r in site.rows()) == ["deep.jpg", "top.jpg"]
    assert all(r["verdict"] != "rejected" for r in site.rows())


def test_an_inbox_inside_the_archive_is_refused(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models, archive_dir=".")
    done = run_once(site)
    assert done.returncode == 1 and "is inside [watch] archive_dir" in done.stderr


def test_shared_folder_takes_over_and_drops_the_claims_of_a_dead_station(site: Site, tmp_path: Path) -> None:
    """A station died holding two claims: one on a part still in the folder (taken over and judged), one on a
    part it had already archived (dropped, so the claims table does not fill up with stale rows)."""
    site.write_config(shared=True, claim_lease_s=5.0)
    data = part_jpeg(4321)
    (site.inbox / "here.jpg").write_bytes(data)
    with Store(f"sqlite:///{site.db}") as store:
        for name in ("here.jpg", "gone.jpg"):
            key = hashlib.sha256(name.encode()).hexdigest()  # the claim key: sha256 of the path in the folder
            assert store.claim(key, "dead-station", name, lease_s=-1).got
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    assert "took over the expired claim of dead-station on here.jpg" in done.stderr + done.stdout
    assert "dropped the expired claim of dead-station on gone.jpg" in done.stderr + done.stdout
    assert [r["sha256"] for r in site.rows()] == [sha(data)]
    con = sqlite3.connect(site.db)
    try:
        assert con.execute("SELECT count(*) FROM claims").fetchone() == (0,)
    finally:
        con.close()


def _start_with_hangup(site: Site, disposition: signal.Handlers) -> subprocess.Popen:
    """`inspector watch` as watchkit.start runs it, with SIGHUP set to `disposition` in the child (SIG_IGN is what
    nohup leaves; the test runner's own may be either)."""
    log = open(site.log, "ab")
    return subprocess.Popen([sys.executable, "-m", "inspector", "watch", "--config", str(site.config)],
                            cwd=site.root, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, disposition))


def test_a_hangup_stops_the_watcher_cleanly_unless_started_under_nohup(site: Site) -> None:
    """Found by an adversarial test: SIGHUP (the terminal of a watcher started by hand closed) killed it without a
    line in its log, and its judging processes with it."""
    proc = _start_with_hangup(site, signal.SIG_DFL)
    wait_started(site, proc)
    for i in range(20):
        (site.inbox / f"h-{i}.jpg").write_bytes(part_jpeg(9_000 + i))
    wait_for(lambda: site.rows(), 30, "verdicts to start landing", proc, site)
    os.killpg(proc.pid, signal.SIGHUP)  # as a closing terminal does: the watcher and its judging processes,
    os.killpg(proc.pid, signal.SIGHUP)  # twice (the shell, then the kernel): not a second, insisting signal
    assert proc.wait(timeout=60) == 0
    rows, left = site.rows(), {p.name for p in site.inbox.glob("h-*.jpg")}
    assert len(rows) + len(left) == 20 and not {r["name"] for r in rows} & left
    assert {r["verdict"] for r in rows} <= {"ok", "defect"}, [r["reason"] for r in rows]  # no judge died
    assert "signal SIGHUP: finishing parts in flight" in site.log.read_text()
    assert "killed by SIGHUP" not in site.log.read_text()  # the judging processes ignore it

    proc = _start_with_hangup(site, signal.SIG_IGN)  # nohup inspector watch &: a hangup is not for it
    wait_started(site, proc, count=2)
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    assert proc.poll() is None
    wait_for(lambda: not list(site.inbox.glob("h-*.jpg")), 60, "the rest judged after the hangup", proc, site)
    assert stop(proc) == 0
    assert len(site.rows()) == 20
