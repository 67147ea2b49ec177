"""`inspector bench --watch`: the hot-folder service end to end, measured as ratios in one run.

Everything happens in a fresh temporary folder (removed at the end unless `keep`):

* Site. A profile is trained on 30 generated good parts rendered at the benchmark's image size (5 MP) with
  the given [profile] params, saved and activated. (Training on small 256x192 renders also "works", but
  flags about 40% of the good 5 MP parts: a small render's noise does not average out the way a 5 MP
  one's does. That would overweight the overlay path, so the bench trains at the size it drops.)
  config.toml points [models], [database] (SQLite) and [watch] dir/archive_dir/overlays_dir into the
  folder; every other key keeps its default (settle_s 1.0, workers 0 = one per core, batch_size 64),
  except stats_every_s = 10 (a throughput line in the watcher log). [station] line is unique per run
  ("watchbench-" and 12 random hex digits), and so is the MQTT topic prefix inspector/<line>/watchbench:
  runs on a shared broker never mix.
* MQTT. When a TCP connection to the broker (`mqtt_url`, default mqtt://127.0.0.1:1883) succeeds before the
  run, config.toml gets [mqtt] url and that topic (every other [mqtt] key at its default: QoS 1, heartbeat
  1 s), so the watcher publishes every verdict, its retained state and heartbeats throughout the run, and
  every figure below is measured with MQTT on (the figures mqtt_url and mqtt_topic name them). When it fails
  (or mqtt_url is empty), the watcher runs without [mqtt]; mqtt_url, mqtt_topic, publish_received,
  publish_latency_p50_ms and publish_latency_p99_ms are null and publish_latency_reason says why (it is
  null when they were measured).
* Files. 16 distinct 2592x1944 JPEGs are rendered with `synthetic.make_part` at full size, as
  `inspector bench` does (sensor noise at full resolution; 12 good, one of each defect type, so a quarter
  of the parts are defects and get an overlay). Each dropped file is one of them with a JPEG COM segment
  ("inspector-watchbench N") inserted after SOI and the JFIF APP0 segment: distinct sha256, identical
  pixels. The bytes are built in memory; a drop writes them to `.NAME.tmp` in the inbox and os.rename()s
  that to `part-NNNNNN.jpg` (what careful cameras do).
* decode_images_per_s: the reference of the goal. Plain full-resolution `cv2.imdecode(IMREAD_COLOR)` of
  256 of the dropped byte strings (held in memory: no file reads, no hashing) by a ThreadPoolExecutor with
  one thread per core, in images/s; 3 repetitions before the watcher starts and 3 after it stopped, median
  of the 6. reduced_decode_images_per_s: the same with IMREAD_REDUCED_COLOR_8, the decode the service
  actually does for a 5 MP JPEG (reported for transparency).
* Warm-up. The real service runs as a separate process (`python -m inspector watch --config ...`, output
  in watch.log). Once it logged " watching ", one file of each base is dropped and judged, untimed (the
  first defect imports the overlay code, about a second).
* Throughput phase. The bench drops `parts` files as fast as it can, keeping at most `max_backlog`
  dropped but not yet committed. watch_images_per_s = parts / (the latest inspected_at, i.e. the last
  commit - the wall time the first drop began). watch_over_decode = watch_images_per_s /
  decode_images_per_s. The dropping bench shares the cores with the watcher; watcher_cpu_cores and
  bench_cpu_cores are the CPU seconds each used during the phase per wall second (the watcher's with its
  judging processes). Where that time goes, per part of the phase: watcher_cpu_ms_per_part (the watcher
  process itself: noticing, reading and hashing, committing, archiving, publishing) and
  judging_cpu_ms_per_part (its judging processes: decode, score, overlay); decode_cpu_ms_per_image = cores x
  1000 / decode_images_per_s is what one full decode costs the reference, so watch_over_decode can reach 0.8
  only when the two per-part figures add up to at most about decode_cpu_ms_per_image / 0.8 (less the
  dropping bench's share of the cores).
* Latency phase. Once the backlog is empty, `latency_parts` more files are dropped at a steady rate of
  half the measured throughput. Per file, latency = inspected_at of its row (set just before the batch
  commit) - the wall time just before the bench's rename (same machine clock); latency_p50_ms and
  latency_p99_ms are percentiles of that. latency_p50/p99_detect_ms: the part before the watcher found
  the file complete (received_at - rename time), for diagnosis.
  publish_latency_p50_ms / publish_latency_p99_ms (MQTT on): file complete -> verdict message received by a
  subscriber. A paho-mqtt client in the bench process subscribes to <topic>/verdict (QoS 1) before the
  latency phase; its network thread notes the wall time each message arrives (the JSON is parsed later).
  Per latency-phase file: first arrival of a message with its name and the sha256 of its dropped bytes -
  the wall time just before the rename (same clock as above). The bench waits up to PUBLISH_WAIT_S for every
  file's message; publish_received counts the files matched. If any is missing or carries another sha256,
  the two figures are null and publish_latency_reason says how many. The subscriber disconnects before the
  memory phase.
* Memory phase. The same watcher process keeps receiving files (as fast as the backlog allows) until
  `rss_parts` parts in total (warm-up included) have been committed. Its VmRSS (/proc/PID/status), with its
  judging processes' added, is
  sampled the first time the bench sees the committed count at or above 1,000 (rss_parts/10 when that is
  smaller; files are still arriving then) -> rss_mb_1k, and at rss_parts (the last verdict just committed)
  -> rss_mb_10k; rss_growth = rss_mb_10k / rss_mb_1k - 1. rss_sampled_at gives both counts.
* Disk. The watcher never deletes anything; the BENCH deletes the archived copies under archive/ about
  once a second, so disk use stays bounded (overlays, a few KB each, are kept).
* End. SIGTERM; watcher_exit must be 0. rows_ok is true when the database holds exactly one row per
  dropped file and their sha256 values are exactly those of the dropped bytes (recomputed after the stop).
  With MQTT on, the retained <topic>/state the watcher left ("offline" after its clean stop) is cleared
  (an empty retained message), so the broker keeps nothing of the run.

The database is read with plain sqlite3 (read-only), never through the code under test. Nothing here is a
pass/fail test: the figures are reported, the goals (watch_over_decode >= 0.8, rss_growth <= 0.10) are
for the reader to compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector import pipeline, profiles
from inspector.config import InputConfig, mqtt_address
from inspector.errors import ConfigError, InspectorError
from inspector.profile import ProfileParams
from inspector.synthetic import DEFECTS, make_part

FIVE_MP = (2592, 1944)
N_TRAIN = 30
N_GOOD_BASES = 12
DECODE_FILES = 256
DECODE_REPS = 3
STALL_S = 120.0  # no new verdict for this long while some are expected: the bench gives up
PROGRESS_S = 2.0
BROKER_URL = "mqtt://127.0.0.1:1883"  # the bench's watcher publishes here when something listens
PUBLISH_WAIT_S = 60.0  # after the latency phase's last commit, at most this long for its verdict messages

Log = Callable[[str], None]


def _jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    """Encode a BGR image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _comment_offset(data: bytes) -> int:
    """Where the COM segment goes: after SOI and, when present, the JFIF APP0 segment."""
    if data[2:4] == b"\xff\xe0":
        return 4 + int.from_bytes(data[4:6], "big")
    return 2


