"""Archiving judged files: planning a free archive name, and moving a file there without ever overwriting one.

archive/<verdict>/<local date>/<name>; on a clash the name gets a content tag (`<stem>__<12 hex><ext>`, then
`<stem>__<12 hex>-<n><ext>`), with the stem shortened so that the name stays within NAME_MAX (255 bytes on
Linux filesystems) without splitting a character. The move is one rename that never replaces an existing entry
(renameat2 RENAME_NOREPLACE where the kernel has it), and it first checks that the entry still is the one that
was judged. Nothing here touches the database; the service records what happened.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from inspector import imaging
from inspector.errors import InspectorError
from inspector.watcher import Signature, signature

NAME_MAX = 255  # bytes in one file name (ext4, XFS, btrfs, tmpfs, NFS and SMB mounts on Linux)

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1

Emit = Callable[..., None]  # (event, level, text, **fields): the service's log line


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2, where there is one (Linux with glibc 2.28 or later)."""
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None


def rename_noreplace(src: str, dst: str) -> None:
    """Rename src to dst, refusing to overwrite dst: one atomic renameat2(RENAME_NOREPLACE) where the kernel and
    filesystem support it, else a check followed by os.replace (which can race with another writer)."""
    fn = _renameat2()
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), src, None, dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), src, None, dst)
    os.replace(src, dst)


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose file-system encoding fits in max_bytes, never ending inside a
    character (a surrogate-escaped byte of a non-UTF-8 name counts as one byte)."""
    out, used = [], 0
    for ch in text:
        n = len(os.fsencode(ch))
        if used + n > max_bytes:
            break
        out.append(ch)
        used += n
    return "".join(out)


def tagged_name(stem: str, tag: str, ext: str, max_bytes: int = NAME_MAX) -> str:
    """`<stem><tag><ext>`, the stem shortened (and, for an absurdly long extension, the extension too) so that
    the encoded name fits in max_bytes."""
    fixed = len(os.fsencode(tag + ext))
    if fixed > max_bytes:  # the extension alone leaves no room: keep as much of it as fits
        ext = _cut(ext, max(0, max_bytes - len(os.fsencode(tag)) - 1))
        fixed = len(os.fsencode(tag + ext))
    return _cut(stem, max_bytes - fixed) + tag + ext


class Archiver:
    """Plans archive paths (reserving them until the move is done) and moves files there."""

    def __init__(self, root: Path, emit: Emit):
        self.root = root
        self._emit = emit
        self._reserved: set[str] = set()  # planned targets whose move is not done yet (committer thread only)
        self._made: set[str] = set()  # archive folders known to exist (one per verdict and day)

    def plan(self, path: str, verdict: str, key: str, when: datetime, copy: bool = False,
             beside: str | None = None) -> str:
        """A free archive path: archive/<verdict>/<local date>/<name>, with a content tag on a name clash; for a
        `copy` (a duplicate of a part archived already), always <stem>__copy-<tag><ext>, in the folder `beside`
        (its part's file) where given, which retention looks through when it deletes that file."""
        folder = beside or os.path.join(os.fspath(self.root), verdict, when.astimezone().strftime("%Y-%m-%d"))
        name = os.path.basename(path)
        stem, ext = os.path.splitext(name)
        tag = key[:12] if len(key) == 64 else imaging.sha256_hex(key.encode())[:12]
        for n in range(1_000_000):
            if copy:
                candidate = tagged_name(stem, f"__copy-{tag}" if n == 0 else f"__copy-{tag}-{n}", ext)
            elif n == 0:
                candidate = name
            else:
                candidate = tagged_name(stem, f"__{tag}" if n == 1 else f"__{tag}-{n - 1}", ext)
            target = os.path.join(folder, candidate)
            if target not in self._reserved and not os.path.lexists(target):
                self._reserved.add(target)
                return target
        raise InspectorError(f"no free archive name for {imaging.printable(path)} in {folder}")

    def reserve(self, target: str) -> bool:
        """Reserve a path recorded earlier (to finish an interrupted move); False when it is reserved already."""
        if target in self._reserved:
            return False
        self._reserved.add(target)
        return True

    def unreserve(self, target: str) -> None:
        """A planned target that will not be used."""
        self._reserved.discard(target)

    def move(self, src: str, target: str, sig: Signature | None) -> str:
        """Move the judged entry into the archive, never over an existing file. Returns "moved", "changed" (the
        entry is not the one judged any more: look at it again now) or "failed" (logged; the next rescan
        tries again). An entry that someone else already moved to exactly this target counts as moved."""
        try:
            if sig is not None and signature(src) != sig:
                if not os.path.lexists(src):
                    if signature(target) == sig:  # another station archived it where this one planned to
                        return "moved"
                    self._emit("error", logging.WARNING, f"{imaging.printable(src)} was moved away by someone "
                                                         "else after it was judged")
                    return "failed"
                self._emit("changed", logging.WARNING, f"{imaging.printable(src)} changed after it was judged; "
                                                       "it stays and its new content is judged")
                return "changed"
            folder = os.path.dirname(target)
            if folder not in self._made:
                os.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            try:
                rename_noreplace(src, target)
            except FileNotFoundError:
                if os.path.isdir(folder) or not os.path.lexists(src):
                    raise
                # the day's folder went after it was made (an operator took it away): make it again, once
                os.makedirs(folder, exist_ok=True)
                rename_noreplace(src, target)
            return "moved"
        except OSError as exc:
            self._made.discard(os.path.dirname(target))  # someone may have removed it: make it again next time
            self._emit("error", logging.ERROR, f"cannot archive {imaging.printable(src)}: {exc}; it stays in the "
                                               "folder and the move is tried again at the next rescan")
            return "failed"
        finally:
            self._reserved.discard(target)
