"""The service in-process, where a test needs to reach inside: a dead observer thread and lost events are
caught by the restart and the periodic rescan; JSON log lines."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from inspector import config
from inspector.service import WatchService
from watchkit import Site, make_site, part_jpeg, run_once, wait_for


def run_in_thread(site: Site) -> tuple[WatchService, threading.Thread]:
    svc = WatchService(config.load(site.config))
    t = threading.Thread(target=svc.run, daemon=True)
    t.start()
    assert svc.ready.wait(30)
    return svc, t


def test_a_dead_observer_is_restarted_and_the_folder_rescanned(tmp_path: Path, models: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    site = make_site(tmp_path / "site", models, rescan_s=3600.0)
    caplog.set_level(logging.INFO, logger="inspector")
    svc, t = run_in_thread(site)
    try:
        first = svc.observer
        first.stop()  # the observer thread dies
        first.join(10)
        (site.inbox / "while-dead.jpg").write_bytes(part_jpeg(1))
        wait_for(lambda: len(site.rows()) == 1, 20, "the verdict of a file dropped while the observer was dead")
        assert svc.observer is not first and svc.observer.is_alive()
        assert "observer thread died" in caplog.text
    finally:
        svc.stop()
        t.join(30)
    assert not t.is_alive()


def test_the_periodic_rescan_catches_files_whose_events_were_lost(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models, rescan_s=0.5)
    svc, t = run_in_thread(site)
    try:
        svc.observer.unschedule_all()  # alive but deaf: as if its events overflowed the inotify queue
        (site.inbox / "unseen.jpg").write_bytes(part_jpeg(2))
        wait_for(lambda: len(site.rows()) == 1, 20, "the rescan to find the file")
    finally:
        svc.stop()
        t.join(30)
    assert site.rows()[0]["name"] == "unseen.jpg"


def test_json_log_lines(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models, log_format="json")
    for i in range(3):
        (site.inbox / f"j{i}.jpg").write_bytes(part_jpeg(10 + i))
    (site.inbox / "zero.jpg").write_bytes(b"")
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    verdicts = [e for e in events if e["event"] == "verdict"]
    assert sorted(e["name"] for e in verdicts) == ["j0.jpg", "j1.jpg", "j2.jpg", "zero.jpg"]
    assert {e["id"] for e in verdicts} == {r["id"] for r in site.rows()}
    assert next(e for e in verdicts if e["name"] == "zero.jpg")["reason"] == "empty"
    assert events[0]["event"] == "started" and events[-1]["event"] == "stopped"


def test_a_file_replaced_while_in_flight_gets_its_own_verdict(tmp_path: Path, models: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Part X is judged and waits for its commit (another writer holds the database); the camera then
    renames part Y over the same name. X's verdict is recorded without an archive path (its file is gone),
    Y is judged as a new part, and Y is the file that ends up archived."""
    import hashlib
    import sqlite3

    from watchkit import atomic_drop

    site = make_site(tmp_path / "site", models)
    caplog.set_level(logging.INFO, logger="inspector")
    svc, t = run_in_thread(site)
    x, y = part_jpeg(70), part_jpeg(71)
    try:
        blocker = sqlite3.connect(site.db, isolation_level=None, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            (site.inbox / "same-name.jpg").write_bytes(x)
            wait_for(lambda: svc._jobs.empty() and svc._inflight, 20, "X to be taken")
            time.sleep(1.0)  # X is judged (about 20 ms) and its verdict waits for the commit
            atomic_drop(site.inbox, "same-name.jpg", y)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_for(lambda: len(site.rows()) == 2, 30, "both verdicts")
        wait_for(lambda: not (site.inbox / "same-name.jpg").exists(), 30, "Y archived")
    finally:
        svc.stop()
        t.join(30)
    rows = {r["sha256"]: r for r in site.rows()}
    sx, sy = hashlib.sha256(x).hexdigest(), hashlib.sha256(y).hexdigest()
    assert set(rows) == {sx, sy}
    assert rows[sx]["archived_path"] is None
    assert Path(rows[sy]["archived_path"]).read_bytes() == y
    assert "changed after it was judged" in caplog.text


def test_the_signal_handler_takes_no_lock_the_interrupted_main_thread_may_hold(tmp_path: Path, models: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A signal handler runs between two bytecodes of the main thread, which may be inside Event.wait (holding
    the event's lock) or inside a log call. The handler calling Event.set() there used to deadlock the watcher
    on SIGTERM (seen once, in a CI run under load). Here other threads hold those locks while the handler runs:
    it must return at once, and the main loop then logs and stops."""
    import signal

    from inspector.service import SecondSignal

    site = make_site(tmp_path / "site", models)
    svc = WatchService(config.load(site.config))
    caplog.set_level(logging.INFO, logger="inspector")
    held = [svc.settler.wake._cond, svc._stop._cond, *(h.lock for h in logging.getLogger().handlers if h.lock)]
    for lock in held:
        lock.acquire()
    try:
        box: dict[str, BaseException | None] = {}

        def handle(signum: int) -> None:
            try:
                svc._on_signal(signum, None)
                box[signal.Signals(signum).name] = None
            except BaseException as exc:  # noqa: BLE001 - the second signal raises; hand it to the test
                box[signal.Signals(signum).name] = exc

        for signum in (signal.SIGTERM, signal.SIGINT):
            t = threading.Thread(target=handle, args=(signum,), daemon=True)
            t.start()
            t.join(5)
            assert not t.is_alive(), "the signal handler blocked on a lock"
    finally:
        for lock in reversed(held):
            lock.release()
    assert box["SIGTERM"] is None and isinstance(box["SIGINT"], SecondSignal)
    assert not svc._stop.is_set()  # acted on by the main loop, not inside the handler
    svc._act_on_signals()
    assert svc._stop.is_set() and "signal SIGTERM: finishing parts in flight" in caplog.text
    svc.store.close()
