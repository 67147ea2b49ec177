"""Helpers for the watch-service tests: a site folder with its own config, a real `inspector watch` process,
and an independent reader of the verdict database (plain sqlite3, not the code under test)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.synthetic import make_part

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Site:
    """One station's folders: config, inbox, archive, overlays, database, log file."""

    root: Path
    models: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def db(self) -> Path:
        return self.root / "inspector.db"

    @property
    def log(self) -> Path:
        return self.root / "watch.log"

    def write_config(self, **watch: object) -> None:
        """Write config.toml with fast test timings; keyword arguments override [watch] keys."""
        values: dict[str, object] = {"settle_s": 0.3, "rescan_s": 2.0, "poll_interval_s": 0.1, "stats_every_s": 2.0,
                                     "workers": 2}
        values.update(watch)
        lines = ["[models]", f'dir = "{self.models}"', "", "[database]", 'url = "sqlite:///inspector.db"', "",
                 "[station]", 'name = "test-station"', 'line = "L1"', 'camera = "cam-A"', "", "[watch]"]
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
        self.config.write_text("\n".join(lines) + "\n")

    def rows(self) -> list[dict]:
        """Every inspection row, read with plain sqlite3 (empty when the database does not exist yet)."""
        if not self.db.exists():
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            con.row_factory = sqlite3.Row
            try:
                return [dict(r) for r in con.execute("SELECT * FROM inspections ORDER BY id")]
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
        finally:
            con.close()

    def archived_files(self) -> list[Path]:
        """Every entry under archive/ (files, links, FIFOs; directories named like parts count as entries)."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.archive):
            out += [Path(dirpath) / f for f in filenames]
            for d in list(dirnames):
                if "." in d:  # a directory named like an image file: an archived entry, not a date folder
                    out.append(Path(dirpath) / d)
                    dirnames.remove(d)
        return out


def _toml(value: object) -> str:
    """A TOML literal for a simple value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def make_site(root: Path, models: Path, **watch: object) -> Site:
    """A fresh site folder with config and inbox."""
    site = Site(root, models)
    root.mkdir(parents=True, exist_ok=True)
    site.inbox.mkdir(exist_ok=True)
    site.write_config(**watch)
    return site


def start(site: Site, *extra: str) -> subprocess.Popen:
    """Start `inspector watch` as a real process, logging to site.log (appended)."""
    log = open(site.log, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "inspector", "watch", "--config", str(site.config), *extra],
                            cwd=site.root, stdout=log, stderr=subprocess.STDOUT, env=env)


def run_once(site: Site, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run `inspector watch --once` to completion (text output captured)."""
    return subprocess.run([sys.executable, "-m", "inspector", "watch", "--once", "--config", str(site.config)],
                          cwd=site.root, capture_output=True, text=True, timeout=timeout)


def wait_for(condition: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen | None = None,
             site: Site | None = None) -> object:
    """Poll until condition() is truthy; fail with the watcher's log when it does not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    log = site.log.read_text(errors="replace")[-3000:] if site and site.log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- watcher log ---\n{log}")


def starts(site: Site) -> int:
    """How many `watching` lines (watcher starts) the site's appended log holds."""
    return site.log.read_text(errors="replace").count(" watching ") if site.log.exists() else 0


def wait_started(site: Site, proc: subprocess.Popen, timeout: float = 60.0, count: int = 1) -> None:
    """Wait until the watcher logged its `watching` line (the count-th one in an appended log)."""
    wait_for(lambda: starts(site) >= count, timeout, "the watcher to start", proc, site)


def stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM and wait; returns the exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def part_jpeg(seed: int, defect: str | None = None, size: tuple[int, int] = (200, 150)) -> bytes:
    """A synthetic part as JPEG bytes; a different seed gives different content."""
    img = make_part(np.random.default_rng(seed), *size, defect=defect)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def marked_png(seed: int) -> bytes:
    """A synthetic good part (200 x 150) with a green mark at x 30%, y 30% of the photo, as PNG bytes: what dust on
    the lens or a tool marking every part alike leaves at one place on every photo."""
    img = make_part(np.random.default_rng(seed), 200, 150)
    cv2.circle(img, (60, 45), 6, (60, 160, 60), -1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def atomic_drop(folder: Path, name: str, data: bytes) -> Path:
    """Write under a temporary name, then rename into place (what careful cameras do)."""
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    final = folder / name
    os.rename(tmp, final)
    return final


def drop_dac_override() -> None:
    """For preexec_fn: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set before exec, so
    a child run as root is refused a mode-000 file like any other user (root otherwise reads it)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