def tagged(base: bytes, n: int) -> list[bytes | memoryview]:
    """The pieces of `base` with a COM segment naming `n` inserted: same pixels, distinct sha256."""
    text = f"inspector-watchbench {n}".encode()
    at = _comment_offset(base)
    view = memoryview(base)
    return [view[:at], b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text, view[at:]]


def prune_archive(folder: Path) -> None:
    """Delete every file under an archive folder (benches only: the watcher never deletes; this bounds disk use)."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                os.unlink(os.path.join(dirpath, name))
            except FileNotFoundError:
                pass


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _utc_epoch(text: str) -> float:
    """A naive-UTC SQLite datetime string as seconds since the epoch."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


# ---------------------------------------------------------------------------------------------- setup


def train_profile(models: Path, params: ProfileParams, size: tuple[int, int], threads: int) -> str:
    """Fit a profile on generated good JPEGs of `size`, save and activate it; returns its version."""
    inp = InputConfig()

    def one(seed: int) -> np.ndarray:
        data = _jpeg(make_part(np.random.default_rng([1, seed]), *size))
        return pipeline.decode_for_training(data, inp, params)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        images = list(pool.map(one, range(N_TRAIN)))
    profile = pipeline.fit_profile(images, params)
    version = profiles.save(models, profile, {"note": "inspector bench --watch"})
    profiles.activate(models, version)
    return version


