"""Verdicts to the line over MQTT (issue 13): a transactional outbox drained by a paho-mqtt 2.x client.

The watcher commits a verdict row first; rows whose `published_at` is NULL are the outbox (migration 0005 marked
every older row published). The Publisher runs three daemon threads and never blocks the watcher:

* the outbox thread reads this station's oldest unpublished rows in id order (`Store.unpublished`), whenever
  `notify()` is called after a commit and every POLL_S anyway, publishes one JSON message per row on
  `<topic>/verdict` with QoS `[mqtt] qos`, and marks rows published (`Store.mark_published`) only once the
  broker acknowledged them (PUBACK/PUBCOMP). Database failures are retried with backoff; the network side and
  the heartbeat go on meanwhile.
* the supervisor thread connects (a fresh paho client per connection, clean session, last will `offline`
  retained on `<topic>/state`), publishes retained `online` on every CONNACK (after the SUBACK of the command
  topics when there are any, so a PLC that sees `online` can send a command at once), sends `<topic>/heartbeat` every
  `heartbeat_s`, and reconnects with backoff (RETRY_FIRST_S doubling to RETRY_MAX_S) while the broker is away.
* paho's network thread of the current connection.

Delivery is at least once and in order: a connection that is lost takes its unacknowledged messages with it, and
the next connection starts again from the oldest unpublished row. A consumer drops repeats by `result_id` (they
happen only when the broker got a message but its acknowledgement was lost, or the process died between the
acknowledgement and the mark). After a restart the outbox resumes from the database.

`stop()` sends what is still unpublished (bounded by its timeout), then `offline` (retained), then disconnects;
a process that dies instead leaves `offline` to the broker's last will (after 1.5x keepalive_s at most).
"""

from __future__ import annotations

import json
import logging
import math
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from inspector.config import Config, mqtt_address
from inspector.errors import ConfigError, InspectorError
from inspector.store import DatabaseError, Store

log = logging.getLogger("inspector.mqtt")

BATCH = 100  # rows read from the outbox and published per round
WINDOW = 200  # unacknowledged verdict messages at most
POLL_S = 1.0  # the outbox is looked at this often even without notify()
MARK_EVERY_S = 0.2  # acknowledged rows are marked published this long after the first ack (or per BATCH)
RETRY_FIRST_S = 0.25  # backoff while the broker cannot be reached (doubling); also for database failures
RETRY_MAX_S = 5.0
TICK_S = 0.25  # the supervisor looks at the connection at least this often
OFFLINE_WAIT_S = 1.0  # a clean stop waits this long for the broker to acknowledge "offline"

Counters = Callable[[], Mapping[str, Any]]  # heartbeat counters from the service (called from another thread)
Emit = Callable[..., None]  # (event, level, text, **fields): the service's log line
Command = Callable[[str], str]  # a command topic's handler: payload text -> the state to publish (issue 16: recipe)
COUNTER_KEYS = ("judged", "verdicts", "queue_depth", "degraded", "profile_version")


def _log_emit(event: str, level: int, text: str, **_fields: Any) -> None:
    """The default emit: a line on the inspector.mqtt logger."""
    log.log(level, "%s", text)


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class MqttSettings:
    """Everything the publisher needs, resolved from [mqtt] and [station]."""

    host: str
    port: int
    topic: str  # the formatted prefix, e.g. inspector/line-1/station-1
    station: str
    line: str
    camera: str
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    qos: int = 1
    keepalive_s: int = 5
    heartbeat_s: float = 1.0
    max_age_s: float = 5.0
    part_id_regex: re.Pattern[str] | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> MqttSettings:
        """Settings from a loaded config; ConfigError when [mqtt] url is empty or a file it names is unusable."""
        m, st = cfg.mqtt, cfg.station
        if not m.url:
            raise ConfigError("mqtt.url is empty: MQTT publishing is off")
        tls, host, port = mqtt_address(m.url)
        base = cfg.source.parent if cfg.source is not None else Path.cwd()
        topic = m.topic.format(line=st.line, station=st.name, camera=st.camera)
        if set(topic) & {"+", "#", "\0"}:
            raise ConfigError(f"mqtt.topic {m.topic!r} becomes {topic!r} with [station]: a topic must not hold "
                              "+, # or NUL")
        ca_file = _check_ca(_existing(base, m.ca_file, "mqtt.ca_file")) if m.ca_file else None
        password = _read_password(_existing(base, m.password_file, "mqtt.password_file")) if m.password_file else None
        return cls(host=host, port=port, topic=topic, station=st.name, line=st.line, camera=st.camera, tls=tls,
                   ca_file=ca_file, username=m.username or None, password=password, qos=m.qos,
                   keepalive_s=m.keepalive_s, heartbeat_s=m.heartbeat_s, max_age_s=m.max_age_s,
                   part_id_regex=re.compile(m.part_id_regex) if m.part_id_regex else None)

    def subtopic(self, leaf: str) -> str:
        """<topic>/<leaf>."""
        return f"{self.topic}/{leaf}"


