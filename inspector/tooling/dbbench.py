"""`inspector bench --db`: the everyday reads of a long verdict log, timed on a scratch database.

* Fill. `rows` inspections are recorded through `Store.record`, BATCH rows per call (one write transaction
  each), as one line at 2 parts per second would have recorded them: the parts are spread over rows / 2
  seconds ending now, 90% of them from station `press-1` and 10% from `press-2` (interleaved), 3% judged
  defect (with an overlay path), 0.5% rejected (lighting, truncated, not_an_image; some without a sha256),
  the rest ok. 30% of the defects get an operator decision (80% "defect", 20% "good"; one in ten of them a
  second, later decision that supersedes the first), and 1 in 2,000 ok parts is marked a missed defect. Reviews
  are added in bulk beside each batch (`Store.add_reviews`, one transaction per batch, which keeps hour_counts
  as `Store.add_review` does: that is one transaction per decision and would dominate the fill). Progress goes
  to stderr. Here SQLite fills about 12,000-17,000 rows/s
  and PostgreSQL 4,000 (10 million rows: 10-15 minutes, 40); `template` fills once and copies (SQLite: a file
  under TEMPLATES; PostgreSQL: CREATE DATABASE ... TEMPLATE), and PostgreSQL gets the VACUUM ANALYZE that
  autovacuum would give a table after a bulk load.
* Reads. Each CLI read is the real command (`python -m inspector ... --config`) in a fresh process, timed
  from start to exit (interpreter start-up and imports included, as an operator sees it), its peak memory the
  child's ru_maxrss from wait4, taken by a small launcher process (see Launcher); median of `runs`. The windows
  (8h, 24h, 7d) end at the log's end, given as absolute times, so a template filled earlier is read as it was
  then. The review pages are requested through Flask's test client in one fresh process (the app built once,
  as `inspector serve` does; its ranges' "now" is the log's end): each page once untimed, then `runs` times,
  median time; that process's peak memory is reported once. Export writes CSV to /dev/null: rows/s = rows /
  wall time, and after start-up (less the time of an export of no rows).
* CPU seconds beside each time (user + system of the read's process, from wait4; process_time for a page):
  on a machine shared with other work the wall time grows with the load, the CPU time hardly.
* Scratch. SQLite: a file in a temporary folder (removed at the end unless `keep`). PostgreSQL (`url`): a fresh
  database `inspector_dbbench_<time>_<hex>` on that server, dropped at the end unless `keep`.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

BATCH = 10_000
RATE_PER_S = 2.0
DEFECT_RATE, REJECT_RATE, SECOND_STATION = 0.03, 0.005, 0.10
REVIEWED, REVIEWED_GOOD, REVIEWED_TWICE, MISSED_EVERY = 0.30, 0.20, 0.10, 2_000
REASONS = ("lighting", "truncated", "not_an_image")
Log = Callable[[str], None]


def _quiet(_text: str) -> None:
    """Discard a progress line."""


def make_rows(start: int, n: int, total: int, end: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """Rows start .. start+n-1 of `total`, the last one inspected at `end`, 1 / RATE_PER_S seconds apart."""
    rows = []
    for i in range(start, start + n):
        at = end - timedelta(seconds=(total - 1 - i) / RATE_PER_S, microseconds=rng.randrange(400_000))
        station = "press-2" if rng.random() < SECOND_STATION else "press-1"
        u = rng.random()
        verdict = "defect" if u < DEFECT_RATE else "rejected" if u < DEFECT_RATE + REJECT_RATE else "ok"
        digest = hashlib.sha256(f"dbbench {i}".encode()).hexdigest()
        name = f"part-{i:09d}.jpg"
        row: dict[str, Any] = {
            "sha256": digest, "source_key": None, "name": name, "source_path": f"/srv/inbox/{station}/{name}",
            "archived_path": f"/srv/archive/{verdict}/{at:%Y-%m-%d}/{name}", "size": 1_800_000 + rng.randrange(90_000),
            "width": 2592, "height": 1944, "received_at": at - timedelta(milliseconds=300 + rng.randrange(200)),
            "inspected_at": at, "verdict": verdict, "reason": None, "detail": None, "score": None,
            "threshold": None, "profile_version": "v3", "overlay_path": None, "ms": 180 + rng.random() * 60,
            "station": station, "line": "L1", "camera": "top", "exposure": 1.0 + rng.gauss(0, 0.01),
            "published_at": at + timedelta(milliseconds=50)}
        if verdict == "rejected":
            reason = rng.choice(REASONS)
            row.update(reason=reason, detail=f"{reason} (dbbench)", profile_version=None, exposure=None)
            if reason == "not_an_image" and rng.random() < 0.5:
                row.update(sha256=None, source_key=f"inode:{i}:{int(at.timestamp())}")
        else:
            score = rng.gauss(5.0, 0.6) if verdict == "ok" else 8.0 + rng.expovariate(0.5)
            row.update(score=score, threshold=7.2)
            if verdict == "defect":
                row["overlay_path"] = f"/srv/overlays/{digest}.jpg"
        rows.append(row)
    return rows


def make_reviews(recorded: list[tuple[int, dict[str, Any]]], rng: random.Random) -> list[dict[str, Any]]:
    """Operator decisions on some of the recorded (id, row) pairs: defects reviewed, a few missed ok parts."""
    reviews = []
    for id_, row in recorded:
        at = row["inspected_at"] + timedelta(minutes=5 + rng.randrange(600))
        if row["verdict"] == "defect" and rng.random() < REVIEWED:
            decision = "good" if rng.random() < REVIEWED_GOOD else "defect"
            if rng.random() < REVIEWED_TWICE:
                first = "defect" if decision == "good" else "good"
                reviews.append({"inspection_id": id_, "decision": first, "note": "first look", "reviewer": "ana",
                                "reviewed_at": at})
                at += timedelta(minutes=30)
            reviews.append({"inspection_id": id_, "decision": decision, "note": None, "reviewer": "ben",
                            "reviewed_at": at})
        elif row["verdict"] == "ok" and rng.random() < 1 / MISSED_EVERY:
            reviews.append({"inspection_id": id_, "decision": "defect", "note": "found at the next station",
                            "reviewer": "ana", "reviewed_at": at})
    return reviews


def fill(url: str, rows: int, *, end: datetime | None = None, seed: int = 0, batch: int = BATCH,
         log: Log = _quiet) -> dict[str, Any]:
    """Fill the (migrated, empty) database at `url` with `rows` inspections and their reviews; returns counts and
    the fill time."""
    from inspector.store import Store

    end = end or datetime.now(timezone.utc)
    rng = random.Random(seed)
    reviews = 0
    began = time.perf_counter()
    shown = began
    with Store(url) as store:
        for start in range(0, rows, batch):
            chunk = make_rows(start, min(batch, rows - start), rows, end, rng)
            ids = store.record(chunk)
            decided = make_reviews([(i, r) for i, r in zip(ids, chunk) if i is not None], rng)
            reviews += len(store.add_reviews(decided))
            now = time.perf_counter()
            done = start + len(chunk)
            if now - shown >= 5 or done == rows:
                shown = now
                log(f"filled {done:,} / {rows:,} rows ({done / (now - began):,.0f} rows/s)")
    return {"rows": rows, "reviews": reviews, "fill_s": round(time.perf_counter() - began, 1)}


# ---------------------------------------------------------------------------------------------- scratch databases

TEMPLATES = Path(tempfile.gettempdir()) / "inspector-dbbench-templates"  # --template: filled logs kept for reuse


@dataclass
class Scratch:
    """A scratch database: its URL, and where it ends (`end`: the newest part's time, the reads' "now")."""

    url: str
    end: datetime
    fill: dict[str, Any]


def _admin(url: str) -> Any:
    """An autocommit engine on the PostgreSQL server of `url` (its own database), for CREATE/DROP DATABASE."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def _pg_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name`."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _vacuum(url: str) -> None:
    """VACUUM ANALYZE a PostgreSQL database: what autovacuum does a while after a bulk load (the visibility map
    lets counts read indexes only; the statistics let the planner choose)."""
    engine = _admin(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()


def _sidecar(path: Path) -> Path:
    """The JSON file beside a SQLite template that records its fill (end time, counts)."""
    return path.with_suffix(".json")


@contextmanager
def scratch(rows: int, folder: Path, url: str | None, *, template: bool, keep: bool, log: Log) -> Iterator[Scratch]:
    """A migrated scratch database filled with `rows` parts: a SQLite file in `folder`, or a fresh database on the
    PostgreSQL server of `url`; with `template`, filled once (kept under TEMPLATES, or as the PostgreSQL database
    inspector_dbbench_tpl_<rows>_<head>) and copied for each run. Removed at the end unless `keep`."""
    from inspector.store import HEAD

    if url is None:
        path = folder / "inspector.db"
        db_url = f"sqlite:///{path}"
        if template:
            tpl = TEMPLATES / f"rows-{rows}-{HEAD}.db"
            if not tpl.exists():
                TEMPLATES.mkdir(parents=True, exist_ok=True)
                log(f"filling the template {tpl} once")
                end = datetime.now(timezone.utc)
                info = fill(f"sqlite:///{tpl}", rows, end=end, log=log)
                _sidecar(tpl).write_text(json.dumps({**info, "end": end.isoformat()}))
            info = json.loads(_sidecar(tpl).read_text())
            shutil.copyfile(tpl, path)
            yield Scratch(db_url, datetime.fromisoformat(info.pop("end")), {**info, "template": str(tpl)})
            return
        end = datetime.now(timezone.utc)
        yield Scratch(db_url, end, fill(db_url, rows, end=end, log=log))
        return
    name = f"inspector_dbbench_{int(time.time())}_{secrets.token_hex(4)}"
    admin = _admin(url)
    try:
        tpl_name = f"inspector_dbbench_tpl_{rows}_{HEAD}"
        with admin.connect() as conn:
            if template:
                exists = conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %(n)s",
                                              {"n": tpl_name}).first()
                if exists is None:
                    conn.exec_driver_sql(f'CREATE DATABASE "{tpl_name}" TEMPLATE template0')
                    log(f"filling the template database {tpl_name} once")
                    end = datetime.now(timezone.utc)
                    info = fill(_pg_database(url, tpl_name), rows, end=end, log=log)
                    _vacuum(_pg_database(url, tpl_name))
                    described = json.dumps({**info, "end": end.isoformat()})
                    conn.exec_driver_sql(f"COMMENT ON DATABASE \"{tpl_name}\" IS '{described}'")
                comment = conn.exec_driver_sql("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                               "WHERE datname = %(n)s", {"n": tpl_name}).scalar()
                conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{tpl_name}"')
                info = json.loads(comment)
                end, fill_info = datetime.fromisoformat(info.pop("end")), {**info, "template": tpl_name}
            else:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        db_url = _pg_database(url, name)
        if not template:
            end = datetime.now(timezone.utc)
            fill_info = fill(db_url, rows, end=end, log=log)
            log("VACUUM ANALYZE (what autovacuum does after a bulk load)")
            _vacuum(db_url)
        yield Scratch(db_url, end, fill_info)
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %(n)s "
                                     "AND pid <> pg_backend_pid()", {"n": name})
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        else:
            log(f"kept database {name}")
        admin.dispose()


