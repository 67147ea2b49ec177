"""Noticing files in the hot folder: watchdog events, folder scans, and deciding when a file is complete.

A file is complete when the writer closed it (inotify close-after-write), when it was renamed into the
folder, or, without such an event (polling observer, network shares, a rescan), when its size, mtime,
inode and type stayed unchanged for the settle time. A file that then looks incomplete (empty, truncated,
not yet an image) may only have a writer that paused: Rechecks makes such a rejection provisional, looked at
again after another settle time, final only after REJECTION_LOOKS unchanged looks while no process is seen
holding it open for writing. ObserverKeeper keeps the observer running (restarts after its thread died or the
folder was removed or replaced). This module only decides *which paths are ready*; what happens to them is the
job of intake.py (judging one file) and service.py (the whole).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileCreatedEvent, FileDeletedEvent,
    FileModifiedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler, DirDeletedEvent,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from inspector import openfiles

Signature = tuple[int, int, int, int]  # (size, mtime_ns, inode, mode) from lstat
MIN_RECHECK_S = 0.25  # a file found by a scan is looked at twice, at least this far apart, before it counts


def signature(path: str) -> Signature | None:
    """lstat facts that change while a file is written or replaced; None if the path is gone."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode


class Matcher:
    """Which paths are parts: names matching the patterns (case-insensitive), not hidden (a leading dot),
    outside excluded folders."""

    def __init__(self, root: Path, patterns: Sequence[str], recursive: bool, exclude: Sequence[Path] = ()):
        self.root = os.path.abspath(root)
        self.patterns = tuple(p.lower() for p in patterns)
        self.recursive = recursive
        self.exclude = tuple(os.path.abspath(p) + os.sep for p in exclude)

    def matches(self, path: str) -> bool:
        """True when `path` is a candidate part under the watched folder."""
        path = os.path.abspath(path)
        parent, name = os.path.split(path)
        if self.recursive:
            if not (parent + os.sep).startswith(self.root + os.sep):
                return False
        elif parent != self.root:
            return False
        if name.startswith(".") or any((path + os.sep).startswith(ex) for ex in self.exclude):
            return False  # hidden names are writers' temporary files by convention
        lowered = name.lower()
        return any(fnmatch(lowered, pat) for pat in self.patterns)

    def scan(self) -> Iterator[str]:
        """Every candidate path present now. Recursive: sub-folders are descended, never candidates themselves;
        flat: a directory named like a part is a candidate (and is rejected as not a file)."""
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                path = os.path.join(folder, entry.name)
                if self.recursive and entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith(".") and not any(
                            (path + os.sep).startswith(ex) for ex in self.exclude):
                        stack.append(path)
                elif self.matches(path):
                    yield path


@dataclass
class _Pending:
    """A path seen but not yet known complete."""

    sig: Signature | None
    changed_at: float  # monotonic time of the last observed change (backdated for files found already old)
    first_seen: float  # monotonic time it was first seen


class Settler:
    """Tracks candidate paths until they are complete; thread-safe.

    `seen` registers a path to watch for stability; `complete` marks it ready now (close or rename event);
    `poll` returns the paths that became ready, each with the wall-clock time it was found complete.
    """

    def __init__(self, settle_s: float, clock: Callable[[], float] = time.monotonic):
        self.settle_s = settle_s
        self._clock = clock
        self._recheck = min(settle_s, MIN_RECHECK_S)
        self._pending: dict[str, _Pending] = {}
        self._ready: dict[str, float] = {}
        self._lock = threading.Lock()
        self.wake = threading.Event()  # set whenever something became ready

    def seen(self, path: str) -> None:
        """A path was created, modified or found by a scan: ready once unchanged for the settle time."""
        with self._lock:
            if path in self._ready:
                return
            sig = signature(path)
            current = self._pending.get(path)
            now = self._clock()
            if current is None:
                self._pending[path] = _Pending(sig, now - self._age(sig), now)
            elif current.sig != sig:
                current.sig, current.changed_at = sig, now

    def _age(self, sig: Signature | None) -> float:
        """settle_s when the entry's mtime is already at least settle_s old (found by a scan), else 0.

        Such a file still needs a second, unchanged observation at least MIN_RECHECK_S after the first (see
        poll), so a writer that is still appending, whatever the file's mtime says, is noticed."""
        if sig is None:
            return 0.0
        return self.settle_s if time.time() - sig[1] / 1e9 >= self.settle_s else 0.0

    def complete(self, path: str) -> None:
        """The writer closed the file, or it was renamed into place: ready now."""
        with self._lock:
            self._pending.pop(path, None)
            self._ready.setdefault(path, time.time())
        self.wake.set()

    def hold(self, path: str) -> None:
        """Look at the path again once it has stayed unchanged for another full settle time from now (however
        old its mtime), or at once when its writer closes it."""
        with self._lock:
            if path in self._ready:
                return
            now = self._clock()
            self._pending[path] = _Pending(signature(path), now, now)

    def forget(self, path: str) -> None:
        """The path was deleted or moved away before it was taken."""
        with self._lock:
            self._pending.pop(path, None)
            self._ready.pop(path, None)

    def poll(self) -> list[tuple[str, float]]:
        """Paths ready now, oldest first, as (path, completed_at wall time); they leave the settler."""
        with self._lock:
            now = self._clock()
            for path, p in list(self._pending.items()):
                sig = signature(path)
                if sig is None:
                    del self._pending[path]
                elif sig != p.sig:
                    p.sig, p.changed_at = sig, now
                elif now - p.changed_at >= self.settle_s and now - p.first_seen >= self._recheck:
                    del self._pending[path]
                    self._ready[path] = time.time()
            ready = sorted(self._ready.items(), key=lambda item: item[1])
            self._ready.clear()
            self.wake.clear()
        return ready

    def __contains__(self, path: str) -> bool:
        with self._lock:
            return path in self._pending or path in self._ready

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._ready)


