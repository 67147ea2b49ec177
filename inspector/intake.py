"""One file from the watch folder to an Outcome, in a worker thread of the watch service.

The file is read once and hashed (and judged again later if it changed while being read); a copy of a part
already recorded is found by its sha256 when files stay in the folder; the part's product is chosen and the
bytes are judged (in a judging process, judges.py, or in the worker thread itself with [watch] judge_in =
"threads"), a defect's overlay JPEG written; the outcome goes to the committer. Bad input never raises: an
unreadable file is retried a few times when the error may pass (an I/O error, not a permission), then rejected;
a rejection that a file whose writer has only paused would also get (empty, truncated, not yet an image) is
provisional (watcher.Rechecks). In a shared folder the file is first claimed in the database for this station.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector import imaging
from inspector.committer import Emit, Job, Outcome
from inspector.config import Config
from inspector.errors import ImageRejected
from inspector.judges import JudgePool, ThreadJudge
from inspector.pipeline import Verdict
from inspector.products import Choice, Products
from inspector.store import Store
from inspector.watcher import PROVISIONAL_REASONS, Rechecks, Signature, signature

TRANSIENT_READ_ATTEMPTS = 3  # an unreadable file (other than no permission) is retried this often first
_PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.EISDIR, errno.ENXIO})


def claim_key(rel: str) -> str:
    """The claim key of a file: the sha256 of its path relative to the folder (the same on every station)."""
    return imaging.sha256_hex(os.fsencode(rel))


def _unknown_product(choice: Choice, digest: str, size: int) -> Verdict:
    """The rejection of a part no active profile may judge (its product unknown, or without a profile)."""
    return Verdict(name="", sha256=digest, verdict="rejected", reason="unknown_product", detail=choice.detail,
                   score=None, threshold=None, profile_version=None, size=size)


def source_key(path: str, sig: Signature | None) -> str:
    """Identity of an entry whose bytes could not be read: a hash of its path, its inode, mtime, size and mode."""
    digest = imaging.sha256_hex(os.fsencode(path))[:32]
    if sig is None:
        return f"entry:{digest}"
    size, mtime_ns, ino, mode = sig
    return f"entry:{digest}:{ino}:{mtime_ns}:{size}:{mode:o}"


def _utf8_name(path: str) -> bool:
    """True when the file name is valid UTF-8."""
    try:
        os.fsencode(os.path.basename(path)).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class Intake:
    """Takes one job (a path found complete) to an Outcome for the committer: see the module docstring. `again(path)`
    marks an in-flight path to be looked at again once its round is over; `judges` is set when they start."""

    def __init__(self, cfg: Config, folder: Path, overlays: Path, store: Store, check_db: Callable[[], None],
                 products: Products, rechecks: Rechecks, emit: Emit, again: Callable[[str], None]):
        self.cfg = cfg
        self.w = cfg.watch
        self.folder = folder
        self.overlays = overlays
        self.store = store
        self.check_db = check_db  # never read or take a row of a database file deleted or replaced meanwhile
        self.products = products
        self.rechecks = rechecks
        self.emit = emit
        self.again = again
        self.judges: JudgePool | ThreadJudge | None = None
        self._attempts: dict[str, int] = {}  # path -> failed reads so far (transient errors)

    def claim(self, job: Job) -> str | None:
        """Claim the file for this station in the database (shared folders); its key, or None when another
        station holds a live claim on it."""
        rel = os.path.relpath(job.path, self.folder)
        key = claim_key(rel)
        station = self.cfg.station.name
        self.check_db()
        got = self.store.claim(key, station, imaging.printable(rel), self.w.claim_lease_s)
        if not got.got:
            return None
        if got.took_over:
            self.emit("claim", logging.WARNING, f"took over the expired claim of {got.took_over} on "
                                                f"{imaging.printable(rel)}", previous_station=got.took_over)
        return key

    def take(self, job: Job) -> Outcome:
        """Read, hash, de-duplicate, score; never raises for bad input."""
        path = job.path
        sig = signature(path)
        if sig is None:
            return Outcome(job)  # gone before we got to it: nothing to record, nothing to move
        start = time.perf_counter()
        try:
            data = imaging.read_file(path, self.cfg.input.max_bytes)
        except ImageRejected as exc:
            if not os.path.lexists(path):
                return Outcome(job)
            if self._transient(path, exc):
                return Outcome(job)
            choice = self.products.choose(path, job.received_at)
            insp = choice.inspector
            row = self._row(job, Verdict(name="", sha256=None, verdict="rejected", reason=exc.reason,
                                         detail=exc.detail, score=None,
                                         threshold=insp.profile.threshold_ if insp else None,
                                         profile_version=insp.version if insp else None), key=source_key(path, sig),
                            start=start, product=choice.product)
            return self._unless_provisional(Outcome(job, row=row, sig=sig))
        self._attempts.pop(path, None)
        if signature(path) != sig:  # written to, or replaced, while we read it: judge it when it settles again
            self.again(path)
            return Outcome(job)
        digest = imaging.sha256_hex(data)
        if not self.w.archive:  # files stay in the folder: most of those found at start are judged already
            self.check_db()  # never take a row of a database file deleted or replaced meanwhile
            existing = self.store.find(sha256=digest)
            if existing is not None:
                return Outcome(job, existing=existing, sig=sig)
        # (with archiving, a file in the folder is almost always new; the rare one that is not, a copy or a
        # file whose move a crash interrupted, is caught by the unique sha256 at commit)
        choice = self.products.choose(path, job.received_at)
        insp = choice.inspector
        overlay = None  # a defect's overlay (JPEG), drawn where it was judged
        if insp is None:
            verdict = _unknown_product(choice, digest, len(data))
        elif not _utf8_name(path):
            verdict = Verdict(name="", sha256=digest, verdict="rejected", reason="bad_name",
                              detail=f"{imaging.printable(os.path.basename(path))}: file name is not valid UTF-8",
                              score=None, threshold=insp.profile.threshold_, profile_version=insp.version,
                              size=len(data))
        else:
            judged = self.judges.judge(insp, choice.models_dir or Path(self.cfg.models.dir), data,
                                       imaging.printable(os.path.basename(path)), digest)
            verdict, overlay = judged.verdict, judged.overlay_jpeg
        row = self._row(job, verdict, key=None, start=start, product=choice.product)
        if overlay is not None:
            row["overlay_path"] = self._write_overlay(digest, overlay)
        return self._unless_provisional(Outcome(job, row=row, sig=sig))

    def _unless_provisional(self, o: Outcome) -> Outcome:
        """A rejection that a file whose writer has only paused would also get (empty, truncated, not yet an
        image) is final only after REJECTION_LOOKS unchanged looks a settle time apart, and never while a
        process is seen holding the file open for writing (watcher.Rechecks); until then the file stays, with
        no row, and is looked at again."""
        path, row = o.job.path, o.row
        if row["verdict"] != "rejected" or row["reason"] not in PROVISIONAL_REASONS:
            self.rechecks.forget(path)
            return o
        look = self.rechecks.look(path, o.sig)
        if look.final:
            return o
        shown, what = imaging.printable(path), f"{row['reason']}: {row['detail']}"
        if look.leave:
            self.emit("recheck", logging.WARNING, f"{shown} still looks incomplete ({what}) and {look.writers[0]} "
                                                  "has it open for writing: left in the folder for the next run")
            return Outcome(o.job)
        if look.news and look.writers:
            self.emit("recheck", logging.INFO, f"{shown} looks incomplete ({what}) while {look.writers[0]} has "
                                               "it open for writing: waiting for the writer to finish")
        elif look.news:
            self.emit("recheck", logging.INFO,
                      f"{shown} looks incomplete ({what}); its writer may only have paused: looked at again after "
                      f"{self.w.settle_s:g} s, rejected once it has stayed so for {self.rechecks.looks} looks")
        return Outcome(o.job, recheck=True)

    def _transient(self, path: str, exc: ImageRejected) -> bool:
        """True when a read failure may pass (an I/O error, not a permission): retried at the next rescan, up to
        TRANSIENT_READ_ATTEMPTS times, before it becomes a rejection."""
        if exc.reason != "unreadable" or exc.errno is None or exc.errno in _PERMANENT_ERRNOS:
            return False
        n = self._attempts.get(path, 0) + 1
        if n >= TRANSIENT_READ_ATTEMPTS:
            self._attempts.pop(path, None)
            return False
        self._attempts[path] = n
        self.emit("retry", logging.WARNING, f"cannot read {imaging.printable(path)} ({exc.detail}); "
                                            f"attempt {n} of {TRANSIENT_READ_ATTEMPTS}, retried at the next rescan")
        return True

    def _row(self, job: Job, v: Verdict, key: str | None, start: float, product: str) -> dict[str, Any]:
        """The inspection row for a verdict (inspected_at and archived_path are set at commit)."""
        st = self.cfg.station
        return {
            "sha256": v.sha256 if key is None else None, "source_key": key,
            "name": imaging.printable(os.path.basename(job.path)), "source_path": imaging.printable(job.path),
            "archived_path": None, "size": v.size, "width": v.width, "height": v.height,
            "received_at": job.received_at, "inspected_at": None, "verdict": v.verdict, "reason": v.reason,
            "detail": v.detail, "score": v.score, "threshold": v.threshold, "profile_version": v.profile_version,
            "overlay_path": None, "ms": (time.perf_counter() - start) * 1000.0,
            "station": st.name, "line": st.line, "camera": st.camera, "exposure": v.exposure,
            "peak_x": v.peak_x, "peak_y": v.peak_y, "pos_x": v.pos_x, "pos_y": v.pos_y,
            "product": product or "",  # "" = none could be told (rejected unknown_product)
        }

    def _write_overlay(self, digest: str, jpeg: bytes) -> str | None:
        """Write the anomaly-map overlay JPEG atomically (named by sha256, so a retry rewrites the same file)."""
        try:
            self.overlays.mkdir(parents=True, exist_ok=True)
            final = self.overlays / f"{digest}.jpg"
            tmp = self.overlays / f".tmp-{digest}-{threading.get_ident()}.jpg"
            tmp.write_bytes(jpeg)
            os.replace(tmp, final)
            return str(final)
        except OSError as exc:
            self.emit("error", logging.ERROR, f"cannot write overlay for {digest[:12]}: {exc}")
            return None

    def cleanup_overlay_temps(self) -> None:
        """Remove temporary overlay files a killed run left (only our own .tmp- names; PNG before 2026-12-06)."""
        if self.overlays.is_dir():
            for p in (*self.overlays.glob(".tmp-*.jpg"), *self.overlays.glob(".tmp-*.png")):
                p.unlink(missing_ok=True)
