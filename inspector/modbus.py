"""Verdicts to PLCs that speak no MQTT (issue 13, item 4): a small Modbus TCP server on the station.

Twelve read-only 16-bit registers (the map is in the README, "Modbus TCP"), readable with function code 3
(holding registers) or 4 (input registers) at the same addresses; writes are refused (illegal address):

    0      heartbeat counter: +1 every [modbus] heartbeat_s while the service answers, wraps at 65536
    1      ready: 1 while the watcher runs (started, not stopping) and is not degraded, else 0
    2-3    last result id (the inspection id), 32 bits, high word first
    4      last verdict code: 0 none yet, 1 ok, 2 defect, 3 rejected
    5      last score x 100, signed 16 bits (two's complement), clamped; 0 when the verdict has no score
    6-7    ok count, 8-9 defect count, 10-11 rejected count: 32 bits each, high word first, since this start

The service calls `record(rows)` with the rows of every committed batch (after the commit, so a PLC never sees
a result the database does not have); the last result and the counts change together, and one request for
registers 0-11 always reads one consistent snapshot. A heartbeat thread asks the service's `counters()` every
heartbeat_s (for "running" and "degraded") and advances register 0; when counters() fails the heartbeat stops
and ready goes 0. `stop()` sets ready 0 and freezes the heartbeat, keeps answering for STOP_LINGER_S (so a
polling PLC sees the clean stop), then closes the port. A PLC must treat a stalled heartbeat, ready 0 or a
refused connection alike: not ready.

pymodbus (3.13 or later: SimDevice with an `action`) runs on its own asyncio event loop in the "modbus-server"
thread; the registers live in this object, under a lock, and are copied into pymodbus's block on every access.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from inspector.config import Config
from inspector.errors import InspectorError

log = logging.getLogger("inspector.modbus")

N_REGISTERS = 12
HEARTBEAT, READY, RESULT_ID, VERDICT, SCORE, OK_COUNT, DEFECT_COUNT, REJECTED_COUNT = 0, 1, 2, 4, 5, 6, 8, 10
VERDICT_CODES = {"ok": 1, "defect": 2, "rejected": 3}  # 0 = no verdict yet
COUNT_AT = {"ok": OK_COUNT, "defect": DEFECT_COUNT, "rejected": REJECTED_COUNT}
STOP_LINGER_S = 1.0  # a clean stop answers this long with ready 0 before the port closes
START_TIMEOUT_S = 10.0  # the server thread must be listening within this

Counters = Callable[[], Mapping[str, Any]]  # {"running": bool, "degraded": bool, ...} (called from another thread)
Emit = Callable[..., None]  # (event, level, text, **fields): the service's log line


def _log_emit(event: str, level: int, text: str, **_fields: Any) -> None:
    """The default emit: a line on the inspector.modbus logger."""
    log.log(level, "%s", text)


@dataclass(frozen=True)
class ModbusSettings:
    """Everything the server needs, from [modbus]."""

    host: str = "127.0.0.1"
    port: int = 5020
    unit_id: int = 1  # 0 = answer every unit id
    heartbeat_s: float = 1.0

    @classmethod
    def from_config(cls, cfg: Config) -> ModbusSettings:
        """Settings from a loaded config (already checked by ModbusConfig)."""
        m = cfg.modbus
        return cls(host=m.host, port=m.port, unit_id=m.unit_id, heartbeat_s=m.heartbeat_s)


# ---------------------------------------------------------------------------------------------- encoding


def words32(value: int) -> tuple[int, int]:
    """A non-negative integer as two registers, high word first (modulo 2**32)."""
    value &= 0xFFFF_FFFF
    return value >> 16, value & 0xFFFF


def score_register(score: float | None) -> int:
    """score x 100, rounded, clamped to a signed 16-bit value, as a register (two's complement); 0 for none/NaN."""
    if score is None or math.isnan(score):
        return 0
    scaled = max(-32768.0, min(32767.0, score * 100.0))
    return int(round(scaled)) & 0xFFFF


def signed16(register: int) -> int:
    """A register read as a signed 16-bit value (what a PLC's INT does)."""
    return register - 0x10000 if register & 0x8000 else register


def join32(high: int, low: int) -> int:
    """Two registers, high word first, as one unsigned 32-bit value."""
    return (high << 16) | low


# ---------------------------------------------------------------------------------------------- server


class ModbusServer:
    """The Modbus TCP server of one station: start(), record() after every commit, stop()."""

    def __init__(self, settings: ModbusSettings, *, counters: Counters | None = None,
                 emit: Emit | None = None) -> None:
        """A stopped server; start() it."""
        self.settings = settings
        self.counters = counters
        self.emit = emit or _log_emit
        self._regs = [0] * N_REGISTERS
        self._counts = {"ok": 0, "defect": 0, "rejected": 0}
        self._lock = threading.Lock()
        self._halt = threading.Event()  # the heartbeat thread ends; ready is forced to 0
        self._listening = threading.Event()
        self._start_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self._told: str | None = None  # the counters() failure last logged
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------ control

    def start(self) -> ModbusServer:
        """Listen on host:port and start the heartbeat; InspectorError naming [modbus] when it cannot listen."""
        if self._threads:
            raise RuntimeError("Modbus server already started")
        s = self.settings
        self._check_bind()
        self._refresh(beat=False)
        server = threading.Thread(target=self._serve, name="modbus-server", daemon=True)
        server.start()
        if not self._listening.wait(START_TIMEOUT_S) or self._start_error is not None:
            self._halt.set()
            self._close_loop()
            server.join(2.0)
            why = self._start_error or "not listening in time"
            raise InspectorError(f"[modbus] cannot listen on {s.host}:{s.port}: {why}")
        beat = threading.Thread(target=self._beat, name="modbus-heartbeat", daemon=True)
        beat.start()
        self._threads = [server, beat]
        self.emit("modbus", logging.INFO, f"Modbus TCP server on {s.host}:{s.port} (unit id {s.unit_id}): "
                                          f"{N_REGISTERS} read-only registers, heartbeat every {s.heartbeat_s:g} s",
                  host=s.host, port=s.port, unit_id=s.unit_id)
        return self

    def record(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Committed rows (with their ids), in commit order: the last one becomes the last result, every one
        is counted by verdict. Cheap; call after every commit."""
        rows = [r for r in rows if r is not None]
        if not rows:
            return
        with self._lock:
            for r in rows:
                if r.get("verdict") in self._counts:
                    self._counts[r["verdict"]] += 1
            last = rows[-1]
            regs = self._regs
            regs[RESULT_ID:RESULT_ID + 2] = words32(int(last.get("id") or 0))
            regs[VERDICT] = VERDICT_CODES.get(last.get("verdict"), 0)
            regs[SCORE] = score_register(last.get("score"))
            for verdict, at in COUNT_AT.items():
                regs[at:at + 2] = words32(self._counts[verdict])

    def registers(self) -> list[int]:
        """A copy of the twelve registers as a PLC reads them now."""
        with self._lock:
            return list(self._regs)

    def stop(self, linger_s: float = STOP_LINGER_S) -> None:
        """Ready 0 and the heartbeat frozen at once; answer for linger_s more, then close the port."""
        self._halt.set()
        with self._lock:
            self._regs[READY] = 0
        if not self._threads:
            return
        server, beat = self._threads
        beat.join(5.0)
        with self._lock:
            self._regs[READY] = 0  # a heartbeat round that was under way may have written it meanwhile
        if linger_s > 0 and server.is_alive():
            server.join(linger_s)  # does not end by itself: this is the linger
        self._close_loop()
        server.join(5.0)
        self._threads = []
        s = self.settings
        self.emit("modbus", logging.INFO, f"Modbus TCP server on {s.host}:{s.port} stopped")

    def __enter__(self) -> ModbusServer:
        """Start (unless started) and return self."""
        return self if self._threads else self.start()

    def __exit__(self, *_exc: object) -> None:
        """Stop without lingering."""
        self.stop(linger_s=0)

    # ------------------------------------------------------------------------------------------ internals

    def _check_bind(self) -> None:
        """Bind host:port once ourselves (as asyncio will, with SO_REUSEADDR) for a clear error: pymodbus only
        says that it could not listen."""
        s = self.settings
        try:
            infos = socket.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            raise InspectorError(f"[modbus] cannot listen on {s.host}:{s.port} (modbus.host / modbus.port): "
                                 f"{exc.strerror or exc}") from None

    def _serve(self) -> None:
        """The server thread: its own event loop until stop()."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start(), or logged
            if not self._listening.is_set():
                self._start_error = exc
                self._listening.set()
            else:
                log.exception("Modbus server failed")
                self.emit("modbus", logging.ERROR, f"Modbus server failed ({exc}); PLCs see the port closed")
        finally:
            loop.close()

    async def _main(self) -> None:
        """Listen, serve until _closing, shut down."""
        s = self.settings
        devices = [SimDevice(id=s.unit_id, action=self._on_access, simdata=_block())]
        if s.unit_id != 0:  # id 0 takes every other unit id: answered "gateway target failed to respond"
            devices.append(SimDevice(id=0, action=_other_unit, simdata=_block()))
        server = ModbusTcpServer(devices, address=(s.host, s.port))
        self._closing = asyncio.Event()
        try:
            await server.serve_forever(background=True)
        except BaseException as exc:
            self._start_error = exc
            self._listening.set()
            await server.shutdown()
            return
        self._listening.set()
        try:
            await self._closing.wait()
        finally:
            await server.shutdown()

    def _close_loop(self) -> None:
        """Ask the server thread to shut its server down (from any thread)."""
        loop, closing = self._loop, self._closing
        if loop is not None and closing is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(closing.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    async def _on_access(self, _func_code: int, start_address: int, _address: int, _count: int,
                         registers: list[int], _values: Any) -> None:
        """pymodbus's action on every request: copy the current registers into its block."""
        with self._lock:
            registers[start_address:start_address + N_REGISTERS] = self._regs
        return None

    def _beat(self) -> None:
        """The heartbeat thread."""
        while not self._halt.wait(self.settings.heartbeat_s):
            self._refresh(beat=True)

    def _refresh(self, beat: bool) -> None:
        """Ask the service whether it is ready; advance the heartbeat when it answered."""
        ready, answered = False, self.counters is None
        if self.counters is not None:
            try:
                c = self.counters()
                ready, answered = bool(c.get("running")) and not c.get("degraded"), True
                self._told = None
            except Exception as exc:  # noqa: BLE001 - a broken counter stops the heartbeat, never the server
                text = str(exc) or type(exc).__name__
                if self._told != text:
                    self._told = text
                    self.emit("modbus", logging.ERROR, f"Modbus heartbeat stopped: the service did not answer "
                                                       f"({text})")
        with self._lock:
            if self._halt.is_set():
                self._regs[READY] = 0
                return
            self._regs[READY] = int(ready)
            if beat and answered:
                self._regs[HEARTBEAT] = (self._regs[HEARTBEAT] + 1) & 0xFFFF


def _block() -> list[SimData]:
    """The twelve read-only registers of a device."""
    return [SimData(0, count=N_REGISTERS, values=0, datatype=DataType.REGISTERS, readonly=True)]


async def _other_unit(*_args: Any) -> ExcCodes:
    """pymodbus's action for a unit id that is not ours (a Modbus TCP gateway's answer for an absent unit)."""
    return ExcCodes.GATEWAY_NO_RESPONSE


class NullModbus:
    """The server when [modbus] enabled = false: the same calls, doing nothing."""

    def start(self) -> NullModbus:
        """Nothing to start."""
        return self

    def record(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Nothing to show."""

    def registers(self) -> None:
        """No registers."""
        return None

    def stop(self, linger_s: float = STOP_LINGER_S) -> None:
        """Nothing to stop."""

    def __enter__(self) -> NullModbus:
        """Return self."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Nothing to stop."""


def open_modbus(cfg: Config, *, counters: Counters | None = None,
                emit: Emit | None = None) -> ModbusServer | NullModbus:
    """A started ModbusServer for cfg's [modbus] (a NullModbus when enabled = false); InspectorError when it
    cannot listen. Without counters the server is never ready (register 1 stays 0)."""
    if not cfg.modbus.enabled:
        return NullModbus()
    return ModbusServer(ModbusSettings.from_config(cfg), counters=counters, emit=emit).start()


__all__ = ["ModbusServer", "ModbusSettings", "NullModbus", "N_REGISTERS", "VERDICT_CODES", "join32",
           "open_modbus", "score_register", "signed16", "words32"]
