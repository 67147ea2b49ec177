"""Recording verdicts: the committer thread's batches, degraded mode while the database is away, and the
identity of the SQLite file being written.

The committer takes the workers' outcomes from a bounded queue and records each batch in one transaction
(group commit); the service moves the files only after that. Every database action of the committer goes
through `retry`: a DatabaseError makes the watcher *degraded*: verdicts are held (the bounded queue then
stops the workers, so new parts wait in the folder), nothing is moved, and the action is tried again with a
backoff of 0.5 s doubling to 30 s. Before each new attempt every pooled connection is closed and the database
opened afresh, so a fault that was repaired (a file restored, a corruption undone) is not remembered by a
stale connection. When stopping, a few quick attempts are made and then the files are left for the next start;
a stop never waits out a backoff.

SQLite: the (device, inode) of the database file is recorded when it is opened and checked before and after
every action, and every FILE_POLL_S while idle. A file deleted, moved away or replaced while open would
otherwise go on receiving verdicts nobody will ever read (SQLite writes into the unlinked inode), and the parts
would be archived as if recorded. Once the path no longer names the file, the watcher is degraded, and:
- the old file is secured through an idle connection kept open on it (DatabaseFile.secure_old): a TRUNCATE
  checkpoint writes its WAL into it and empties the WAL at the path, which SQLite would otherwise apply to
  whatever file is put there next (a restored backup would be overwritten by it); when the old file has no
  name left it is copied to `<name>.rescued-<UTC time>` (VACUUM INTO): its verdicts are not lost with it;
- every connection to it is closed, and no connection may create a new database at the path;
- the committer resumes when a database file is at the path again: the same file at once, another file once
  it has stayed unchanged for DatabaseFile.SETTLE_S (not half-copied), after migrating it. A batch whose commit
  may have gone into the old file is recorded again into the new one (the unique sha256 keeps it exactly once
  if it was the same file after all).
Each of these states is logged once.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from inspector.store import DatabaseError, Store
from inspector.watcher import Signature

STOP = object()  # sentinel on the queues
RETRY_FIRST_S = 0.5  # first backoff while degraded, doubling
RETRY_MAX_S = 30.0
FILE_POLL_S = 1.0  # while the database file is missing or settling: how often its path is looked at
STOP_ATTEMPTS = 3  # attempts after a stop was asked for, before giving up (the files stay for the next start)
STOP_RETRY_S = 0.5  # the wait between those

Emit = Callable[..., None]  # (event, level, text, **fields): the service's log line
T = TypeVar("T")


@dataclass
class Job:
    """A complete file waiting to be judged."""

    path: str
    received_at: datetime  # when the watcher found it complete (UTC); for a backlog, when it was first scanned


@dataclass
class Outcome:
    """What a worker made of a job: a new row, or the row an earlier verdict left, or nothing (vanished, to be
    retried, or to be looked at again after the settle time)."""

    job: Job
    row: dict[str, Any] | None = None
    existing: dict[str, Any] | None = None
    sig: Signature | None = None  # lstat signature of the file as it was read; the move checks it again
    target: str | None = None  # planned archive path
    claim: str | None = None  # key of this station's claim on the file (shared folders), released after the move
    recheck: bool = False  # looks incomplete (a provisional rejection): look again after the settle time


class DatabaseFileChanged(DatabaseError):
    """The path of the SQLite database no longer names the file that was opened."""


class DatabaseFileMissing(DatabaseFileChanged):
    """After that: still no file at the path."""


class DatabaseFileSettling(DatabaseFileChanged):
    """After that: another file is at the path, not yet unchanged for long enough to be opened."""


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class DatabaseFile:
    """The SQLite file a Store writes: its identity (device, inode), recorded when it is opened, and an idle
    "anchor" connection on it, through which the file can still be reached after its path was deleted or
    replaced. No-op for other databases."""

    SETTLE_S = 1.0  # a new file at the path must stay unchanged this long before it is opened

    def __init__(self, path: Path | None, busy_timeout_s: float = 5.0):
        self.path = Path(os.path.abspath(path)) if path is not None else None
        self.busy_timeout_s = busy_timeout_s
        self.identity: tuple[int, int] | None = None
        self._anchor: sqlite3.Connection | None = None
        self._candidate: tuple[tuple[int, int, int, int], float] | None = None
        self.adopt()

    def _stat(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise DatabaseError(f"cannot look at database file {self.path}: {exc.strerror}") from None

    def adopt(self) -> None:
        """Record the file now at the path as the one open (right after the store opened it), and open the
        anchor on it (only when the path named the same file before and after: no race with a rename)."""
        if self.path is None:
            return
        self.close()
        st = self._stat()
        self.identity = (st.st_dev, st.st_ino) if st is not None else None
        self._candidate = None
        if self.identity is None:
            return
        try:
            anchor = sqlite3.connect(f"{Path(self.path).as_uri()}?mode=rw", uri=True, isolation_level=None,
                                     timeout=self.busy_timeout_s, check_same_thread=False)
        except sqlite3.Error:
            return
        try:  # a first read opens the WAL and its index now: SQLite opens them lazily, by path, which fails
            # (disk I/O error) once the database file has no name
            anchor.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            anchor.close()
            return
        after = self._stat()
        if after is not None and (after.st_dev, after.st_ino) == self.identity:
            self._anchor = anchor
        else:
            anchor.close()

    def close(self) -> None:
        """Close the anchor (at the end, or once the old file has been secured)."""
        if self._anchor is not None:
            anchor, self._anchor = self._anchor, None
            try:
                anchor.close()
            except sqlite3.Error:
                pass

    def describe(self, ident: tuple[int, int] | None = None) -> str:
        ident = ident or self.identity
        return f"device {ident[0]}, inode {ident[1]}" if ident else "unknown"

    def check(self) -> None:
        """DatabaseFileChanged when the path no longer names the file that was opened."""
        if self.path is None or self.identity is None:
            return
        st = self._stat()
        if st is None:
            raise DatabaseFileChanged(f"database file {self.path} was deleted or moved away while open "
                                      f"({self.describe()})")
        if (st.st_dev, st.st_ino) != self.identity:
            raise DatabaseFileChanged(f"database file {self.path} was replaced by another file while open "
                                      f"(was {self.describe()}, now {self.describe((st.st_dev, st.st_ino))})")

    def _links(self) -> int | None:
        """How many names the old file still has (0: deleted, alive only through open descriptors), from this
        process's own descriptors (Linux); None when that cannot be told."""
        fd_dir = "/proc/self/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return None
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == self.identity:
                return st.st_nlink
        return None

    def secure_old(self) -> str:
        """The path no longer names the open file: make sure nothing of it is lost or leaks into what is at the
        path now, through the anchor. A TRUNCATE checkpoint writes every committed verdict into the old file
        itself and empties the WAL at the path (which SQLite would otherwise apply to any file put there,
        overwriting it); then, when the old file has no name left, VACUUM INTO copies it beside the path, as
        the only copy of its verdicts. Returns what was done, for the log; the anchor is closed."""
        if self._anchor is None:
            return "its last verdicts could not be secured (no connection to it was left open)"
        notes = []
        try:
            busy, _, _ = self._anchor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            notes.append("every verdict recorded in it was written into it" if not busy else
                         "its WAL could not be emptied (busy)")
            links = self._links()
            if links == 0:
                rescue = self.path.with_name(f"{self.path.name}.rescued-{_utc_stamp()}")
                self._anchor.execute("VACUUM INTO ?", (os.fspath(rescue),))
                notes.append(f"it had no name left, so its content was saved as {rescue} (rename that to "
                             f"{self.path.name} to go on with it)")
            elif links:
                notes.append("it still exists under another name")
        except sqlite3.Error as exc:
            notes.append(f"securing it failed: {exc}")
        self.close()
        return "; ".join(notes)

    def look(self) -> str:
        """What is at the path now: "same" (the file that was open), "missing", "settling" (another file, still
        changing or seen only just now) or "new" (another file, unchanged for SETTLE_S)."""
        if self.path is None:
            return "same"
        st = self._stat()
        if st is None:
            self._candidate = None
            return "missing"
        if (st.st_dev, st.st_ino) == self.identity:
            self._candidate = None
            return "same"
        sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        now = time.monotonic()
        if self._candidate is None or self._candidate[0] != sig:
            self._candidate = (sig, now)
            return "settling"
        return "new" if now - self._candidate[1] >= self.SETTLE_S else "settling"


