"""Versioned profile storage on disk: one directory per version, an ACTIVE pointer, atomic writes.

Layout under the models folder:

    models/
      ACTIVE                 # text: the active version name, replaced atomically
      HISTORY                # text, append-only: one line per activation or rollback (below)
      v1/profile.json        # metadata: version, created at, config, training hashes, calibration
      v1/profile.npz         # arrays only (numpy .npz, loaded with allow_pickle=False)

A version is first written to a hidden temporary directory and then renamed into place, so a reader sees
either a complete version or none. The JSON records the sha256 of the .npz; a version whose arrays do not
match, whose files are missing or truncated, or whose format this build does not read is refused with a
ProfileError. Nothing is ever unpickled.

Activation history and rollback. Every change of ACTIVE made here appends one line to HISTORY,
`<ISO time> <version> <action>`, where action is `activate` or `rollback` (a line without an action counts as
`activate`). Each line is one O_APPEND write followed by fsync, under an exclusive flock on the models folder, so
concurrent activations neither interleave nor lose lines; a torn or malformed line is ignored when reading.
ACTIVE is replaced first and HISTORY appended second, so a crash between the two leaves a history that lags
the pointer, which rollback tolerates (below), never one that claims an activation that did not happen.

`rollback` means "undo the last activation", like an editor's undo: replaying HISTORY as a stack (activate
pushes the version unless it is already on top; rollback pops), the current version is taken off and the one
beneath it is activated again. Rolling back twice therefore goes two activations back, not back and forth.
When ACTIVE names a version that is not on top of the recorded stack (it was changed outside this module),
rollback returns to the last recorded version. There is nothing to roll back to when the stack holds no
version below the current one: ProfileError. A models folder from before HISTORY existed gets its current
ACTIVE recorded (with the pointer's mtime) before the first new activation, so that activation can be undone.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector import __version__
from inspector.errors import NoActiveProfile, ProfileError

if TYPE_CHECKING:  # NumPy and OpenCV are imported where arrays are written or read: a profile.json read needs neither
    from inspector.profile import NormalProfile

_VERSION_RE = re.compile(r"v([1-9]\d*)\Z")
META = "profile.json"
ARRAYS = "profile.npz"
ACTIVE = "ACTIVE"
HISTORY = "HISTORY"
ACTIONS = ("activate", "rollback")


@dataclass(frozen=True)
class HistoryEntry:
    """One line of models/HISTORY: when a version became active, and how."""

    at: str  # ISO 8601 time with offset
    version: str
    action: str  # "activate" or "rollback"


@dataclass(frozen=True)
class StoredProfile:
    """A loaded profile with its version name and metadata."""

    version: str
    profile: NormalProfile
    meta: dict[str, Any]


def fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk (best effort where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write bytes and fsync them."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def versions(models_dir: Path) -> list[str]:
    """Saved version names, oldest first."""
    if not models_dir.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in models_dir.iterdir() if (m := _VERSION_RE.match(p.name))]
    return [name for _, name in sorted(found)]


def save(models_dir: Path, profile: NormalProfile, extra: dict[str, Any] | None = None) -> str:
    """Write a fitted profile as a new version (not yet active); return its version name."""
    import numpy as np

    models_dir.mkdir(parents=True, exist_ok=True)
    meta, arrays = profile.get_state()
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=models_dir))
    try:
        npz_path = tmp / ARRAYS
        with open(npz_path, "wb") as fh:
            np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
            fh.flush()
            os.fsync(fh.fileno())
        meta = {
            **meta,
            **(extra or {}),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inspector_version": __version__,
            "arrays_sha256": hashlib.sha256(npz_path.read_bytes()).hexdigest(),
        }
        while True:
            existing = versions(models_dir)
            number = int(existing[-1][1:]) + 1 if existing else 1
            name = f"v{number}"
            meta["version"] = name
            _write_file(tmp / META, json.dumps(meta, indent=1, sort_keys=True).encode())
            fsync_dir(tmp)
            try:
                os.rename(tmp, models_dir / name)  # fails if another writer took this number
            except OSError:
                if (models_dir / name).exists():
                    continue
                raise
            fsync_dir(models_dir)
            return name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _now() -> str:
    """The current UTC time as ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on the models folder itself: activations and rollbacks run one at a time."""
    fd = os.open(models_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_active(models_dir: Path, version: str) -> None:
    """Replace the ACTIVE pointer atomically and durably."""
    tmp = models_dir / f".{ACTIVE}.tmp-{os.getpid()}"
    _write_file(tmp, (version + "\n").encode())
    os.replace(tmp, models_dir / ACTIVE)
    fsync_dir(models_dir)


def _append_history(models_dir: Path, lines: list[str]) -> None:
    """Append whole lines to HISTORY (see append_log); call under _locked."""
    append_log(models_dir / HISTORY, lines)


def append_log(path: Path, lines: list[str]) -> None:
    """Append whole lines to an append-only log of the models folder in one O_APPEND write, fsynced (and its folder,
    when the file is new); a torn last line left by a crash is ended first, so the new lines stay whole."""
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = "".join(line + "\n" for line in lines).encode()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # end a torn last line (a crash mid-write) so the new line stays whole
        if os.write(fd, data) != len(data):  # pragma: no cover - a short write to a regular file
            raise ProfileError(f"cannot append to {path}: short write")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def read_log(path: Path, tail: int | None = None) -> str:
    """The text of an append-only log in the models folder (its last `tail` bytes when given), "" when there is
    none; ProfileError when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            if tail is not None:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - tail))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ProfileError(f"cannot read {path}: {exc.strerror or exc}") from None


