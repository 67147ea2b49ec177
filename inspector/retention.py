"""Retention (issue 15, item 2): deleting archived files by the `[retention]` policy, keeping every row.

What goes: the archived file of a part whose retention has run out, and its overlay. ok parts after `ok_days`
(except 1 in `ok_sample_every`, kept for ever as a sample), defect parts after `defect_days`, rejected files after
`rejected_days`; a part an operator decided on is kept at least `reviewed_days` (0 = for ever), whatever its
verdict. 0 days = for ever. The row stays and records when its file went (`pruned_at`, migration 0008).

Safety, in this order: only rows that are committed are read, so a file whose verdict is not recorded is never
looked at; only the path a row records is deleted, and only when it lies under the archive folder (overlays: the
overlays folder), its real folder too (no symlinked folder leads out), and not in the watch folder itself; it
must be a regular file with the size the row records and, when the row records a sha256, that sha256 (the file is
read once to hash it, through the descriptor that is checked to still be the path's file just before the unlink):
a file replaced by another of the same size is the wrong part, left and listed. Rows without a sha256 (files
rejected as unreadable) are checked by size only. A folder is never deleted. A file already gone is recorded
as pruned; one that does not pass the checks is left, with its row, and counted. Without `[watch] shared`, only
this station's rows are pruned: another station's archive may use the same paths on its own host.

The walk pages through the partial index of migration 0008 (archived, not yet pruned) in id order, a batch at a
time. At the first batch whose rows are all newer than the latest cutoff it asks the index once whether any later
row is older than the cutoff, and goes on from there if one is, else stops: ids follow commit times, except where a
station clock ran ahead and was set right, which stamped a stretch of rows "later" than the ones after them (found by
an adversarial test: 505 rows a year ahead stopped every later prune, the early one too, and the disk filled; and a
review: once such a stretch is no longer in the future, it stopped the walk for as long again). A daily run reads the
rows of one day and those kept for ever, and the young rows' entries of the index once, never the pruned millions.

A file whose name is not valid UTF-8 (`bad_name`) is recorded with its bad bytes as \\xNN (the database holds text);
where that path is not found, the file at the path those escapes stand for is the one checked (by size and sha256,
or by size where none was recorded, as any other) and deleted (found by an adversarial test: it was recorded as
pruned and stayed for ever).

A copy of a part archived already (the same content dropped again under another name) is archived beside its part's
file as <stem>__copy-<first 12 hex of its sha256><ext> (service), named by no row; when the part's file goes, the
copies in its folder go with it, each checked by size and sha256 as the part's own file (found by an adversarial
test: copies kept their own names and stayed for ever, a night of identical black frames from a failed lamp too).
A folder is read once per walk for them. Copies archived before 2026-12-08 kept their own names and are not found.

Files are deleted before their rows are marked: a crash in between leaves rows whose files are gone, which the
next run records as pruned.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, select, update

from inspector import imaging
from inspector.config import Config, RetentionConfig
from inspector.store import Inspection, Review, Store
from inspector.text import escape_controls

BATCH = 500  # rows per read, and per marking transaction
KEPT_REASONS = ("changed", "other_content", "outside", "not_a_file", "error")  # a file left although its time has come
KEPT_LISTED = 100  # files left although their time had come, listed by path in a report (the rest only counted)
SUMMARY_LISTED = 10  # of them, listed in the summary lines
KEPT_WORDS = {"changed": "changed (size, or written to)", "other_content": "not the recorded part (another sha256)",
              "outside": "outside the archive", "not_a_file": "not a regular file", "error": "unreadable"}
HASH_CHUNK = 1 << 20  # bytes read at a time while hashing a file about to be deleted


@dataclass(frozen=True)
class Policy:
    """How many days each kind of part keeps its file (0 = for ever), and the ok sample."""

    ok_days: int = 30
    ok_sample_every: int = 0
    defect_days: int = 0
    rejected_days: int = 90
    reviewed_days: int = 0
    early_ok_days: int = 0  # disk low: ok files not reviewed nor samples go after this many days instead (0: not early)

    @classmethod
    def from_config(cls, r: RetentionConfig) -> Policy:
        """The policy of a [retention] section."""
        return cls(r.ok_days, r.ok_sample_every, r.defect_days, r.rejected_days, r.reviewed_days)

    def early(self, keep_days: int) -> Policy:
        """Pruning ahead of schedule (disk low): ok files after `keep_days` instead of ok_days, when ok files go; a
        reviewed ok part keeps its own schedule (an adversarial test found it pruned early: a missed defect an
        operator marked, the best material for retraining, went at 20 days where its policy kept it 30)."""
        return self if not self.ok_days else replace(self, early_ok_days=min(self.ok_days, keep_days))

    def days(self, verdict: str, reviewed: bool, row_id: int) -> int:
        """Days a part's file is kept (0 = for ever)."""
        days = {"ok": self.ok_days, "defect": self.defect_days, "rejected": self.rejected_days}.get(verdict, 0)
        if verdict == "ok" and self.ok_sample_every and row_id % self.ok_sample_every == 0:
            return 0
        if reviewed:
            return 0 if not days or not self.reviewed_days else max(days, self.reviewed_days)
        return self.early_ok_days if verdict == "ok" and self.early_ok_days else days

    def newest_cutoff(self, now: datetime) -> datetime | None:
        """The latest cutoff of any finite retention (None: everything is kept for ever)."""
        finite = [d for d in (self.ok_days, self.defect_days, self.rejected_days, self.reviewed_days,
                              self.early_ok_days) if d]
        return now - timedelta(days=min(finite)) if finite else None