def _existing(base: Path, value: str, key: str) -> Path:
    """A configured file (relative to the config file's folder) that must exist; ConfigError naming `key`."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(f"{key} {path}: no such file")
    return path


def _check_ca(path: Path) -> Path:
    """`path` when it holds CA certificates TLS can load; ConfigError naming mqtt.ca_file otherwise."""
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"mqtt.ca_file {path}: not a CA certificate file ({exc})") from None
    return path


def _read_password(path: Path) -> str:
    """The password in `path` (one line; a trailing newline is dropped); ConfigError naming mqtt.password_file."""
    try:
        if path.stat().st_mode & 0o077:
            log.warning("mqtt.password_file %s can be read by other users (chmod 600 it)", path)
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"mqtt.password_file {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") \
            from None


# ---------------------------------------------------------------------------------------------- messages


def part_id(name: str, pattern: re.Pattern[str] | None) -> str | None:
    """The part id in a file name: group "part" of the first match of `pattern`, or the stem without a
    pattern; None when the pattern does not match."""
    if pattern is None:
        return PurePath(name).stem
    found = pattern.search(name)
    return found.group("part") if found else None


def _iso(when: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 UTC with milliseconds."""
    return None if when is None else when.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _finite(value: float | None) -> float | None:
    """A float JSON can carry (NaN and infinities become null)."""
    return value if value is None or math.isfinite(value) else None


class MessageSettings(Protocol):
    """What verdict_message needs of its settings (MqttSettings, webhook.WebhookSettings)."""

    @property
    def part_id_regex(self) -> re.Pattern[str] | None:
        """The part id pattern of the file name (None: the stem)."""

    @property
    def max_age_s(self) -> float:
        """Older than this when sent: late (0: never late)."""


def verdict_message(row: Mapping[str, Any], settings: MessageSettings, now: datetime,
                    database_id: str | None = None) -> dict[str, Any]:
    """The <topic>/verdict payload of one inspection row, as published at `now`; `database_id` is the store's
    identity (a consumer drops a repeat by database_id and result_id: ids start again in a new database)."""
    received = row["received_at"]
    age_s = (now - received).total_seconds()
    return {
        "result_id": row["id"], "database_id": database_id, "part_id": part_id(row["name"], settings.part_id_regex), "name": row["name"],
        "sha256": row["sha256"], "verdict": row["verdict"], "reason": row["reason"],
        "score": _finite(row["score"]), "threshold": _finite(row["threshold"]),
        "product": row.get("product", "default"), "profile_version": row["profile_version"],
        "received_at": _iso(received),
        "inspected_at": _iso(row["inspected_at"]), "latency_ms": round(age_s * 1000.0, 1),
        "station": row["station"], "line": row["line"], "camera": row["camera"],
        "late": settings.max_age_s > 0 and age_s > settings.max_age_s,
    }


def _dumps(payload: Mapping[str, Any]) -> str:
    """Compact JSON."""
    return json.dumps(payload, separators=(",", ":"), default=str)


# ---------------------------------------------------------------------------------------------- publisher


@dataclass
class _Session:
    """One broker connection: its paho client, numbered so the outbox notices a new one."""

    number: int
    client: mqtt.Client
    up: bool = False  # CONNACK accepted
    ended: threading.Event = field(default_factory=threading.Event)
    refused: str | None = None  # the CONNACK's reason when the broker refused us
    subscribe_mid: int | None = None  # the command topics' SUBSCRIBE, until its SUBACK says online


@dataclass
class PublisherStatus:
    """What the publisher did so far (also in every heartbeat's "outbox")."""

    connected: bool = False
    published: int = 0  # verdicts acknowledged by the broker in this run
    late: int = 0  # ... of which were published after max_age_s
    inflight: int = 0  # verdicts handed to the broker, not yet acknowledged
    last_result_id: int | None = None  # the newest acknowledged verdict
    database_ok: bool = True  # the last outbox read or mark succeeded
    connects: int = 0  # accepted connections in this run