def write_config(root: Path, line: str = "line-1", mqtt: Mqtt | None = None,
                 watch: Mapping[str, Any] | None = None) -> Path:
    """The site's config.toml (relative paths resolve against root); with [mqtt] when `mqtt` is given, and the
    [watch] keys in `watch` (e.g. workers, judge_in) added."""
    lines = [
        "[models]", 'dir = "models"', "",
        "[database]", 'url = "sqlite:///inspector.db"', "",
        "[station]", 'name = "watchbench"', f'line = "{line}"', "",
        "[watch]", 'dir = "inbox"', 'archive_dir = "archive"', 'overlays_dir = "overlays"', "stats_every_s = 10.0",
        *(f"{key} = {json.dumps(value)}" for key, value in (watch or {}).items()),
    ]
    if mqtt is not None:
        lines += ["", "[mqtt]", f'url = "mqtt://{mqtt.host}:{mqtt.port}"', f'topic = "{mqtt.prefix}"']
    text = "\n".join(lines) + "\n"
    path = root / "config.toml"
    path.write_text(text)
    (root / "inbox").mkdir()
    return path


def make_bases(size: tuple[int, int], threads: int) -> list[bytes]:
    """Distinct base JPEGs at `size`: good parts and one of each defect type."""
    kinds: list[str | None] = [None] * N_GOOD_BASES + list(DEFECTS)

    def one(i: int) -> bytes:
        return _jpeg(make_part(np.random.default_rng([2, i]), *size, defect=kinds[i]))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(len(kinds))))


# ---------------------------------------------------------------------------------------------- MQTT


@dataclass(frozen=True)
class Mqtt:
    """The broker the bench's watcher publishes to, and the run's own topic prefix."""

    host: str
    port: int
    prefix: str  # inspector/<unique line>/watchbench


def probe_broker(url: str | None, line: str) -> tuple[Mqtt | None, str | None]:
    """(the broker and topic prefix, None) when a TCP connection to `url` succeeds; (None, why) otherwise."""
    if not url:
        return None, "MQTT off: no broker URL given"
    try:
        tls, host, port = mqtt_address(url)
    except ConfigError as exc:
        return None, f"MQTT off: {exc}"
    if tls:
        return None, f"MQTT off: the bench connects without TLS, and {url} is mqtts://"
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as exc:
        return None, f"MQTT off: no broker reachable at {url} ({exc.strerror or exc})"
    return Mqtt(host, port, f"inspector/{line}/watchbench"), None


