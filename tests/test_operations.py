"""The watcher's housekeeping for a year on the line (inspector/operations.py, diskguard.py, status.py): what an
adversarial test of retention, the disk guard and `inspector status` found (2026-12-08), each on real files, a
real SQLite log and real watcher processes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from inspector import config, imaging, operations, status
from inspector.diskguard import MB
from inspector.errors import ConfigError
from inspector.operations import Operations, next_daily
from inspector.store import Store
from watchkit import REPO, atomic_drop, make_site, part_jpeg, start, stop, wait_for

NOW = datetime.now(timezone.utc)


def test_the_daily_prune_keeps_its_local_time_on_daylight_saving_days(monkeypatch: pytest.MonkeyPatch) -> None:
    """prune_at is local wall-clock time, on the days the clocks change too (an adversarial test: 03:00 ran at 04:00
    in March and 02:00 in October, today's offset kept for tomorrow); a time the clocks skip runs that long after
    the jump, a time they pass twice runs once."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        def due(now: str, at: str) -> str:
            return next_daily(datetime.fromisoformat(now), at).isoformat()

        assert due("2027-03-27T12:00:00+00:00", "03:00") == "2027-03-28T03:00:00+02:00"
        assert due("2027-10-30T12:00:00+00:00", "03:00") == "2027-10-31T03:00:00+01:00"
        assert due("2027-03-27T12:00:00+00:00", "02:30") == "2027-03-28T03:30:00+02:00"  # skipped that night
        assert due("2027-10-30T12:00:00+00:00", "02:30") == "2027-10-31T02:30:00+02:00"  # the first of two
        assert due("2027-10-31T00:45:00+00:00", "02:30") == "2027-11-01T02:30:00+01:00"  # ... and only once
        assert due("2027-06-01T05:00:00+00:00", "03:00") == "2027-06-02T03:00:00+02:00"
        assert due("2027-06-01T00:59:00+00:00", "03:00") == "2027-06-01T03:00:00+02:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


class Housekeeping:
    """An Operations of one station over a real SQLite log, with the free space of its filesystems set by the test
    and its log lines collected."""

    def __init__(self, root: Path, **retention: object) -> None:
        root.mkdir(parents=True)
        self.archive, self.inbox, self.db = root / "archive", root / "inbox", root / "db" / "inspector.db"
        for folder in (self.archive, self.inbox, self.db.parent):
            folder.mkdir()
        keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in retention.items())
        path = root / "config.toml"
        path.write_text(f'[database]\nurl = "sqlite:///{self.db}"\n\n[station]\nname = "st-1"\n\n'
                        f'[watch]\ndir = "inbox"\narchive_dir = "archive"\n\n[retention]\n{keys}')
        self.cfg = config.load(path)
        self.store = Store(self.cfg.database.url)
        self.free = {"archive": 100_000 * MB, "database": 100_000 * MB}
        self.lines: list[tuple[int, str]] = []
        counters = {"queue_depth": 0, "degraded": False, "judged": 0, "verdicts": {}}
        self.ops = Operations(self.cfg, self.store, self.emit, folder=self.inbox, archive=self.archive,
                              overlays=root / "overlays", once=False, counters=lambda: counters,
                              waiting=lambda: 0, check_db=lambda: None, free=self.free_of)
        self.n = 0

    def free_of(self, path: Path) -> int:
        return self.free["database" if path in (self.db, self.db.parent) else "archive"]

    def emit(self, event: str, level: int, text: str, **fields: object) -> None:
        self.lines.append((level, text))

    def add_ok(self, age_days: float) -> Path:
        """A committed ok part `age_days` old, its file in the archive."""
        self.n += 1
        at = NOW - timedelta(days=age_days)
        data = b"\xff\xd8\xff" + self.n.to_bytes(4, "big") + os.urandom(50)
        path = self.archive / "ok" / "d" / f"p{self.n}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.store.record([{"sha256": imaging.sha256_hex(data), "name": path.name, "source_path": "x",
                            "archived_path": str(path), "size": len(data), "received_at": at, "inspected_at": at,
                            "verdict": "ok", "station": "st-1", "line": "L1", "camera": "c"}])
        return path

    def run_for(self, seconds: float) -> None:
        """The retention thread running, the main loop's ticks for `seconds`."""
        self.ops.start()
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                self.ops.tick(time.monotonic())
                time.sleep(0.05)
        finally:
            self.ops.stop()
            self.store.close()


