"""One watcher per folder: a lock (flock) on the watched folder itself.

A watcher that does not share its folder ([watch] shared = false) takes the lock exclusively; stations that
share a folder (shared = true) take it shared, so they run side by side while a non-shared watcher and any
other watcher of that folder exclude each other. Two watchers that do not know of each other race for the same
files: each file still gets one verdict (the unique sha256), but one watcher moves files the other has just
recorded, and rows end up saying a file was not archived while it was.

The lock is taken on a read-only descriptor of the folder (flock works on directories), so nothing is written
into the camera's folder, a read-only inbox can be locked too, and two paths to one folder (a symlink, a bind
mount) are one lock. flock locks belong to the open descriptor: they go when the process exits, however it
exits (SIGKILL included), so there is never a stale lock to clean up.

Limits: the lock is seen by watchers on this host (any user); across hosts on a network filesystem it is not
reliable (on NFS, Linux emulates flock with byte-range locks, which a directory descriptor cannot take) -
stations on several hosts must set shared = true anyway. The pid in the refusal comes from /proc/locks
(Linux); elsewhere the message names no pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from inspector.errors import ConfigError


class FolderBusy(ConfigError):
    """Another watcher holds the folder (exit code 2, like any configuration error)."""


def _holders(fd: int) -> list[int]:
    """Pids holding a flock on the file or folder open as `fd`, other than this process (/proc/locks, Linux)."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want and parts[4].isdigit():
            pid = int(parts[4])
            if pid != os.getpid() and pid not in pids:
                pids.append(pid)
    return pids


class FolderLock:
    """The lock of one watched folder, held from acquire() until release() (or the process's end)."""

    def __init__(self, folder: Path, shared: bool):
        self.folder = folder
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> str | None:
        """Take the lock; FolderBusy when another watcher holds it in a conflicting way. Returns None, or why the
        folder cannot be locked at all (the caller warns and runs without the lock)."""
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return f"cannot open {self.folder}: {exc.strerror}"
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                return f"cannot lock {self.folder}: {exc.strerror}"
            message = self._refusal(fd)
            os.close(fd)
            raise FolderBusy(message) from None
        self._fd = fd
        return None

    def _refusal(self, fd: int) -> str:
        """The one-line refusal: the folder, who holds it (when known), and what to do."""
        pids = _holders(fd)
        who = f" (pid {', '.join(map(str, pids))})" if pids else ""
        if self.shared:
            return (f"watch folder {self.folder} is already watched by another inspector{who} without "
                    "[watch] shared = true; stop it, or set shared = true on every station that watches it")
        return (f"watch folder {self.folder} is already watched by another inspector{who}; stop it, or set "
                "[watch] shared = true on every station that watches it")

    def still_here(self) -> bool:
        """True when the folder at the path is the one locked (False after it was removed or replaced, or when
        no lock is held)."""
        if self._fd is None:
            return False
        try:
            a, b = os.fstat(self._fd), os.stat(self.folder)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass
