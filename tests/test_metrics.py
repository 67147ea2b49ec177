"""Monitoring (issue 15, item 4): Prometheus metrics scraped over HTTP from a real watcher while parts arrive,
the systemd notifications (READY=1, WATCHDOG=1) on a real datagram socket, `inspector status` as a health check,
and a stuck pipeline that stops feeding the watchdog."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspector import cli, config, imaging, sdnotify, status
from inspector.metrics import Metrics
from inspector.service import WatchService
from inspector.store import Store
from watchkit import REPO, Site, atomic_drop, make_site, marked_png, part_jpeg, start, stop, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """GET /metrics; {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def db_counts(site: Site) -> dict[str, int]:
    counts = dict.fromkeys(("ok", "defect", "rejected"), 0)
    for r in site.rows():
        counts[r["verdict"]] += 1
    return counts


def parts(metrics: dict, verdict: str) -> float:
    return metrics[("inspector_parts_total", (("verdict", verdict),))]


def add_old_parts(site: Site, n: int, days: int = 40) -> list[Path]:
    """n ok parts recorded by this station `days` ago, their files in the archive."""
    paths = []
    with Store(f"sqlite:///{site.db}") as store:
        for i in range(n):
            at = datetime.now(timezone.utc) - timedelta(days=days)
            path = site.archive / "ok" / at.strftime("%Y-%m-%d") / f"old{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = part_jpeg(900 + i)
            path.write_bytes(data)
            store.record([{"sha256": imaging.sha256_hex(data), "name": path.name, "source_path": "x",
                           "archived_path": str(path), "size": len(data), "received_at": at, "inspected_at": at,
                           "verdict": "ok", "station": "test-station", "line": "L1", "camera": "cam-A"}])
            paths.append(path)
    return paths


def test_metrics_scraped_while_parts_arrive_agree_with_the_database(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models)
    port = free_port()
    with open(site.config, "a") as f:
        f.write(f"\n[metrics]\nport = {port}\nstatus_every_s = 0.5\n")
    old = add_old_parts(site, 2)  # due for pruning: the first daily prune runs at start (none recorded yet)
    old_bytes = sum(p.stat().st_size for p in old)
    proc = start(site)
    try:
        wait_for(lambda: "metrics on http://127.0.0.1" in site.log.read_text(), 60, "the metrics port", proc, site)
        sent = 0
        scrapes = 0
        for i in range(16):
            if i % 4 == 3:
                os.symlink("/etc/hostname", site.inbox / f"link{i}.jpg")  # rejected at once: symlink
            else:
                atomic_drop(site.inbox, f"p{i}.jpg", part_jpeg(100 + i, "spot" if i % 4 == 1 else None))
            sent += 1
            m = scrape(port)
            scrapes += 1
            db = db_counts(site)  # read after the scrape: a verdict is counted only once it is committed
            for verdict in db:
                assert parts(m, verdict) <= db[verdict], (verdict, m, db)
            time.sleep(0.1)
        wait_for(lambda: len(site.rows()) == sent + 2, 60, "every verdict", proc, site)
        wait_for(lambda: parts(scrape(port), "ok") + parts(scrape(port), "defect") + parts(scrape(port), "rejected")
                 == sent, 20, "the counters to catch up", proc, site)
        m = scrape(port)
        db = db_counts(site)
        db["ok"] -= 2  # the two old parts were recorded before this watcher
        assert {v: parts(m, v) for v in db} == db and db["rejected"] == 4 and db["defect"] >= 1
        assert m[("inspector_latency_seconds_count", ())] == sent
        assert m[("inspector_latency_seconds_bucket", (("le", "+Inf"),))] == sent
        assert 0 < m[("inspector_latency_seconds_sum", ())] < sent * 30
        assert m[("inspector_queue_depth", ())] == 0 and m[("inspector_degraded", ())] == 0
        assert m[("inspector_stuck", ())] == 0 and m[("inspector_intake_paused", ())] == 0
        assert m[("inspector_profile_info", (("version", "v1"),))] == 1
        assert m[("inspector_disk_free_bytes", (("volume", "archive"),))] > 0
        assert m[("inspector_disk_free_bytes", (("volume", "database"),))] > 0
        assert m[("inspector_pruned_files_total", ())] == 2 and m[("inspector_pruned_bytes_total", ())] == old_bytes
        assert not any(p.exists() for p in old)
        assert time.time() - m[("inspector_heartbeat_timestamp_seconds", ())] < 10
    finally:
        assert stop(proc) == 0
    with pytest.raises(OSError):  # the port is closed with the watcher
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_drift_alarm_reaches_the_metrics_the_status_file_and_inspector_status(tmp_path: Path, models: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """Parts marked at one place raise the same_place alarm: `inspector_drift_alarm{product="default",
    signal="same_place"}` goes from 0 to 1 while the watcher runs (every signal's series is there, at 0, from the
    start: an alert rule can tell "no alarm" from "no data"), the status file lists it and `inspector status` says
    it (a drift alarm is the line's condition, not the watcher's health: still healthy)."""
    site = make_site(tmp_path / "site", models, workers=1)
    port = free_port()
    with open(site.config, "a") as f:
        f.write(f"\n[metrics]\nport = {port}\nstatus_every_s = 0.3\n")
    proc = start(site)
    try:
        wait_for(lambda: "metrics on http://127.0.0.1" in site.log.read_text(), 60, "the metrics port", proc, site)
        alarm = ("inspector_drift_alarm", (("product", "default"), ("signal", "same_place")))
        first = scrape(port)
        assert first[alarm] == 0 and first[("inspector_drift_alarm", (("product", "default"),
                                                                       ("signal", "exposure_low")))] == 0
        for i in range(10):
            atomic_drop(site.inbox, f"m{i}.png", marked_png(54_000 + i))
        wait_for(lambda: len(site.rows()) == 10, 60, "ten verdicts", proc, site)
        wait_for(lambda: scrape(port)[alarm] == 1, 20, "the alarm in the metrics", proc, site)
        wait_for(lambda: "same_place" in (status.read(site.root / "status.json") or {}).get("drift_alarms", {}).get(
            "default", []), 20, "the alarm in the status file", proc, site)
        assert cli.main(["status", "--config", str(site.config)]) == 0
        out = capsys.readouterr().out
        assert "drift alarm: " in out and "same_place" in out and "(healthy;" in out, out
    finally:
        assert stop(proc) == 0


def test_each_service_has_its_own_registry() -> None:
    from prometheus_client import REGISTRY

    a = Metrics(lambda: 1.0, lambda: 0.0, lambda: 0.0, lambda: 0.0, lambda: 0.0)
    b = Metrics(lambda: 2.0, lambda: 0.0, lambda: 0.0, lambda: 0.0, lambda: 0.0)  # no "duplicated timeseries"
    a.verdict("ok", 0.2)
    assert a.registry.get_sample_value("inspector_parts_total", {"verdict": "ok"}) == 1
    assert b.registry.get_sample_value("inspector_parts_total", {"verdict": "ok"}) == 0
    assert b.registry.get_sample_value("inspector_queue_depth") == 2
    assert REGISTRY.get_sample_value("inspector_parts_total", {"verdict": "ok"}) is None


def receiver(name: str) -> socket.socket:
    """A datagram socket bound in the abstract namespace, as systemd's NOTIFY_SOCKET "@name"."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.2)
    return sock


def messages(sock: socket.socket, seconds: float) -> list[str]:
    """Every datagram received within `seconds`."""
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    return out


def test_notify_sends_to_a_path_and_to_the_abstract_namespace(tmp_path: Path) -> None:
    name = f"inspector-test-{os.getpid()}-a"
    with receiver(name) as abstract, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_path:
        path = tmp_path / "n.sock"
        by_path.bind(str(path))
        by_path.settimeout(2)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": f"@{name}"})
        assert abstract.recv(100) == b"READY=1"
        assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": str(path)})
        assert by_path.recv(100) == b"WATCHDOG=1"
    assert not sdnotify.notify("READY=1", {})  # not under systemd: nothing
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert sdnotify.watchdog_interval({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) is None


def test_the_watcher_tells_systemd_ready_and_feeds_the_watchdog_while_its_loop_runs(tmp_path: Path,
                                                                                     models: Path) -> None:
    site = make_site(tmp_path / "site", models)
    name = f"inspector-test-{os.getpid()}-w"
    with receiver(name) as sock:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "1000000"}
        with open(site.log, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "inspector", "watch", "--config", str(site.config)],
                                    cwd=site.root, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            got: list[str] = []
            deadline = time.monotonic() + 60
            while not any(m.startswith("READY=1") for m in got) and time.monotonic() < deadline:
                got += messages(sock, 0.5)
            ready = next(m for m in got if m.startswith("READY=1"))
            assert f"STATUS=watching {site.inbox}" in ready
            assert messages(sock, 2.5).count("WATCHDOG=1") >= 2  # every half of WATCHDOG_USEC (0.5 s)
            proc.send_signal(signal.SIGSTOP)  # a hung process: no more pings, so systemd would restart it
            try:
                time.sleep(0.3)
                messages(sock, 0.3)  # drain what was in flight
                assert "WATCHDOG=1" not in messages(sock, 2.0)
            finally:
                proc.send_signal(signal.SIGCONT)
            assert "WATCHDOG=1" in messages(sock, 2.0)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            assert "STOPPING=1" in messages(sock, 0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_status(site: Site, stale: float = 3.0) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-m", "inspector", "status", "--json", "--stale", str(stale),
                           "--config", str(site.config)], capture_output=True, text=True, timeout=60, cwd=REPO)
    return done.returncode, json.loads(done.stdout)


def test_status_reports_and_fails_when_the_watcher_is_stuck(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models)
    with open(site.config, "a") as f:
        f.write("\n[metrics]\nstatus_every_s = 0.5\n")
    assert run_status(site)[1]["state"] == "idle"
    proc = start(site)
    try:
        atomic_drop(site.inbox, "a.jpg", part_jpeg(1))
        wait_for(lambda: len(site.rows()) == 1, 60, "the first verdict", proc, site)
        wait_for(lambda: (run_status(site)[1]["watcher"] or {}).get("recorded") == 1, 20, "the status file",
                 proc, site)
        code, report = run_status(site)
        assert code == 0 and report["state"] == "running" and report["healthy"]
        assert report["watcher"]["pid"] == proc.pid and report["pid_alive"]
        assert report["watcher"]["verdicts"]["ok"] + report["watcher"]["verdicts"]["defect"] == 1
        assert report["database"]["revision"] == "0013" and report["database"]["newest_id"] == 1
        assert report["models"]["active"] == "v1" and report["inbox"]["waiting"] == 0
        text = subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(site.config)],
                              capture_output=True, text=True, timeout=60)
        assert text.returncode == 0 and text.stdout.startswith("watcher: running (healthy; heartbeat")

        proc.send_signal(signal.SIGSTOP)  # hung: no heartbeat while a part waits
        try:
            atomic_drop(site.inbox, "b.jpg", part_jpeg(2))
            time.sleep(3.5)
            code, report = run_status(site)
            assert code == 1 and report["state"] == "stuck" and not report["healthy"]
            assert report["inbox"]["waiting"] == 1 and report["heartbeat_age_s"] > 3
        finally:
            proc.send_signal(signal.SIGCONT)
        wait_for(lambda: len(site.rows()) == 2, 60, "the part that waited", proc, site)
        wait_for(lambda: run_status(site)[0] == 0, 20, "healthy again", proc, site)
    finally:
        assert stop(proc) == 0
    code, report = run_status(site)
    assert code == 0 and report["state"] == "stopped" and not report["watcher"]["running"]
    atomic_drop(site.inbox, "c.jpg", part_jpeg(3))  # stopped with a part waiting: nobody will judge it
    code, report = run_status(site)
    assert code == 1 and report["state"] == "stuck"


def test_status_fails_when_the_active_profile_is_missing_or_damaged(tmp_path: Path, models: Path) -> None:
    """Found by an adversarial test: with the active version's folder deleted, its arrays truncated or ACTIVE empty,
    `status` said "healthy" (exit 0) while a watcher started then exits 4 at once."""
    import shutil

    own = tmp_path / "models"  # a copy: the shared folder stays whole
    shutil.copytree(models, own)
    site = make_site(tmp_path / "site", own)
    code, report = run_status(site)
    assert code == 0 and report["state"] == "idle" and report["models"] == {"dir": report["models"]["dir"],
                                                                            "active": "v1"}
    mdir = Path(report["models"]["dir"])
    arrays = mdir / "v1" / "profile.npz"
    whole = arrays.read_bytes()
    arrays.write_bytes(whole[: len(whole) // 2])
    code, report = run_status(site)
    assert code == 1 and not report["healthy"] and "do not match the recorded checksum" in report["models"]["error"]
    text = subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(site.config)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert text.returncode == 1 and text.stdout.startswith("watcher: idle (UNHEALTHY")
    assert "models: profile v1 is corrupt" in text.stdout and "a watcher could not start" in text.stdout
    arrays.write_bytes(whole)
    assert run_status(site)[0] == 0
    (mdir / "ACTIVE").write_text("")
    code, report = run_status(site)
    assert code == 1 and "which is not a profile version" in report["models"]["error"]
    (mdir / "ACTIVE").write_text("v1\n")
    shutil.rmtree(mdir / "v1")
    code, report = run_status(site)
    assert code == 1 and report["models"]["active"] == "v1" and "not found" in report["models"]["error"]


def test_status_with_several_products_checks_each_products_profile(tmp_path: Path, models: Path) -> None:
    """Found by a review: with several products and no default profile (the demo's layout) the new profile check
    read the default product's pointer only, and called every such station unhealthy."""
    import shutil

    own = tmp_path / "models"
    for product in ("cap", "flange"):
        shutil.copytree(models, own / product)
    site = make_site(tmp_path / "site", own, product_from="name", product_regex="^(?P<product>[a-z]+)_")
    code, report = run_status(site)
    assert code == 0 and report["models"]["active"] == "cap:v1,flange:v1" and "error" not in report["models"]
    arrays = own / "cap" / "v1" / "profile.npz"
    arrays.write_bytes(arrays.read_bytes()[:100])
    code, report = run_status(site)
    assert code == 1 and report["models"]["active"] == "flange:v1"
    assert report["models"]["error"].startswith("cap: profile v1 is corrupt")


def test_status_fails_at_once_when_the_watcher_was_killed(tmp_path: Path, models: Path) -> None:
    """Found by an adversarial test: after a SIGKILL (an out-of-memory kill, say) `inspector status` said "running
    (healthy)" while the heartbeat was fresh and "silent (healthy)" after, as long as no part waited."""
    site = make_site(tmp_path / "site", models)
    with open(site.config, "a") as f:
        f.write("\n[metrics]\nstatus_every_s = 0.5\n")
    proc = start(site)
    try:
        wait_for(lambda: run_status(site, stale=60)[1]["state"] == "running", 60, "the status file", proc, site)
        report = run_status(site, stale=60)[1]
        assert report["watcher"]["host"] == socket.gethostname() and report["pid_alive"] is True
    finally:
        proc.kill()
        proc.wait(timeout=30)
    code, report = run_status(site, stale=60)  # the heartbeat is still fresh, and nothing waits
    assert code == 1 and report["state"] == "gone" and not report["healthy"] and report["pid_alive"] is False
    text = subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(site.config)],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 1 and text.stdout.startswith("watcher: gone (UNHEALTHY; heartbeat")
    assert "no longer runs: killed or crashed without stopping" in text.stdout.splitlines()[0]
    # a status file written on another host (a shared folder) cannot be checked by pid: the heartbeat decides
    data = json.loads(Path(report["status_file"]).read_text())
    Path(report["status_file"]).write_text(json.dumps({**data, "host": "elsewhere"}))
    assert run_status(site, stale=60)[1]["state"] == "running"
    # found by an adversarial test: the killed watcher's pid reused by another process read as a running watcher;
    # the file records when its process started and this boot, so a live stranger (here: this test) is no watcher
    assert isinstance(data["pid_started"], int) and isinstance(data["boot_id"], str)
    me = {**data, "pid": os.getpid()}
    Path(report["status_file"]).write_text(json.dumps(me))
    code, report = run_status(site, stale=60)
    assert code == 1 and report["state"] == "gone" and report["pid_alive"] is False
    Path(report["status_file"]).write_text(json.dumps({**me, "pid_started": status.process_started(os.getpid())}))
    assert run_status(site, stale=60)[1]["state"] == "running"  # the same start: this is the process it names
    Path(report["status_file"]).write_text(json.dumps({**me, "pid_started": status.process_started(os.getpid()),
                                                      "boot_id": "another boot"}))
    assert run_status(site, stale=60)[1]["state"] == "gone"  # written before a reboot


def test_status_with_files_left_in_place_counts_only_what_was_not_judged(tmp_path: Path, models: Path) -> None:
    """Found by an adversarial test: with `archive = false` a clean stop read as "stuck (UNHEALTHY)", every judged
    file still in the folder counted as waiting."""
    site = make_site(tmp_path / "site", models, archive=False)
    with open(site.config, "a") as f:
        f.write("\n[metrics]\nstatus_every_s = 0.5\n")
    proc = start(site)
    try:
        for i in range(2):
            atomic_drop(site.inbox, f"p{i}.jpg", part_jpeg(70 + i))
        wait_for(lambda: len(site.rows()) == 2, 60, "both judged", proc, site)
        wait_for(lambda: run_status(site)[1]["inbox"]["waiting"] == 0, 20, "nothing waiting", proc, site)
    finally:
        assert stop(proc) == 0
    assert len(list(site.inbox.glob("*.jpg"))) == 2  # left in place, as configured
    code, report = run_status(site)
    assert code == 0 and report["state"] == "stopped" and report["inbox"]["waiting"] == 0
    time.sleep(0.05)
    atomic_drop(site.inbox, "late.jpg", part_jpeg(79))  # after the stop: nobody will judge it
    code, report = run_status(site)
    assert code == 1 and report["state"] == "stuck" and report["inbox"]["waiting"] == 1
    (site.inbox / "late.jpg").unlink()
    # a stop with parts still queued: they were seen before the last heartbeat, and still count (found by review)
    proc = start(site)
    try:
        for i in range(40):
            atomic_drop(site.inbox, f"q{i:02d}.jpg", part_jpeg(200 + i))
        wait_for(lambda: len(site.rows()) > 2, 60, "the queue to start", proc, site)
    finally:
        assert stop(proc) == 0
    left = 42 - len(site.rows())
    code, report = run_status(site)
    if left:  # (a fast machine may have judged all 40 before the stop)
        assert code == 1 and report["state"] == "stuck" and report["inbox"]["waiting"] >= left, (left, report)
    else:
        assert code == 0 and report["inbox"]["waiting"] == 0


def test_a_stuck_pipeline_stops_feeding_the_watchdog_and_says_so(tmp_path: Path, models: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker hangs on its part (a hung network read, a deadlock): the main loop still runs, but the watchdog
    is no longer fed, the status file and `inspector status` say stuck; when the part finishes, all is well again."""
    site = make_site(tmp_path / "site", models)
    with open(site.config, "a") as f:
        f.write("\n[metrics]\nstatus_every_s = 0.2\nstuck_s = 1.0\n")
    name = f"inspector-test-{os.getpid()}-s"
    monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    with receiver(name) as sock:
        svc = WatchService(config.load(site.config))
        release = threading.Event()
        judge = svc.intake.take

        def hung(job):  # the judging pipeline hangs until released
            release.wait(60)
            return judge(job)

        svc.intake.take = hung
        t = threading.Thread(target=svc.run, daemon=True)
        t.start()
        try:
            assert svc.ready.wait(30)
            assert messages(sock, 1.0).count("WATCHDOG=1") >= 2
            atomic_drop(site.inbox, "hang.jpg", part_jpeg(7))
            wait_for(lambda: svc.ops.stuck, 20, "the stuck state")
            messages(sock, 0.2)
            assert "WATCHDOG=1" not in messages(sock, 1.5)
            wait_for(lambda: json.loads((site.root / "status.json").read_text())["state"] == "stuck", 10,
                     "the status file to say stuck")
            assert cli.main(["status", "--config", str(site.config)]) == 1
            release.set()
            wait_for(lambda: len(site.rows()) == 1 and not svc.ops.stuck, 30, "the part to finish")
            assert "WATCHDOG=1" in messages(sock, 1.0)
            assert cli.main(["status", "--config", str(site.config)]) == 0
        finally:
            release.set()
            svc.stop()
            t.join(30)


def test_the_systemd_units_use_the_watchdog_and_verify(tmp_path: Path) -> None:
    import configparser
    import shutil

    units = {}
    for name in ("inspector-watch.service", "inspector-review.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read(REPO / "deploy" / name)
        units[name] = parser
    watch = units["inspector-watch.service"]["Service"]
    assert watch["Type"] == "notify" and watch["WatchdogSec"] == "30" and watch["Restart"] == "on-failure"
    assert watch["ExecStart"].split()[1:3] == ["watch", "--config"]
    assert units["inspector-review.service"]["Service"]["ExecStart"].split()[1] == "serve"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the units were only parsed")
    for name in units:  # verify with an executable that exists here
        text = (REPO / "deploy" / name).read_text().replace("/srv/inspector/.venv/bin/inspector", "/bin/true")
        (tmp_path / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in units)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