@dataclass(frozen=True)
class Roots:
    """Where prunable files may lie: the archive and overlays folders; never directly in the watch folder."""

    archive: Path
    overlays: Path
    inbox: Path | None = None
    station: str | None = None  # only this station's rows (None: every station's, a shared folder)

    @classmethod
    def from_config(cls, cfg: Config) -> Roots:
        """The roots of a config (station-limited unless the watch folder is shared)."""
        w = cfg.watch
        return cls(Path(os.path.abspath(w.archive_dir)), Path(os.path.abspath(w.overlays_dir)),
                   Path(os.path.abspath(w.dir)), None if w.shared else cfg.station.name)


@dataclass
class Report:
    """What a prune did (or, dry, would do)."""

    dry_run: bool
    now: datetime
    rows: int = 0  # rows looked at
    files: Counter = field(default_factory=Counter)  # files deleted, by verdict
    bytes: Counter = field(default_factory=Counter)  # their bytes, by verdict
    overlays: int = 0
    overlay_bytes: int = 0
    copies: int = 0  # copies of the parts (the same content dropped again), deleted with their part's file
    copy_bytes: int = 0
    missing: int = 0  # files already gone: their rows are recorded as pruned
    kept: Counter = field(default_factory=Counter)  # files left although their time had come, by reason
    kept_files: list[dict[str, Any]] = field(default_factory=list)  # the first KEPT_LISTED of them: id, reason, path
    marked: int = 0  # rows now recording pruned_at
    oldest: datetime | None = None  # inspected_at of the oldest and newest part whose file went
    newest: datetime | None = None
    last_id: int = 0
    stopped: bool = False  # ended early (stop asked, or enough space freed)

    @property
    def total_files(self) -> int:
        """Files deleted (parts, overlays and copies)."""
        return sum(self.files.values()) + self.overlays + self.copies

    @property
    def total_bytes(self) -> int:
        """Bytes freed (parts, overlays and copies)."""
        return sum(self.bytes.values()) + self.overlay_bytes + self.copy_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {"dry_run": self.dry_run, "now": self.now.isoformat(), "rows": self.rows,
                "files": dict(self.files), "bytes": dict(self.bytes), "overlays": self.overlays,
                "overlay_bytes": self.overlay_bytes, "copies": self.copies, "copy_bytes": self.copy_bytes,
                "total_files": self.total_files,
                "total_bytes": self.total_bytes, "missing": self.missing, "kept": dict(self.kept),
                "kept_files": list(self.kept_files),
                "marked": self.marked, "oldest": self.oldest.isoformat() if self.oldest else None,
                "newest": self.newest.isoformat() if self.newest else None, "last_id": self.last_id,
                "stopped": self.stopped}


