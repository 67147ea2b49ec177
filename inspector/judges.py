"""Judging a part's bytes (decode, score, overlay) for the watch service: in child processes, or in its threads.

Why child processes (`[watch] judge_in = "processes"`, the default): a worker thread that scores a part gives the
GIL up and takes it back hundreds of times per part (every OpenCV call, every large numpy step); each time it
queues behind whatever other thread holds it: the committer's SQLAlchemy, the MQTT outbox, watchdog, logging.
Measured on 2 cores (`bench --watch`, 5 MP parts): the workers waited for the GIL ~60% of their time, and a
Python-busy side thread alone took three judging threads from 0.92 to 0.70 of decode throughput while two child
processes stayed at 0.89. In a child, the scoring has an interpreter to itself.

Each child is `python -m inspector.judges` with its stdin and stdout as pipes; no pickle crosses them. A message
is a 4-byte big-endian header length, the header (UTF-8 JSON), an 8-byte payload length and the payload:

* The child starts with its input limits and the profiles to load at once (the active ones) as a JSON argument,
  loads them, and says `{"ready": true}`. Until then its worker judges in its own thread with the watcher's copy
  of the profile, so the first parts after a start are not held up by the child's imports and profile load.
* `{"op": "judge", "models_dir": D, "version": V, "name": N, "digest": H}` with the file's bytes -> `{"verdict":
  {...}}` (Verdict's scalar fields) with the overlay JPEG as payload (empty unless a defect), or `{"error": text}`
  when judging raised (a bug; the file stays in the folder). A version not loaded yet is loaded first.

A child keeps the profiles it was asked for by (models_dir, version), the newest version per folder; a version is
never rewritten once saved, so a cached one is never stale. It ignores SIGINT and SIGTERM (the parent finishes the
parts in flight and then closes the pipe) and ends at end of input, which is also what it sees when the parent is
killed. A child that dies while judging (a decoder crash) is replaced; the part is tried once more in the new
child and rejected as `judge_crashed` if that one dies too, so one poisonous file never stops the line. A child
found already ended when a part is sent (killed while it waited) is logged as dying while idle, not while judging
that part (it still counts as the part's first try: the flow does not depend on when a kill landed).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import cv2

from inspector.config import InputConfig
from inspector.errors import InspectorError
from inspector.pipeline import Inspector, Verdict

MODES = ("processes", "threads")
CLOSE_WAIT_S = 5.0  # a closed child has this long to end before it is killed
PIPE_BYTES = 4 << 20  # asked-for capacity of the pipe a child reads parts from (a 5 MP JPEG is ~1-3 MB)
_HEADER = struct.Struct(">I")
_PAYLOAD = struct.Struct(">Q")
# the overlay's JPEG: quality 98 without chroma subsampling keeps its thin coloured contour within ~10 grey levels
# (at 95 with the usual 4:2:0, 115), far under web.regions.MIN_DIFF, so the review page boxes the same regions
OVERLAY_JPEG = (cv2.IMWRITE_JPEG_QUALITY, 98, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
# one thread per child: BLAS and OpenCV pools inside a child would only fight the other children for the cores
_CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class JudgeDied(InspectorError):
    """The child process ended while it held a part (its exit status in the message); `idle`: it had already ended
    before the part was sent (killed while it waited: the part is not to blame)."""

    def __init__(self, message: str, idle: bool = False):
        super().__init__(message)
        self.idle = idle


@dataclass
class Judged:
    """A verdict (no image or map arrays) and, for a defect, its overlay as JPEG bytes."""

    verdict: Verdict
    overlay_jpeg: bytes | None = None


def overlay_jpeg(verdict: Verdict) -> bytes | None:
    """The JPEG of a defect's overlay (its image with the anomaly map); None for other verdicts or without arrays.
    JPEG, not PNG: 0.55 ms to encode a 324 px overlay where PNG took 2.8 (every defect waited for it before its
    verdict was sent on), and about half the bytes."""
    if verdict.verdict != "defect" or verdict.image is None or verdict.anomaly_map is None:
        return None
    from inspector.overlay import overlay  # noqa: PLC0415 - only judging draws overlays

    ok, jpeg = cv2.imencode(".jpg", overlay(verdict.image, verdict.anomaly_map), OVERLAY_JPEG)
    return jpeg.tobytes() if ok else None


def judge_here(insp: Inspector, data: bytes, name: str, digest: str) -> Judged:
    """Judge in the calling thread: the verdict, and the overlay JPEG of a defect."""
    verdict = insp.inspect_bytes(data, name, keep_image=True, digest=digest)
    jpeg = overlay_jpeg(verdict)
    verdict.image = verdict.anomaly_map = verdict.assessment = None
    return Judged(verdict, jpeg)


# ---------------------------------------------------------------------------------------------- framing


def write_message(stream: IO[bytes], header: dict[str, Any], payload: bytes = b"") -> None:
    """One framed message (header JSON, payload bytes), flushed."""
    head = json.dumps(header, separators=(",", ":"), default=_plain).encode()
    stream.write(_HEADER.pack(len(head)) + head + _PAYLOAD.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, for JSON."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_message(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """The next framed message, or None at a clean end of input; EOFError when it ends inside one."""
    first = stream.read(_HEADER.size)
    if not first:
        return None
    first += _read_exactly(stream, _HEADER.size - len(first))  # b"" when the read was whole
    head = _read_exactly(stream, _HEADER.unpack(first)[0])
    n = _PAYLOAD.unpack(_read_exactly(stream, _PAYLOAD.size))[0]
    return json.loads(head), _read_exactly(stream, n)


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    """Exactly n bytes; EOFError when the stream ends first."""
    parts, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError(f"the stream ended {left} bytes short of a {n}-byte field")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------- the parent's side


def _widen(pipe: IO[bytes]) -> int:
    """Let the pipe hold a whole part (PIPE_BYTES, or the system's limit) so that a part's bytes cross in one
    write and one read instead of ~10 alternating 64 KB steps (measured: ~0.25 ms less CPU a part for the two
    sides, and the part reaches the child sooner); the pipe's capacity afterwards (0 where it cannot be read)."""
    if not hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux only
        return 0
    fd = pipe.fileno()
    for size in (PIPE_BYTES, _pipe_max()):
        try:
            return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:  # over /proc/sys/fs/pipe-max-size for an unprivileged process: try that limit
            continue
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _pipe_max() -> int:
    """The largest pipe an unprivileged process may ask for (Linux), or 64 KB when unknown."""
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return 65536


# the child ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C or a closing terminal reaches the whole process group; the
# watcher finishes the parts in flight, then closes the pipes) from its first line, before the imports that take
# most of its start: set only in _child, a hangup while it started killed it (found by review)
_BOOT = ("import signal\n"
         "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\n"
         "import runpy\n"
         "runpy.run_module('inspector.judges', run_name='__main__', alter_sys=True)\n")


class JudgeProcess:
    """One child process judging one part at a time (not thread-safe: one caller at a time)."""

    def __init__(self, inp: InputConfig, preload: Iterable[tuple[Path, str]] = ()):
        """Start the child; it loads the `preload` (models folder, version) pairs, then says it is ready."""
        start = {"input": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(inp).items()},
                 "preload": [[str(Path(d).absolute()), v] for d, v in preload]}
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, json.dumps(start)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **_CHILD_ENV},
                                     close_fds=True)
        self._in: BinaryIO = self.proc.stdin  # type: ignore[assignment]
        self._out: BinaryIO = self.proc.stdout  # type: ignore[assignment]
        self._ready = False
        _widen(self._in)
        _widen(self._out)  # a defect's answer carries its overlay PNG (~70 KB for a 320 px overlay)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def ready(self, timeout_s: float = 0.0) -> bool:
        """Whether the child has loaded its profiles (waiting up to timeout_s); JudgeDied when it ended instead."""
        if not self._ready:
            try:
                readable = select.select([self._out], [], [], None if math.isinf(timeout_s) else timeout_s)[0]
                answer = read_message(self._out) if readable else False
            except (EOFError, ValueError, OSError):
                answer = None
            if answer is None:
                raise JudgeDied(f"the judging process (pid {self.proc.pid}) ended while starting: "
                                f"{self._exit_status()}")
            self._ready = bool(answer) and answer[0].get("ready") is True
        return self._ready

    def judge(self, models_dir: Path, version: str, data: bytes, name: str, digest: str) -> Judged:
        """Judge one part's bytes with that profile; JudgeDied when the child ends meanwhile, InspectorError when
        judging raised in it."""
        self.ready(timeout_s=math.inf)  # its answer comes after the ready message
        idle = self.proc.poll() is not None  # ended while it waited (an OOM kill, a stray kill -9)
        try:
            write_message(self._in, {"op": "judge", "models_dir": str(Path(models_dir).absolute()),
                                     "version": version, "name": name, "digest": digest}, data)
            answer = read_message(self._out)
        except (BrokenPipeError, EOFError, ValueError, OSError):
            answer = None
        if answer is None:
            raise JudgeDied(f"the judging process (pid {self.proc.pid}) ended: {self._exit_status()}", idle=idle)
        header, payload = answer
        if "error" in header:
            raise InspectorError(f"judging failed: {header['error']}")
        return Judged(Verdict(**header["verdict"]), payload or None)

    def _exit_status(self) -> str:
        """How the child ended, in words (waiting briefly for its status)."""
        try:
            code = self.proc.wait(CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            return "its pipe broke while it still runs"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def close(self) -> None:
        """End the child: close its input, wait briefly, kill it if it does not end."""
        for stream in (self._in, self._out):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class JudgePool:
    """`size` JudgeProcess children shared by the worker threads; judge() is thread-safe."""

    def __init__(self, size: int, inp: InputConfig, preload: Iterable[tuple[Path, str]] = (),
                 emit: Callable[[str], None] = lambda text: None):
        """Start `size` children, each loading `preload`; `emit` logs a replaced child (one line)."""
        self.inp = inp
        self.emit = emit
        self._preload = list(preload)
        self._idle: queue.Queue[JudgeProcess] = queue.Queue()
        self._all: list[JudgeProcess] = []
        self._lock = threading.Lock()
        self.in_thread = 0  # parts judged in the calling thread because their child was still starting
        try:
            for _ in range(size):
                self._idle.put(self._add())
        except OSError:  # the n-th could not be started: end the ones that were
            self.close()
            raise

    def _add(self) -> JudgeProcess:
        """A new child, remembered for close()."""
        child = JudgeProcess(self.inp, self._preload)
        with self._lock:
            self._all.append(child)
        return child

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until every child has loaded its profiles (call only while no part is being judged)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            children = list(self._all)
        return all(c.ready(max(0.0, deadline - time.monotonic())) for c in children)

    def pids(self) -> list[int]:
        """Process ids of the children (for resource figures)."""
        with self._lock:
            return [c.pid for c in self._all if c.proc.poll() is None]

    def judge(self, insp: Inspector, models_dir: Path, data: bytes, name: str, digest: str) -> Judged:
        """Judge in a free child; a child that dies is replaced and the part tried once more, then rejected
        as judge_crashed."""
        child = self._idle.get()  # one child per worker thread: never waits long
        try:
            try:
                starting = not child.ready()
            except JudgeDied as exc:
                child, starting = self._replace(child), True
                self.emit(str(exc) + "; started another")
            if starting:  # judge here rather than hold the part up
                with self._lock:
                    self.in_thread += 1
                return judge_here(insp, data, name, digest)
            for attempt in (1, 2):
                try:
                    return child.judge(models_dir, insp.version, data, name, digest)
                except JudgeDied as exc:
                    child = self._replace(child)
                    when = f"while idle, before {name} was sent" if exc.idle else f"while judging {name}"
                    self.emit(f"{exc} {when}; started another"
                              + ("" if attempt == 1 else "; the part is rejected (judge_crashed)"))
                    died = str(exc)
            return Judged(Verdict(name=name, sha256=digest, verdict="rejected", reason="judge_crashed",
                                  detail=f"the judging process died twice on this file ({died})", score=None,
                                  threshold=insp.profile.threshold_, profile_version=insp.version, size=len(data)))
        finally:
            self._idle.put(child)

    def _replace(self, dead: JudgeProcess) -> JudgeProcess:
        """A new child in place of a dead one."""
        dead.close()
        with self._lock:
            self._all.remove(dead)
        return self._add()

    def close(self) -> None:
        """End every child (after the worker threads have stopped)."""
        with self._lock:
            children, self._all = self._all, []
        for child in children:
            child.close()


class ThreadJudge:
    """`judge_in = "threads"`: judge in the calling worker thread (no child processes)."""

    def judge(self, insp: Inspector, models_dir: Path, data: bytes, name: str, digest: str) -> Judged:
        """Judge here (see judge_here)."""
        return judge_here(insp, data, name, digest)

    def pids(self) -> list[int]:
        """No children."""
        return []

    def close(self) -> None:
        """Nothing to end."""


# ---------------------------------------------------------------------------------------------- the child's side


def _child(argv: list[str]) -> int:
    """Serve judge requests from stdin until its end (see the module docstring)."""
    import cv2  # noqa: PLC0415

    cv2.setNumThreads(0)  # OpenCV's own pool: its threads spin beside the other children
    # SIGINT, SIGTERM and SIGHUP are ignored from the child's first line (_BOOT), before these imports
    out = os.fdopen(os.dup(1), "wb")  # the answers' own channel; stray prints go to stderr, never into it
    os.dup2(2, 1)
    start = json.loads(argv[0])
    inp = InputConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in start["input"].items()})
    cache: dict[str, tuple[str, Inspector]] = {}  # models folder -> (version, Inspector): the newest asked for
    for models_dir, version in start["preload"]:
        try:
            _inspector(cache, models_dir, version, inp)
        except Exception:  # noqa: BLE001 - the first part that needs it tries again and reports the error
            pass
    try:
        write_message(out, {"ready": True})
        return _serve(sys.stdin.buffer, out, cache, inp)
    except (BrokenPipeError, EOFError, ValueError):  # the watcher is gone (killed, or closed us early)
        return 0


def _serve(stdin: IO[bytes], out: IO[bytes], cache: dict[str, tuple[str, Inspector]], inp: InputConfig) -> int:
    """Answer judge requests until the end of input."""
    while True:
        message = read_message(stdin)
        if message is None:
            return 0
        header, payload = message
        try:
            insp = _inspector(cache, header["models_dir"], header["version"], inp)
            judged = judge_here(insp, payload, header["name"], header["digest"])
            answer, jpeg = {"verdict": judged.verdict.as_dict()}, judged.overlay_jpeg or b""
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which leaves the file for later
            answer, jpeg = {"error": f"{type(exc).__name__}: {exc}"}, b""
        write_message(out, answer, jpeg)


def _inspector(cache: dict[str, tuple[str, Inspector]], models_dir: str, version: str,
               inp: InputConfig) -> Inspector:
    """The Inspector of that profile version, loaded once."""
    from inspector import profiles  # noqa: PLC0415 - the parent's side needs no profile loading

    held = cache.get(models_dir)
    if held is not None and held[0] == version:
        return held[1]
    stored = profiles.load(Path(models_dir), version)
    insp = Inspector(stored.profile, stored.version, inp)
    cache[models_dir] = (version, insp)
    return insp


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