def test_a_low_database_filesystem_alone_deletes_no_photo_and_a_low_archive_prunes_early(tmp_path: Path) -> None:
    """Pruning frees the archive's filesystem only: with the SQLite file on a small partition that runs low while
    the archive disk has room, no photo goes ahead of schedule (an adversarial test: every ok photo was deleted,
    freeing nothing where space was short), and the warning says so; the archive running low prunes early."""
    kw = {"ok_days": 30, "early_keep_days": 7, "warn_free_mb": 100, "min_free_mb": 0}
    h = Housekeeping(tmp_path / "db-low", **kw)
    photo = h.add_ok(20)  # due early (7 days), not by the policy (30)
    h.free["database"] = 50 * MB
    h.run_for(1.5)
    assert photo.exists()
    warnings = [t for lvl, t in h.lines if lvl == logging.WARNING]
    assert warnings and "database 50 MB free" in warnings[0] and "pruning the archive would not help" in warnings[0]
    assert not any("prune" in t and "deleted" in t for _, t in h.lines)

    h = Housekeeping(tmp_path / "archive-low", **kw)
    photo = h.add_ok(20)
    h.free["archive"] = 50 * MB
    h.run_for(1.5)
    assert not photo.exists()
    assert any("early prune: deleted 1 files" in t for _, t in h.lines)


def test_nothing_left_to_prune_early_is_said_at_most_every_ten_minutes(tmp_path: Path) -> None:
    """While the archive is low and nothing may go early, the early prune runs every minute; its "nothing more may
    be pruned" warning is paced as the disk's own (an adversarial test: one a minute, 1,440 a day)."""
    h = Housekeeping(tmp_path / "site", ok_days=30, early_keep_days=7, warn_free_mb=100, min_free_mb=0)
    h.add_ok(3)  # younger than early_keep_days: nothing may go
    h.free["archive"] = 50 * MB
    h.ops.guard.check()
    h.lines.clear()
    for _ in range(3):
        h.ops._prune_early()  # what the retention thread does every EARLY_EVERY_S while the disk stays low
    said = [t for _, t in h.lines if "nothing more may be pruned early" in t]
    h.store.close()
    assert len(said) == 1


def write_status(path: Path, **fields: object) -> None:
    """A status file as a live watcher writes it (this process standing in for the watcher)."""
    data = {"pid": os.getpid(), "host": os.uname().nodename, "running": True, "state": "running",
            "pid_started": status.process_started(os.getpid()), "boot_id": status.boot_id(),
            "heartbeat_unix": time.time(), "started_at": NOW.isoformat(), "verdicts": {}, **fields}
    status.write_atomic(path, data)


def test_a_heartbeat_counts_as_fresh_for_twice_the_watchers_status_interval(tmp_path: Path, models: Path) -> None:
    """A watcher set to write its status every 50 s (the config allows up to 60) is not "stuck" 38 s after its last
    write, whatever --stale says (an adversarial test: exit 1 with the default of 30 s)."""
    site = tmp_path / "site"
    (site / "inbox").mkdir(parents=True)
    (site / "config.toml").write_text(f'[models]\ndir = "{models}"\n\n[watch]\ndir = "inbox"\n\n[metrics]\n'
                                      'status_every_s = 50\n')
    cfg = config.load(site / "config.toml")
    (site / "inbox" / "writing.jpg").write_bytes(b"\xff\xd8\xff")  # a part its camera is still writing
    write_status(Path(cfg.metrics.status_file), heartbeat_unix=time.time() - 38, status_every_s=50,
                 folder=str(site / "inbox"), config=str(cfg.source))
    report = status.collect(cfg, stale_s=30)
    assert (report["state"], report["healthy"]) == ("running", True)
    write_status(Path(cfg.metrics.status_file), heartbeat_unix=time.time() - 110, status_every_s=50,
                 folder=str(site / "inbox"), config=str(cfg.source))
    assert (status.collect(cfg, stale_s=30)["state"], status.collect(cfg, stale_s=30)["healthy"]) == ("stuck", False)


def run_status(config_path: Path) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-m", "inspector", "status", "--json", "--stale", "5", "--config",
                           str(config_path)], capture_output=True, text=True, timeout=60, cwd=REPO)
    return done.returncode, json.loads(done.stdout)


def test_status_is_unhealthy_while_the_watch_folder_is_gone(tmp_path: Path, models: Path) -> None:
    """A watch folder taken away (a share unmounted, a folder deleted) means nothing can arrive: `status` says so
    and exits 1 (an adversarial test: "running (healthy)"), and is healthy again once the folder is back."""
    site = make_site(tmp_path / "site", models)
    with open(site.config, "a") as f:
        f.write("\n[metrics]\nstatus_every_s = 0.5\n")
    proc = start(site)
    try:
        wait_for(lambda: run_status(site.config)[1]["state"] == "running", 60, "a running watcher", proc, site)
        away = site.root / "inbox.away"
        site.inbox.rename(away)
        wait_for(lambda: run_status(site.config)[1]["state"] == "no_folder", 60, "status to see the folder gone",
                 proc, site)
        code, report = run_status(site.config)
        assert code == 1 and not report["healthy"] and report["watcher"]["folder_gone"]
        text = subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(site.config)],
                              capture_output=True, text=True, timeout=60, cwd=REPO).stdout
        assert "no_folder (UNHEALTHY" in text and "the watch folder is gone" in text
        away.rename(site.inbox)
        wait_for(lambda: run_status(site.config)[0] == 0, 60, "healthy again", proc, site)
        atomic_drop(site.inbox, "a.jpg", part_jpeg(1))
        wait_for(lambda: len(site.rows()) == 1, 60, "a part judged after the folder came back", proc, site)
    finally:
        assert stop(proc) == 0