def _client(tag: str):  # -> paho.mqtt.client.Client (imported here: the bench without MQTT needs no paho)
    """A fresh MQTT 3.1.1 paho client with a clean session."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watchbench-{tag}-{uuid.uuid4().hex[:8]}",
                       clean_session=True, protocol=mqtt.MQTTv311)


class VerdictListener:
    """A subscriber on <prefix>/verdict (QoS 1) noting the wall time each message arrives (parsed later)."""

    def __init__(self, mqtt: Mqtt, timeout_s: float = 10.0):
        """Connect and subscribe; InspectorError when there is no SUBACK within timeout_s."""
        self.got: list[tuple[float, bytes]] = []  # (time.time() at arrival, payload); appended by paho's thread
        subscribed = threading.Event()
        topic = f"{mqtt.prefix}/verdict"
        self.client = _client("sub")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = lambda c, u, msg: self.got.append((time.time(), msg.payload))
        try:
            self.client.connect(mqtt.host, mqtt.port, keepalive=30)
        except OSError as exc:
            raise InspectorError(f"the bench's subscriber cannot connect: {exc}") from None
        self.client.loop_start()
        if not subscribed.wait(timeout_s):
            self.close()
            raise InspectorError(f"the bench's subscriber got no SUBACK for {topic} within {timeout_s:.0f} s")

    def arrivals(self) -> dict[str, tuple[float, str | None]]:
        """name -> (wall time of its first message, that message's sha256)."""
        first: dict[str, tuple[float, str | None]] = {}
        for at, payload in list(self.got):
            try:
                msg = json.loads(payload)
            except ValueError:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("name"), str):
                first.setdefault(msg["name"], (at, msg.get("sha256")))
        return first

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def clear_state(mqtt: Mqtt) -> None:
    """Remove the run's retained <prefix>/state from the broker (an empty retained message); best effort."""
    client = _client("clear")
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=10)
        client.loop_start()
        client.publish(f"{mqtt.prefix}/state", b"", qos=1, retain=True).wait_for_publish(5)
        client.disconnect()
    except (OSError, RuntimeError, ValueError):
        pass
    finally:
        client.loop_stop()


# ---------------------------------------------------------------------------------------------- decode floor


def _decode_shape(buf: np.ndarray, flags: int) -> tuple[int, ...]:
    """Decode and return only the shape (so decoded frames are not kept)."""
    img = cv2.imdecode(buf, flags)
    if img is None:
        raise InspectorError("the decode-only reference failed to decode a generated JPEG")
    return img.shape


def decode_rate(buffers: list[np.ndarray], flags: int, threads: int) -> float:
    """Images per second decoding every buffer once with `threads` threads (after a short warm-up)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda b: _decode_shape(b, flags), buffers[:threads]))
        start = time.perf_counter()
        for _ in pool.map(lambda b: _decode_shape(b, flags), buffers):
            pass
        return len(buffers) / (time.perf_counter() - start)


def decode_rates(bases: list[bytes], threads: int, reps: int) -> tuple[list[float], list[float]]:
    """Full and reduced (1/8) decode rates over DECODE_FILES dropped byte strings, `reps` times each."""
    buffers = [np.frombuffer(b"".join(tagged(bases[i % len(bases)], i)), np.uint8) for i in range(DECODE_FILES)]
    full, reduced = [], []
    for _ in range(reps):
        full.append(decode_rate(buffers, cv2.IMREAD_COLOR, threads))
        reduced.append(decode_rate(buffers, cv2.IMREAD_REDUCED_COLOR_8, threads))
    return full, reduced


# ---------------------------------------------------------------------------------------------- the watcher


def start_watcher(config: Path, log_path: Path) -> subprocess.Popen:
    """Start `inspector watch` as a real process, stdout and stderr into log_path."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "inspector", "watch", "--config", str(config)],
                                cwd=config.parent, stdout=fh, stderr=subprocess.STDOUT, env=env)


