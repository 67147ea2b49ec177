"""Verdicts to PLCs over Modbus TCP (issue 13, item 4): [modbus] config, the register map, and a real
`inspector watch` process read by a real pymodbus client while it judges parts.

No mocks: every server listens on a free TCP port of 127.0.0.1 and is read over TCP by pymodbus's own client;
the service's counters are a plain function over a dict the test changes. Times are only ever generous liveness
bounds (a heartbeat "advances", never "advances by exactly n").
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from inspector import config
from inspector.errors import ConfigError, InspectorError
from inspector.modbus import ModbusServer, ModbusSettings, NullModbus, open_modbus, score_register, signed16, words32
from watchkit import atomic_drop, make_site, part_jpeg, start, stop, wait_for, wait_started

REPO = Path(__file__).resolve().parents[1]
CODES = {"ok": 1, "defect": 2, "rejected": 3}


# ---------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(port: int, unit: int = 1, count: int = 12, function: str = "holding") -> list[int] | None:
    """Registers 0..count-1 read over a fresh connection, as a PLC would; None when the server cannot be
    reached or answers with an exception."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        if not client.connect():
            return None
        reader = client.read_holding_registers if function == "holding" else client.read_input_registers
        response = reader(0, count=count, device_id=unit)
        return None if response.isError() else list(response.registers)
    except (ModbusException, OSError):  # refused, reset, or closed in the middle of a request
        return None
    finally:
        client.close()


def u32(regs: list[int], at: int) -> int:
    """Two registers, high word first."""
    return regs[at] << 16 | regs[at + 1]