def test_two_configs_in_one_folder_do_not_pass_for_each_other_in_the_status_file(tmp_path: Path,
                                                                                models: Path) -> None:
    """Two cameras on one PC, two configs side by side (an adversarial test: with one status.json between them,
    `status` reported the first's watcher as the second's, "running (healthy)", while the second was dead with parts
    waiting). By default each config has its own file; where both name one, the second watcher does not start beside
    the running first (one line, exit 2), and `status` for the second config says whose the file is."""
    root = tmp_path / "pc"
    root.mkdir()

    def write(name: str, extra: str = "") -> Path:
        (root / f"inbox-{name}").mkdir(exist_ok=True)
        path = root / f"config-{name}.toml"
        path.write_text(
            f'[models]\ndir = "{models}"\n\n[database]\nurl = "sqlite:///{name}.db"\n\n[station]\nname = "cam-{name}"'
            f'\n\n[watch]\ndir = "inbox-{name}"\narchive_dir = "archive-{name}"\noverlays_dir = "overlays-{name}"\n'
            f"settle_s = 0.3\nrescan_s = 2.0\nworkers = 2\n\n[metrics]\nstatus_every_s = 0.5\n{extra}")
        return path

    a, b = write("a"), write("b")
    assert config.load(a).metrics.status_file == root / "config-a.status.json"
    assert config.load(b).metrics.status_file == root / "config-b.status.json"
    assert config.load(a).metrics.status_file != config.load(b).metrics.status_file
    a, b = write("a", 'status_file = "status.json"\n'), write("b", 'status_file = "status.json"\n')
    log = open(root / "a.log", "ab")
    first = subprocess.Popen([sys.executable, "-m", "inspector", "watch", "--config", str(a)], cwd=root, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: run_status(a)[1]["state"] == "running", 60, "the first watcher", first)
        second = subprocess.run([sys.executable, "-m", "inspector", "watch", "--config", str(b)], cwd=root,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert "status.json" in second.stderr and "give each config its own [metrics] status_file" in second.stderr
        assert not (root / "b.db").exists()  # refused before anything was opened
        (root / "inbox-b" / "waiting.jpg").write_bytes(part_jpeg(1))
        code, report = run_status(b)
        assert (code, report["state"]) == (1, "stuck") and report["status_file_of"].endswith("config-a.toml")
        assert run_status(a)[0] == 0
    finally:
        assert stop(first) == 0
    assert operations.check_status_file(config.load(b)) == {}  # a stopped watcher's file: taken over


def test_a_stopped_or_silent_watcher_of_another_config_does_not_hold_the_status_file(tmp_path: Path) -> None:
    """Only a running watcher of another config keeps a config from its status file: one that stopped, or one on
    another host whose heartbeat is old, does not (a review: a week-old file of a stopped watcher on another host
    refused the start for ever, exit 2, which systemd does not restart)."""
    (tmp_path / "a.toml").write_text('[metrics]\nstatus_file = "shared.json"\n')
    (tmp_path / "b.toml").write_text('[metrics]\nstatus_file = "shared.json"\n')
    cfg_b = config.load(tmp_path / "b.toml")
    shared = tmp_path / "shared.json"
    mine = {"config": str(cfg_b.source), "last_daily_prune": "2026-12-01T03:00:00+00:00"}
    write_status(shared, **mine)
    assert operations.check_status_file(cfg_b)["last_daily_prune"] == mine["last_daily_prune"]  # its own
    theirs = {"config": str(tmp_path / "a.toml"), "host": "cam-pc-2", "last_daily_prune": "2026-12-01T03:00:00+00:00"}
    write_status(shared, **theirs, running=False, heartbeat_unix=time.time() - 7 * 86400)
    assert operations.check_status_file(cfg_b) == {}
    write_status(shared, **theirs, heartbeat_unix=time.time() - 7 * 86400)  # says running, silent for a week
    assert operations.check_status_file(cfg_b) == {}
    write_status(shared, **theirs)  # another host's, beating now
    with pytest.raises(ConfigError, match="written by a running watcher of another config"):
        operations.check_status_file(cfg_b)
    write_status(shared, config=str(tmp_path / "a.toml"))  # this host, this (live) process
    with pytest.raises(ConfigError):
        operations.check_status_file(cfg_b)