# ---------------------------------------------------------------------------------------------- timing reads


# A process's peak memory (ru_maxrss from wait4) counts the memory of the process it was forked from until it
# calls exec (Linux records the old address space's high-water mark at exec). Forked from this bench, which holds
# the fill's libraries, every read would show at least the bench's own size. So the reads are started by a small
# launcher (a bare interpreter started at the beginning) and their figures read from its wait4.
_LAUNCHER = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    out = open(job["stdout"], "w") if job["stdout"] else subprocess.DEVNULL
    began = time.perf_counter()
    proc = subprocess.Popen(job["argv"], stdout=out, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    if job["stdout"]:
        out.close()
    print(json.dumps({"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss,
                      "code": os.waitstatus_to_exitcode(status), "stderr": err[-4000:]}), flush=True)
"""


class Launcher:
    """The small process that starts each timed read (see _LAUNCHER)."""

    def __init__(self) -> None:
        """Start it (a bare interpreter: no site packages imported)."""
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str], stdout: Path | None = None) -> tuple[float, float, str, float]:
        """Run a command to its end (its output to `stdout` or discarded); (wall seconds, its peak resident memory
        in MB, its stderr, its CPU seconds: user + system). RuntimeError when it fails."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "stdout": str(stdout) if stdout else ""}) + "\n")
        self.proc.stdin.flush()
        done = json.loads(self.proc.stdout.readline())
        if done["code"] != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done['code']}): {done['stderr'].strip()[-500:]}")
        return done["seconds"], done["maxrss_kb"] / 1024, done["stderr"], done["cpu"]

    def close(self) -> None:
        """Let it end."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def cli_reads(end: datetime) -> dict[str, list[str]]:
    """The operator's CLI reads (arguments after `inspector`), their windows ending at `end` (absolute times, so
    a template filled earlier is read as it was then)."""
    def ago(span: timedelta) -> str:
        return (end - span).isoformat()

    return {
        "list": ["list"],
        "list --verdict defect --since 8h": ["list", "--verdict", "defect", "--since", ago(timedelta(hours=8))],
        "list --unreviewed": ["list", "--unreviewed"],
        "stats --by hour --since 24h": ["stats", "--by", "hour", "--since", ago(timedelta(hours=24))],
        "stats --by day --since all": ["stats", "--by", "day", "--since", "all"],
        "stats --by shift --since 7d": ["stats", "--by", "shift", "--since", ago(timedelta(days=7))],
    }


def time_cli(launcher: Launcher, config: Path, end: datetime, runs: int, log: Log) -> dict[str, dict[str, float]]:
    """Each CLI read `runs` times in a fresh process: median seconds, median CPU seconds (user + system: what the
    read costs whatever else runs on the machine) and the largest peak memory."""
    out = {}
    for label, argv in cli_reads(end).items():
        results = [launcher.run([sys.executable, "-m", "inspector", *argv, "--config", str(config)])
                   for _ in range(runs)]
        out[label] = {"seconds": round(statistics.median(r[0] for r in results), 3),
                      "cpu_s": round(statistics.median(r[3] for r in results), 3),
                      "peak_mb": round(max(r[1] for r in results), 1)}
        log(f"{label}: {out[label]['seconds']} s ({out[label]['cpu_s']} s CPU), {out[label]['peak_mb']} MB")
    return out


def time_export(launcher: Launcher, config: Path, end: datetime, runs: int, log: Log) -> dict[str, Any]:
    """`export --csv - --since 7d` and `--since 24h` (to /dev/null), in fresh processes: rows, median seconds,
    rows per second (also after start-up: less the time of an export of no rows) and the largest peak memory
    (flat memory: the same for both)."""
    def export(since: datetime) -> list[tuple[float, float, str, float]]:
        return [launcher.run([sys.executable, "-m", "inspector", "export", "--csv", "-", "--since", since.isoformat(),
                              "--config", str(config)]) for _ in range(runs)]

    startup = statistics.median(r[0] for r in export(end + timedelta(days=1)))
    out = {}
    for label, span in (("export --csv - --since 7d", timedelta(days=7)), ("export --csv - --since 24h",
                                                                         timedelta(hours=24))):
        results = export(end - span)
        rows = int(results[0][2].split()[1])  # "wrote N rows"
        seconds, cpu = statistics.median(r[0] for r in results), statistics.median(r[3] for r in results)
        out[label] = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
                      "cpu_s": round(cpu, 3), "rows_per_cpu_s": round(rows / max(cpu, 1e-3)),
                      "rows_per_s_after_startup": round(rows / max(seconds - startup, 1e-3)),
                      "peak_mb": round(max(r[1] for r in results), 1)}
        log(f"{label}: {rows:,} rows in {seconds:.2f} s ({rows / seconds:,.0f} rows/s; "
            f"{out[label]['rows_per_s_after_startup']:,} after {startup:.2f} s of start-up; "
            f"{out[label]['rows_per_cpu_s']:,} per CPU second), "
            f"{out[label]['peak_mb']} MB")
    return out


def page_paths(url: str, end: datetime) -> dict[str, str]:
    """The review pages to time: the queue (its default, the unreviewed defects; every verdict of 7 days) on
    its first page and on pages deep in the log (by key, as its links carry it), a part, and the stats page and
    its two plots for 24 h, 7 days and everything."""
    from inspector.store import Selection, Store
    from inspector.web.data import key_text

    with Store(url) as store:
        first, last = store.time_span(Selection()) or (end, end)
        deep = first + (last - first) / 2
        week = max(first, end - timedelta(days=7)) + (end - max(first, end - timedelta(days=7))) / 2
        part = store.page(Selection(verdict="defect"), start=(deep, 2**62), limit=1)
    paths = {
        "queue (unreviewed defects), first page": "/",
        "queue (unreviewed defects), page in the middle of the log":
            f"/?page=2&start={key_text((deep, 2**62))}",
        "queue (unreviewed defects), page at the start of the log":
            f"/?page=2&start={key_text((first + timedelta(minutes=30), 2**62))}",
        "queue (all verdicts, 7 d), first page": "/?verdict=all&review=all&since=7d",
        "queue (all verdicts, 7 d), page in the middle": f"/?verdict=all&review=all&since=7d&page=2&start="
                                                       f"{key_text((week, 2**62))}",
    }
    if part:
        paths["part (full size, older/newer)"] = f"/inspections/{part[0]['id']}"
    for since in ("24h", "7d", "all"):
        paths[f"stats {since}"] = f"/stats?since={since}"
        paths[f"stats {since}: defects plot"] = f"/stats/defects.png?since={since}"
        paths[f"stats {since}: scores plot"] = f"/stats/scores.png?since={since}"
    return paths


def serve_pages(config: Path, end: datetime, runs: int) -> dict[str, Any]:
    """(In the page-timing process.) Build the review app once and request each page `runs` times after one
    untimed request (the app's first request and the drift banner); the clock of the pages' ranges is `end`."""
    import functools

    from inspector import config as configuration
    from inspector.web import create_app, data

    since_start = data.since_start
    data.since_start = lambda since, now=None: since_start(since, now or end)  # type: ignore[assignment]
    data.stats_data = functools.partial(data.stats_data, now=end)  # type: ignore[assignment]
    cfg = configuration.load(config)
    client = create_app(cfg).test_client()
    out: dict[str, Any] = {}
    for label, path in page_paths(cfg.database.url, end).items():
        response = client.get(path, headers={"Host": "localhost"})
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}")
        times, cpu = [], []
        for _ in range(runs):
            began, began_cpu = time.perf_counter(), time.process_time()
            client.get(path, headers={"Host": "localhost"}).get_data()
            times.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
        out[label] = {"path": path, "seconds": round(statistics.median(times), 3),
                      "cpu_s": round(statistics.median(cpu), 3)}
    import resource

    return {"pages": out, "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def time_pages(launcher: Launcher, config: Path, end: datetime, runs: int, log: Log) -> dict[str, Any]:
    """The review pages, timed in one fresh process (see serve_pages)."""
    out = config.parent / "pages.json"
    _seconds, peak, _err, _cpu = launcher.run([sys.executable, "-m", "inspector.tooling.dbbench", "--pages",
                                               str(config), "--end", end.isoformat(), "--runs", str(runs)], stdout=out)
    result = json.loads(out.read_text().splitlines()[-1])
    result["peak_mb"] = round(peak, 1)
    for label, page in result["pages"].items():
        log(f"{label}: {page['seconds']} s ({page['cpu_s']} s CPU)")
    return result


# ---------------------------------------------------------------------------------------------- the bench

RUNS = 3


def run(rows: int, url: str | None = None, *, runs: int = RUNS, template: bool = False, keep: bool = False,
        log: Log = _quiet) -> dict[str, Any]:
    """Fill a scratch database with `rows` parts (SQLite, or PostgreSQL at `url`) and time every read; returns the
    figures (see the module docstring)."""
    folder = Path(tempfile.mkdtemp(prefix="inspector-dbbench-"))
    launcher = Launcher()
    try:
        with scratch(rows, folder, url, template=template, keep=keep, log=log) as db:
            config = folder / "config.toml"
            config.write_text(f'[database]\nurl = "{db.url}"\n[models]\ndir = "{folder / "models"}"\n')
            log(f"reads of {rows:,} rows ({db.url.split('://')[0]}), {runs} runs each")
            result = {"rows": rows, "database": "postgresql" if url else "sqlite", "runs": runs, **db.fill,
                      "cli": time_cli(launcher, config, db.end, runs, log),
                      "export": time_export(launcher, config, db.end, runs, log)}
            pages = time_pages(launcher, config, db.end, runs, log)
            result.update(pages=pages["pages"], pages_peak_mb=pages["peak_mb"])
            return result
    finally:
        launcher.close()
        if keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def markdown(result: dict[str, Any]) -> str:
    """The figures as a markdown table."""
    lines = [f"{result['rows']:,} rows, {result['database']}, median of {result['runs']} runs",
             "", "| read | seconds | CPU seconds | peak MB |", "|---|---|---|---|"]
    for label, r in result["cli"].items():
        lines.append(f"| `inspector {label}` | {r['seconds']} | {r['cpu_s']} | {r['peak_mb']} |")
    for label, r in result["export"].items():
        lines.append(f"| `inspector {label}` ({r['rows']:,} rows, {r['rows_per_s']:,} rows/s) | {r['seconds']} | "
                     f"{r['cpu_s']} | {r['peak_mb']} |")
    for label, r in result["pages"].items():
        lines.append(f"| review page: {label} | {r['seconds']} | {r['cpu_s']} | |")
    lines.append(f"| review pages, one process | | | {result['pages_peak_mb']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The page-timing process: `python -m inspector.tooling.dbbench --pages CONFIG --end ISO --runs N`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--pages", type=Path, required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args(argv)
    print(json.dumps(serve_pages(args.pages, datetime.fromisoformat(args.end), args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