class Committer:
    """The committer thread: batches of outcomes -> `handle(batch)` (the service records and archives them),
    with every database action run through `retry`."""

    def __init__(self, store: Store, results: queue.Queue, stop: threading.Event, emit: Emit, *,
                 batch_size: int, batch_wait_s: float, busy_timeout_s: float = 5.0, busy_wait_s: float = 0.0,
                 busy: Callable[[], bool] = lambda: False):
        """`batch_wait_s`: after a batch's first verdict, how long to wait for more; `busy_wait_s`: how long while
        `busy()` says parts are queued for judging (the line is at capacity, and commits shared by more verdicts
        leave more of the cores to judging)."""
        self.store = store
        self.results = results
        self.stop = stop
        self.emit = emit
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.busy_wait_s = busy_wait_s
        self.busy = busy
        store.refuse_to_create()  # a deleted database file is not silently replaced by an empty one
        self.file = DatabaseFile(store.file, busy_timeout_s)
        self.degraded = False
        self.lost = False  # the path does not name the opened file (secured and let go); waiting for one
        self._told: str | None = None  # the degraded state last logged (file states are logged once each)

    # ------------------------------------------------------------------ the thread

    def run(self, handle: Callable[[list[Outcome]], None],
            on_fatal: Callable[[BaseException, list[Outcome]], None]) -> None:
        """Take batches until the sentinel; a batch that cannot be handled ends the thread (on_fatal), after
        which results are still taken so that no worker blocks on the full queue. While idle, the database
        file is looked at every FILE_POLL_S, so that a deleted or replaced one is noticed (and its WAL emptied)
        before anyone else opens what is at the path now, and a file put back is taken up without waiting for
        the next part."""
        try:
            self._run(handle, on_fatal)
        finally:
            self.file.close()

    def _run(self, handle: Callable[[list[Outcome]], None],
             on_fatal: Callable[[BaseException, list[Outcome]], None]) -> None:
        idle_poll = FILE_POLL_S if self.file.path is not None else None
        while True:
            try:
                item = self.results.get(timeout=idle_poll)
            except queue.Empty:
                self._idle()
                continue
            if item is STOP:
                return
            batch = [item]
            stop_after = False
            start = time.monotonic()
            while len(batch) < self.batch_size:
                waited = time.monotonic() - start
                wait = max(self.batch_wait_s, self.busy_wait_s if self.busy() else 0.0) - waited
                try:
                    more = self.results.get(timeout=wait) if wait > 0 else self.results.get_nowait()
                except queue.Empty:
                    break
                if more is STOP:
                    stop_after = True
                    break
                batch.append(more)
            try:
                handle(batch)
            except Exception as exc:  # database gone while stopping, or a bug: the files stay for the next start
                on_fatal(exc, batch)
                if not stop_after:
                    while self.results.get() is not STOP:
                        pass
                return
            if stop_after:
                return

    def _idle(self) -> None:
        """Between batches: notice a changed database file, or take up one that is back."""
        try:
            if self.lost:
                self._reopen()
                self._resumed(None)
            else:
                self.file.check()
        except DatabaseError as exc:
            self._report(self._explain(exc), "nothing", RETRY_FIRST_S)

    # ------------------------------------------------------------------ recording

    def record(self, new: list[Outcome]) -> None:
        """Record the rows of `new` in one transaction. Each gets its id; one whose content was recorded
        meanwhile (another copy in flight, or an earlier run) gets `existing` instead and loses its row."""
        rows = [o.row for o in new]
        ids = self.retry(lambda: self.store.record(rows), f"{len(rows)} verdicts")
        for o, new_id in zip(new, ids):
            if new_id is None:
                row = o.row
                o.existing = self.retry(lambda: self.store.find(sha256=row["sha256"], source_key=row["source_key"]),
                                        "a lookup")
                o.row = None
            else:
                o.row["id"] = new_id

    def retry(self, action: Callable[[], T], what: str) -> T:
        """Run a database action, degraded (see the module doc) while it fails with DatabaseError; gives up
        only when stopping. Any other error is a bug and propagates."""
        delay, stopping, failed = RETRY_FIRST_S, 0, self.lost
        while True:
            try:
                if failed:
                    self._reopen()
                self.file.check()
                result = action()
                self.file.check()  # replaced during the action: a write may have gone into the old file
                if self.degraded:
                    self._resumed(what)
                return result
            except DatabaseError as exc:
                failed = True
                exc = self._explain(exc)
                if self.stop.is_set():
                    stopping += 1
                    if stopping > STOP_ATTEMPTS:
                        self.emit("degraded", logging.ERROR,
                                  f"giving up on {what} at stop ({exc}); the files stay in the folder and are "
                                  "judged at the next start")
                        raise exc from None
                wait = self._report(exc, what, delay)
                if self.stop.is_set():
                    time.sleep(STOP_RETRY_S)  # a stop never waits out a backoff
                else:
                    self.stop.wait(wait)
                if not isinstance(exc, DatabaseFileChanged):
                    delay = min(delay * 2, RETRY_MAX_S)

    def check_file(self) -> None:
        """For other threads about to use the store: DatabaseFileChanged when the file is not the one opened
        (the committer notices it too, and secures the old file)."""
        if self.lost:
            raise DatabaseFileChanged(f"no usable database file at {self.file.path} yet")
        self.file.check()

    # ------------------------------------------------------------------ degraded mode

    def _explain(self, exc: DatabaseError) -> DatabaseError:
        """A SQLite error may be the symptom of a file deleted or replaced under it: say so when it is. The
        first time the path is seen not to name the opened file, that file is secured and let go."""
        if not isinstance(exc, DatabaseFileChanged) and not self.lost:  # (once lost, the error is about the new file)
            try:
                self.file.check()
            except DatabaseFileChanged as moved:
                exc = moved
            except DatabaseError:
                pass
        if isinstance(exc, DatabaseFileChanged) and not self.lost:
            self._let_go(exc)
        return exc

    def _let_go(self, exc: DatabaseFileChanged) -> None:
        """The path no longer names the opened file: secure what it holds, close every connection to it, and
        say once, clearly, what happened and what the operator can do."""
        self.lost = True
        self.degraded = True
        done = self.file.secure_old()
        self.store.engine.dispose()
        self._told = type(exc).__name__
        self.emit("degraded", logging.ERROR,
                  f"database unavailable: {exc}. Nothing more is recorded into that file ({done}). Verdicts are "
                  f"held and parts stay in the folder until a database file is at {self.file.path} again: put "
                  "it back, or create a new one with `inspector db upgrade`; the watcher then goes on by itself")

    def _reopen(self) -> None:
        """Before a new attempt: close every pooled connection and open the database now at the path (for SQLite,
        once the lost file is back, or another file is there and has settled). DatabaseError while that is not
        possible yet."""
        state = self.file.look() if self.lost else "same"
        if state == "missing":
            raise DatabaseFileMissing(f"no database file at {self.file.path}")
        if state == "settling":
            raise DatabaseFileSettling(f"a new file at {self.file.path} is opened once it has stayed unchanged for "
                                       f"{self.file.SETTLE_S:g} s")
        self.store.reopen()  # closes the old connections first, then opens and migrates the file at the path
        if self.lost:
            old = self.file.describe()
            self.file.adopt()
            self.lost = False
            which = "the same file" if state == "same" else f"a different file ({self.file.describe()}; was {old})"
            self.emit("degraded", logging.WARNING, f"database file {self.file.path} is there again: {which}; "
                                                   "opened it (migrated to the current schema if needed)")

    def _report(self, exc: DatabaseError, what: str, delay: float) -> float:
        """Log the degraded state (a lost file once per state, other errors at each attempt, which the backoff
        spaces out); return how long to wait before the next attempt."""
        self.degraded = True
        if isinstance(exc, DatabaseFileChanged):
            key = type(exc).__name__
            if key != self._told:  # _let_go said the rest already
                self._told = key
                if isinstance(exc, DatabaseFileSettling):
                    self.emit("degraded", logging.WARNING, f"database unavailable: {exc}")
            return FILE_POLL_S
        if what == "nothing" or self.lost:  # idle, or waiting for a usable file: say each trouble once
            if self._told != f"once:{exc}":
                self._told = f"once:{exc}"
                self.emit("degraded", logging.WARNING, f"database unavailable ({exc}); trying again every "
                                                       f"{FILE_POLL_S:g} s")
            return FILE_POLL_S
        self._told = None
        self.emit("degraded", logging.WARNING, f"database unavailable ({exc}); {what} held, retrying in {delay:.1f} s")
        return delay

    def _resumed(self, what: str | None) -> None:
        """The first success after a failure: one line."""
        self.degraded = False
        self._told = None
        done = f" ({what} done)" if what else ""
        self.emit("degraded", logging.WARNING, f"database available again{done}; resuming")