def under(path: str | None, root: Path, inbox: Path | None) -> Path | None:
    """The recorded path as a Path when it may be deleted: absolute, lexically and really (its folder resolved)
    inside `root`, not directly in the watch folder; else None."""
    if not path or not os.path.isabs(path):
        return None
    p = Path(os.path.normpath(path))
    root = Path(os.path.normpath(root))
    if p == root or root not in p.parents:
        return None
    try:
        real_parent, real_root = Path(os.path.realpath(p.parent)), Path(os.path.realpath(root))
    except (OSError, ValueError):
        return None
    if real_parent != real_root and real_root not in real_parent.parents:
        return None
    if inbox is not None and real_parent == Path(os.path.realpath(inbox)):
        return None
    return p


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats describe one unchanged file (device, inode, size and modification time)."""
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def _digest(fd: int) -> str:
    """The sha256 (hex) of an open file, read from where it stands to its end."""
    h = hashlib.sha256()
    while chunk := os.read(fd, HASH_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _not_the_part(path: Path, st: os.stat_result, sha256: str) -> str | None:
    """Why the regular file at `path` (lstat `st`) is not the part whose sha256 the row records: "other_content"
    (another sha256), "changed" (replaced or written to while it was read), "missing" or "error"; None when it is
    the part. Hashed through a descriptor that is the path's file before and after the read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)  # no wait on a FIFO swapped in
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "error"
    try:
        opened = os.fstat(fd)
        if not _same_file(opened, st):
            return "changed"
        digest = _digest(fd)
        after = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "error"
    finally:
        os.close(fd)
    if not _same_file(after, opened):
        return "changed"
    return None if digest == sha256.lower() else "other_content"