class Publisher:
    """Publishes this station's recorded verdicts, its state and a heartbeat to an MQTT broker."""

    def __init__(self, settings: MqttSettings, store: Store, *, counters: Counters | None = None,
                 emit: Emit | None = None, commands: Mapping[str, Command] | None = None) -> None:
        """A stopped publisher; start() it. `commands`: topic leaf (under <topic>/) -> handler of its payload text,
        subscribed at every connect (e.g. "recipe/set"); a handler returns the retained state to publish on
        <topic>/<leaf without its last part> (e.g. <topic>/recipe), or raises InspectorError (logged, published on
        <topic>/<leaf>/error)."""
        self.settings = settings
        self.commands = dict(commands or {})
        self.store = store
        self.counters = counters
        self.emit = emit or _log_emit
        self.status = PublisherStatus()
        self._session: _Session | None = None  # the current connection (the supervisor replaces it)
        self._sessions = 0
        self._wake = threading.Event()  # the outbox thread: notify(), an acknowledgement, stop()
        self._dirty = True  # rows may be waiting (start, notify)
        self._stopping = threading.Event()  # the outbox: send what is left, then end
        self._halt = threading.Event()  # the supervisor: say offline, disconnect, end
        self._stop_by = math.inf  # monotonic deadline of the final drain
        self._inflight: list[tuple[int, mqtt.MQTTMessageInfo, bool]] = []  # (row id, message, late), id order
        self._acked: dict[int, bool] = {}  # acknowledged, not yet marked: row id -> late
        self._acked_since = 0.0
        self._sent_upto = 0  # the newest row id handed to the current session
        self._database_id: str | None = None  # the store's identity, read at the first outbox round
        self._touched = False  # this round read or wrote the database (so it may say the database is back)
        self._next_poll = 0.0  # monotonic time of the next outbox read without notify()
        self._outbox_session = 0  # the session number the outbox state belongs to
        self._told_broker: str | None = None  # the broker problem last logged (each is logged once)
        self._started = time.monotonic()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------ control

    def start(self) -> Publisher:
        """Start the supervisor and outbox threads; returns self."""
        if self._threads:
            raise RuntimeError("publisher already started")
        self._threads = [threading.Thread(target=self._supervise, name="mqtt-supervisor", daemon=True),
                         threading.Thread(target=self._drain, name="mqtt-outbox", daemon=True)]  # stop() unpacks
        for t in self._threads:
            t.start()
        return self

    def notify(self) -> None:
        """Verdicts were committed: look at the outbox now (cheap; call after every commit)."""
        self._dirty = True
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is still unpublished (for up to timeout_s less a second), then retained "offline",
        disconnect and end the threads. What could not be sent stays in the outbox for the next start."""
        started = time.monotonic()
        self._stop_by = started + max(0.0, timeout_s - OFFLINE_WAIT_S)
        self._stopping.set()
        self._wake.set()
        if self._threads:
            supervisor, outbox = self._threads
            outbox.join(max(0.0, timeout_s - OFFLINE_WAIT_S))
            self._halt.set()
            supervisor.join(max(0.5, started + timeout_s - time.monotonic()))
        self._halt.set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the broker accepted a connection; False at the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.status.connected:
                return True
            time.sleep(0.01)
        return self.status.connected

    def __enter__(self) -> Publisher:
        """Start (unless started) and return self."""
        return self if self._threads else self.start()

    def __exit__(self, *_exc: object) -> None:
        """Stop."""
        self.stop()

    # ------------------------------------------------------------------------------------------ supervisor

    def _supervise(self) -> None:
        """Connect, serve the connection (heartbeats), reconnect with backoff; say offline at the end."""
        backoff = RETRY_FIRST_S
        while not self._halt.is_set():
            session = self._connect()
            if session is not None:
                self._serve(session)
                if session.up:
                    backoff = RETRY_FIRST_S
                if self._halt.is_set():
                    self._goodbye(session)
                    return
                self._end(session)
            self._halt.wait(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)

    def _client(self, number: int) -> mqtt.Client:
        """A fresh paho client with the last will, credentials and TLS configured."""
        s = self.settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"inspector-{s.station}-{uuid.uuid4().hex[:8]}",
                             clean_session=True, protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        client.will_set(s.subtopic("state"), "offline", qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None)
        client.connect_timeout = float(min(5, s.keepalive_s))
        client.max_inflight_messages_set(WINDOW)
        client.on_connect = lambda c, u, flags, rc, props: self._on_connect(number, rc)
        client.on_disconnect = lambda c, u, flags, rc, props: self._on_disconnect(number, rc)
        client.on_publish = lambda c, u, mid, rc, props: self._wake.set()
        client.on_subscribe = lambda c, u, mid, codes, props: self._on_subscribed(number, mid, codes)
        client.on_message = lambda c, u, msg: self._on_command(c, msg)
        return client

    def _on_command(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        """A message on a command topic (paho's thread): run its handler, publish the state or the error."""
        leaf = msg.topic[len(self.settings.topic) + 1:]
        handler = self.commands.get(leaf)
        if handler is None or msg.retain:  # a retained command is an old one, never replayed at a (re)connect
            return
        text = msg.payload.decode("utf-8", "replace").strip()
        try:
            state = handler(text)
        except InspectorError as exc:
            self.emit("command", logging.WARNING, f"MQTT {leaf} {text!r} refused: {exc}", topic=msg.topic)
            client.publish(self.settings.subtopic(f"{leaf}/error"), str(exc), qos=1)
            return
        self.emit("command", logging.INFO, f"MQTT {leaf}: {state}", topic=msg.topic)
        client.publish(self.settings.subtopic(leaf.rsplit("/", 1)[0]), state, qos=1, retain=True)

    def _connect(self) -> _Session | None:
        """Open a connection (CONNACK comes later, on paho's thread); None when the broker cannot be reached."""
        self._sessions += 1
        s = self.settings
        try:
            client = self._client(self._sessions)
            session = _Session(self._sessions, client)
            self._session = session
            client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except (OSError, ValueError) as exc:
            self._broker_problem(f"cannot reach MQTT broker {s.host}:{s.port} ({exc or type(exc).__name__})")
            return None
        client.loop_start()
        return session

    def _serve(self, session: _Session) -> None:
        """Heartbeats while the connection lasts; returns when it ended, was refused or halt was asked."""
        s = self.settings
        opened = time.monotonic()
        next_beat = time.monotonic()
        while not self._halt.is_set() and not session.ended.is_set():
            now = time.monotonic()
            if not session.up and now - opened > s.keepalive_s + 5:
                self._broker_problem(f"MQTT broker {s.host}:{s.port} did not answer the connect")
                return
            if session.up and s.heartbeat_s > 0 and now >= next_beat:
                self._heartbeat(session)
                next_beat = max(next_beat + s.heartbeat_s, now)
            wait = TICK_S if not (session.up and s.heartbeat_s > 0) else min(TICK_S, max(0.0, next_beat - now))
            self._halt.wait(wait)

    def _on_connect(self, number: int, reason: Any) -> None:
        """CONNACK (paho's thread): say online (retained) and let the outbox start, or note the refusal."""
        session = self._session
        if session is None or session.number != number:
            return
        if reason.is_failure:
            session.refused = str(reason)
            self._broker_problem(f"MQTT broker {self.settings.host}:{self.settings.port} refused the connection "
                                 f"({reason})")
            session.ended.set()
            return
        if self.commands:  # "online" waits for the SUBACK: a PLC that sees it may send a command at once
            _, session.subscribe_mid = session.client.subscribe(
                [(self.settings.subtopic(leaf), 1) for leaf in self.commands])
        else:
            self._say_online(session)
        session.up = True
        self.status.connected = True
        self.status.connects += 1
        self._told_broker = None
        self.emit("mqtt", logging.INFO, f"MQTT connected to {self.settings.host}:{self.settings.port}; "
                                        f"publishing on {self.settings.topic}/", topic=self.settings.topic)
        self.notify()

    def _on_subscribed(self, number: int, mid: int, codes: list[Any]) -> None:
        """SUBACK of the command topics (paho's thread): say online; log a topic the broker refused."""
        session = self._session
        if session is None or session.number != number or mid != session.subscribe_mid:
            return
        session.subscribe_mid = None
        for leaf, code in zip(self.commands, codes):
            if code.is_failure:
                self.emit("mqtt", logging.WARNING, f"MQTT broker refused the subscription to "
                                                   f"{self.settings.subtopic(leaf)} ({code}); that command is "
                                                   "not available", topic=self.settings.topic)
        self._say_online(session)

    def _say_online(self, session: _Session) -> None:
        """Publish the retained `online` state (the station is connected and listening)."""
        session.client.publish(self.settings.subtopic("state"), "online", qos=1, retain=True)

    def _on_disconnect(self, number: int, reason: Any) -> None:
        """The connection ended (paho's thread)."""
        session = self._session
        if session is None or session.number != number:
            return
        if session.up and not self._halt.is_set():
            self._broker_problem(f"MQTT connection to {self.settings.host}:{self.settings.port} lost ({reason}); "
                                 "verdicts wait in the database")
        self.status.connected = False
        session.ended.set()
        self._wake.set()

    def _broker_problem(self, text: str) -> None:
        """Log a broker problem once until the next successful connection."""
        key = re.sub(r"\(.*\)", "", text)
        if self._told_broker != key:
            self._told_broker = key
            self.emit("mqtt", logging.WARNING, text)

    def _end(self, session: _Session) -> None:
        """Drop a connection that ended (its unacknowledged messages go with it)."""
        self.status.connected = False
        session.ended.set()
        try:
            session.client.disconnect()
        except Exception:  # noqa: BLE001 - it is gone either way
            pass
        session.client.loop_stop()
        self._wake.set()

    def _goodbye(self, session: _Session) -> None:
        """A clean stop: retained "offline", acknowledged (briefly waited for), then DISCONNECT (no last will)."""
        if session.up and not session.ended.is_set():
            info = session.client.publish(self.settings.subtopic("state"), "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(OFFLINE_WAIT_S)
            except (RuntimeError, ValueError):
                pass
        self._end(session)

    def _heartbeat(self, session: _Session) -> None:
        """Publish one heartbeat (QoS 0, not retained: a stale one must not look alive)."""
        s, st = self.settings, self.status
        beat: dict[str, Any] = {"sent_at": _iso(datetime.now(timezone.utc)), "station": s.station, "line": s.line,
                                "camera": s.camera, "uptime_s": round(time.monotonic() - self._started, 1),
                                **dict.fromkeys(COUNTER_KEYS)}
        if self.counters is not None:
            try:
                beat.update(self.counters())
            except Exception as exc:  # noqa: BLE001 - a broken counter must not stop the heartbeat
                beat["counters_error"] = str(exc) or type(exc).__name__
        beat["outbox"] = {"published": st.published, "late": st.late, "inflight": st.inflight,
                          "last_result_id": st.last_result_id, "database_ok": st.database_ok}
        session.client.publish(s.subtopic("heartbeat"), _dumps(beat), qos=0, retain=False)

    # ------------------------------------------------------------------------------------------ outbox

    def _drain(self) -> None:
        """The outbox thread: rounds until stop() and the final drain are done."""
        backoff = RETRY_FIRST_S
        while True:
            stopping = self._stopping.is_set()
            if stopping and time.monotonic() >= self._stop_by:
                self._mark_safely()
                return
            try:
                finished = self._round(stopping)
            except DatabaseError as exc:
                self._database_problem(exc)
                self._wake.wait(backoff)
                self._wake.clear()
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug must not end publishing silently
                log.exception("MQTT outbox round failed")
                self.emit("mqtt", logging.ERROR, f"MQTT outbox error ({exc}); retrying")
                self._wake.wait(RETRY_MAX_S)
                self._wake.clear()
                continue
            if not self.status.database_ok and self._touched:
                self.status.database_ok = True
                self.emit("mqtt", logging.WARNING, "MQTT outbox: database available again; resuming")
            backoff = RETRY_FIRST_S
            if stopping and finished:
                return
            self._wake.wait(self._pause())
            self._wake.clear()

    def _pause(self) -> float:
        """How long the outbox thread may sleep before its next round (a wake-up cuts it short)."""
        if self._acked:
            return max(0.0, self._acked_since + MARK_EVERY_S - time.monotonic())
        if self._inflight:
            return MARK_EVERY_S
        return POLL_S

    def _round(self, stopping: bool) -> bool:
        """Collect acknowledgements, mark them, publish the next rows; True when nothing is left to do now."""
        self._touched = False
        session = self._session
        current = session if session is not None and session.up and not session.ended.is_set() else None
        self._collect()
        if current is None or current.number != self._outbox_session:
            self._inflight.clear()  # a lost connection took its unacknowledged messages with it
            self._sent_upto = 0
            self._outbox_session = current.number if current is not None else 0
        self._mark(force=stopping or current is None)
        if current is None:
            self.status.inflight = 0
            return True
        if not self._inflight and not self._acked:
            self._sent_upto = 0  # nothing outstanding: look again from the oldest unpublished row
        full = False
        if (self._dirty or stopping or time.monotonic() >= self._next_poll) and len(self._inflight) < WINDOW:
            self._dirty = False
            self._next_poll = time.monotonic() + POLL_S
            full = self._publish_next(current)
            if full:  # more may wait: read again at the next round
                self._dirty = True
                self._wake.set()
        self.status.inflight = len(self._inflight)
        return not self._dirty and not self._inflight and not self._acked

    def _publish_next(self, session: _Session) -> bool:
        """Publish the next batch of unpublished rows; True when the batch was full (more may wait)."""
        s = self.settings
        if self._database_id is None:
            self._database_id = self.store.database_id()
        rows = self.store.unpublished(s.station, s.line, camera=s.camera, after_id=self._sent_upto, limit=BATCH)
        self._touched = True
        now = datetime.now(timezone.utc)
        for row in rows:
            self._sent_upto = row["id"]
            if row["id"] in self._acked:
                continue
            message = verdict_message(row, s, now, self._database_id)
            info = session.client.publish(s.subtopic("verdict"), _dumps(message), qos=s.qos, retain=False)
            self._inflight.append((row["id"], info, message["late"]))
        return len(rows) == BATCH

    def _collect(self) -> None:
        """Move acknowledged messages from in flight to acked."""
        still: list[tuple[int, mqtt.MQTTMessageInfo, bool]] = []
        for item in self._inflight:
            try:
                done = item[1].is_published()
            except (RuntimeError, ValueError):  # never sent: the connection went; sent again on the next one
                done = False
            if done:
                if not self._acked:
                    self._acked_since = time.monotonic()
                self._acked[item[0]] = item[2]
            else:
                still.append(item)
        self._inflight = still

    def _mark(self, force: bool) -> None:
        """Mark acknowledged rows published in one transaction, when due (BATCH of them, MARK_EVERY_S, force)."""
        if not self._acked:
            return
        if not force and len(self._acked) < BATCH and time.monotonic() - self._acked_since < MARK_EVERY_S:
            return
        ids = sorted(self._acked)
        self.store.mark_published(ids)
        self._touched = True
        st = self.status
        st.published += len(ids)
        st.late += sum(1 for i in ids if self._acked[i])
        st.last_result_id = max(ids[-1], st.last_result_id or 0)
        self._acked.clear()

    def _mark_safely(self) -> None:
        """A last mark at the end of the final drain; a database failure leaves the rows for the next start."""
        try:
            self._collect()
            self._mark(force=True)
        except DatabaseError as exc:
            self._database_problem(exc)

    def _database_problem(self, exc: DatabaseError) -> None:
        """Log a database failure of the outbox once until it works again."""
        if self.status.database_ok:
            self.status.database_ok = False
            self.emit("mqtt", logging.WARNING, f"MQTT outbox: database unavailable ({exc}); retrying")


class NullPublisher:
    """The publisher when [mqtt] url is empty: the same calls, doing nothing."""

    status = PublisherStatus()

    def start(self) -> NullPublisher:
        """Nothing to start."""
        return self

    def notify(self) -> None:
        """Nothing to publish."""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Nothing to stop."""

    def wait_connected(self, timeout_s: float) -> bool:
        """Never connected."""
        return False

    def __enter__(self) -> NullPublisher:
        """Return self."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Nothing to stop."""


def open_publisher(cfg: Config, store: Store, *, counters: Counters | None = None,
                   emit: Emit | None = None, commands: Mapping[str, Command] | None = None) -> Publisher | NullPublisher:
    """A started Publisher for cfg's [mqtt] and [station] (a NullPublisher when [mqtt] url is empty), listening on
    the `commands` topics; ConfigError when a file it names is unusable. Never waits for the broker."""
    if not cfg.mqtt.url:
        return NullPublisher()
    return Publisher(MqttSettings.from_config(cfg), store, counters=counters, emit=emit, commands=commands).start()


__all__ = ["MqttSettings", "NullPublisher", "Publisher", "PublisherStatus", "open_publisher", "part_id",
           "verdict_message"]