# rejections that a complete file can get but so can one whose writer has only paused: provisional
PROVISIONAL_REASONS = frozenset({"empty", "truncated", "not_an_image", "decode_failed"})
REJECTION_LOOKS = 3  # unchanged looks, a settle time apart, before such a rejection is final


@dataclass(frozen=True)
class Look:
    """What to do with a file that looks incomplete."""

    final: bool  # record the rejection now
    count: int  # unchanged looks so far (looks while a writer held the file open do not count)
    writers: tuple[openfiles.Writer, ...] = ()  # processes seen holding it open for writing
    news: bool = False  # the first look of this kind for this file: worth one log line
    leave: bool = False  # give up for this run without a verdict (once mode, a writer still at work)


@dataclass
class _Looks:
    sig: Signature | None
    count: int = 0
    told: frozenset[str] = frozenset()


class Rechecks:
    """Counts the looks at files that look incomplete; thread-safe.

    A rejection for a reason in PROVISIONAL_REASONS is final only once the file has looked the same (same
    size, mtime, inode) at `looks` looks, each a settle time after the last change, and no process is seen
    holding it open for writing (openfiles, Linux; elsewhere only the looks count). A change resets the count.
    While a writer holds it the rejection stays provisional however long that takes, except with `wait=False`
    (a --once run, which must end): then the file is left in the folder, unjudged, for the next run."""

    def __init__(self, looks: int = REJECTION_LOOKS, wait: bool = True):
        self.looks = max(1, looks)
        self.wait = wait
        self._seen: dict[str, _Looks] = {}
        self._lock = threading.Lock()

    def look(self, path: str, sig: Signature | None) -> Look:
        """One more look at `path`, which looks incomplete now with signature `sig`."""
        held = tuple(openfiles.writers(path) or ())
        with self._lock:
            cur = self._seen.get(path)
            if cur is None or cur.sig != sig:
                cur = self._seen[path] = _Looks(sig, told=cur.told if cur else frozenset())
            kind = "writer" if held else "look"
            news = kind not in cur.told
            cur.told |= {kind}
            if held:
                if not self.wait:
                    cur.count += 1
                    if cur.count >= self.looks:
                        del self._seen[path]
                        return Look(False, cur.count, held, news, leave=True)
                return Look(False, cur.count, held, news)
            cur.count += 1
            if cur.count >= self.looks:
                del self._seen[path]
                return Look(True, cur.count)
            return Look(False, cur.count, (), news)

    def forget(self, path: str) -> None:
        """The path was judged (complete after all), or is gone."""
        with self._lock:
            self._seen.pop(path, None)

    def prune(self, present: set[str]) -> None:
        """Forget paths no longer in the folder."""
        with self._lock:
            for path in [p for p in self._seen if p not in present]:
                del self._seen[path]

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class Handler(FileSystemEventHandler):
    """Turns watchdog events into Settler calls for the paths the Matcher accepts."""

    def __init__(self, matcher: Matcher, settler: Settler):
        self.matcher = matcher
        self.settler = settler

    def _path(self, raw: str | bytes) -> str:
        """Event paths as str (undecodable bytes kept through surrogateescape)."""
        return os.fsdecode(raw)

    def dispatch(self, event: FileSystemEvent) -> None:
        """Route one event; never raises (an exception would kill the observer thread)."""
        try:
            self._route(event)
        except Exception:  # pragma: no cover - defensive; the periodic rescan catches what is missed
            pass

    def _route(self, event: FileSystemEvent) -> None:
        """Decide what an event means for readiness."""
        src = self._path(event.src_path)
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            self.settler.forget(src)
            dest = self._path(event.dest_path)
            if self.matcher.matches(dest) and not (self.matcher.recursive and event.is_directory):
                self.settler.complete(dest)
        elif isinstance(event, FileClosedEvent):
            if self.matcher.matches(src):
                self.settler.complete(src)
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)) or (
                isinstance(event, DirCreatedEvent) and not self.matcher.recursive):
            if self.matcher.matches(src):
                self.settler.seen(src)
        elif isinstance(event, (FileDeletedEvent, DirDeletedEvent)):
            self.settler.forget(src)


