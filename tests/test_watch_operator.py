"""The running watcher as the line and its operators meet it: verdicts published over MQTT (issue 13), no stall
at the first defect after a start and no idle log lines (issue 14, items 1 and 2).

Real `inspector watch` processes, real files and SQLite; the broker is the Mosquitto at 127.0.0.1:1883 (the MQTT
test skips when it is not reachable); messages are read by a paho subscriber in the test.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from test_mqtt import BROKER, Subscriber, clear_retained, reachable
from watchkit import Site, atomic_drop, make_site, part_jpeg, start, stop, wait_for, wait_started


@pytest.fixture
def site(tmp_path: Path, models: Path) -> Site:
    """A fresh station folder using the shared models."""
    return make_site(tmp_path / "site", models)


def _mapped(pid: int, name: str) -> bool:
    """Whether the process has a shared object of `name` mapped (it imported that package's extension modules)."""
    return name in Path(f"/proc/{pid}/maps").read_text()


def test_the_watcher_publishes_each_verdict_with_state_and_heartbeat(site: Site) -> None:
    if not reachable(*BROKER):
        pytest.skip("no MQTT broker at 127.0.0.1:1883 (Debian package mosquitto)")
    line = f"test-{uuid.uuid4().hex[:10]}"
    site.write_config()
    text = site.config.read_text().replace('line = "L1"', f'line = "{line}"')
    site.config.write_text(text + f'\n[mqtt]\nurl = "mqtt://{BROKER[0]}:{BROKER[1]}"\nheartbeat_s = 0.2\n'
                                  'part_id_regex = "^(?P<part>[A-Z]+-[0-9]+)_"\n')
    prefix = f"inspector/{line}/test-station"
    sub = Subscriber(prefix)
    proc = start(site)
    try:
        wait_started(site, proc)
        names = [f"SN-{i:04d}_top.jpg" for i in range(4)]
        for i, name in enumerate(names):
            atomic_drop(site.inbox, name, part_jpeg(7_000 + i, "spot" if i == 3 else None))
        wait_for(lambda: len(site.rows()) == 4, 60, "4 verdicts", proc, site)
        wait_for(lambda: len(sub.verdicts()) >= 4, 30, "4 verdict messages", proc, site)
        wait_for(lambda: sub.payloads("heartbeat"), 10, "a heartbeat", proc, site)
    finally:
        assert stop(proc) == 0
    try:
        wait_for(lambda: sub.payloads("state")[-1:] == ["offline"], 10, "state offline after the stop")
        rows = {r["id"]: r for r in site.rows()}
        sent = {v["result_id"]: v for v in sub.verdicts()}
        assert set(sent) == set(rows)  # every committed verdict, each under its row's id
        for rid, v in sent.items():
            r = rows[rid]
            assert (v["name"], v["sha256"], v["verdict"], v["profile_version"]) == (
                r["name"], r["sha256"], r["verdict"], r["profile_version"])
            assert v["part_id"] == r["name"].split("_")[0]
            assert (v["station"], v["line"], v["camera"]) == ("test-station", line, "cam-A")
            assert v["latency_ms"] >= 0
        assert sorted(v["verdict"] for v in sent.values()) == ["defect", "ok", "ok", "ok"]
        assert all(r["published_at"] is not None for r in rows.values())  # the outbox is empty
        assert sub.payloads("state")[0] == "online"
        beat = json.loads(sub.payloads("heartbeat")[-1])
        assert beat["profile_version"] == "v1" and beat["degraded"] is False
        assert beat["drift_alarms"] == {}  # the drift alarms up, by product: none on four parts
    finally:
        sub.close()
        clear_retained(prefix)


def test_the_first_defect_after_a_start_loads_no_plotting_library(site: Site) -> None:
    """The first defect's overlay used to import the eval report's matplotlib and scikit-learn (2-6 s while every
    part behind it waited); the overlay is drawn with OpenCV alone now, so neither is ever loaded."""
    proc = start(site)
    try:
        wait_started(site, proc)
        atomic_drop(site.inbox, "first_defect.jpg", part_jpeg(8_000, "spot"))
        wait_for(lambda: [r for r in site.rows() if r["overlay_path"]], 60, "the defect with its overlay", proc,
                 site)
        assert site.rows()[0]["verdict"] == "defect"
        assert not _mapped(proc.pid, "matplotlib") and not _mapped(proc.pid, "sklearn")
    finally:
        assert stop(proc) == 0


def test_an_idle_watcher_prints_no_throughput_lines(site: Site) -> None:
    """A line every stats_every_s while nothing arrives made 8,600 identical lines a day: now only when parts were
    judged (or are waiting), and a quiet line at most every few minutes."""
    site.write_config(stats_every_s=0.2)
    proc = start(site)
    try:
        wait_started(site, proc)
        time.sleep(3.0)  # fifteen periods with nothing to say
        idle = site.log.read_text().count("throughput ")
        atomic_drop(site.inbox, "a.jpg", part_jpeg(9_000))
        wait_for(lambda: len(site.rows()) == 1, 60, "one verdict", proc, site)
        wait_for(lambda: "throughput " in site.log.read_text(), 10, "a throughput line after a part", proc, site)
    finally:
        assert stop(proc) == 0
    assert idle == 0, site.log.read_text()


def test_a_watcher_killed_by_a_fatal_signal_says_so_in_its_log(site: Site) -> None:
    """With the database's -shm file made immutable (chattr +i), SQLite's write into its memory map killed the
    watcher with SIGBUS (exit 135) and not a line in the log. Such a death cannot be caught, but it can be told:
    the log names the signal and shows where every thread was."""
    import signal
    import subprocess

    proc = start(site)
    shm = site.db.with_name(site.db.name + "-shm")
    try:
        wait_started(site, proc)
        atomic_drop(site.inbox, "a.jpg", part_jpeg(9_100))
        wait_for(lambda: len(site.rows()) == 1 and shm.exists(), 60, "one verdict", proc, site)
        if subprocess.run(["chattr", "+i", str(shm)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not possible here (needs root and a filesystem with the attribute)")
        atomic_drop(site.inbox, "b.jpg", part_jpeg(9_101))
        assert proc.wait(timeout=60) == -signal.SIGBUS
    finally:
        subprocess.run(["chattr", "-i", str(shm)], capture_output=True)
        if proc.poll() is None:
            proc.kill()
    log = site.log.read_text()
    assert "Fatal Python error: Bus error" in log and "Thread 0x" in log, log
    # b is not lost: recorded at most once, its file in the inbox (judged or moved at the next start) or archived
    assert [r["name"] for r in site.rows()].count("b.jpg") <= 1
    assert (site.inbox / "b.jpg").exists() or any(p.name == "b.jpg" for p in site.archived_files())


class Plc:
    """The line's side of the fail-safe in the README ("Fail-safe: how a PLC should use this"), reading the
    station's topics: the line may run while `state` is online and a heartbeat came within STALL_BEATS x
    heartbeat_s; a part passes only on an `ok` verdict for its part_id (not late, repeats dropped by result_id)
    within its window, and is rejected otherwise."""

    STALL_BEATS = 5

    def __init__(self, prefix: str, heartbeat_s: float) -> None:
        self.sub = Subscriber(prefix)
        self.stall_s = self.STALL_BEATS * heartbeat_s

    def state(self) -> str | None:
        states = self.sub.payloads("state")
        return states[-1] if states else None

    def beats(self) -> list[float]:
        """Arrival times (monotonic) of the heartbeats so far."""
        with self.sub.lock:
            return [t for leaf, _, _, t in self.sub.messages if leaf == "heartbeat"]

    def heartbeat_stalled(self) -> bool:
        beats = self.beats()
        return not beats or time.monotonic() - beats[-1] > self.stall_s

    def line_ok(self) -> bool:
        return self.state() == "online" and not self.heartbeat_stalled()

    def verdict(self, part: str) -> dict | None:
        """The first verdict message for `part` (a repeat of a result_id is the same message)."""
        first: dict[int, dict] = {}
        for v in self.sub.verdicts():
            first.setdefault(v["result_id"], v)
        return next((v for v in first.values() if v["part_id"] == part), None)

    def at_gate(self, part: str, window_s: float) -> str:
        """Wait up to the part's window for its verdict: "pass" on ok in time, "reject" on anything else."""
        deadline = time.monotonic() + window_s
        while (v := self.verdict(part)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return "pass" if v is not None and v["verdict"] == "ok" and not v["late"] else "reject"


def test_a_plc_sees_a_hung_watcher_stall_recover_and_a_killed_one_go_offline(site: Site) -> None:
    """The fail-safe as a PLC lives it, against a real watcher and the machine's broker: parts are judged while
    the line is ok; a SIGSTOPped watcher's heartbeat stalls (and the last will turns it offline), a part arriving
    then gets no verdict within its window and is rejected by the PLC's timeout; after SIGCONT heartbeats and
    `online` come back and the held part's verdict still arrives; a SIGKILLed watcher leaves `offline` retained.
    Bounds are liveness bounds (tens of seconds), never timings."""
    import signal

    if not reachable(*BROKER):
        pytest.skip("no MQTT broker at 127.0.0.1:1883 (Debian package mosquitto)")
    line = f"test-{uuid.uuid4().hex[:10]}"
    heartbeat_s = 0.3
    site.write_config()
    text = site.config.read_text().replace('line = "L1"', f'line = "{line}"')
    site.config.write_text(text + f'\n[mqtt]\nurl = "mqtt://{BROKER[0]}:{BROKER[1]}"\nheartbeat_s = {heartbeat_s}\n'
                                  'keepalive_s = 1\nmax_age_s = 60\n')  # a window far beyond any load
    prefix = f"inspector/{line}/test-station"
    plc = Plc(prefix, heartbeat_s)
    proc = start(site)
    try:
        wait_started(site, proc)
        wait_for(plc.line_ok, 30, "state online and heartbeats", proc, site)
        atomic_drop(site.inbox, "SN-0001.jpg", part_jpeg(9_200))
        assert plc.at_gate("SN-0001", window_s=60) == "pass"

        proc.send_signal(signal.SIGSTOP)  # the watcher hangs
        wait_for(plc.heartbeat_stalled, 30, "the heartbeat to stall while the watcher is stopped", proc, site)
        assert not plc.line_ok()
        wait_for(lambda: plc.state() == "offline", 30, "the last will (offline) after keepalive", proc, site)
        atomic_drop(site.inbox, "SN-0002.jpg", part_jpeg(9_201))
        assert plc.at_gate("SN-0002", window_s=2) == "reject"  # no verdict can come: the PLC's timeout rejects
        beats = len(plc.beats())
        time.sleep(1.0)
        assert len(plc.beats()) == beats, "a heartbeat from a stopped watcher"

        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: len(plc.beats()) > beats and plc.line_ok(), 60, "heartbeats and online again", proc, site)
        wait_for(lambda: plc.verdict("SN-0002"), 60, "the held part's verdict after the resume", proc, site)

        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        wait_for(lambda: plc.state() == "offline", 30, "state offline after SIGKILL (last will)")
        wait_for(plc.heartbeat_stalled, 30, "no heartbeat from a killed watcher")
        later = Subscriber(prefix)  # a PLC that connects now learns it from the retained state
        try:
            wait_for(lambda: later.payloads("state") == ["offline"], 10, "retained offline for a new subscriber")
        finally:
            later.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(30)
        plc.sub.close()
        clear_retained(prefix)


def test_lines_from_around_the_watcher_carry_its_timestamp_or_json(tmp_path: Path, models: Path) -> None:
    """Found by an adversarial test: "profile switch failed, still judging with v1" (logged by the profile cache,
    not the service) had no timestamp, and was no JSON with log_format = "json"."""
    import re
    import shutil

    from inspector import profiles

    own = tmp_path / "models"
    shutil.copytree(models, own)  # the ACTIVE pointer is changed below
    site = make_site(tmp_path / "site", own)
    proc = start(site)
    try:
        wait_started(site, proc)
        atomic_drop(site.inbox, "a.jpg", part_jpeg(9_100))
        wait_for(lambda: len(site.rows()) == 1, 60, "one verdict", proc, site)
        (own / profiles.ACTIVE).write_text("v9\n")  # a version that is not there
        atomic_drop(site.inbox, "b.jpg", part_jpeg(9_101))
        wait_for(lambda: len(site.rows()) == 2, 60, "judged with the old profile", proc, site)
        import subprocess
        import sys

        def status_text() -> str:
            return subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(site.config)],
                                  capture_output=True, text=True, timeout=60).stdout

        wait_for(lambda: "the watcher judges with v1, not the active pointer's version" in status_text(), 20,
                 "status to tell the failed switch", proc, site)
    finally:
        assert stop(proc) == 0
    [line] = [x for x in site.log.read_text().splitlines() if "switch failed" in x]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d profile switch failed, still judging with v1",
                    line), line
    assert site.rows()[1]["profile_version"] == "v1"


def test_the_line_formatter_makes_json_of_other_modules_records() -> None:
    import logging

    from inspector.service import LineFormatter

    record = logging.LogRecord("inspector.watch", logging.ERROR, __file__, 1, "switch failed: %s", ("x\ny",), None)
    got = json.loads(LineFormatter("json").format(record))
    assert (got["event"], got["level"], got["logger"], got["message"]) == ("log", "error", "inspector.watch",
                                                                          "switch failed: x\ny")
    assert "\n" not in LineFormatter("text").format(record)  # escaped: one line
    formed = logging.LogRecord("inspector.watch", logging.INFO, __file__, 1, "as formed", (), None)
    formed.inspector_formed = True
    assert LineFormatter("json").format(formed) == "as formed"
