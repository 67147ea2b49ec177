"""The watcher's housekeeping for a year on the line (issue 15): disk watermarks, retention, metrics, status, watchdog.

The service calls, and nothing more: start() (the metrics port, the retention thread), ready() (systemd READY=1),
tick() from its main loop, recorded() for each committed verdict, progressed() whenever a part's round ends,
`paused` before dispatching parts, and stop(). Everything here is best effort: a status file that cannot be
written or a prune that fails is logged and tried again, and never stops the line.

* Disk (inspector/diskguard.py): measured every DISK_EVERY_S; below the hard limit the service dispatches nothing
  (`paused`, reported as degraded), below the warning limit on the archive's filesystem the retention thread prunes
  early: first by the policy (what would go at the next daily run), then ok files ahead of schedule, oldest first,
  down to `[retention] early_keep_days`; never defects, reviewed parts or samples. At most every EARLY_EVERY_S;
  when that frees nothing, a warning at most every diskguard.WARN_EVERY_S.
* Retention (inspector/retention.py): daily at `[retention] prune_at` local time, and at start when the last daily
  run recorded in the status file is more than a day old (a watcher that was down at that time).
* Stuck: parts in flight, not degraded, and none finished for `[metrics] stuck_s`. Then the watchdog ping stops
  (systemd restarts the process: WatchdogSec), the status file and the metrics say so, and a line is logged.
* Status file (inspector/status.py) every `[metrics] status_every_s`; metrics (inspector/metrics.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from datetime import time as dt_time
from pathlib import Path
from typing import Any

from inspector import retention, sdnotify, status
from inspector.config import Config, clock_minutes
from inspector.errors import ConfigError
from inspector.diskguard import WARN_EVERY_S, DiskGuard, FreeSpace, free_bytes
from inspector.metrics import Metrics
from inspector.store import DatabaseError, Store

DISK_EVERY_S = 1.0  # free space is measured this often
EARLY_EVERY_S = 60.0  # while the disk is low, an early prune at most this often
TICK_S = 0.25  # the main loop's housekeeping runs at most this often

Emit = Callable[..., None]  # (event, level, text, **fields): the service's log line


def next_daily(now: datetime, at: str) -> datetime:
    """The next local time `at` ("HH:MM") after `now` (aware), as an aware datetime, in the offset of the day it
    falls on (on a daylight-saving day the offset of `now` put 03:00 at 04:00 or 02:00: found by an adversarial
    test). A time the clocks skip that day is that long after the jump (02:30 on a spring-forward night: 03:30), a
    time they pass twice is the first."""
    minutes = clock_minutes(at) or 0
    wall = dt_time(minutes // 60, minutes % 60)
    day = now.astimezone().date()
    for ahead in range(3):
        local = datetime.combine(day + timedelta(days=ahead), wall)
        due = local.astimezone()  # naive: the system's local time, with that day's offset
        if due.time() != wall:  # skipped by the clocks: fold=1 reads it with the offset after the jump
            due = local.replace(fold=1).astimezone()
        if due > now:
            return due
    raise AssertionError("a daily time lies within three days")  # pragma: no cover


def first_daily(now: datetime, at: str, last: str | None) -> datetime | None:
    """When the first daily prune of this run is due: now, when the last one (ISO time) is unknown or more than a
    day old; else at the next `at`. None when `at` is "" (never)."""
    if not at:
        return None
    try:
        previous = datetime.fromisoformat(last) if last else None
    except ValueError:
        previous = None
    if previous is None or previous.tzinfo is None or now - previous > timedelta(days=1):
        return now
    return next_daily(now, at)


def check_status_file(cfg: Config) -> dict[str, Any]:
    """The status file's last content when this config's watcher wrote it (or it does not say whose); {} when a
    stopped watcher of another config did (its last daily prune is not this station's). ConfigError when a running
    watcher of another config writes it (see status.py)."""
    path = Path(cfg.metrics.status_file)
    previous = status.read(path) or {}
    theirs = status.owner(previous, cfg)
    if theirs is None:
        return previous
    if status.live(previous):
        raise ConfigError(f"the status file {path} is written by a running watcher of another config ({theirs}, "
                          f"station {previous.get('station')}): give each config its own [metrics] status_file")
    return {}


class Operations:
    """Disk watermarks, retention, metrics, the status file and the systemd watchdog of one watch service."""

    def __init__(self, cfg: Config, store: Store, emit: Emit, *, folder: Path, archive: Path, overlays: Path,
                 once: bool, counters: Callable[[], Mapping[str, Any]], waiting: Callable[[], int],
                 check_db: Callable[[], None], free: FreeSpace = free_bytes) -> None:
        self.cfg, self.store, self.emit, self.once = cfg, store, emit, once
        self.counters, self.waiting, self.check_db = counters, waiting, check_db
        self.folder = folder
        self._started, self._boot = status.process_started(os.getpid()), status.boot_id()  # pid reuse, reboots
        r = cfg.retention
        volumes = {"archive": archive if cfg.watch.archive else folder}
        if store.file is not None:
            volumes["database"] = Path(os.path.abspath(store.file))
        self.guard = DiskGuard(volumes, r.warn_free_mb, r.min_free_mb, emit, free, prunable=("archive",))
        self.policy = retention.Policy.from_config(r)
        self.roots = retention.Roots(archive, overlays, folder, None if cfg.watch.shared else cfg.station.name)
        self.stuck = False
        self.metrics = Metrics(queue_depth=lambda: float(self.counters()["queue_depth"]),
                               waiting=lambda: float(self.waiting()),
                               degraded=lambda: float(bool(self.counters()["degraded"])),
                               paused=lambda: float(self.guard.paused), stuck=lambda: float(self.stuck))
        self.status_path = Path(cfg.metrics.status_file)
        self.started_at = datetime.now(timezone.utc)
        self.last_prune: dict[str, Any] | None = None
        previous = check_status_file(cfg)
        self.last_daily: str | None = previous.get("last_daily_prune")
        self._next_daily = first_daily(self.started_at, r.prune_at, self.last_daily)
        self._progress_at = time.monotonic()
        self._next = {"tick": 0.0, "disk": 0.0, "status": 0.0, "ping": 0.0, "early": 0.0}
        self._ping_s = sdnotify.watchdog_interval()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._early = False
        self._thread: threading.Thread | None = None
        self._status_error: str | None = None
        self._pruned_seen = (0, 0)
        self._stuck_warned_at: float | None = None  # when "nothing more may be pruned early" was last logged

    # ------------------------------------------------------------------ the service's calls

    @property
    def paused(self) -> bool:
        """True while free disk space is below the hard limit: dispatch no new parts."""
        return self.guard.paused

    def start(self) -> None:
        """Serve the metrics (ConfigError when the port cannot be bound), measure the disk, start retention."""
        m = self.cfg.metrics
        if m.port:
            self.metrics.serve(m.host, m.port)
            self.emit("metrics", logging.INFO, f"metrics on http://{m.host}:{m.port}/metrics")
        self.guard.check()
        if not self.once:
            self._thread = threading.Thread(target=self._retention_loop, name="retention", daemon=True)
            self._thread.start()

    def ready(self) -> None:
        """The service watches: tell systemd (READY=1) and write the first status."""
        sdnotify.notify(f"READY=1\nSTATUS=watching {self.folder}")
        self._write_status(time.monotonic())

    def recorded(self, row: Mapping[str, Any], received_at: datetime | None) -> None:
        """A verdict was committed: count it, and its latency from the file's completion."""
        latency = None
        if received_at is not None and row.get("inspected_at") is not None:
            latency = (row["inspected_at"] - received_at).total_seconds()
        self.metrics.verdict(str(row["verdict"]), latency)

    def progressed(self) -> None:
        """A part's round ended (recorded, a duplicate, left for later): the pipeline moves."""
        self._progress_at = time.monotonic()

    def tick(self, now: float) -> None:
        """From the main loop: disk, stuck detection, watchdog ping, status file (each at its own pace)."""
        if now < self._next["tick"]:
            return
        self._next["tick"] = now + TICK_S
        if now >= self._next["disk"]:
            self._next["disk"] = now + DISK_EVERY_S
            self.guard.check()
            if self.guard.prune_helps and not self.once and now >= self._next["early"]:
                self._next["early"] = now + EARLY_EVERY_S
                self._early = True
                self._wake.set()
        self._watch_progress(now)
        if self._ping_s and now >= self._next["ping"] and not self.stuck:
            self._next["ping"] = now + self._ping_s
            sdnotify.notify("WATCHDOG=1")
        if now >= self._next["status"]:
            self._write_status(now)

    def stop(self) -> None:
        """Stop retention (between two batches), the metrics port; a last status saying stopped."""
        sdnotify.notify("STOPPING=1")
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.metrics.stop()
        self._write_status(time.monotonic(), running=False)

    # ------------------------------------------------------------------ health

    def _watch_progress(self, now: float) -> None:
        """Stuck = parts in flight, not degraded, and none finished for stuck_s; log each change."""
        c = self.counters()
        busy = c["queue_depth"] > 0 and not c["degraded"]
        if not busy:
            self._progress_at = now
        stuck = busy and now - self._progress_at > self.cfg.metrics.stuck_s
        if stuck and not self.stuck:
            self.emit("stuck", logging.ERROR, f"stuck: {c['queue_depth']} parts in flight and none finished for "
                                              f"{self.cfg.metrics.stuck_s:g} s; the systemd watchdog is no longer "
                                              "fed (a unit with WatchdogSec restarts the watcher)")
            sdnotify.notify("STATUS=stuck: no part finished")
        elif self.stuck and not stuck:
            self.emit("stuck", logging.WARNING, "parts are finishing again; no longer stuck")
            sdnotify.notify(f"STATUS=watching {self.folder}")
        self.stuck = stuck

    def _state(self, c: Mapping[str, Any]) -> str:
        """running, degraded, stuck or no_folder (the watch folder is gone: nothing can arrive; found by an
        adversarial test, status said healthy)."""
        if self.stuck:
            return "stuck"
        if c["degraded"]:
            return "degraded"
        return "no_folder" if c.get("folder_gone") else "running"

    def _write_status(self, now: float, running: bool = True) -> None:
        """Rewrite the status file (a failure is logged once until it works again); refresh the metrics."""
        self._next["status"] = now + self.cfg.metrics.status_every_s
        c = self.counters()
        self.metrics.state(c.get("profile_version"), self.guard.free, c.get("drift_alarms") or {})
        data = {
            "pid": os.getpid(), "host": socket.gethostname(), "running": running,
            "pid_started": self._started, "boot_id": self._boot,
            "state": self._state(c) if running else "stopped",
            "started_at": self.started_at.isoformat(), "heartbeat_at": datetime.now(timezone.utc).isoformat(),
            "heartbeat_unix": time.time(), "folder": str(self.folder), "station": self.cfg.station.name,
            "config": str(self.cfg.source) if self.cfg.source is not None else None,
            "profile_version": c.get("profile_version"), "recorded": c.get("judged", 0),
            "verdicts": dict(c.get("verdicts") or {}), "queue_depth": c.get("queue_depth", 0),
            "waiting": self.waiting(), "degraded": bool(c.get("degraded")),
            "degraded_cause": ("disk" if self.guard.paused else "database") if c.get("degraded") else None,
            "paused": self.guard.paused, "disk_low": self.guard.low, "stuck": self.stuck,
            "folder_gone": bool(c.get("folder_gone")), "status_every_s": self.cfg.metrics.status_every_s,
            "disk_free_bytes": dict(self.guard.free), "last_prune": self.last_prune,
            "last_daily_prune": self.last_daily, "metrics_port": self.cfg.metrics.port or None,
            "drift_alarms": dict(c.get("drift_alarms") or {}),
        }
        try:
            status.write_atomic(self.status_path, data)
        except OSError as exc:
            if self._status_error is None:
                self.emit("status", logging.WARNING, f"cannot write the status file {self.status_path}: "
                                                     f"{exc.strerror or exc}; `inspector status` will not see this "
                                                     "watcher until it can")
            self._status_error = str(exc)
            return
        if self._status_error is not None:
            self._status_error = None
            self.emit("status", logging.INFO, f"status file {self.status_path} written again")

    # ------------------------------------------------------------------ retention (its own thread)

    def _retention_loop(self) -> None:
        """Daily and early prunes until stopped."""
        while not self._stop.is_set():
            wait = 60.0
            if self._next_daily is not None:
                wait = min(wait, max(0.0, (self._next_daily - datetime.now(timezone.utc)).total_seconds()))
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._early:
                self._early = False
                self._prune_early()
            elif self._next_daily is not None and datetime.now(timezone.utc) >= self._next_daily:
                self._prune("daily", self.policy)
                self._next_daily = next_daily(datetime.now(timezone.utc), self.cfg.retention.prune_at)

    def _prune_early(self) -> None:
        """The disk is low: the policy's due files first, then ok files ahead of schedule, until there is room."""
        freed = 0
        for policy in (self.policy, self.policy.early(self.cfg.retention.early_keep_days)):
            if self.guard.roomy() or self._stop.is_set():
                break
            report = self._prune("early", policy, enough=self.guard.roomy)
            freed += report.total_bytes if report is not None else 0
        if freed or self.guard.roomy():
            self._stuck_warned_at = None
            return
        now = time.monotonic()  # paced as the disk's own warning (an early run is tried every EARLY_EVERY_S: a line a
        if self._stuck_warned_at is None or now - self._stuck_warned_at >= WARN_EVERY_S:  # minute, found by an
            self._stuck_warned_at = now  # adversarial test)
            self.emit("disk", logging.WARNING, "disk space low and nothing more may be pruned early by the retention "
                                               "policy: free space, or lower [retention] early_keep_days")

    def _prune(self, kind: str, policy: retention.Policy,
               enough: Callable[[], bool] | None = None) -> retention.Report | None:
        """One prune run; logged when it deleted or found anything, or failed."""
        self._pruned_seen = (0, 0)
        at = datetime.now(timezone.utc)
        try:
            report = retention.prune(self.store, policy, self.roots, enough=enough, stop=self._stop,
                                     progress=self._count_pruned, check=self.check_db)
        except DatabaseError as exc:
            self.last_prune = {"at": at.isoformat(), "kind": kind, "files": 0, "bytes": 0, "error": str(exc)}
            self.emit("prune", logging.WARNING, f"{kind} prune failed ({exc}); tried again later")
            return None
        self.last_prune = {"at": at.isoformat(), "kind": kind, "files": report.total_files,
                           "bytes": report.total_bytes, "rows": report.rows, "missing": report.missing,
                           "kept": dict(report.kept)}
        if kind == "daily" and not report.stopped:
            self.last_daily = at.isoformat()
        if report.total_files or report.missing or report.kept:
            text = "; ".join(s.strip() for s in retention.summary(report))
            level = logging.WARNING if report.kept["other_content"] else logging.INFO  # a part's file replaced
            self.emit("prune", level, f"{kind} prune: {text}", files=report.total_files,
                      bytes=report.total_bytes)
        return report

    def _count_pruned(self, report: retention.Report) -> None:
        """Feed the pruned-files counters as a run goes."""
        files, n_bytes = report.total_files, report.total_bytes
        self.metrics.pruned(files - self._pruned_seen[0], n_bytes - self._pruned_seen[1])
        self._pruned_seen = (files, n_bytes)