MOVE_PAIRING_S = 0.005


def prompt_delayed_queue(base: type) -> type:
    """watchdog's DelayedQueue class `base` with a consumer that waits out an IN_MOVED_FROM's pairing delay on the
    queue's condition instead of in time.sleep: when the matching IN_MOVED_TO pairs it (removes it from the queue),
    the consumer wakes at once and hands on the pair, instead of sleeping out the rest of the delay first."""

    class PromptDelayedQueue(base):  # type: ignore[misc, valid-type]
        def get(self):  # noqa: ANN202 - watchdog's signature
            """Remove and return the head once its delay (if any) is over; None once closed."""
            with self._not_empty:
                while True:
                    while not self._queue and not self._closed:
                        self._not_empty.wait()
                    if self._closed:
                        return None
                    head, inserted, delay = self._queue[0]
                    left = inserted + self.delay - time.monotonic() if delay else 0.0
                    if left <= 0:
                        self._queue.popleft()
                        return head
                    self._not_empty.wait(left)  # a put, a remove (the pair made) or close wakes it early

        def remove(self, predicate):  # noqa: ANN001, ANN202 - watchdog's signature
            """Remove and return the first item for which predicate is true, and wake the consumer."""
            found = super().remove(predicate)
            if found is not None:
                with self._not_empty:
                    self._not_empty.notify_all()
            return found

    return PromptDelayedQueue


def _shorten_move_pairing() -> None:
    """watchdog's inotify emitter holds an IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, and its
    queue keeps sleeping out that delay even once the pair is made, so every file renamed into place (what
    careful cameras do) reaches us up to 0.5 s late. Both halves of a rename within the folder arrive in the
    same read and are queued one right after the other, so a window of MOVE_PAIRING_S (5 ms) pairs them; an
    unpaired half only means a created or deleted event instead of a move, which the settle rule (a second
    later) and the rescan handle. The window matters beyond renames: every part archived out of the folder
    leaves an IN_MOVED_FROM that never pairs, and it held the queue's head for the whole window, so the next
    camera file waited behind it (at 50 ms: 35 ms of the 59 ms file-complete -> committed median in `bench
    --watch`; at 5 ms: 1 ms). And the queue's consumer is woken as soon as a pair is made
    (prompt_delayed_queue), so a rename is handed on at once, not after the window."""
    try:
        from watchdog.observers import inotify_move_event_grouper as grouper
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
        from watchdog.utils.delayed_queue import DelayedQueue
    except ImportError:  # not Linux, or a watchdog that changed its internals: keep its default
        return
    InotifyMoveEventGrouper.delay = MOVE_PAIRING_S
    if getattr(grouper, "DelayedQueue", None) is DelayedQueue and all(
            hasattr(DelayedQueue, name) for name in ("get", "remove", "put")):
        grouper.DelayedQueue = prompt_delayed_queue(DelayedQueue)


def make_observer(kind: str, poll_interval_s: float) -> BaseObserver:
    """A watchdog observer: "native" (inotify on Linux) or "polling" (stat snapshots, for network shares)."""
    if kind == "polling":
        return PollingObserver(timeout=poll_interval_s)
    _shorten_move_pairing()
    return Observer()


# The events Handler acts on, and only those: watchdog asks inotify for just these (no IN_OPEN, no IN_CLOSE_NOWRITE)
# and drops the rest before they are queued (a folder's modified event comes with every file created, closed or moved
# in it; it never makes a part ready: the folder's own name is no part, and a folder named like one in a flat inbox is
# found by its created event and the scans). So a read of a part (ours, an archiver's, a virus scanner's) is not
# even reported by the kernel.
HANDLED_EVENTS: tuple[type[FileSystemEvent], ...] = (
    FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, DirMovedEvent,
    FileDeletedEvent, DirDeletedEvent,
)


def start_observer(kind: str, poll_interval_s: float, handler: Handler, recursive: bool) -> BaseObserver:
    """Schedule the handler on the matcher's folder for the events it handles and start the observer thread."""
    observer = make_observer(kind, poll_interval_s)
    observer.daemon = True
    observer.schedule(handler, handler.matcher.root, recursive=recursive, event_filter=list(HANDLED_EVENTS))
    observer.start()
    return observer