def poll(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll until condition() is truthy; its value. Fails naming `what` after a generous timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def expected_score(score: float | None) -> int:
    """score x 100 as a signed 16-bit register, computed independently of inspector.modbus."""
    if score is None or math.isnan(score):
        return 0
    return max(-32768, min(32767, round(score * 100))) & 0xFFFF


class Station:
    """The state a service's counters() reports, changed by the test."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"running": True, "degraded": False}
        self.broken = False

    def counters(self) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("service hung")
        return dict(self.state)


# ---------------------------------------------------------------------------------------------- config


def test_modbus_is_off_by_default_and_config_toml_lists_it() -> None:
    cfg = config.load(REPO / "config.toml")
    assert cfg.modbus == config.ModbusConfig()
    assert (cfg.modbus.enabled, cfg.modbus.host, cfg.modbus.port, cfg.modbus.unit_id, cfg.modbus.heartbeat_s) == \
        (False, "127.0.0.1", 5020, 1, 1.0)
    assert isinstance(open_modbus(cfg), NullModbus)


@pytest.mark.parametrize(("text", "key"), [
    ("enabled = 1", "modbus.enabled"),
    ('host = ""', "modbus.host"),
    ("port = 0", "modbus.port"),
    ("port = 70000", "modbus.port"),
    ('port = "5020"', "modbus.port"),
    ("unit_id = 256", "modbus.unit_id"),
    ("unit_id = -1", "modbus.unit_id"),
    ("heartbeat_s = 0", "modbus.heartbeat_s"),
    ("heartbeat_s = -1.0", "modbus.heartbeat_s"),
    ('colour = "red"', "modbus.colour"),
])
def test_bad_modbus_settings_are_config_errors_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "c.toml").write_text(f"[modbus]\n{text}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(tmp_path / "c.toml")


def test_a_port_in_use_is_refused_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "c.toml").write_text(f"[modbus]\nenabled = true\nport = {port}\n")
        cfg = config.load(tmp_path / "c.toml")
        with pytest.raises(InspectorError, match=rf"modbus\.port.*in use"):
            open_modbus(cfg, counters=Station().counters)


# ---------------------------------------------------------------------------------------------- encoding


def test_register_encoding() -> None:
    assert words32(0) == (0, 0)
    assert words32(70_000) == (1, 4464)
    assert words32(2**32 + 5) == (0, 5)  # wraps at 2**32
    assert [signed16(score_register(s)) for s in (0.0, 1.234, -1.236, 0.005, 400.0, -1e9)] == \
        [0, 123, -124, 0, 32767, -32768]  # round half to even at 0.5: 0.005 * 100 = 0.5 -> 0
    assert score_register(None) == score_register(float("nan")) == 0
    assert signed16(score_register(float("inf"))) == 32767 and signed16(score_register(float("-inf"))) == -32768


# ---------------------------------------------------------------------------------------------- server


@pytest.fixture
def server() -> Any:
    """A started server on a free port with heartbeat 0.1 s, its port and its Station."""
    station = Station()
    port = free_port()
    srv = ModbusServer(ModbusSettings(port=port, unit_id=7, heartbeat_s=0.1), counters=station.counters).start()
    try:
        yield srv, port, station
    finally:
        srv.stop(linger_s=0)


def test_recorded_rows_appear_in_the_register_map(server: Any) -> None:
    srv, port, _ = server
    first = read(port, unit=7)
    assert first is not None and first[1] == 1 and first[2:] == [0] * 10  # ready, nothing judged yet
    rows = [{"id": 69_998, "verdict": "ok", "score": 0.42}, {"id": 69_999, "verdict": "ok", "score": 0.5},
            {"id": 70_000, "verdict": "defect", "score": 2.344}]
    srv.record(rows)
    regs = read(port, unit=7)
    assert regs is not None
    assert u32(regs, 2) == 70_000 and regs[2:4] == [1, 4464]  # high word first
    assert regs[4] == CODES["defect"] and signed16(regs[5]) == 234  # 2.344 x 100, rounded
    assert (u32(regs, 6), u32(regs, 8), u32(regs, 10)) == (2, 1, 0)
    srv.record([{"id": 70_001, "verdict": "rejected", "score": None}, {"id": 70_002, "verdict": "ok",
                                                                        "score": -0.5}])
    regs = read(port, unit=7)
    assert regs is not None and u32(regs, 2) == 70_002 and regs[4] == CODES["ok"] and signed16(regs[5]) == -50
    assert (u32(regs, 6), u32(regs, 8), u32(regs, 10)) == (3, 1, 1)
    assert read(port, unit=7, function="input") == regs  # the same registers by function code 4
    assert read(port, unit=7, count=13) is None  # register 12 does not exist
    assert read(port, unit=3) is None  # not our unit id: an exception response


def test_writes_are_refused(server: Any) -> None:
    _, port, _ = server
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert client.connect()
    try:
        assert client.write_register(1, 1, device_id=7).isError()
        assert client.write_registers(0, [5, 5], device_id=7).isError()
    finally:
        client.close()
    regs = read(port, unit=7)
    assert regs is not None and regs[2:] == [0] * 10


def test_heartbeat_advances_and_ready_follows_the_service(server: Any) -> None:
    _, port, station = server
    first = read(port, unit=7)
    assert first is not None
    poll(lambda: (r := read(port, unit=7)) and (r[0] - first[0]) % 65536 >= 3, 20, "the heartbeat to advance")
    station.state["degraded"] = True  # the database is away: alive, but not ready
    poll(lambda: (r := read(port, unit=7)) and r[1] == 0, 20, "ready 0 while degraded")
    station.state["degraded"] = False
    poll(lambda: (r := read(port, unit=7)) and r[1] == 1, 20, "ready 1 again")
    station.state["running"] = False  # the watcher began stopping
    poll(lambda: (r := read(port, unit=7)) and r[1] == 0, 20, "ready 0 while stopping")
    station.state["running"] = True
    poll(lambda: (r := read(port, unit=7)) and r[1] == 1, 20, "ready 1 again")
    station.broken = True  # counters() fails: the heartbeat stops, ready goes 0
    stalled = poll(lambda: (r := read(port, unit=7)) and r[1] == 0 and r, 20, "ready 0 when the service hangs")
    time.sleep(0.5)  # five heartbeat periods
    later = read(port, unit=7)
    assert later is not None and later[0] == stalled[0], "the heartbeat went on while the service did not answer"
    station.broken = False
    poll(lambda: (r := read(port, unit=7)) and r[1] == 1 and r[0] != stalled[0], 20, "the heartbeat to resume")


def test_a_clean_stop_shows_ready_0_before_the_port_closes() -> None:
    station = Station()
    port = free_port()
    srv = ModbusServer(ModbusSettings(port=port, heartbeat_s=0.1), counters=station.counters).start()
    poll(lambda: (r := read(port)) and r[1] == 1, 20, "ready 1")
    stopper = threading.Thread(target=srv.stop, kwargs={"linger_s": 3.0})
    stopper.start()
    seen = poll(lambda: (r := read(port)) and r[1] == 0 and r, 20, "ready 0 after stop()")
    time.sleep(0.5)
    frozen = read(port)
    assert frozen is None or frozen[0] == seen[0], "the heartbeat went on after stop()"
    stopper.join(30)
    assert not stopper.is_alive()
    assert read(port) is None  # the port is closed
    with socket.socket() as s:  # ... and free again
        s.bind(("127.0.0.1", port))


# ---------------------------------------------------------------------------------------------- the watcher


def test_a_plc_reads_the_registers_while_inspector_watch_judges_parts(tmp_path: Path, models: Path) -> None:
    port = free_port()
    site = make_site(tmp_path / "site", models)
    with site.config.open("a") as f:
        f.write(f"\n[modbus]\nenabled = true\nport = {port}\nunit_id = 1\nheartbeat_s = 0.2\n")
    assert read(port) is None
    proc = start(site)
    try:
        wait_started(site, proc)
        idle = wait_for(lambda: (r := read(port)) and r[1] == 1 and r, 60, "ready 1", proc, site)
        assert idle[2:] == [0] * 10  # nothing judged in this run yet
        names: list[str] = []
        snapshots: list[list[int]] = []
        for i in range(12):
            defect = ("spot", "scratch")[i % 2] if i % 3 == 0 else None
            name = f"p{i:03d}.jpg"
            atomic_drop(site.inbox, name, part_jpeg(20_000 + i, defect=defect))
            names.append(name)
            if (regs := read(port)) is not None:
                snapshots.append(regs)
            time.sleep(0.1)
        atomic_drop(site.inbox, "notes.jpg", b"this is not an image\n" * 10)  # a rejected part
        names.append("notes.jpg")
        wait_for(lambda: len(site.rows()) == len(names), 120, "every part recorded", proc, site)
        rows = site.rows()
        by_verdict = Counter(r["verdict"] for r in rows)
        assert by_verdict["rejected"] == 1 and by_verdict["ok"] and by_verdict["defect"]
        last = max(rows, key=lambda r: r["id"])

        def settled() -> list[int] | None:
            regs = read(port)
            if regs is not None:
                snapshots.append(regs)
            return regs if regs is not None and u32(regs, 2) == last["id"] else None

        regs = wait_for(settled, 30, "the last result id in registers 2-3", proc, site)
        assert regs[1] == 1
        assert regs[4] == CODES[last["verdict"]]
        assert regs[5] == expected_score(last["score"])
        assert (u32(regs, 6), u32(regs, 8), u32(regs, 10)) == \
            (by_verdict["ok"], by_verdict["defect"], by_verdict["rejected"])
        ids = {r["id"]: r for r in rows}
        for snap in snapshots:  # every snapshot read while parts arrived was one consistent state
            judged = u32(snap, 6) + u32(snap, 8) + u32(snap, 10)
            if judged == 0:
                assert snap[2:6] == [0, 0, 0, 0]
                continue
            row = ids[u32(snap, 2)]
            assert snap[4] == CODES[row["verdict"]] and snap[5] == expected_score(row["score"])
            assert judged == sum(1 for r in rows if r["id"] <= row["id"])
        beat = regs[0]
        wait_for(lambda: (r := read(port)) and (r[0] - beat) % 65536 >= 3, 30, "the heartbeat to advance", proc,
                 site)
        assert "Modbus TCP server on 127.0.0.1:" in site.log.read_text(errors="replace")

        # a clean stop: ready 0 (and the heartbeat frozen) while it lingers, then the port closes
        last_read: list[list[int]] = []
        watcher = threading.Thread(target=lambda: last_read.extend(_read_until_closed(port)), daemon=True)
        watcher.start()
        assert stop(proc) == 0
        watcher.join(30)
        assert not watcher.is_alive()
        assert last_read and last_read[-1][1] == 0, "the last answer before the port closed was not ready 0"
        assert read(port) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_until_closed(port: int, timeout_s: float = 60.0) -> list[list[int]]:
    """Read as fast as a PLC polls until the server is gone; the answers, oldest first."""
    answers: list[list[int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        regs = read(port)
        if regs is None:
            if answers:
                return answers
        else:
            answers.append(regs)
        time.sleep(0.02)
    return answers
