"""Versioned profile storage on disk: one directory per version, an ACTIVE pointer, atomic writes.

Layout under the models folder:

    models/
      ACTIVE                 # text: the active version name, replaced atomically
      v1/profile.json        # metadata: version, created at, config, training hashes, calibration
      v1/profile.npz         # arrays only (numpy .npz, loaded with allow_pickle=False)

A version is first written to a hidden temporary directory and then renamed into place, so a reader sees
either a complete version or none. The JSON records the sha256 of the .npz; a version whose arrays do not
match, whose files are missing or truncated, or whose format this build does not read is refused with a
ProfileError. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from inspector import __version__
from inspector.errors import NoActiveProfile, ProfileError
from inspector.profile import NormalProfile

_VERSION_RE = re.compile(r"v([1-9]\d*)\Z")
META = "profile.json"
ARRAYS = "profile.npz"
ACTIVE = "ACTIVE"


@dataclass(frozen=True)
class StoredProfile:
    """A loaded profile with its version name and metadata."""

    version: str
    profile: NormalProfile
    meta: dict[str, Any]


def _fsync_dir(path: Path) -> None:
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
            _fsync_dir(tmp)
            try:
                os.rename(tmp, models_dir / name)  # fails if another writer took this number
            except OSError:
                if (models_dir / name).exists():
                    continue
                raise
            _fsync_dir(models_dir)
            return name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def activate(models_dir: Path, version: str) -> None:
    """Make `version` the active one (atomic pointer replace); it must load cleanly first."""
    load(models_dir, version)
    tmp = models_dir / f".{ACTIVE}.tmp-{os.getpid()}"
    _write_file(tmp, (version + "\n").encode())
    os.replace(tmp, models_dir / ACTIVE)
    _fsync_dir(models_dir)


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
    if not isinstance(meta, dict) or hashlib.sha256(raw).hexdigest() != meta.get("arrays_sha256"):
        raise ProfileError(f"profile {name} is corrupt: its arrays do not match the recorded checksum")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        profile = NormalProfile.from_state(meta, arrays)
    except (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError, ZeroDivisionError,
            zipfile.BadZipFile) as exc:
        raise ProfileError(f"profile {name} is incompatible or corrupt: {exc}") from None
    return StoredProfile(name, profile, meta)


def describe(models_dir: Path) -> list[dict[str, Any]]:
    """One summary row per version: name, created at, threshold, training size, active flag."""
    try:
        current = active_version(models_dir)
    except ProfileError:
        current = None
    rows = []
    for name in versions(models_dir):
        try:
            meta = json.loads((models_dir / name / META).read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("profile.json is not an object")
            rows.append({"version": name, "active": name == current, "created_at": meta.get("created_at"),
                         "threshold": meta.get("threshold"), "n_train": meta.get("n_train"),
                         "note": meta.get("note", "")})
        except (OSError, ValueError):
            rows.append({"version": name, "active": name == current, "created_at": None, "threshold": None,
                         "n_train": None, "note": "unreadable"})
    return rows