def history(models_dir: Path) -> list[HistoryEntry]:
    """Every well-formed HISTORY line, oldest first (empty when there is none)."""
    text = read_log(models_dir / HISTORY)
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (2, 3) or not _VERSION_RE.match(parts[1]):
            continue  # a torn last line or garbage: not an activation
        action = parts[2] if len(parts) == 3 else "activate"
        if action not in ACTIONS:
            continue
        try:
            datetime.fromisoformat(parts[0])
        except ValueError:
            continue
        entries.append(HistoryEntry(parts[0], parts[1], action))
    return entries


def _stack(entries: list[HistoryEntry]) -> list[str]:
    """Replay the history as an undo stack of versions; the last element is the latest active one."""
    stack: list[str] = []
    for e in entries:
        if e.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != e.version:
            stack.append(e.version)
    return stack


def _seed_history(models_dir: Path) -> None:
    """Record the current ACTIVE (at the pointer's mtime) when there is no history yet, so it can be undone."""
    if history(models_dir):
        return
    try:
        current = active_version(models_dir)
        mtime = (models_dir / ACTIVE).stat().st_mtime
    except (ProfileError, OSError):
        return
    at = datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
    _append_history(models_dir, [f"{at} {current} activate"])


def activate(models_dir: Path, version: str) -> None:
    """Make `version` the active one (atomic pointer replace) and record it in HISTORY; it must load cleanly
    first."""
    load(models_dir, version)
    with _locked(models_dir):
        _seed_history(models_dir)
        _write_active(models_dir, version)
        _append_history(models_dir, [f"{_now()} {version} activate"])


def rollback(models_dir: Path) -> tuple[str, str]:
    """Undo the last activation: re-activate the version that was active before the current one.

    Returns (from_version, to_version). ProfileError when no profile is active, when HISTORY records no earlier
    version, or when that version no longer loads (the pointer is then left as it was)."""
    current = active_version(models_dir)
    with _locked(models_dir):
        current = active_version(models_dir)  # again, under the lock
        stack = _stack(history(models_dir))
        if stack and stack[-1] == current:
            stack.pop()
        if not stack:
            raise ProfileError(f"nothing to roll back to: {current} is the first activation recorded in "
                               f"{models_dir / HISTORY}")
        target = stack[-1]
        try:
            load(models_dir, target)
        except ProfileError as exc:
            raise ProfileError(f"cannot roll back from {current} to {target}: {exc}") from None
        _write_active(models_dir, target)
        _append_history(models_dir, [f"{_now()} {target} rollback"])
    return current, target


def active_version(models_dir: Path) -> str:
    """The active version name; NoActiveProfile when none was activated."""
    pointer = models_dir / ACTIVE
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise NoActiveProfile(f"no active profile in {models_dir}: run `inspector train DIR` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read {pointer}: {exc}") from None
    if not _VERSION_RE.match(name):
        raise ProfileError(f"{pointer} names {name!r}, which is not a profile version")
    return name


