"""The watcher's status file and `inspector status` (issue 15, item 4): a health check for scripts.

The watcher rewrites `[metrics] status_file` (default status.json beside config.toml, <name>.status.json beside
another config file) every `status_every_s`: its pid, a heartbeat (wall clock), its state (running, degraded,
paused, stuck, no_folder, stopped), counters, free space and the last prune. It is written to a temporary name and
renamed over the old one, so a reader never sees half a file. `inspector status` reads it with the database (newest
row, schema revision), the models folder (the active profile) and the watch folder (files waiting), and says whether
the watcher is healthy:

* running: a fresh heartbeat (within `stale_s`) and not degraded, paused or stuck -> healthy (exit 0);
* degraded (database away, or disk below the hard limit) or stuck (parts in flight, none finished for
  [metrics] stuck_s) -> unhealthy (exit 1);
* "gone": the status file says running but its pid no longer runs on this host (killed, out of memory, crashed
  without a word), or runs another process (the pid reused: the file records when its watcher started, and this
  boot) -> unhealthy (exit 1) at once, fresh heartbeat or not, so that a monitor notices before the
  next part waits (found by an adversarial test: it said "running (healthy)" for up to `stale_s`, then "silent");
* no fresh heartbeat (stopped, killed, hung) while files wait in the folder -> "stuck", unhealthy (exit 1);
  with nothing waiting, healthy (nothing is held up): "stopped" (it said so), "silent" (it did not: hung while
  idle, or a watcher on another host) or "idle" (no status file: never ran here);
* "no_folder": the watch folder is gone (nothing can arrive) -> unhealthy (exit 1; found by an adversarial test,
  it said healthy);
* whatever the watcher's state, no active profile, or one whose files are missing or damaged (a watcher started now
  would exit 4; found by an adversarial test) -> unhealthy (exit 1), the models line saying why.

A heartbeat counts as fresh for at least twice the watcher's `status_every_s` (recorded in the file), whatever
`stale_s` says: a watcher set to write every 50 s read "stuck" with the default of 30 (an adversarial test). The
file records the config file its watcher was started with. Two configs in one folder (two cameras on one PC) each
have their own file by default (config.load: <stem>.status.json beside a config not named config.toml); where both
name one file, a file of the other config's watcher is not read as this one's: a watcher does not start beside a
running one of another config (operations.check_status_file: ConfigError), and `inspector status` says whose the
file is (an adversarial test: it reported the other station's watcher as this one's, healthy, while this one was
dead with parts waiting).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

WAITING_CAP = 100_000  # files counted in the watch folder at most
STALE_S = 30.0  # a heartbeat older than this (and than twice the watcher's status_every_s) counts as none


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path` (OSError propagates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, default=str, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any] | None:
    """The status file's content, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: Any) -> bool | None:
    """Whether a process with this pid exists on this host (None when that cannot be told)."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def process_started(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (Linux /proc; None elsewhere or when it does not run)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22, starttime; the name may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str | None:
    """This boot of this host (Linux; None elsewhere)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def watcher_alive(watcher: dict[str, Any] | None) -> bool | None:
    """Whether the status file's watcher process runs: its pid on this host, started when the file says (a pid
    reused by another process after a kill, or a file from before a reboot, is no watcher); None when the file
    names another host (a status file on a shared folder) or no pid."""
    if not watcher:
        return None
    host = watcher.get("host")
    if host is not None and host != socket.gethostname():
        return None
    alive = pid_alive(watcher.get("pid"))
    if not alive:
        return alive
    booted, started = watcher.get("boot_id"), watcher.get("pid_started")
    if isinstance(booted, str) and boot_id() not in (None, booted):
        return False
    if isinstance(started, int) and process_started(watcher["pid"]) not in (None, started):
        return False
    return alive


def count_waiting(folder: Path, patterns: tuple[str, ...], recursive: bool, exclude: tuple[Path, ...],
                  newer_than: float | None = None) -> int:
    """Candidate parts in the watch folder now (at most WAITING_CAP); with `newer_than` (Unix time), only those
    written after it."""
    from inspector.watcher import Matcher

    n = 0
    for path in Matcher(folder, patterns, recursive, exclude=exclude).scan():
        if newer_than is not None:
            try:
                st = os.lstat(path)
                if max(st.st_mtime, st.st_ctime) <= newer_than:  # moved in with its old mtime: ctime says when
                    continue
            except OSError:
                continue
        n += 1
        if n >= WAITING_CAP:
            break
    return n


