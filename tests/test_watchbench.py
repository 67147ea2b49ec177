"""`inspector bench --watch` at a tiny size: every figure present and sane, rows checked, nothing left behind.
No speed is asserted here; the benchmark reports ratios, it is never a timed test."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from inspector.tooling import watchbench
from inspector.cli import build_parser

KEYS = ("watch_images_per_s", "decode_images_per_s", "watch_over_decode", "latency_p50_ms", "latency_p99_ms",
        "rss_mb_1k", "rss_mb_10k")


def test_watch_bench_runs_small_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp lands here, so leftovers are visible
    messages: list[str] = []
    result = watchbench.run(parts=30, rss_parts=60, latency_parts=10, max_backlog=12, size=(640, 480),
                            log=messages.append)
    for key in (*KEYS, "reduced_decode_images_per_s", "latency_p50_detect_ms", "watcher_cpu_ms_per_part",
                "judging_cpu_ms_per_part", "decode_cpu_ms_per_image"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, (key, result)
    assert result["decode_cpu_ms_per_image"] == pytest.approx(result["cores"] * 1000 / result["decode_images_per_s"])
    assert math.isfinite(result["rss_growth"])
    assert result["rows_ok"] is True
    assert result["watcher_exit"] == 0 and result["inbox_left"] == 0
    assert result["cores"] >= 1 and result["parts"] == 30 and result["total_parts"] == 60
    assert result["latency_p99_ms"] >= result["latency_p50_ms"]
    assert sum(result["verdicts"].values()) == 60 and result["verdicts"].get("rejected", 0) == 0
    assert any(m.startswith("throughput phase") for m in messages)
    assert result["folder"] is None and not any(tmp_path.iterdir())


def _broker_up() -> bool:
    """Something accepts TCP connections at the bench's default broker."""
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=1.0):
            return True
    except OSError:
        return False


def _retained_state(topic: str) -> list[bytes]:
    """Retained messages on <topic>/state a fresh subscriber gets (waits a second for them)."""
    got: list[bytes] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{topic}/state", qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    client.on_message = lambda c, u, msg: got.append(msg.payload) if msg.retain else None
    client.connect("127.0.0.1", 1883, keepalive=10)
    client.loop_start()
    try:
        assert subscribed.wait(10), "no SUBACK"
        time.sleep(1.0)
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def test_watch_bench_measures_publish_latency_through_the_local_broker(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """File complete -> verdict message at a subscriber: measured in the latency phase, for every one of its
    files, never before the verdict was committed; the run's retained state is gone from the broker after."""
    if not _broker_up():
        pytest.skip("no MQTT broker at 127.0.0.1:1883 (Debian package mosquitto)")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    messages: list[str] = []
    result = watchbench.run(parts=12, rss_parts=40, latency_parts=10, max_backlog=12, size=(640, 480),
                            log=messages.append)
    assert result["publish_latency_reason"] is None, result
    for key in ("publish_latency_p50_ms", "publish_latency_p99_ms"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, (key, result)
    assert result["publish_latency_p99_ms"] >= result["publish_latency_p50_ms"]
    # each file's message leaves after its commit, so every percentile lies at or above the commit latency's
    assert result["publish_latency_p50_ms"] >= result["latency_p50_ms"]
    assert result["publish_latency_p99_ms"] >= result["latency_p99_ms"]
    assert result["publish_received"] == 10 and result["rows_ok"] is True and result["watcher_exit"] == 0
    topic = result["mqtt_topic"]
    assert result["mqtt_url"] == "mqtt://127.0.0.1:1883" and topic.startswith("inspector/watchbench-")
    assert any(m.startswith("MQTT on") for m in messages)
    assert _retained_state(topic) == []  # the bench cleared what the watcher left


def test_an_unreachable_or_missing_broker_turns_mqtt_off_with_a_reason() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mqtt_, why = watchbench.probe_broker(f"mqtt://127.0.0.1:{port}", "line-x")
    assert mqtt_ is None and why is not None and "no broker reachable" in why
    assert watchbench.probe_broker("", "line-x") == (None, "MQTT off: no broker URL given")
    found, why = watchbench.probe_broker("mqtt://127.0.0.1:1883", "line-x") if _broker_up() else (None, None)
    if found is not None:
        assert why is None and found.prefix == "inspector/line-x/watchbench"


def test_bench_help_mentions_watch(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--watch", "--parts", "--rss-parts", "--max-backlog", "--keep", "--json"):
        assert option in out


def test_cpu_of_a_process_tree_is_split_between_the_process_and_its_children() -> None:
    """A child that burns CPU shows in the children's share, not in the parent's (which only waits)."""
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.6\n"
                              "while time.process_time() < end: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 30
        own0, kids0 = own, kids = watchbench.cpu_split(os.getpid())
        while kids - kids0 < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
            own, kids = watchbench.cpu_split(os.getpid())
        assert kids - kids0 >= 0.5
        assert own - own0 < 0.5  # this process slept meanwhile
    finally:
        child.kill()
        child.wait()


def test_memory_of_a_process_tree_counts_a_zombie_child_as_nothing() -> None:
    """A judging process that ended and is not yet reaped has no VmRSS: the sum goes on (it raised before)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.01)
        assert child.pid in watchbench.children(os.getpid())
        assert watchbench._own_rss_mb(child.pid) == 0.0
        assert watchbench.rss_mb(os.getpid()) == pytest.approx(watchbench._own_rss_mb(os.getpid()), abs=50)
    finally:
        child.wait()