OBSERVER_RETRY_FIRST_S = 0.5  # while the observer cannot be restarted (the folder is gone): backoff, doubling
OBSERVER_RETRY_MAX_S = 3.0
FOLDER_CHECK_S = 1.0  # how often the keeper compares the folder at the path with the one it watches
Emit = Callable[..., None]  # (event, level, text, **fields): the service's log line


def folder_identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory now at the path; None when there is none."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class ObserverKeeper:
    """Keeps a watchdog observer on the watch folder running. The main loop calls `keep` on every turn: an observer
    whose thread died, or that lives on, deaf, on a folder that was removed (the service keeps it open: the folder
    lock) or replaced, is restarted; while that fails (the folder is gone, ...) it is tried again with a backoff of
    OBSERVER_RETRY_FIRST_S doubling to OBSERVER_RETRY_MAX_S, and each change of state is logged once, not every
    try."""

    def __init__(self, folder: Path, kind: str, poll_interval_s: float, handler: Callable[[], Handler],
                 recursive: bool, emit: Emit, rescan_s: float):
        self.folder = folder
        self.kind = kind
        self.poll_interval_s = poll_interval_s
        self.handler = handler  # a new Handler for each observer started
        self.recursive = recursive
        self.emit = emit
        self.rescan_s = rescan_s  # named in the message while the observer cannot be restarted
        self.observer: BaseObserver | None = None
        self.down: str | None = None  # why it is down ("died", "gone", "failed"), logged once; None = up
        self._retry_at = 0.0  # while it is down: when to try again
        self._backoff = OBSERVER_RETRY_FIRST_S
        self._folder_id: tuple[int, int] | None = None  # the folder the observer watches (device, inode)
        self._checked_at = 0.0

    def start(self) -> None:
        """Start an observer feeding a new handler (OSError when the folder cannot be watched)."""
        self._folder_id = folder_identity(self.folder)
        self.observer = start_observer(self.kind, self.poll_interval_s, self.handler(), self.recursive)

    def stop(self) -> None:
        """Stop the observer, if one was started."""
        if self.observer is not None:
            self.observer.stop()

    def alive(self) -> bool:
        """The observer's dispatcher and every emitter thread are running."""
        obs = self.observer
        return obs is not None and obs.is_alive() and all(e.is_alive() for e in obs.emitters)

    def _restart(self) -> OSError | None:
        """Stop what is left of the observer and start a new one; the error when that fails."""
        try:
            self.observer.stop()
        except Exception:  # it is already broken; do not let that stop the restart
            pass
        try:
            self.start()
        except OSError as exc:
            return exc
        return None

    def _up_again(self) -> None:
        """Say the watch folder is watched again, and reset the retry backoff."""
        from inspector.imaging import printable  # noqa: PLC0415 - see keep()

        self.emit("observer", logging.WARNING, f"watch folder {printable(self.folder)} is there again: watching it "
                                               "and rescanning")
        self.down, self._backoff = None, OBSERVER_RETRY_FIRST_S

    def keep(self, now: float) -> bool:
        """Restart the observer where it is needed and may be tried now; True when it runs again after being down
        or replaced (the caller rescans the folder at once and checks its lock)."""
        if self.observer is None or now < self._retry_at:
            return False
        replaced = False
        if now >= self._checked_at + FOLDER_CHECK_S:
            self._checked_at = now
            replaced = folder_identity(self.folder) != self._folder_id
        if not replaced and self.alive():
            if self.down == "gone" and folder_identity(self.folder) == self._folder_id:
                # moved away and back (the same folder): the observer followed it and runs on, and it was reported
                # gone for ever after (`inspector status` would say so; found by its test)
                self._up_again()
                return True
            return False
        from inspector.imaging import printable  # noqa: PLC0415 - only here: `inspector status` imports this module

        shown = printable(self.folder)
        if folder_identity(self.folder) is None:
            state, error = "gone", None
        else:
            if self.down is None:
                self.emit("observer", logging.WARNING,
                          f"watch folder {shown} was replaced by another folder; watching that one and rescanning"
                          if replaced else "observer thread died; restarting it and rescanning")
                self.down = "died"
            error = self._restart()
            state = "failed" if error else "up"
        if state == "up":
            if self.down in ("gone", "failed"):
                self._up_again()
            self.down, self._backoff = None, OBSERVER_RETRY_FIRST_S
            return True
        if state != self.down:
            if state == "gone":
                self.emit("observer", logging.ERROR, f"watch folder {shown} is gone: nothing can arrive until it "
                                                     "is back; looking for it again every few seconds")
            else:
                self.emit("observer", logging.ERROR, f"cannot restart the observer ({error}); relying on rescans "
                                                     f"every {self.rescan_s:g} s and trying again every few "
                                                     "seconds")
            self.down = state
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, OBSERVER_RETRY_MAX_S)
        return False