def load(models_dir: Path, version: str | None = None) -> StoredProfile:
    """Load a version (default: the active one), verifying its integrity; ProfileError if unusable."""
    name = active_version(models_dir) if version is None else version
    if not _VERSION_RE.match(name):
        raise ProfileError(f"{name!r} is not a profile version (expected v1, v2, ...)")
    folder = models_dir / name
    if not folder.is_dir():
        raise ProfileError(f"profile {name} not found in {models_dir}")
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        raw = (folder / ARRAYS).read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"profile {name} is unreadable or corrupt: {exc}") from None
    _check_sum(name, meta, hashlib.sha256(raw).hexdigest())
    import numpy as np

    from inspector.profile import NormalProfile

    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        profile = NormalProfile.from_state(meta, arrays)
    except (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError, ZeroDivisionError,
            zipfile.BadZipFile) as exc:
        raise ProfileError(f"profile {name} is incompatible or corrupt: {exc}") from None
    return StoredProfile(name, profile, meta)


def _check_sum(name: str, meta: Any, digest: str) -> None:
    """ProfileError unless profile.json (meta) records `digest` as its arrays' sha256."""
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays_sha256"), str):
        raise ProfileError(f"profile {name} is corrupt: its {META} records no checksum of its arrays (damaged, or "
                           "not written by inspector)")
    if digest != meta["arrays_sha256"]:
        raise ProfileError(f"profile {name} is corrupt: its arrays do not match the recorded checksum")


def verify(models_dir: Path, version: str) -> None:
    """ProfileError unless a version's files are there and whole (its metadata reads, its arrays match their
    recorded checksum), without loading it: what a health check can afford to ask often."""
    meta = read_meta(models_dir, version)
    digest = hashlib.sha256()
    try:
        with open(models_dir / version / ARRAYS, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ProfileError(f"profile {version} is unreadable or corrupt: {exc}") from None
    _check_sum(version, meta, digest.hexdigest())


def describe(models_dir: Path) -> list[dict[str, Any]]:
    """One summary row per version: name, created at, threshold, training size, active flag, and when it last
    became active (`activated_at`, from HISTORY; None when never recorded)."""
    try:
        current = active_version(models_dir)
    except ProfileError:
        current = None
    try:
        last_active = {e.version: e.at for e in history(models_dir)}
    except ProfileError:
        last_active = {}
    rows = []
    for name in versions(models_dir):
        try:
            meta = json.loads((models_dir / name / META).read_text(encoding="utf-8"))
            if not (models_dir / name / ARRAYS).is_file():  # found by an adversarial test: listed as usable
                raise ValueError(f"{ARRAYS} is missing")
            rows.append({"version": name, "active": name == current, **_listed(meta),
                         "activated_at": last_active.get(name)})
        except (OSError, ValueError):
            rows.append({"version": name, "active": name == current, "created_at": None, "threshold": None,
                         "n_train": None, "note": "unreadable", "activated_at": last_active.get(name)})
    return rows


def _listed(meta: Any) -> dict[str, Any]:
    """What a listing shows of one version's profile.json; ValueError when a field is not what a save writes (a
    file edited by hand or damaged: the version is listed as unreadable, the others still are)."""
    if not isinstance(meta, dict):
        raise ValueError("profile.json is not an object")
    threshold, n_train = meta.get("threshold"), meta.get("n_train")
    created_at, note = meta.get("created_at"), meta.get("note", "")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not math.isfinite(threshold)):
        raise ValueError(f"threshold {threshold!r} is not a number")
    if n_train is not None and (isinstance(n_train, bool) or not isinstance(n_train, int)):
        raise ValueError(f"n_train {n_train!r} is not a whole number")
    if not isinstance(created_at, str | None) or not isinstance(note, str):
        raise ValueError("created_at or note is not text")
    return {"created_at": created_at, "threshold": threshold, "n_train": n_train, "note": note}


def read_meta(models_dir: Path, version: str) -> dict[str, Any]:
    """The profile.json metadata of one version, without loading its arrays; ProfileError when unreadable."""
    if not _VERSION_RE.match(version):
        raise ProfileError(f"{version!r} is not a profile version (expected v1, v2, ...)")
    path = models_dir / version / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"profile {version} not found in {models_dir}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"profile {version} is unreadable or corrupt: {exc}") from None
    if not isinstance(meta, dict):
        raise ProfileError(f"profile {version} is corrupt: {META} is not an object")
    return meta
