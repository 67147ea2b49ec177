"""`inspector prune` and `inspector status` (issue 15): the command-line side of retention and monitoring.

Registered by inspector/cli.py's build_parser through add_commands(); errors are InspectorError like every
other command's (cli.main prints them as one line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

PROGRESS_EVERY_S = 2.0  # a progress line on stderr at most this often during a long prune


def _progress_printer(dry_run: bool) -> Any:
    """A prune progress callback printing a line on stderr every PROGRESS_EVERY_S."""
    from inspector.retention import human_bytes

    state = {"at": time.monotonic()}

    def show(report: Any) -> None:
        now = time.monotonic()
        if now - state["at"] < PROGRESS_EVERY_S:
            return
        state["at"] = now
        verb = "would delete" if dry_run else "deleted"
        print(f"prune: {report.rows} rows looked at (up to #{report.last_id}), {verb} {report.total_files} files "
              f"({human_bytes(report.total_bytes)})", file=sys.stderr, flush=True)

    return show


def cmd_prune(args: argparse.Namespace) -> int:
    """Apply the [retention] policy now: delete the archived files whose time has come, keep every row."""
    from inspector import imaging, retention
    from inspector.cli import _load_config, _open_store
    from inspector.text import escape_controls

    cfg = _load_config(args)
    policy = retention.Policy.from_config(cfg.retention)
    roots = retention.Roots.from_config(cfg)

    def listed(row_id: int, verdict: str, path: str, size: int) -> None:
        # escaped as `inspector list` escapes names: a name with a line break or a terminal escape cannot forge a
        # line or reach the terminal (found by an adversarial test); a bad name's bytes as \xNN
        print(f"#{row_id} {verdict} {size} {escape_controls(imaging.printable(path))}", flush=False)

    with _open_store(cfg) as store:
        report = retention.prune(store, policy, roots, dry_run=args.dry_run,
                                 progress=_progress_printer(args.dry_run),
                                 on_file=listed if args.list and not args.json else None)
    if args.json:
        print(json.dumps({**report.as_dict(), "policy": vars(policy)}))
    else:
        print("\n".join(retention.summary(report)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Report the watcher's health (status file), the database and the models folder; exit 1 when unhealthy."""
    from inspector import status
    from inspector.cli import _load_config

    cfg = _load_config(args)
    report = status.collect(cfg, stale_s=args.stale)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print("\n".join(status.format_text(report)))
    return 0 if report["healthy"] else 1


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `prune` and `status` on the CLI's sub-command parser."""
    p = sub.add_parser("prune", parents=[common], help="delete archived files by the [retention] policy (rows stay)",
                       description="Apply the [retention] policy now (the watcher also does, daily at "
                                   "[retention] prune_at): delete the archived image of each ok part older than "
                                   "ok_days (except 1 in ok_sample_every kept as a sample), of each defect and "
                                   "rejected file older than defect_days and rejected_days, and the overlay with "
                                   "its part; parts an operator decided on are kept reviewed_days (0 = for ever). "
                                   "Only files under [watch] archive_dir (overlays_dir) that committed rows name "
                                   "are deleted, and only with the size and sha256 the row records (a file "
                                   "replaced by another part is left and listed). Each row stays and "
                                   "records when its file went (pruned_at). Progress goes to stderr.")
    p.add_argument("--dry-run", action="store_true", help="delete nothing: say what would go and how many bytes")
    p.add_argument("--list", action="store_true", help="also print each file that goes (id, verdict, bytes, path)")
    p.add_argument("--json", action="store_true", help="print one JSON object (counts and bytes by verdict)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("status", parents=[common], help="is the watcher healthy? (exit 1 when not)",
                       description="Read the watcher's status file ([metrics] status_file), the database and the "
                                   "models folder, count the files waiting in the watch folder, and say whether the "
                                   "watcher is healthy. Exit 0: running (or stopped/idle with nothing waiting); "
                                   "exit 1: degraded (database away, disk below [retention] min_free_mb), stuck "
                                   "(parts in flight and none finished for [metrics] stuck_s), or no heartbeat "
                                   "for --stale seconds while files wait in the folder.")
    p.add_argument("--stale", type=float, default=30.0, metavar="S",
                   help="a heartbeat older than this many seconds counts as none (default 30)")
    p.add_argument("--json", action="store_true", help="print one JSON object (state, healthy, watcher, inbox, "
                                                       "database, models)")
    p.set_defaults(func=cmd_status)
