"""Which processes have a file open for writing: a bounded, fuser-like scan of /proc (Linux only).

Used only for files that look incomplete (empty, truncated), never for every part, so its cost (one
readlink per open file descriptor on the host, a stat and a read of fdinfo for those named like the file)
does not touch the throughput. The scan stops after SCAN_BUDGET_S and then answers "cannot tell".

Limits: it sees only processes of this PID namespace whose /proc/<pid>/fd it may read (the same user, or
root; a /proc mounted with hidepid hides the rest); a writer on another host (NFS, SMB) or in another
container is invisible; a writer that maps the file instead of holding a writable descriptor is not seen. Where
it cannot tell, the caller relies on looking again after the settle time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

PROC = "/proc"
SCAN_BUDGET_S = 0.2  # give up (answer None) after this long
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


@dataclass(frozen=True)
class Writer:
    """A process that holds the file open for writing."""

    pid: int
    command: str  # its short name from /proc/<pid>/comm ("?" when unreadable)

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def supported() -> bool:
    """True where /proc lists open file descriptors (Linux)."""
    return os.path.isdir(os.path.join(PROC, str(os.getpid()), "fd"))


def _command(pid: str) -> str:
    try:
        with open(os.path.join(PROC, pid, "comm"), encoding="utf-8", errors="replace") as fh:
            return fh.read().strip() or "?"
    except OSError:
        return "?"


def _writable(pid: str, fd: str) -> bool:
    """True when descriptor `fd` of `pid` was opened for writing (the flags line of its fdinfo, octal)."""
    try:
        with open(os.path.join(PROC, pid, "fdinfo", fd), encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags:"):
                    return (int(line.split()[1], 8) & os.O_ACCMODE) in _WRITE_MODES
    except (OSError, ValueError, IndexError):
        pass
    return False


def writers(path: str, budget_s: float = SCAN_BUDGET_S) -> list[Writer] | None:
    """The processes (other than this one) that have `path` open for writing: [] when none is seen, None when
    this cannot be told (not Linux, the file is gone, or the scan ran out of time)."""
    if not supported():
        return None
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    name = os.path.basename(os.fsencode(path))
    me = str(os.getpid())
    deadline = time.monotonic() + budget_s
    found: list[Writer] = []
    try:
        pids = [p for p in os.listdir(PROC) if p.isdigit() and p != me]
    except OSError:
        return None
    for pid in pids:
        if time.monotonic() > deadline:
            return None
        fd_dir = os.path.join(PROC, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            link = os.path.join(fd_dir, fd)
            try:
                target = os.readlink(os.fsencode(link))
            except OSError:
                continue
            # cheap filter by name (the link shows the path as that process sees it), then the real test
            if not (target == name or target.endswith(b"/" + name)):
                continue
            try:
                fst = os.stat(link)
            except OSError:
                continue
            if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino) and _writable(pid, fd):
                found.append(Writer(int(pid), _command(pid)))
                break
    return found
