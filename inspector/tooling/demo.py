"""`make demo`: the end-to-end demo of a station, in ./demo (removed and rebuilt on every run).

1. generates two demo products of one line (issue 16: `flange` and `cap`, the same part in other colours): good
   parts of each to train on, and the frames a line camera will deliver, the two products interleaved, each file
   named `<product>_NNNN.jpg`;
2. trains a profile per product with `inspector train --product`; the station tells the products apart by the file
   name (`[watch] product_from = "name"`);
3. starts `inspector watch` as a real process on demo/inbox (its log goes to demo/watch.log);
4. plays a camera that drops parts into the inbox: mostly good, some with each kind of defect, some written
   slowly in chunks, some written under a temporary name and renamed, a truncated file, an empty file, and
   a resend of a part already judged;
5. prints each verdict as it lands in the database;
6. stops the watcher with SIGTERM and prints a summary read back from the database (plain sqlite3).

What the camera dropped, with the truth about each part, is kept in demo/camera.json. Any failure stops the
watcher and exits non-zero with a one-line error: the demo never leaves a watcher running.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from inspector.synthetic import DEFECTS, make_part

PRODUCTS = ("flange", "cap")  # the two products of the demo line (inspector/synthetic.py PRODUCTS)

SIZE = (640, 480)  # camera frame, width x height
CHUNK = 8 * 1024  # a slow camera writes this many bytes ...
PAUSE_S = 0.04  # ... then pauses this long (well under settle_s, so the file only looks finished at the end)
SETTLE_S = 0.5
START_TIMEOUT_S = 60.0  # for the watcher's "watching" line
DRAIN_TIMEOUT_S = 30.0  # after the last drop, for the last verdicts
KILL_GRACE_S = 10.0  # after SIGTERM on the failure path, before SIGKILL
POLL_S = 0.1
VERDICT_LINE = re.compile(r"#\d+ (ok|defect|rejected)\b")


class DemoError(Exception):
    """A step of the demo failed; the message is one line."""


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Drop:
    """One file the camera delivers, and the truth about it."""

    name: str
    how: str  # "direct", "slow", "renamed", "resend"
    planted: str  # "good", a defect from synthetic.DEFECTS, "truncated" or "empty"
    sha256: str | None  # None for the empty file (it is recorded by its path, not its content)
    size: int
    resend_of: str | None = None
    written_at: float | None = None  # wall clock when the file was complete under its final name
    product: str = PRODUCTS[0]  # the product the file shows (its name says so)


# ---------------------------------------------------------------------------------------------- files


def jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise DemoError("cannot encode a JPEG")
    return buf.tobytes()


def write_config(root: Path) -> Path:
    """demo/config.toml: everything the station needs, relative to demo/."""
    cfg = root / "config.toml"
    cfg.write_text(f"""\
# The demo station, written by `make demo` (python -m inspector.tooling.demo). Relative paths resolve against this folder.

[models]
dir = "models"                 # profiles trained by the demo

[watch]
dir = "inbox"                  # the folder the (simulated) camera writes into
settle_s = {SETTLE_S}                 # a file without a close/rename event is complete once unchanged this long
rescan_s = 10.0
stats_every_s = 5.0            # a throughput line in the log every 5 s
archive = true                 # judged files move to archive/ok, archive/defect, archive/rejected
archive_dir = "archive"
overlays_dir = "overlays"      # an anomaly-map overlay JPEG for each defect
workers = 0                    # scoring threads: one per core
product_from = "name"          # two products on this line: the file name says which (flange_0001.jpg, cap_0002.jpg)
product_regex = "^(?P<product>[a-z]+)_"

[database]
url = "sqlite:///inspector.db"  # demo/inspector.db

