"""`inspector bench --stations`: one, two and three stations sharing one folder and one PostgreSQL, against one
station on SQLite, all measured in the same run on the same generated files.

What is measured, exactly:

* Site (once per run, in a fresh temporary folder removed at the end unless `keep`). A profile is trained on
  30 generated good parts at the benchmark's image size (5 MP by default) and activated; the same
  `watchbench` helpers as `inspector bench --watch`. 16 distinct base JPEGs are rendered (12 good, one of each
  defect type). Every dropped file is one of them with a JPEG COM segment ("inspector-watchbench N")
  inserted: distinct sha256, identical pixels. File N is the same bytes in every configuration.
* Four configurations, one after the other, each with a fresh inbox, archive, overlays folder and database:
  - sqlite_1: one station, SQLite (`sqlite:///.../inspector.db`), [watch] shared = false and workers = 0
    (the default: one scoring thread per core);
  - pg_1, pg_2, pg_3: one, two or three `inspector watch` processes on one fresh PostgreSQL database each
    (created on the server of --pg-url, i.e. INSPECTOR_TEST_POSTGRES_URL, through an autocommit connection,
    dropped at the end), all watching the same inbox with [watch] shared = true (each file claimed in the
    database before it is judged) and archiving into the same archive, each with its own config and
    [station] name s1..sN, and workers = max(1, cores // stations) scoring threads per station.
  Every other [watch] key keeps its default (settle_s 1.0, batch_size 64, claim_lease_s 60, ...), except
  stats_every_s = 10. All stations run on this one machine: they compete with each other, with the
  PostgreSQL server and with the dropping bench for the same cores. The figures say what sharing a folder and a
  database costs on one host; they are not a scale-out measurement across hosts.
* Start. The stations are started as real processes (`python -m inspector watch --config ...`); the bench
  waits until each has logged " watching ".
* Warm-up (not timed). One file of each base is dropped per round and all are waited for, until every station
  has committed at least one defect verdict (the first defect imports the overlay code, about a second), at
  most WARMUP_ROUNDS rounds.
* Throughput phase. The bench drops `parts` files as fast as it can (written to `.NAME.tmp`, renamed to
  `part-NNNNNN.jpg`), keeping at most `max_backlog` dropped but not yet committed (the committed count is read
  from the database at most every POLL_S). <config>_images_per_s = parts / (the latest inspected_at over all
  stations, i.e. the last commit - the wall time the first drop began). <config>_over_sqlite_1 is its ratio
  to sqlite_1. watcher_cpu_cores: CPU seconds used by all stations of a configuration during the phase per
  wall second (the PostgreSQL server's CPU is not included).
* Disk. The bench deletes archived copies under the shared archive about once a second (overlays are kept).
* End. SIGTERM to every station (watcher_exits_ok: every exit code 0). rows_ok is true when, in every
  configuration, the database holds exactly one row per dropped file (warm-up included) and their
  (name, sha256) pairs are exactly those of the dropped bytes; rows_by_station shows how the work was shared.

The databases are read with plain sqlite3 (read-only) and psycopg, never through the code under test. Nothing
here is a pass/fail test: the figures are reported.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from inspector.errors import InspectorError
from inspector.profile import ProfileParams
from inspector.tooling.watchbench import (FIVE_MP, STALL_S, Log, _sha256, _utc_epoch, cpu_s, make_bases, prune_archive,
                                  start_watcher, stop_watcher, tagged, train_profile)

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONFIGS = (("sqlite_1", "sqlite", 1), ("pg_1", "pg", 1), ("pg_2", "pg", 2), ("pg_3", "pg", 3))
WARMUP_ROUNDS = 6
POLL_S = 0.01  # the committed count is read at most this often (the same for both databases)
PROGRESS_S = 2.0
DB_PREFIX = "inspector_bench_"


def pg_url_default() -> str:
    """INSPECTOR_TEST_POSTGRES_URL when set, else the local test server."""
    return os.environ.get("INSPECTOR_TEST_POSTGRES_URL", "").strip() or DEFAULT_PG_URL


# ---------------------------------------------------------------------------------------------- PostgreSQL


def _conninfo(url: str) -> str:
    """A libpq URI for psycopg from a SQLAlchemy URL (the driver suffix dropped)."""
    import sqlalchemy as sa

    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgServer:
    """The PostgreSQL server of --pg-url: fresh databases created through an autocommit connection, dropped later."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError:
            raise InspectorError(f"--pg-url {url!r} is not a database URL") from None
        if parsed.get_backend_name() != "postgresql":
            raise InspectorError(f"--pg-url must be a postgresql URL, got {parsed.get_backend_name()!r}")
        self.url = url
        self.shown = parsed.render_as_string(hide_password=True)
        self.created: list[str] = []
        self.admin = self._connect(url)

    def _connect(self, url: str):
        """An autocommit psycopg connection, or a one-line error."""
        import psycopg

        try:
            return psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InspectorError(f"bench --stations: cannot reach PostgreSQL at {self.shown} ({first})") from None

    def drop_stale(self) -> None:
        """Drop leftovers of crashed runs (older than an hour, nobody connected)."""
        import psycopg

        rows = self.admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                  (DB_PREFIX.replace("_", "\\_") + "%",)).fetchall()
        for (name,) in rows:
            found = re.fullmatch(DB_PREFIX + r"(\d+)_[0-9a-f]+", name)
            if found and time.time() - int(found.group(1)) > 3600:
                try:
                    self.admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
                except psycopg.Error:
                    pass  # still in use

    def new_database(self) -> tuple[str, str]:
        """Create a fresh empty database; returns (name, SQLAlchemy URL)."""
        import sqlalchemy as sa

        name = f"{DB_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
        self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        self.created.append(name)
        return name, sa.make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop every database this run created (disconnecting whoever is left) and close."""
        for name in self.created:
            self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.close()

    def close(self) -> None:
        if not self.admin.closed:
            self.admin.close()


# ---------------------------------------------------------------------------------------------- reading verdicts


class Reader:
    """Plain, independent reads of the inspections table (sqlite3 read-only, or psycopg autocommit)."""

    def __init__(self, kind: str, target: str):
        self.kind = kind
        if kind == "sqlite":
            self.con = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=30)
        else:
            import psycopg

            self.con = psycopg.connect(_conninfo(target), autocommit=True, connect_timeout=5)

    def rows(self, sql: str) -> list[tuple]:
        return list(self.con.execute(sql).fetchall())

    def count(self) -> int:
        return self.rows("SELECT count(*) FROM inspections")[0][0]

    def last_commit(self) -> float:
        """The latest inspected_at as epoch seconds (SQLite: naive-UTC text; PostgreSQL: timestamptz)."""
        value = self.rows("SELECT max(inspected_at) FROM inspections")[0][0]
        return value.timestamp() if isinstance(value, datetime) else _utc_epoch(value)

    def close(self) -> None:
        self.con.close()


# ---------------------------------------------------------------------------------------------- one configuration


@dataclass
class Station:
    name: str
    config: Path
    log: Path
    proc: subprocess.Popen | None = None


@dataclass
class Setup:
    """One configuration's folders, stations and database."""

    label: str
    kind: str
    root: Path
    workers: int
    db_target: str  # the SQLite file, or the PostgreSQL URL
    stations: list[Station] = field(default_factory=list)

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def archive(self) -> Path:
        return self.root / "archive"


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these)."""
    return json.dumps(value)


def make_setup(label: str, kind: str, n: int, root: Path, models: Path, db_url: str | None, cores: int) -> Setup:
    """Folders and one config per station. SQLite: defaults (shared = false, workers = 0); PostgreSQL: shared."""
    root.mkdir(parents=True)
    (root / "inbox").mkdir()
    if kind == "sqlite":
        target = str(root / "inspector.db")
        url, workers = f"sqlite:///{target}", 0
    else:
        assert db_url is not None
        target = url = db_url
        workers = max(1, cores // n)
    setup = Setup(label, kind, root, workers if workers else cores, target)
    for i in range(1, n + 1):
        name = f"s{i}" if kind == "pg" else "sqlite-1"
        folder = root / name
        folder.mkdir()
        watch = [f"dir = {_toml(str(root / 'inbox'))}", f"archive_dir = {_toml(str(root / 'archive'))}",
                 f"overlays_dir = {_toml(str(root / 'overlays'))}", "stats_every_s = 10.0"]
        if kind == "pg":
            watch += ["shared = true", f"workers = {workers}"]
        text = "\n".join(["[models]", f"dir = {_toml(str(models))}", "", "[database]", f"url = {_toml(url)}", "",
                          "[station]", f"name = {_toml(name)}", 'line = "L1"', f'camera = "cam-{i}"', "",
                          "[watch]", *watch]) + "\n"
        (folder / "config.toml").write_text(text)
        setup.stations.append(Station(name, folder / "config.toml", folder / "watch.log"))
    return setup


class Runner:
    """Drives one configuration: starts its stations, drops files, follows the database, stops them."""

    def __init__(self, setup: Setup, bases: list[bytes], log: Log):
        self.s = setup
        self.bases = bases
        self.log = log
        self.reader: Reader | None = None
        self.dropped = 0
        self.committed = 0
        self._last_poll = 0.0
        self._last_change = time.monotonic()
        self._last_progress = 0.0
        self._last_cleanup = 0.0

    # ---- processes

    def start(self) -> None:
        for st in self.s.stations:
            st.proc = start_watcher(st.config, st.log)
        deadline = time.monotonic() + 120.0
        for st in self.s.stations:
            while " watching " not in st.log.read_text(errors="replace"):
                self._check_alive()
                if time.monotonic() > deadline:
                    self._fail(f"station {st.name} did not start within 120 s")
                time.sleep(0.05)
        self.reader = Reader(self.s.kind, self.s.db_target)

    def stop(self) -> list[int]:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        return [stop_watcher(st.proc) for st in self.s.stations if st.proc is not None]

    def pids(self) -> list[int]:
        return [st.proc.pid for st in self.s.stations if st.proc is not None]

    def _check_alive(self) -> None:
        for st in self.s.stations:
            if st.proc is not None and st.proc.poll() is not None:
                self._fail(f"station {st.name} exited with code {st.proc.returncode}")

    def _fail(self, what: str) -> None:
        tails = []
        for st in self.s.stations:
            text = st.log.read_text(errors="replace")[-1500:] if st.log.exists() else ""
            tails.append(f"--- {st.name} log (end) ---\n{text}")
        raise InspectorError(f"bench --stations ({self.s.label}): {what}\n" + "\n".join(tails))

    # ---- following progress

    def tick(self, phase: str, target: int, force: bool = False) -> None:
        """Refresh the committed count (at most every POLL_S), prune the archive, report progress."""
        now = time.monotonic()
        if not force and now - self._last_poll < POLL_S:
            return
        self._last_poll = now
        self._check_alive()
        assert self.reader is not None
        count = self.reader.count()
        if count != self.committed:
            self.committed, self._last_change = count, now
        elif self.dropped > count and now - self._last_change > STALL_S:
            self._fail(f"no new verdict for {STALL_S:.0f} s ({count} committed, {self.dropped} dropped)")
        if now - self._last_cleanup > 1.0:
            self._prune_archive()
            self._last_cleanup = now
        if now - self._last_progress > PROGRESS_S:
            self.log(f"{self.s.label} {phase}: {count}/{target} committed, {self.dropped} dropped")
            self._last_progress = now

    def _prune_archive(self) -> None:
        """Delete the archived copies (see watchbench.prune_archive)."""
        prune_archive(self.s.archive)

    def wait_committed(self, n: int, phase: str) -> None:
        while True:
            self.tick(phase, n, force=True)
            if self.committed >= n:
                return
            time.sleep(POLL_S)

    # ---- dropping

    def drop(self) -> None:
        n = self.dropped
        name = f"part-{n:06d}.jpg"
        tmp = self.s.inbox / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            for piece in tagged(self.bases[n % len(self.bases)], n):
                fh.write(piece)
        os.rename(tmp, self.s.inbox / name)
        self.dropped += 1

    def drop_fast(self, total: int, max_backlog: int, phase: str) -> None:
        while self.dropped < total:
            self.tick(phase, total)
            if self.dropped - self.committed >= max_backlog:
                time.sleep(0.005)
                self.tick(phase, total, force=True)
                continue
            self.drop()

    # ---- phases

    def warm_up(self, max_backlog: int) -> int:
        """Rounds of one file per base until every station committed a defect verdict; returns files dropped."""
        assert self.reader is not None
        names = {st.name for st in self.s.stations}
        for _ in range(WARMUP_ROUNDS):
            self.drop_fast(self.dropped + len(self.bases), max_backlog, "warm-up")
            self.wait_committed(self.dropped, "warm-up")
            warm = {r[0] for r in self.reader.rows("SELECT DISTINCT station FROM inspections WHERE verdict = 'defect'")}
            if names <= warm:
                break
        else:
            self.log(f"{self.s.label} warm-up: not every station judged a defect after {WARMUP_ROUNDS} rounds")
        return self.dropped

    def throughput(self, parts: int, max_backlog: int) -> tuple[float, float]:
        """(parts per second from the first drop to the last commit, stations' CPU cores used)."""
        assert self.reader is not None
        until = self.dropped + parts
        first_drop = time.time()
        cpu0 = sum(cpu_s(pid) for pid in self.pids())
        self.drop_fast(until, max_backlog, "throughput")
        self.wait_committed(until, "throughput")
        wall = time.time() - first_drop
        cpu = (sum(cpu_s(pid) for pid in self.pids()) - cpu0) / wall
        return parts / (self.reader.last_commit() - first_drop), cpu


def _check_rows(setup: Setup, bases: list[bytes], total: int) -> tuple[bool, dict[str, int]]:
    """After the stop: exactly one row per dropped file with its sha256; and rows per station."""
    reader = Reader(setup.kind, setup.db_target)
    try:
        rows = reader.rows("SELECT name, sha256 FROM inspections")
        by_station = dict(reader.rows("SELECT station, count(*) FROM inspections GROUP BY station ORDER BY station"))
    finally:
        reader.close()
    expected = {f"part-{n:06d}.jpg": _sha256(tagged(bases[n % len(bases)], n)) for n in range(total)}
    return len(rows) == total and dict(rows) == expected, {k: int(v) for k, v in by_station.items()}


# ---------------------------------------------------------------------------------------------- the run


def run(parts: int = 600, max_backlog: int = 400, pg_url: str | None = None, keep: bool = False,
        params: ProfileParams | None = None, size: tuple[int, int] = FIVE_MP, log: Log = lambda s: None) -> dict:
    """Run the whole benchmark and return its figures (see the module docstring)."""
    if min(parts, max_backlog) < 1:
        raise InspectorError("--parts and --max-backlog must be at least 1")
    server = PgServer(pg_url or pg_url_default())  # unreachable: one line, before any work
    root: Path | None = None
    try:
        server.drop_stale()
        root = Path(tempfile.mkdtemp(prefix="inspector-stationbench-"))
        result = _run_in(root, server, parts, max_backlog, params or ProfileParams(), size, log)
    finally:
        if keep:
            server.close()
            log(f"kept {root} and the databases {', '.join(server.created) or '-'}")
        else:
            server.drop_all()
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
    result["folder"] = str(root) if keep else None
    result["pg_databases"] = list(server.created)
    return result


def _run_in(root: Path, server: PgServer, parts: int, max_backlog: int, params: ProfileParams,
            size: tuple[int, int], log: Log) -> dict:
    cores = os.cpu_count() or 1
    models = root / "models"
    log(f"training a profile on generated good parts at {size[0]}x{size[1]} ...")
    train_profile(models, params, size, cores)
    log(f"generating base JPEGs at {size[0]}x{size[1]} ...")
    bases = make_bases(size, cores)
    rates: dict[str, float] = {}
    cpu: dict[str, float] = {}
    ok: dict[str, bool] = {}
    by_station: dict[str, dict[str, int]] = {}
    workers: dict[str, int] = {}
    warmup: dict[str, int] = {}
    exits_ok = True
    for label, kind, n in CONFIGS:
        db_url = server.new_database()[1] if kind == "pg" else None
        setup = make_setup(label, kind, n, root / label, models, db_url, cores)
        workers[label] = setup.workers
        runner = Runner(setup, bases, log)
        log(f"{label}: {n} station(s), {'PostgreSQL, shared folder' if kind == 'pg' else 'SQLite'}, "
            f"{setup.workers} workers each; dropping {parts} files (backlog at most {max_backlog}) ...")
        try:
            runner.start()
            warmup[label] = runner.warm_up(max_backlog)
            rates[label], cpu[label] = runner.throughput(parts, max_backlog)
            time.sleep(0.5)  # let the last batch's archive moves and claim releases land before the stop
        finally:
            codes = runner.stop()
        exits_ok = exits_ok and all(c == 0 for c in codes)
        ok[label], by_station[label] = _check_rows(setup, bases, runner.dropped)
        log(f"{label}: {rates[label]:.1f} parts/s, rows {'ok' if ok[label] else 'WRONG'}, per station {by_station[label]}")
    base = rates["sqlite_1"]
    return {
        "sqlite_1_images_per_s": rates["sqlite_1"],
        "pg_1_images_per_s": rates["pg_1"],
        "pg_2_images_per_s": rates["pg_2"],
        "pg_3_images_per_s": rates["pg_3"],
        "pg_1_over_sqlite_1": rates["pg_1"] / base,
        "pg_2_over_sqlite_1": rates["pg_2"] / base,
        "pg_3_over_sqlite_1": rates["pg_3"] / base,
        "rows_ok": all(ok.values()),
        "parts": parts,
        "cores": cores,
        "workers_per_station": workers,
        "rows_ok_by_config": ok,
        "rows_by_station": by_station,
        "warmup_parts": warmup,
        "watcher_cpu_cores": cpu,
        "watcher_exits_ok": exits_ok,
        "max_backlog": max_backlog,
        "image_size": f"{size[0]}x{size[1]}",
    }
