"""Disk watermarks (issue 15, item 3): free space on the archive's and the database's filesystems.

Below `[retention] warn_free_mb` on either, the watcher warns (at most every WARN_EVERY_S); where it is a
filesystem that pruning frees (`prunable`: the archive's), it prunes early (see inspector/operations.py). A database
filesystem low on its own is only warned of: deleting archived photos frees nothing there (found by an adversarial
test: a small partition holding the SQLite file made the watcher delete every ok photo ahead of schedule on an
archive disk with 77 GB free). Below `min_free_mb` it is *paused*: it takes no new parts, which wait in the folder as
they do while the database is away, so that no write (a move, an overlay, a commit) fails halfway for want of
space; parts already in flight are finished, the headroom between the two limits is theirs. It resumes once every
filesystem has RESUME_MARGIN more than the hard limit free (it does not flap at the limit).

The free-space function is passed in (os.statvfs by default: the space an unprivileged user may fill), so the
policy is tested with any numbers and, once, on a real small tmpfs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

MB = 1024 * 1024
WARN_EVERY_S = 600.0  # while below the warning limit, one warning line at most this often
RESUME_MARGIN = 0.1  # paused until free space exceeds the hard limit by this share (at least 1 MB)

FreeSpace = Callable[[Path], int]
Emit = Callable[..., None]  # (event, level, text, **fields): the service's log line


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _nearest_existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (a database file not created yet: its folder's filesystem)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


class DiskGuard:
    """Free space on named filesystems against a warning and a hard limit, with the log lines of each change."""

    def __init__(self, volumes: Mapping[str, Path], warn_mb: int, min_mb: int, emit: Emit,
                 free: FreeSpace = free_bytes, clock: Callable[[], float] = time.monotonic,
                 prunable: Collection[str] = ()) -> None:
        self.volumes = dict(volumes)
        self.prunable = frozenset(prunable)  # the filesystems an early prune frees space on
        self.warn = warn_mb * MB
        self.min = min_mb * MB
        self.resume = self.min + max(int(self.min * RESUME_MARGIN), MB) if self.min else 0
        self.emit = emit
        self.free_fn = free
        self.clock = clock
        self.free: dict[str, int | None] = dict.fromkeys(self.volumes)
        self.paused = False
        self.low = False
        self._warned_at: float | None = None
        self._unreadable: set[str] = set()

    def measure(self) -> dict[str, int | None]:
        """Free bytes now on each filesystem (None where it cannot be read: logged once)."""
        for name, path in self.volumes.items():
            try:
                self.free[name] = self.free_fn(_nearest_existing(path))
                self._unreadable.discard(name)
            except OSError as exc:
                self.free[name] = None
                if name not in self._unreadable:
                    self._unreadable.add(name)
                    self.emit("disk", logging.WARNING, f"cannot read the free space of the {name} filesystem "
                                                       f"({path}): {exc.strerror or exc}")
        return self.free

    def _below(self, limit: int, names: Collection[str] | None = None) -> list[str]:
        """The filesystems (of `names`, default all) with less than `limit` bytes free, as 'name N MB free'."""
        return [f"{n} {free / MB:.0f} MB free" for n, free in self.free.items()
                if free is not None and free < limit and (names is None or n in names)]

    @property
    def prune_helps(self) -> bool:
        """Whether a prunable filesystem was below the warning limit at the last measurement: prune early."""
        return bool(self._below(self.warn, self.prunable))

    def roomy(self) -> bool:
        """True when every prunable filesystem has at least the warning limit free (measured now): early pruning
        may stop (what it cannot free it need not wait for)."""
        self.measure()
        return not self._below(self.warn, self.prunable)

    def check(self) -> None:
        """Measure, update `low` and `paused`, and log each change (and, while low, a reminder now and then)."""
        self.measure()
        full = self._below(self.min) if self.min else []
        if full and not self.paused:
            self.paused = True
            self.emit("degraded", logging.ERROR,
                      f"disk almost full ({', '.join(full)}; [retention] min_free_mb = {self.min // MB}): taking no "
                      "new parts, they wait in the folder; resuming once space is freed")
        elif self.paused and not self._below(self.resume):
            self.paused = False
            self.emit("degraded", logging.WARNING, "disk space is back above [retention] min_free_mb; resuming")
        low = self._below(self.warn)
        now = self.clock()
        if low and (not self.low or self._warned_at is None or now - self._warned_at >= WARN_EVERY_S):
            self._warned_at = now
            action = ("pruning early by the retention policy" if self.prune_helps else
                      "free space there (pruning the archive would not help: it lies on another filesystem)")
            self.emit("disk", logging.WARNING, f"disk space low ({', '.join(low)}; [retention] warn_free_mb = "
                                               f"{self.warn // MB}): {action}")
        elif not low and self.low:
            self.emit("disk", logging.INFO, "disk space is back above [retention] warn_free_mb")
        self.low = bool(low)