def children(pid: int) -> list[int]:
    """Process ids whose parent is pid (the watcher's judging processes), from /proc/*/stat."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _own_rss_mb(pid: int) -> float:
    """Resident memory of one process in MiB, from /proc/PID/status (0 when it ended or is a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0  # a zombie (a judging process that ended and is not yet reaped) holds no memory


def _own_cpu_of(pid: int) -> float:
    """CPU seconds (user + system) one process has used, from /proc/PID/stat (0 when it ended meanwhile)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory in MiB of a process and its children (the judging processes), summed."""
    return _own_rss_mb(pid) + sum(_own_rss_mb(c) for c in children(pid))


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its live children have used."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the process itself and of its live children (the judging processes)."""
    return _own_cpu_of(pid), sum(_own_cpu_of(c) for c in children(pid))


def stop_watcher(proc: subprocess.Popen, timeout: float = 120.0) -> int:
    """SIGTERM and wait; kill when it does not stop in time. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -9


class Bench:
    """One benchmark run against one watcher process: drops files, follows the database, samples memory."""

    def __init__(self, root: Path, bases: list[bytes], rss_points: tuple[int, int], log: Log,
                 mqtt: Mqtt | None = None):
        self.root = root
        self.mqtt = mqtt
        self.inbox = root / "inbox"
        self.archive = root / "archive"
        self.log_path = root / "watch.log"
        self.bases = bases
        self.rss_points = rss_points
        self.rss: dict[int, float] = {}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.db: sqlite3.Connection | None = None
        self.dropped = 0
        self.renamed_at: dict[str, float] = {}
        self.committed = 0
        self._last_change = time.monotonic()
        self._last_progress = 0.0
        self._last_cleanup = 0.0

    # ---- process and database

    def start(self, config: Path) -> None:
        """Start the watcher and wait for its ` watching ` line; open the database read-only."""
        self.proc = start_watcher(config, self.log_path)
        deadline = time.monotonic() + 120.0
        while " watching " not in self.log_path.read_text(errors="replace"):
            self._check_alive()
            if time.monotonic() > deadline:
                self._fail("the watcher did not start within 120 s")
            time.sleep(0.05)
        self.db = sqlite3.connect(f"file:{self.root / 'inspector.db'}?mode=ro", uri=True, timeout=30)

    def stop(self) -> int:
        """Stop the watcher (SIGTERM) and close the database; returns its exit code."""
        if self.db is not None:
            self.db.close()
            self.db = None
        return stop_watcher(self.proc) if self.proc is not None else 0

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of a read-only query."""
        assert self.db is not None
        return self.db.execute(sql, params).fetchall()

    def _check_alive(self) -> None:
        """Fail with the log tail when the watcher exited."""
        if self.proc is not None and self.proc.poll() is not None:
            self._fail(f"the watcher exited with code {self.proc.returncode}")

    def _fail(self, what: str) -> None:
        """Raise InspectorError with the end of the watcher's log."""
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        raise InspectorError(f"bench --watch: {what}\n--- watcher log (end) ---\n{tail}")

    # ---- following progress

    def tick(self, phase: str, target: int) -> None:
        """Refresh the committed count, sample memory at the thresholds, prune the archive, report progress."""
        self._check_alive()
        count = self.query("SELECT count(*) FROM inspections")[0][0]
        now = time.monotonic()
        if count != self.committed:
            self.committed, self._last_change = count, now
        elif self.dropped > count and now - self._last_change > STALL_S:
            self._fail(f"no new verdict for {STALL_S:.0f} s ({count} committed, {self.dropped} dropped)")
        for point in self.rss_points:
            if count >= point and point not in self.rss:
                self.rss[point] = rss_mb(self.proc.pid)
                self.log(f"resident memory after {count} parts: {self.rss[point]:.1f} MiB")
        if now - self._last_cleanup > 1.0:
            self._prune_archive()
            self._last_cleanup = now
        if now - self._last_progress > PROGRESS_S:
            self.log(f"{phase} phase: {count}/{target} committed, {self.dropped} dropped")
            self._last_progress = now

    def _prune_archive(self) -> None:
        """Delete archived copies (the watcher never deletes; the bench does, to bound disk use)."""
        prune_archive(self.archive)

    def wait_committed(self, n: int, phase: str) -> None:
        """Poll until at least n verdicts are committed."""
        while True:
            self.tick(phase, n)
            if self.committed >= n:
                return
            time.sleep(0.01)

    # ---- dropping

    def drop(self) -> str:
        """Write the next file under a dot-temp name and rename it into the inbox; returns its name."""
        n = self.dropped
        name = f"part-{n:06d}.jpg"
        tmp = self.inbox / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            for piece in tagged(self.bases[n % len(self.bases)], n):
                fh.write(piece)
        # taken before the rename, the instant the file becomes complete lies after it: a watcher that notices
        # the rename within microseconds (it does) must not show a negative latency
        self.renamed_at[name] = time.time()
        os.rename(tmp, self.inbox / name)
        self.dropped += 1
        return name

    def drop_fast(self, total: int, max_backlog: int, phase: str, target: int) -> None:
        """Drop until `total` files were dropped, keeping at most max_backlog uncommitted."""
        while self.dropped < total:
            self.tick(phase, target)
            if self.dropped - self.committed >= max_backlog:
                time.sleep(0.005)
                continue
            self.drop()

    def drop_paced(self, count: int, rate: float, phase: str) -> list[str]:
        """Drop `count` files at a steady `rate` per second; returns their names."""
        names, start, target = [], time.monotonic(), self.dropped + count
        for k in range(count):
            while (delay := start + k / rate - time.monotonic()) > 0:
                time.sleep(min(delay, 0.01))
            names.append(self.drop())
            self.tick(phase, target)
        return names

    # ---- results

    def last_commit(self) -> float:
        """Wall time of the latest committed verdict (epoch seconds)."""
        return _utc_epoch(self.query("SELECT max(inspected_at) FROM inspections")[0][0])

    def latencies(self, names: list[str]) -> tuple[list[float], list[float]]:
        """Per file (ms): inspected_at - rename time, and received_at - rename time (noticing it)."""
        rows = {}
        for i in range(0, len(names), 500):
            chunk = names[i:i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT name, received_at, inspected_at FROM inspections WHERE name IN ({marks})"
            rows.update({r[0]: (r[1], r[2]) for r in self.query(sql, tuple(chunk))})
        if len(rows) != len(names):
            self._fail(f"{len(names) - len(rows)} latency-phase files have no row")
        total = [(_utc_epoch(rows[n][1]) - self.renamed_at[n]) * 1000.0 for n in names]
        detect = [(_utc_epoch(rows[n][0]) - self.renamed_at[n]) * 1000.0 for n in names]
        return total, detect

    def publish_latencies(self, listener: VerdictListener, names: list[str]) -> dict:
        """Wait (up to PUBLISH_WAIT_S) for each file's verdict message; file complete -> received, in ms."""
        deadline = time.monotonic() + PUBLISH_WAIT_S
        while len(listener.arrivals().keys() & set(names)) < len(names) and time.monotonic() < deadline:
            self._check_alive()
            time.sleep(0.05)
        got = listener.arrivals()
        ms, missing, wrong = [], 0, 0
        for name in names:
            if name not in got:
                missing += 1
                continue
            n = int(name[len("part-"):-len(".jpg")])
            at, sha = got[name]
            if sha != _sha256(tagged(self.bases[n % len(self.bases)], n)):
                wrong += 1
                continue
            ms.append((at - self.renamed_at[name]) * 1000.0)
        out: dict = {"publish_received": len(ms)}
        if missing or wrong:
            out.update(publish_latency_p50_ms=None, publish_latency_p99_ms=None,
                       publish_latency_reason=f"of {len(names)} latency-phase files, {missing} had no verdict "
                                              f"message within {PUBLISH_WAIT_S:.0f} s and {wrong} one with "
                                              "another sha256")
        else:
            out.update(publish_latency_p50_ms=_percentile(ms, 50), publish_latency_p99_ms=_percentile(ms, 99),
                       publish_latency_reason=None)
        return out

    def rows_ok(self, total: int) -> bool:
        """Exactly one row per dropped file, carrying exactly the sha256 values of the dropped bytes."""
        rows = self.query("SELECT name, sha256 FROM inspections")
        expected = {f"part-{n:06d}.jpg": _sha256(tagged(self.bases[n % len(self.bases)], n)) for n in range(total)}
        return len(rows) == total and dict(rows) == expected

    def verdicts(self) -> dict[str, int]:
        """Row counts per verdict."""
        return {v: n for v, n in self.query("SELECT verdict, count(*) FROM inspections GROUP BY verdict")}


def _own_cpu_s() -> float:
    """CPU seconds this process (the bench: dropping, polling) has used."""
    t = os.times()
    return t.user + t.system


def _sha256(pieces: list[bytes | memoryview]) -> str:
    """sha256 hex of concatenated pieces."""
    h = hashlib.sha256()
    for piece in pieces:
        h.update(piece)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- the run


def run(parts: int = 2000, rss_parts: int = 10_000, max_backlog: int = 400, latency_parts: int = 300,
        keep: bool = False, params: ProfileParams | None = None, size: tuple[int, int] = FIVE_MP,
        log: Log = lambda s: None, mqtt_url: str | None = BROKER_URL, watch: Mapping[str, Any] | None = None) -> dict:
    """Run the whole benchmark in a temporary folder and return its figures (see the module docstring).
    The watcher publishes over MQTT to `mqtt_url` when a broker answers there (None or "": never); `watch`:
    [watch] keys for the site's config (workers, judge_in)."""
    if min(parts, rss_parts, max_backlog, latency_parts) < 1:
        raise InspectorError("--parts, --latency-parts, --rss-parts and --max-backlog must be at least 1")
    root = Path(tempfile.mkdtemp(prefix="inspector-watchbench-"))
    try:
        result = _run_in(root, parts, rss_parts, max_backlog, latency_parts, params or ProfileParams(), size, log,
                         mqtt_url, dict(watch or {}))
    finally:
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["folder"] = str(root) if keep else None
    return result


def _run_in(root: Path, parts: int, rss_parts: int, max_backlog: int, latency_parts: int, params: ProfileParams,
            size: tuple[int, int], log: Log, mqtt_url: str | None, watch: dict[str, Any]) -> dict:
    """The benchmark proper, in `root`: prepare, decode reference, watcher phases, decode reference, checks."""
    cores = os.cpu_count() or 1
    line = f"watchbench-{uuid.uuid4().hex[:12]}"
    mqtt, why = probe_broker(mqtt_url, line)
    log(why or f"MQTT on: the watcher publishes to {mqtt_url} under {mqtt.prefix}")
    config, bases = _prepare(root, params, size, cores, log, line, mqtt, watch)
    log(f"decode-only reference ({DECODE_FILES} files, {cores} threads) ...")
    full, reduced = decode_rates(bases, cores, DECODE_REPS)
    log(f"decode-only: {statistics.median(full):.1f} images/s full, {statistics.median(reduced):.1f} reduced")
    total = max(rss_parts, len(bases) + parts + latency_parts)
    bench = Bench(root, bases, (min(1000, max(1, rss_parts // 10)), rss_parts), log, mqtt)
    try:
        bench.start(config)
        figures = _watch_phases(bench, parts, latency_parts, total, max_backlog, log)
    finally:
        exit_code = bench.stop()
        if mqtt is not None:
            clear_state(mqtt)
    if mqtt is None:
        figures.update(publish_latency_p50_ms=None, publish_latency_p99_ms=None, publish_latency_reason=why,
                       publish_received=None)
    log("decode-only reference again, watcher stopped ...")
    full2, reduced2 = decode_rates(bases, cores, DECODE_REPS)
    decode = statistics.median(full + full2)
    log("checking rows against the dropped files ...")
    out = {"watch_images_per_s": figures["watch_images_per_s"], "decode_images_per_s": decode,
           "watch_over_decode": figures["watch_images_per_s"] / decode}
    for key in ("latency_p50_ms", "latency_p99_ms", "publish_latency_p50_ms", "publish_latency_p99_ms",
                "publish_latency_reason", "rss_mb_1k", "rss_mb_10k", "rss_growth"):
        out[key] = figures.pop(key)
    return {
        **out,
        "rows_ok": _rows_ok(bench, total),
        **figures,
        "cores": cores,
        "parts": parts,
        "latency_parts": latency_parts,
        "total_parts": total,
        "reduced_decode_images_per_s": statistics.median(reduced + reduced2),
        "decode_cpu_ms_per_image": cores * 1000.0 / decode,
        "image_mb": statistics.median(len(b) for b in bases) / 1e6,
        "image_size": f"{size[0]}x{size[1]}",
        "mqtt_url": f"mqtt://{mqtt.host}:{mqtt.port}" if mqtt is not None else None,
        "mqtt_topic": mqtt.prefix if mqtt is not None else None,
        "watcher_exit": exit_code,
        "watch_settings": watch,
        "inbox_left": sum(1 for p in (root / "inbox").iterdir() if not p.name.startswith(".")),
    }


def _prepare(root: Path, params: ProfileParams, size: tuple[int, int], cores: int, log: Log, line: str,
             mqtt: Mqtt | None, watch: dict[str, Any]) -> tuple[Path, list[bytes]]:
    """Train and activate the profile, write the config, render the base JPEGs."""
    log(f"training a profile on {N_TRAIN} generated good parts at {size[0]}x{size[1]} ...")
    train_profile(root / "models", params, size, cores)
    config = write_config(root, line, mqtt, watch)
    log(f"generating {N_GOOD_BASES + len(DEFECTS)} base JPEGs at {size[0]}x{size[1]} ...")
    return config, make_bases(size, cores)


def _watch_phases(bench: Bench, parts: int, latency_parts: int, total: int, max_backlog: int, log: Log) -> dict:
    """Warm-up, throughput, latency and memory phases against the running watcher."""
    warm = len(bench.bases)
    log(f"warm-up: one file of each of the {warm} bases (not timed) ...")
    bench.drop_fast(warm, max_backlog, "warm-up", warm)
    bench.wait_committed(warm, "warm-up")
    log(f"throughput phase: dropping {parts} files (backlog at most {max_backlog}) ...")
    out = _throughput(bench, warm + parts, max_backlog)
    rate = out["watch_images_per_s"]
    listener = VerdictListener(bench.mqtt) if bench.mqtt is not None else None
    try:
        log(f"throughput: {rate:.1f} parts/s; latency phase: {latency_parts} files at {rate / 2:.1f}/s ...")
        names = bench.drop_paced(latency_parts, rate / 2, "latency")
        bench.wait_committed(warm + parts + latency_parts, "latency")
        total_ms, detect_ms = bench.latencies(names)
        out.update(latency_p50_ms=_percentile(total_ms, 50), latency_p99_ms=_percentile(total_ms, 99),
                   latency_p50_detect_ms=_percentile(detect_ms, 50),
                   latency_p99_detect_ms=_percentile(detect_ms, 99))
        if listener is not None:
            out.update(bench.publish_latencies(listener, names))
    finally:
        if listener is not None:
            listener.close()
    log(f"memory phase: dropping up to {total} files in total ...")
    bench.drop_fast(total, max_backlog, "memory", total)
    bench.wait_committed(total, "memory")
    time.sleep(0.5)  # let the last batch's archive moves land before the stop
    low, high = bench.rss_points
    out.update(rss_mb_1k=bench.rss[low], rss_mb_10k=bench.rss[high], rss_growth=bench.rss[high] / bench.rss[low] - 1,
               rss_sampled_at=[low, high], verdicts=bench.verdicts())
    return out


def _throughput(bench: Bench, until: int, max_backlog: int) -> dict:
    """Drop as fast as the backlog allows until `until` files; parts per second from first drop to last commit."""
    first_drop, (main0, judges0), own0 = time.time(), cpu_split(bench.proc.pid), _own_cpu_s()
    parts = until - bench.dropped
    bench.drop_fast(until, max_backlog, "throughput", until)
    bench.wait_committed(until, "throughput")
    wall = time.time() - first_drop
    main1, judges1 = cpu_split(bench.proc.pid)
    return {"watch_images_per_s": parts / (bench.last_commit() - first_drop),
            "watcher_cpu_cores": (main1 + judges1 - main0 - judges0) / wall,
            "bench_cpu_cores": (_own_cpu_s() - own0) / wall,
            "watcher_cpu_ms_per_part": (main1 - main0) * 1000.0 / parts,
            "judging_cpu_ms_per_part": (judges1 - judges0) * 1000.0 / parts}


def _rows_ok(bench: Bench, total: int) -> bool:
    """Reopen the database after the stop and check one row per dropped file with the right sha256."""
    bench.db = sqlite3.connect(f"file:{bench.root / 'inspector.db'}?mode=ro", uri=True)
    try:
        return bench.rows_ok(total)
    finally:
        bench.db.close()
        bench.db = None
