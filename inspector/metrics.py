"""Prometheus metrics of the watcher (issue 15, item 4), on `[metrics] host:port` (off while port = 0).

Each service has its own CollectorRegistry (never the process-wide default one), so two services in one process
(the tests) do not mix their numbers. Gauges that describe the present (queue depth, files waiting, degraded,
paused, stuck) are read from the service when scraped; counters and the histogram are fed as verdicts are
committed and files pruned.

| metric | type | what |
|---|---|---|
| inspector_parts_total{verdict} | counter | verdicts recorded by this process (ok, defect, rejected) |
| inspector_latency_seconds | histogram | file complete -> verdict committed |
| inspector_queue_depth | gauge | parts dispatched and not finished (queued, judging, committing) |
| inspector_waiting_files | gauge | files seen in the folder and not yet dispatched (settling, or held while paused) |
| inspector_degraded | gauge | 1 while parts are not being taken or recorded (database away, disk full) |
| inspector_intake_paused | gauge | 1 while the disk is below [retention] min_free_mb |
| inspector_stuck | gauge | 1 while parts are in flight and none finished for [metrics] stuck_s |
| inspector_profile_info{version} | info | the active profile version |
| inspector_disk_free_bytes{volume} | gauge | free bytes on the archive's and the database's filesystems |
| inspector_pruned_files_total, _bytes_total | counter | files (parts, overlays) deleted by retention |
| inspector_heartbeat_timestamp_seconds | gauge | the main loop's last turn (Unix time) |
| inspector_drift_alarm{product, signal} | gauge | 1 while a drift or streak alarm is up (drift.SIGNALS: a lamp drifting, the camera out of focus or moved, parts flagged at one place ...), refreshed with the status file |
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from inspector.drift import SIGNALS
from inspector.errors import ConfigError

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
VERDICTS = ("ok", "defect", "rejected")


class Metrics:
    """One service's metrics in their own registry, optionally served over HTTP."""

    def __init__(self, queue_depth: Callable[[], float], waiting: Callable[[], float],
                 degraded: Callable[[], float], paused: Callable[[], float], stuck: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.parts = Counter("inspector_parts", "Verdicts recorded by this watcher", ["verdict"], registry=r)
        for verdict in VERDICTS:
            self.parts.labels(verdict)
        self.latency = Histogram("inspector_latency_seconds", "File complete to verdict committed, seconds",
                                 buckets=LATENCY_BUCKETS, registry=r)
        for name, doc, fn in (
            ("inspector_queue_depth", "Parts dispatched and not finished", queue_depth),
            ("inspector_waiting_files", "Files seen in the folder and not yet dispatched", waiting),
            ("inspector_degraded", "1 while parts are not taken or recorded (database away, disk full)", degraded),
            ("inspector_intake_paused", "1 while free disk space is below [retention] min_free_mb", paused),
            ("inspector_stuck", "1 while parts are in flight and none finished for [metrics] stuck_s", stuck),
        ):
            Gauge(name, doc, registry=r).set_function(fn)
        self.profile = Info("inspector_profile", "The active profile", registry=r)
        self._version: str | None = None
        self.disk_free = Gauge("inspector_disk_free_bytes", "Free bytes on the filesystem", ["volume"], registry=r)
        self.pruned_files = Counter("inspector_pruned_files", "Files deleted by retention", registry=r)
        self.pruned_bytes = Counter("inspector_pruned_bytes", "Bytes deleted by retention", registry=r)
        self.heartbeat = Gauge("inspector_heartbeat_timestamp_seconds", "The main loop's last turn", registry=r)
        self.drift = Gauge("inspector_drift_alarm", "1 while the drift or streak alarm is up", ["product", "signal"],
                           registry=r)
        self._alarms: set[tuple[str, str]] = {("default", s) for s in SIGNALS}  # every series shown, 0 or 1
        for product, signal in self._alarms:
            self.drift.labels(product, signal).set(0)
        self._server: Any = None
        self._thread: Any = None

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on host:port in a daemon thread; ConfigError naming the key when it cannot bind."""
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ConfigError(f"cannot serve metrics on [metrics] host {host} port {port}: {why}") from None

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) served, when serving."""
        return self._server.server_address[:2] if self._server is not None else None

    def stop(self) -> None:
        """Stop serving (the port closes)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verdict(self, verdict: str, latency_s: float | None) -> None:
        """One committed verdict, with its latency when known."""
        self.parts.labels(verdict).inc()
        if latency_s is not None:
            self.latency.observe(max(0.0, latency_s))

    def state(self, version: str | None, free: dict[str, int | None],
              alarms: Mapping[str, Sequence[str]] | None = None) -> None:
        """The slowly changing values: active profile, free space, heartbeat, the drift alarms up ({product:
        [signal, ...]})."""
        if version != self._version:
            self._version = version
            self.profile.info({"version": version or ""})
        for volume, n in free.items():
            if n is not None:
                self.disk_free.labels(volume).set(n)
        self.heartbeat.set(time.time())
        up = {(product, signal) for product, signals in (alarms or {}).items() for signal in signals}
        for product in {p for p, _ in up}:  # a product seen: all its series, so that a rule sees them return to 0
            self._alarms.update((product, s) for s in SIGNALS)
        for key in self._alarms:
            self.drift.labels(*key).set(1.0 if key in up else 0.0)

    def pruned(self, files: int, n_bytes: int) -> None:
        """Files deleted by retention."""
        if files:
            self.pruned_files.inc(files)
        if n_bytes:
            self.pruned_bytes.inc(n_bytes)