def waiting_parts(cfg: Any, folder: Path, watcher: dict[str, Any] | None) -> int:
    """Parts waiting in the watch folder. With `[watch] archive = false` judged files stay where they are, so
    counting the folder would count them too (a clean stop read as "stuck"; found by an adversarial test): there
    it is the files written after the watcher's last heartbeat, plus those it had seen and not finished then."""
    w = cfg.watch
    exclude = (Path(w.archive_dir).absolute(), Path(w.overlays_dir).absolute())
    beat = watcher.get("heartbeat_unix") if watcher else None
    if w.archive or not isinstance(beat, (int, float)):
        return count_waiting(folder, cfg.watch_patterns, w.recursive, exclude)
    assert watcher is not None
    held = sum(int(watcher.get(k) or 0) for k in ("waiting", "queue_depth") if isinstance(watcher.get(k), int))
    return min(count_waiting(folder, cfg.watch_patterns, w.recursive, exclude, newer_than=float(beat)) + held,
               WAITING_CAP)


def judge(watcher: dict[str, Any] | None, waiting: int, stale_s: float, now: float | None = None,
          alive: bool | None = None) -> tuple[str, bool]:
    """(state, healthy) from the status file's content, the files waiting in the folder and whether its pid runs
    (`alive`; None when that cannot be told: another host, or no pid)."""
    if watcher is not None and watcher.get("running") and alive is False:
        return "gone", False
    now = time.time() if now is None else now
    beat = watcher.get("heartbeat_unix") if watcher else None
    fresh = isinstance(beat, (int, float)) and now - beat <= stale_s and bool(watcher.get("running"))
    if fresh:
        state = str(watcher.get("state") or "running")
        return state, state == "running"
    if waiting:
        return "stuck", False
    if watcher is None:
        return "idle", True
    return ("stopped" if not watcher.get("running") else "silent"), True  # silent: killed, or hung while idle


def database_facts(cfg: Any) -> dict[str, Any]:
    """The schema revision and the newest inspection (id, time, verdict); {"error": ...} when it cannot be read."""
    from sqlalchemy import select

    from inspector.store import DatabaseError, Inspection, Store, database_file

    try:
        path = database_file(cfg.database.url)
        if path is not None and not path.exists():
            return {"error": f"no database at {path}"}
        with Store(cfg.database.url, busy_timeout_ms=cfg.database.busy_timeout_ms, migrate=False) as store:
            revision = store.revision()
            stmt = (select(Inspection.id, Inspection.inspected_at, Inspection.verdict)
                    .order_by(Inspection.id.desc()).limit(1))
            with store._guard("read"), store.engine.connect() as conn:
                newest = conn.execute(stmt).first() if revision else None
    except DatabaseError as exc:
        return {"error": str(exc)}
    out: dict[str, Any] = {"revision": revision, "newest_id": None, "newest_at": None, "newest_verdict": None}
    if newest is not None:
        out.update(newest_id=newest.id, newest_at=newest.inspected_at.isoformat(), newest_verdict=newest.verdict)
    return out


def models_facts(models_dir: Path, several: bool = False) -> dict[str, Any]:
    """The active profile version, its files checked (see profiles.verify); {"error": ...} when there is none, or
    it is missing or damaged: a watcher started now would exit 4 (found by an adversarial test: status said
    "healthy" with the active version's folder deleted). With `several` products (`[watch] product_from` other
    than "single"): each product's active version ("flange:v2,cap:v1"), an error naming each damaged one, or
    that none has a profile."""
    from inspector import products, profiles
    from inspector.errors import InspectorError

    if several:
        found, broken = [], []
        for product in products.active_products(models_dir):
            folder = products.models_dir_for(models_dir, product)
            try:
                version = profiles.active_version(folder)
                profiles.verify(folder, version)
                found.append(f"{product}:{version}")
            except InspectorError as exc:
                broken.append(f"{product}: {exc}")
        out: dict[str, Any] = {"dir": str(models_dir), "active": ",".join(found) or None}
        if broken or not found:
            out["error"] = "; ".join(broken) or f"no product has an active profile in {models_dir}"
        return out
    active = None
    try:
        active = profiles.active_version(models_dir)
        profiles.verify(models_dir, active)
        return {"dir": str(models_dir), "active": active}
    except InspectorError as exc:
        return {"dir": str(models_dir), "active": active, "error": str(exc)}


def stale_limit(watcher: dict[str, Any] | None, stale_s: float, every: float) -> float:
    """Seconds a heartbeat counts as fresh: `stale_s`, and at least twice the watcher's status interval (as its file
    records it, else `every`)."""
    recorded = (watcher or {}).get("status_every_s")
    return max(stale_s, 2.0 * float(recorded if isinstance(recorded, (int, float)) else every))


def live(watcher: dict[str, Any] | None) -> bool:
    """Whether a status file's watcher runs now: it says so, and its pid runs on this host (see watcher_alive) or,
    for another host's, its heartbeat is fresh."""
    if not watcher or not watcher.get("running"):
        return False
    alive = watcher_alive(watcher)
    if alive is not None:
        return alive
    beat = watcher.get("heartbeat_unix")
    return isinstance(beat, (int, float)) and time.time() - beat <= stale_limit(watcher, STALE_S, 2.0)