[station]
name = "demo-station"
line = "demo-line"
camera = "demo-camera"
""")
    return cfg


def plan_camera(rng: np.random.Generator, n_good: int, per_defect: int) -> tuple[list[Drop], dict[str, bytes]]:
    """The camera's programme: frames in drop order, how each is written, and its bytes."""
    kinds = ["good"] * n_good + [d for d in DEFECTS for _ in range(per_defect)]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    made = [PRODUCTS[int(p)] for p in rng.integers(0, len(PRODUCTS), len(kinds))]
    frames = [jpeg(make_part(rng, *SIZE, defect=None if k == "good" else k, product=p)) for k, p in zip(kinds, made)]
    n = len(kinds)
    order = rng.permutation(n)
    n_slow, n_renamed = max(1, n // 9), max(1, n // 6)
    how = ["direct"] * n
    for i in order[:n_slow]:
        how[i] = "slow"
    for i in order[n_slow:n_slow + n_renamed]:
        how[i] = "renamed"
    items: list[tuple[str, str, bytes, str | None, str]] = [(how[i], kinds[i], frames[i], None, made[i])
                                                             for i in range(n)]
    truncated = jpeg(make_part(rng, *SIZE))
    items.insert(n // 3, ("direct", "truncated", truncated[: len(truncated) // 2], None, PRODUCTS[0]))
    items.insert(2 * n // 3, ("direct", "empty", b"", None, PRODUCTS[1]))
    items.insert(len(items) - 2, ("resend", "good", b"", "?", PRODUCTS[0]))  # the same bytes as an earlier good part
    drops, payload = [], {}
    for i, (mode, planted, data, resend, product) in enumerate(items):
        if resend:
            original = next((d for d in drops if d.planted == "good" and d.how == "direct"),
                            next(d for d in drops if d.sha256))
            resend, data, product = original.name, payload[original.name], original.product
        name = f"{product}_{i + 1:04d}.jpg"
        digest = hashlib.sha256(data).hexdigest() if data else None
        drops.append(Drop(name, mode, planted, digest, len(data), resend_of=resend, product=product))
        payload[name] = data
    return drops, payload


class Camera(threading.Thread):
    """Drops the planned files into the inbox, spread evenly over `seconds`."""

    def __init__(self, inbox: Path, drops: list[Drop], payload: dict[str, bytes], seconds: float):
        super().__init__(name="camera", daemon=True)
        self.inbox, self.drops, self.payload, self.seconds = inbox, drops, payload, seconds
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            gap = self.seconds / max(1, len(self.drops))
            for i, drop in enumerate(self.drops):
                if self.halt.wait(max(0.0, start + i * gap - time.monotonic())):
                    return
                self._write(drop, self.payload[drop.name])
                drop.written_at = time.time()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _write(self, drop: Drop, data: bytes) -> None:
        final = self.inbox / drop.name
        if drop.how == "direct" or drop.how == "resend":
            final.write_bytes(data)
        elif drop.how == "slow":  # straight under the final name, chunk by chunk
            self._chunked(final, data)
        else:  # "renamed": written (slowly too) under a name the watcher ignores, then renamed into place
            tmp = self.inbox / f".{drop.name}.part"
            self._chunked(tmp, data)
            os.rename(tmp, final)

    def _chunked(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            for i in range(0, len(data), CHUNK):
                fh.write(data[i:i + CHUNK])
                fh.flush()
                if self.halt.wait(PAUSE_S):
                    return


# ---------------------------------------------------------------------------------------------- watcher


def watch_command(cfg: Path) -> list[str]:
    """The watcher process (a function so tests can stand in a faulty one)."""
    return [sys.executable, "-m", "inspector", "watch", "--config", str(cfg)]


class LogTail:
    """New complete lines of the watcher's log, for echoing its non-verdict lines."""

    def __init__(self, path: Path):
        self.path, self.pos, self.buf = path, 0, b""
        self.lines: list[str] = []

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self.pos += len(chunk)
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        out = [line.decode("utf-8", "replace").rstrip() for line in done]
        self.lines += out
        return out

    def last(self) -> str:
        text = [line for line in self.lines + [self.buf.decode("utf-8", "replace")] if line.strip()]
        return text[-1].strip() if text else "(empty log)"


def strip_time(line: str) -> str:
    """A text log line without its leading ISO timestamp."""
    first, _, rest = line.partition(" ")
    return rest if re.match(r"\d{4}-\d\d-\d\dT", first) else line


def echo(line: str) -> None:
    """Show a watcher log line, except verdict lines (the table shows those, from the database)."""
    if line.strip() and not VERDICT_LINE.search(line):
        say(f"   watcher | {strip_time(line)}")


def stop_watcher(proc: subprocess.Popen | None, grace: float) -> int | None:
    """SIGTERM, wait up to grace, then SIGKILL; returns the exit code (None when there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# ---------------------------------------------------------------------------------------------- database


def read_rows(db: Path, after: int = 0) -> list[dict]:
    """Inspection rows with id > after, read with plain sqlite3 (read-only)."""
    if not db.exists():
        return []
    con = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute("SELECT * FROM inspections WHERE id > ? ORDER BY id", (after,))]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
    finally:
        con.close()


def when(row: dict) -> float | None:
    """inspected_at as a Unix time."""
    try:
        t = datetime.fromisoformat(str(row["inspected_at"]))
    except (TypeError, ValueError):
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


HOW = {"direct": "in one go", "slow": "slowly, {n} x 8 KB", "renamed": "via a .part name, renamed",
       "resend": "resend of {of}"}


def describe_write(d: Drop) -> str:
    return HOW[d.how].format(n=-(-d.size // CHUNK), of=d.resend_of)


def verdict_line(row: dict, drop: Drop | None) -> str:
    """One table line for a verdict that landed."""
    if row["verdict"] == "rejected":
        what = f"{row['reason']}"
    else:
        what = f"{row['score']:7.2f} / {row['threshold']:.2f}"
    truth, mark, wrote, lag = "?", "", "", ""
    if drop is not None:
        truth = {"good": "-", "truncated": "truncated file", "empty": "empty file"}.get(drop.planted, drop.planted)
        wrote = describe_write(drop)
        if drop.planted in DEFECTS:
            mark = "caught" if row["verdict"] == "defect" else "MISSED"
        elif drop.planted == "good" and row["verdict"] != "ok":
            mark = "FALSE ALARM"
        landed = when(row)
        if landed and drop.written_at:
            lag = f"{max(0.0, landed - drop.written_at):4.1f} s"
    shown = {"ok": "ok", "defect": "DEFECT", "rejected": "REJECTED"}[row["verdict"]]
    judged_by = f"{row.get('product') or '-'}/{row['profile_version'] or '-'}"
    return (f"  #{row['id']:<4} {row['name']:<16} {shown:<9} {what:<17} {judged_by:<10} "
            f"{lag:>6}  {wrote:<28} {truth:<15} {mark}").rstrip()


TABLE_HEAD = (f"  {'id':<5} {'part':<16} {'verdict':<9} {'score / thresh.':<17} {'profile':<10} {'after':>6}  "
              f"{'how the camera wrote it':<28} {'planted':<15} check")


# ---------------------------------------------------------------------------------------------- the demo


MARK = ".inspector-demo"  # written first into a demo's folder: a later demo may remove the folder (see clear)


def clear(root: Path) -> None:
    """Remove a previous demo's folder (one holding MARK, or an older demo's camera.json, config.toml and watch.log)
    before a run; DemoError, touching nothing, for any other existing path: a file, a link, a folder with other files
    in it, the current folder or one above it (found by an adversarial test: `--dir .` deleted the folder's files,
    `--dir notes.txt` the file)."""
    if not (root.exists() or root.is_symlink()):
        return
    if root.is_symlink() or not root.is_dir():
        raise DemoError(f"{root} is a file or a link, not a demo folder: the demo removes and rebuilds its folder; "
                        "choose another --dir")
    here, there = Path.cwd().resolve(), root.resolve()
    if there == here or there in here.parents:
        raise DemoError(f"{root} is the current folder or holds it: the demo removes and rebuilds its folder; "
                        "choose a new one with --dir")
    older = all((root / name).is_file() for name in ("camera.json", "config.toml", "watch.log"))  # before MARK
    if any(root.iterdir()) and not (root / MARK).is_file() and not older:
        raise DemoError(f"{root} holds files that are not a previous demo's (no {MARK}): the demo removes and "
                        "rebuilds its folder; choose another --dir")
    shutil.rmtree(root)


def run(root: Path = Path("demo"), *, n_train: int = 60, n_good: int = 24, per_defect: int = 3,
        seconds: float = 16.0) -> int:
    """The whole demo in `root` (removed first); returns the exit code. Never leaves the watcher running."""
    proc: subprocess.Popen | None = None
    camera: Camera | None = None
    log_fh = None
    try:
        t0 = time.monotonic()
        clear(root)
        root.mkdir(parents=True)
        (root / MARK).write_text("a folder of `python -m inspector.tooling.demo`: it removes and rebuilds it\n")
        for sub in ("good", "inbox"):
            (root / sub).mkdir()
        cfg = write_config(root)
        inbox, db, log_path = root / "inbox", root / "inspector.db", root / "watch.log"

        # 1. the demo products
        rng = np.random.default_rng(7)
        for product in PRODUCTS:
            (root / "good" / product).mkdir()
            for i in range(n_train):
                (root / "good" / product / f"good_{i:03d}.jpg").write_bytes(
                    jpeg(make_part(rng, *SIZE, product=product)))
        drops, payload = plan_camera(rng, n_good, per_defect)
        (root / "camera.json").write_text(json.dumps([asdict(d) for d in drops], indent=1) + "\n")
        by_sha = {d.sha256: d for d in drops if d.sha256 and d.how != "resend"}
        by_name = {d.name: d for d in drops}
        say(f"== 1. two demo products, {', '.join(PRODUCTS)}: {n_train} good parts of each ({SIZE[0]}x{SIZE[1]} "
            f"JPEG) in {root}/good/<product>, station config {cfg}")

        # 2. train a profile per product
        from inspector.cli import main as cli

        for product in PRODUCTS:
            say(f"== 2. $ inspector train {root}/good/{product} --product {product} --config {cfg} --note demo")
            sys.stdout.flush()
            code = cli(["train", str(root / "good" / product), "--product", product, "--config", str(cfg),
                        "--note", "demo"])
            if code != 0:
                raise DemoError(f"`inspector train --product {product}` failed with exit code {code}")

        # 3. the watcher, as a real process
        say(f"== 3. $ inspector watch --config {cfg}    (its log: {log_path})")
        log_fh = open(log_path, "ab")
        proc = subprocess.Popen(watch_command(cfg), stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        tail = LogTail(log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(" watching " in line for line in tail.new_lines()):
            if proc.poll() is not None:
                tail.new_lines()
                raise DemoError(f"the watcher exited with code {proc.returncode} before it started: {tail.last()}")
            if time.monotonic() > deadline:
                raise DemoError(f"the watcher did not start within {START_TIMEOUT_S:.0f} s: {tail.last()}")
            time.sleep(POLL_S)
        for line in tail.lines:
            echo(line)

        # 4. + 5. the camera plays; verdicts are printed as they land in the database
        n_slow = sum(d.how == "slow" for d in drops)
        n_renamed = sum(d.how == "renamed" for d in drops)
        n_def = sum(d.planted in DEFECTS for d in drops)
        say(f"== 4. the camera drops {len(drops)} files of {' and '.join(PRODUCTS)} into {inbox} over {seconds:.0f} s: "
            f"{sum(d.planted == 'good' and d.how != 'resend' for d in drops)} good, {n_def} with planted defects "
            f"({', '.join(DEFECTS)}), {n_slow} written slowly, {n_renamed} written under a temporary name and "
            f"renamed, 1 truncated, 1 empty, 1 resend")
        say(f"== 5. verdicts as they land in {db} ('after' = from the end of the write to the verdict)")
        say(TABLE_HEAD)
        expected = len({d.sha256 or d.name for d in drops})  # one row per distinct content
        camera = Camera(inbox, drops, payload, seconds)
        camera.start()
        rows: list[dict] = []
        drain_until = None
        while True:
            for line in tail.new_lines():
                echo(line)
            for row in read_rows(db, rows[-1]["id"] if rows else 0):
                rows.append(row)
                say(verdict_line(row, by_sha.get(row["sha256"]) if row["sha256"] else by_name.get(row["name"])))
            if camera.error is not None:
                raise DemoError(f"the camera failed: {camera.error}")
            if proc.poll() is not None:
                tail.new_lines()
                raise DemoError(f"the watcher stopped with code {proc.returncode}: {tail.last()}")
            if not camera.is_alive():
                pending = [p for p in inbox.iterdir()]
                if len(rows) >= expected and not pending:
                    break
                drain_until = drain_until or time.monotonic() + DRAIN_TIMEOUT_S
                if time.monotonic() > drain_until:
                    raise DemoError(f"{expected - len(rows)} verdicts missing and {len(pending)} files still in "
                                    f"{inbox} {DRAIN_TIMEOUT_S:.0f} s after the last drop (see {log_path})")
            time.sleep(POLL_S)

        # 6. stop the watcher and summarise from the database
        say("== 6. stopping the watcher (SIGTERM)")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise DemoError("the watcher did not stop within 60 s of SIGTERM") from None
        for line in tail.new_lines():
            echo(line)
        if code != 0:
            raise DemoError(f"the watcher exited with code {code} after SIGTERM: {tail.last()}")
        summarise(root, cfg, drops, read_rows(db), time.monotonic() - t0)
        return 0
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # anything else: still one line, still no watcher left behind
        print(f"demo: error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if camera is not None:
            camera.halt.set()
        stop_watcher(proc, KILL_GRACE_S)
        if log_fh is not None:
            log_fh.close()


def summarise(root: Path, cfg: Path, drops: list[Drop], rows: list[dict], elapsed: float) -> None:
    """The summary, read back from the database (rows) and checked against what the camera dropped."""
    by_sha = {r["sha256"]: r for r in rows if r["sha256"]}
    by_name = {r["name"]: r for r in rows}
    judged = [(d, by_sha.get(d.sha256) if d.sha256 else by_name.get(d.name)) for d in drops if d.how != "resend"]
    missing = [d.name for d, r in judged if r is None]
    if missing:
        raise DemoError(f"no verdict recorded for {', '.join(missing)}")
    count = Counter(r["verdict"] for r in rows)
    defects = [(d, r) for d, r in judged if d.planted in DEFECTS]
    goods = [(d, r) for d, r in judged if d.planted == "good"]
    caught = [d for d, r in defects if r["verdict"] == "defect"]
    false_alarms = [d.name for d, r in goods if r["verdict"] != "ok"]
    per_type = ", ".join(f"{t} {sum(d.planted == t for d in caught)}/{sum(d.planted == t for d, _ in defects)}"
                         for t in DEFECTS)
    whole = all(r["size"] == d.size for d, r in judged if d.how in ("slow", "renamed"))
    ms = [r["ms"] for r in rows if r["ms"] is not None and r["verdict"] != "rejected"]
    lags = [when(r) - d.written_at for d, r in judged if when(r) and d.written_at]
    scored = [r for r in rows if r["verdict"] != "rejected"]
    thresholds = sorted({f"{r['product']} {r['profile_version']} (threshold {r['threshold']:.2f})" for r in scored})
    wrong = [d.name for d, r in judged if r["verdict"] != "rejected" and r["product"] != d.product]
    if wrong:
        raise DemoError(f"judged with another product's profile: {', '.join(wrong)}")
    archive, overlays = root / "archive", root / "overlays"
    n_archived = sum(1 for p in archive.rglob("*") if p.is_file()) if archive.exists() else 0
    n_overlays = len(list(overlays.glob("*.jpg"))) if overlays.exists() else 0
    first_defect = next((r["id"] for r in rows if r["verdict"] == "defect"), rows[0]["id"])
    exe = Path(sys.executable).parent / "inspector"
    cmd = os.path.relpath(exe) if exe.exists() and not os.path.relpath(exe).startswith("..") else "inspector"
    pct = lambda a, b: f"{100 * a / b:.0f}%" if b else "-"  # noqa: E731

    say(f"== summary, read back from {root / 'inspector.db'}")
    say(f"   files dropped           {len(drops)}, inspections recorded {len(rows)} (one per distinct content; "
        f"the resend got none)")
    say(f"   verdicts                ok {count['ok']}, defect {count['defect']}, rejected {count['rejected']}")
    say(f"   planted defects flagged {len(caught)} of {len(defects)} (recall {pct(len(caught), len(defects))}): "
        f"{per_type}")
    say(f"   good parts passed       {len(goods) - len(false_alarms)} of {len(goods)}"
        + (f"; false alarms: {', '.join(false_alarms)}" if false_alarms else ", no false alarms"))
    for product in PRODUCTS:
        mine = [(d, r) for d, r in judged if d.product == product and r["verdict"] != "rejected"]
        flagged = sum(r["verdict"] == "defect" for d, r in mine if d.planted in DEFECTS)
        say(f"   product {product:<15} {len(mine)} parts judged with its own profile "
            f"({', '.join(sorted({r['profile_version'] for _, r in mine})) or '-'}), "
            f"{flagged} of {sum(d.planted in DEFECTS for d, _ in mine)} planted defects flagged")
    for r in rows:
        if r["verdict"] == "rejected":
            say(f"   rejected                #{r['id']} {r['name']}: {r['reason']} ({r['detail']})")
    for d in drops:
        if d.how == "resend":
            say(f"   resend                  {d.name} = {d.resend_of} (same bytes): no second verdict, archived "
                f"beside it (watch.log says 'duplicate')")
    say(f"   slow and renamed writes {sum(d.how in ('slow', 'renamed') for d in drops)} files, each judged once "
        + ("on its complete bytes" if whole else "- BUT some sizes differ from what was written"))
    if ms and lags:
        say(f"   timing                  judging median {statistics.median(ms):.0f} ms per part; a verdict landed "
            f"median {statistics.median(lags):.1f} s after the write (settle {SETTLE_S} s)")
    say(f"   profile                 {', '.join(thresholds)}; station {rows[0]['station']} / {rows[0]['line']} / "
        f"{rows[0]['camera']}")
    say(f"   archive                 {archive}/{{ok,defect,rejected}}/<date>/  ({n_archived} files, inbox empty)")
    say(f"   overlays                {overlays}/  ({n_overlays} anomaly maps, one per defect)")
    say(f"   watcher log             {root / 'watch.log'};  camera's truth: {root / 'camera.json'}")
    say(f"   demo took               {elapsed:.0f} s")
    say("== next")
    hints = [(f"list --config {cfg}", "the verdicts, newest first"),
             (f"list --verdict defect --config {cfg}", "only the defects"),
             (f"list --product cap --config {cfg}", "only one product's parts"),
             (f"profiles list --product cap --config {cfg}", "one product's profile versions"),
             (f"show {first_defect} --config {cfg}", "one inspection in full, with its overlay path"),
             (f"watch --config {cfg}", f"run the station yourself and drop images into {root}/inbox")]
    width = max(len(c) for c, _ in hints)
    for command, what in hints:
        say(f"   {cmd} {command:<{width}}   # {what}")


def main(argv: list[str] | None = None) -> int:
    """`python -m inspector.tooling.demo [--seconds S] ...`; SIGTERM stops the demo (and its watcher) like Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m inspector.tooling.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="demo", help="demo folder, removed and rebuilt (default ./demo); an "
                        "existing folder must be empty or a previous demo's")
    parser.add_argument("--train", type=int, default=60, help="good parts to train on (default 60)")
    parser.add_argument("--good", type=int, default=24, help="good parts the camera drops (default 24)")
    parser.add_argument("--per-defect", type=int, default=3, help="parts per defect kind (default 3)")
    parser.add_argument("--seconds", type=float, default=16.0, help="how long the camera plays (default 16)")
    args = parser.parse_args(argv)
    if args.train < 10 or args.good < 2 or args.per_defect < 0 or args.seconds < 0:
        parser.error("need --train >= 10, --good >= 2, --per-defect >= 0, --seconds >= 0")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        return run(Path(args.dir), n_train=args.train, n_good=args.good, per_defect=args.per_defect,
                   seconds=args.seconds)
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