def remove(path: Path, size: int | None, sha256: str | None, dry_run: bool) -> tuple[str, int]:
    """Delete one checked path: ("deleted", bytes), ("missing", 0), or a reason it stays with 0: "changed" (another
    size than recorded, or changed while hashed), "other_content" (another sha256 than recorded: not the part),
    "not_a_file" (a folder; or anything but a regular file where a sha256 is recorded), "error"."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing", 0
    except OSError:
        return "error", 0
    if stat.S_ISDIR(st.st_mode) or (sha256 is not None and not stat.S_ISREG(st.st_mode)):
        return "not_a_file", 0
    if stat.S_ISREG(st.st_mode) and size is not None and st.st_size != size:
        return "changed", 0
    if sha256 is not None:
        why = _not_the_part(path, st, sha256)
        if why is not None:
            return why, 0
    if not dry_run:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return "missing", 0
        except OSError:
            return "error", 0
    return "deleted", st.st_size


def _batch(store: Store, after: int, limit: int) -> list[Any]:
    """The next rows of the partial index (archived, not pruned) after id `after`, with whether they are reviewed."""
    reviewed = exists(select(Review.id).where(Review.inspection_id == Inspection.id)).label("reviewed")
    stmt = (select(Inspection.id, Inspection.verdict, Inspection.inspected_at, Inspection.archived_path,
                   Inspection.overlay_path, Inspection.size, Inspection.sha256, Inspection.station, reviewed)
            .where(Inspection.pruned_at.is_(None), Inspection.archived_path.is_not(None), Inspection.id > after)
            .order_by(Inspection.id).limit(limit))
    with store._guard("read"), store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return rows


def _first_due_after(store: Store, after: int, cutoff: datetime) -> int | None:
    """The smallest id after `after` of an archived, unpruned row older than `cutoff` (stamped out of order), or
    None."""
    stmt = (select(func.min(Inspection.id))
            .where(Inspection.pruned_at.is_(None), Inspection.archived_path.is_not(None), Inspection.id > after,
                   Inspection.inspected_at < cutoff))
    with store._guard("read"), store.engine.connect() as conn:
        return conn.execute(stmt).scalar()


def _mark(store: Store, done: list[tuple[int, str]], now: datetime) -> int:
    """Record pruned_at on these (id, archived_path) rows, where the row still names that path; how many."""
    if not done:
        return 0
    stmt = (update(Inspection.__table__)
            .where(and_(Inspection.id == bindparam("rid"), Inspection.archived_path == bindparam("path"),
                        Inspection.pruned_at.is_(None)))
            .values(pruned_at=bindparam("at")))
    params = [{"rid": rid, "path": path, "at": now} for rid, path in done]
    with store._guard("write to"), store._writer.begin() as conn:
        return conn.execute(stmt, params).rowcount


Progress = Callable[[Report], None]
OnFile = Callable[[int, str, str, int], None]  # (id, verdict, path, bytes) of each file that goes


def prune(store: Store, policy: Policy, roots: Roots, *, now: datetime | None = None, dry_run: bool = False,
          batch: int = BATCH, enough: Callable[[], bool] | None = None, stop: threading.Event | None = None,
          progress: Progress | None = None, on_file: OnFile | None = None,
          check: Callable[[], None] | None = None) -> Report:
    """Apply the policy to every archived, unpruned row whose time has come (see the module doc). `enough()` ends
    the walk early once it says so (checked after each batch: the disk has room again), as does `stop`; `check`
    runs before each write (the watcher's database-file check). DatabaseError propagates."""
    now = now or datetime.now(timezone.utc)
    report = Report(dry_run, now)
    newest_cutoff = policy.newest_cutoff(now)
    if newest_cutoff is None:
        return report
    after = 0
    copies: dict[Path, dict[str, list[Path]]] = {}  # folder -> copies in it by their tag, read once per walk
    while not (stop is not None and stop.is_set()):
        rows = _batch(store, after, batch)
        if not rows:
            break
        after = report.last_id = rows[-1].id
        done = _apply(rows, policy, roots, report, dry_run, on_file, copies)
        if done and not dry_run:
            if check is not None:
                check()
            report.marked += _mark(store, done, now)
        if progress is not None:
            progress(report)
        if all(r.inspected_at >= newest_cutoff for r in rows):
            later = _first_due_after(store, after, newest_cutoff)  # rows stamped out of order (see the module doc)
            if later is None:
                break
            after = later - 1
        if enough is not None and enough():
            report.stopped = True
            break
    else:
        report.stopped = True
    return report


def _apply(rows: list[Any], policy: Policy, roots: Roots, report: Report, dry_run: bool,
           on_file: OnFile | None, copies: dict[Path, dict[str, list[Path]]]) -> list[tuple[int, str]]:
    """Delete the files of one batch whose time has come; the (id, path) of the rows to mark pruned."""
    done: list[tuple[int, str]] = []
    for r in rows:
        report.rows += 1
        if roots.station is not None and r.station != roots.station:
            continue
        days = policy.days(r.verdict, bool(r.reviewed), r.id)
        if not days or r.inspected_at >= report.now - timedelta(days=days):
            continue
        path = under(imaging.recorded_path(r.archived_path), roots.archive, roots.inbox)  # (a bad name: \xNN)
        outcome, size = ("outside", 0) if path is None else remove(path, r.size, r.sha256, dry_run)
        if outcome not in ("deleted", "missing"):
            _keep(report, r.id, outcome, r.archived_path)
            continue
        if outcome == "missing":
            report.missing += 1
        else:
            report.files[r.verdict] += 1
            report.bytes[r.verdict] += size
            report.oldest = min(report.oldest or r.inspected_at, r.inspected_at)
            report.newest = max(report.newest or r.inspected_at, r.inspected_at)
            if on_file is not None:
                on_file(r.id, r.verdict, str(path), size)
        _overlay(r, roots, report, dry_run)
        if r.sha256 and path is not None:
            _copies(r, path, roots, report, dry_run, copies, on_file)
        done.append((r.id, r.archived_path))
    return done


COPY_NAME = re.compile(r"__copy-([0-9a-f]{12})(?:-\d+)?(?:\.[^./]*)?$")


def _copies_in(folder: Path) -> dict[str, list[Path]]:
    """The archived copies in a folder by the tag in their names (service: <stem>__copy-<tag>[-n]<ext>)."""
    found: dict[str, list[Path]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                m = COPY_NAME.search(entry.name)
                if m:
                    found.setdefault(m.group(1), []).append(Path(entry.path))
    except OSError:
        pass  # a folder gone or unreadable: no copies to find there
    return found


def _copies(row: Any, path: Path, roots: Roots, report: Report, dry_run: bool,
            cache: dict[Path, dict[str, list[Path]]], on_file: OnFile | None) -> None:
    """Delete the copies of a pruned part beside its file: named with its tag, checked by size and sha256."""
    folder = path.parent
    if folder not in cache:
        cache[folder] = _copies_in(folder)
    for copy in cache[folder].pop(row.sha256[:12].lower(), []):
        checked = under(str(copy), roots.archive, roots.inbox)
        outcome, size = ("outside", 0) if checked is None else remove(checked, row.size, row.sha256, dry_run)
        if outcome == "deleted":
            report.copies += 1
            report.copy_bytes += size
            if on_file is not None:
                on_file(row.id, "copy", str(checked), size)
        elif outcome != "missing":
            _keep(report, row.id, outcome, str(copy))


def _keep(report: Report, row_id: int, reason: str, path: str) -> None:
    """Count a file left although its time had come, and list it while fewer than KEPT_LISTED are."""
    report.kept[reason] += 1
    if len(report.kept_files) < KEPT_LISTED:
        report.kept_files.append({"id": row_id, "reason": reason, "path": path})


def _overlay(row: Any, roots: Roots, report: Report, dry_run: bool) -> None:
    """Delete a pruned part's overlay (under the overlays folder only)."""
    path = under(row.overlay_path, roots.overlays, roots.inbox)
    if path is None:
        return
    outcome, size = remove(path, None, None, dry_run)
    if outcome == "deleted":
        report.overlays += 1
        report.overlay_bytes += size


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def summary(report: Report) -> list[str]:
    """The lines `inspector prune` prints (and the watcher logs one of)."""
    verb = "would delete" if report.dry_run else "deleted"
    lines = [f"{verb} {report.total_files} files ({human_bytes(report.total_bytes)}) after looking at "
             f"{report.rows} rows"]
    for verdict in sorted(report.files):
        lines.append(f"  {verdict}: {report.files[verdict]} files, {human_bytes(report.bytes[verdict])}")
    if report.overlays:
        lines.append(f"  overlays: {report.overlays} files, {human_bytes(report.overlay_bytes)}")
    if report.copies:
        lines.append(f"  copies of those parts (the same content dropped again): {report.copies} files, "
                     f"{human_bytes(report.copy_bytes)}")
    if report.oldest is not None and report.newest is not None:
        lines.append(f"  parts inspected {report.oldest:%Y-%m-%d %H:%M} .. {report.newest:%Y-%m-%d %H:%M} UTC")
    if report.missing:
        lines.append(f"  {report.missing} files were already gone: recorded as pruned")
    if report.kept:
        lines.append("  left although their time had come: " + ", ".join(f"{n} {KEPT_WORDS.get(k, k)}"
                                                                        for k, n in sorted(report.kept.items())))
        lines += [f"    #{f['id']} {KEPT_WORDS.get(f['reason'], f['reason'])}: {escape_controls(f['path'])}"
                  for f in report.kept_files[:SUMMARY_LISTED]]
        more = sum(report.kept.values()) - SUMMARY_LISTED
        if more > 0:
            lines.append(f"    ... {more} more (--json lists up to {KEPT_LISTED})")
    return lines