def owner(watcher: dict[str, Any] | None, cfg: Any) -> str | None:
    """The config file of the watcher that wrote a status file, when that is another config than `cfg`'s; else
    None (this config's, or a file that does not say)."""
    theirs, ours = (watcher or {}).get("config"), getattr(cfg, "source", None)
    if not theirs or ours is None:
        return None
    return None if Path(theirs) == Path(ours).resolve() else str(theirs)


def collect(cfg: Any, stale_s: float) -> dict[str, Any]:
    """Everything `inspector status` reports, with `state` and `healthy`."""
    w = cfg.watch
    watcher = read(Path(cfg.metrics.status_file))
    foreign = owner(watcher, cfg)
    if foreign is not None:  # another config's watcher wrote it: this config's is not running (see the module doc)
        watcher = None
    stale_s = stale_limit(watcher, stale_s, cfg.metrics.status_every_s)
    folder = Path(watcher.get("folder")) if watcher and watcher.get("folder") else Path(w.dir)
    waiting = waiting_parts(cfg, folder, watcher)
    alive = watcher_alive(watcher)
    state, healthy = judge(watcher, waiting, stale_s, alive=alive)
    models = models_facts(Path(cfg.models.dir), several=cfg.watch.product_from != "single")
    healthy = healthy and "error" not in models  # no usable profile: no part can be judged here
    age = None
    if watcher and isinstance(watcher.get("heartbeat_unix"), (int, float)):
        age = round(time.time() - watcher["heartbeat_unix"], 3)
    return {
        "state": state, "healthy": healthy, "checked_at": datetime.now(timezone.utc).isoformat(),
        "status_file": str(cfg.metrics.status_file), "status_file_of": foreign, "heartbeat_age_s": age,
        "pid_alive": alive,
        "inbox": {"folder": str(folder), "waiting": waiting},
        "watcher": watcher, "database": database_facts(cfg), "models": models,
    }


def format_text(report: dict[str, Any]) -> list[str]:
    """The lines `inspector status` prints."""
    from inspector.retention import human_bytes

    w = report["watcher"] or {}
    age = report["heartbeat_age_s"]
    beat = f"heartbeat {age:.1f} s ago" if age is not None else "no status file"
    lines = [f"watcher: {report['state']} ({'healthy' if report['healthy'] else 'UNHEALTHY'}; {beat}"
             + (f", pid {w['pid']}" if w.get("pid") else "")
             + ("; that process no longer runs: killed or crashed without stopping" if report["state"] == "gone"
                else "") + ")"]
    if report.get("status_file_of"):
        lines.append(f"  the status file {report['status_file']} is written by the watcher of another config "
                     f"({report['status_file_of']}): give each config its own [metrics] status_file")
    if report["state"] == "no_folder":
        lines.append("  the watch folder is gone: nothing can arrive until it is back (see the watcher's log)")
    if w:
        v = w.get("verdicts") or {}
        lines.append(f"  profile {w.get('profile_version')}, recorded {w.get('recorded', 0)} since "
                     f"{w.get('started_at', '?')} (ok {v.get('ok', 0)}, defect {v.get('defect', 0)}, rejected "
                     f"{v.get('rejected', 0)}), in flight {w.get('queue_depth', 0)}, seen {w.get('waiting', 0)}")
        free = w.get("disk_free_bytes") or {}
        if free:
            lines.append("  disk free: " + ", ".join(f"{k} {human_bytes(n)}" for k, n in free.items() if n is not None))
        for product, signals in sorted((w.get("drift_alarms") or {}).items()):
            where = "" if product == "default" else f" (product {product})"
            lines.append(f"  drift alarm{where}: {', '.join(signals)} (see the watcher's log, the review page or "
                         "`inspector stats`)")
        if w.get("last_prune"):
            p = w["last_prune"]
            lines.append(f"  last prune {p.get('at')} ({p.get('kind')}): {p.get('files', 0)} files, "
                         f"{human_bytes(p.get('bytes', 0))}" + (f", error: {p['error']}" if p.get("error") else ""))
    missing = "" if Path(report["inbox"]["folder"]).is_dir() else " (no such folder yet)"
    lines.append(f"inbox: {report['inbox']['waiting']} files waiting in {report['inbox']['folder']}{missing}")
    db = report["database"]
    if "error" in db:
        lines.append(f"database: {db['error']}")
    else:
        newest = (f"newest #{db['newest_id']} {db['newest_verdict']} at {db['newest_at']}" if db["newest_id"]
                  else "no inspection yet")
        lines.append(f"database: revision {db['revision']}, {newest}")
    m = report["models"]
    lines.append(f"models: {m['error']} (UNHEALTHY: a watcher could not start)" if m.get("error")
                 else f"models: active {m['active']}")
    judging = w.get("profile_version")  # several products: "default:v1,bolt:v2", no single pointer to compare with
    if w.get("running") and judging and ":" not in str(judging) and m.get("active") != judging:
        # a switch that failed (a missing or corrupt version named by ACTIVE): the watcher keeps the one it had
        lines.append(f"  the watcher judges with {judging}, not the active pointer's version: it has not switched yet "
                     "or could not load it (see its log)")
    return lines
