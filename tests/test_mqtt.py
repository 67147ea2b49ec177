"""Verdicts to the line over MQTT (issue 13, items 1 and 2): [mqtt] config, migration 0005 (the outbox column),
the Store's outbox methods, and the publisher against real brokers.

No mocks: the broker is the Mosquitto at 127.0.0.1:1883 (tests skip when it is not reachable), or, for outages,
a `mosquitto` this module starts itself on a free port (skips when the binary is missing); the database is a real
SQLite file (and PostgreSQL for the migration when INSPECTOR_TEST_POSTGRES_URL is set). Messages are read by a
paho subscriber in the test. Times are only ever generous liveness bounds.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from paho.mqtt.enums import CallbackAPIVersion

from inspector import config
from inspector.errors import ConfigError
from inspector.publisher import MqttSettings, NullPublisher, Publisher, open_publisher, part_id, verdict_message
from inspector.store import HEAD, Base, Store, alembic_config

REPO = Path(__file__).resolve().parents[1]
BROKER = ("127.0.0.1", 1883)
T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------------------------------------------- helpers


def reachable(host: str, port: int) -> bool:
    """Something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll until predicate() holds; fail naming `what` after a generous timeout."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def row(i: int, station: str, line: str, **kw: Any) -> dict[str, Any]:
    """A valid inspection row of `station` whose sha256 is derived from i."""
    now = datetime.now(timezone.utc)
    base: dict[str, Any] = {
        "sha256": f"{i:064x}", "name": f"part_{i:05d}.jpg", "source_path": f"/in/part_{i:05d}.jpg",
        "size": 1000, "width": 640, "height": 480, "received_at": now, "inspected_at": now,
        "verdict": ("ok", "defect", "rejected")[i % 3], "reason": "empty" if i % 3 == 2 else None,
        "score": 0.5 + i, "threshold": 1.5, "profile_version": "v1", "ms": 12.5, "station": station,
        "line": line, "camera": "cam-A",
    }
    return base | kw


class Subscriber:
    """A paho subscriber on <prefix>/# (QoS 1) collecting (topic leaf, payload, retain, monotonic time)."""

    def __init__(self, prefix: str, port: int = BROKER[1], *, persistent: bool = False) -> None:
        self.prefix = prefix
        self.messages: list[tuple[str, str, bool, float]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        name = f"test-sub-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, clean_session=not persistent,
                                  protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber got no SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic[len(self.prefix) + 1:], msg.payload.decode(), bool(msg.retain),
                                  time.monotonic()))

    def payloads(self, leaf: str) -> list[str]:
        with self.lock:
            return [p for t, p, _, _ in self.messages if t == leaf]

    def verdicts(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.payloads("verdict")]

    def first_seen_ids(self) -> list[int]:
        """result_ids in the order of their first arrival (repeats dropped, as a consumer would)."""
        seen: dict[int, None] = {}
        for v in self.verdicts():
            seen.setdefault(v["result_id"], None)
        return list(seen)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_retained(prefix: str, port: int = BROKER[1]) -> None:
    """Remove the retained state this test left on a shared broker."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    try:
        client.connect("127.0.0.1", port, keepalive=5)
        client.loop_start()
        client.publish(f"{prefix}/state", b"", qos=1, retain=True).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
    except (OSError, RuntimeError):
        pass


def write_config(folder: Path, port: int, line: str, **mqtt_keys: Any) -> Path:
    """config.toml for one station on its own line (so topics never collide), with [mqtt] pointing at port."""
    values: dict[str, Any] = {"url": f"mqtt://127.0.0.1:{port}", "keepalive_s": 2, "heartbeat_s": 0.2}
    values.update(mqtt_keys)
    lines = ["[database]", 'url = "sqlite:///inspector.db"', "", "[station]", 'name = "st-1"', f'line = "{line}"',
             'camera = "cam-A"', "", "[mqtt]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Station:
    """One station's config, store and topic prefix on a broker at `port`."""

    def __init__(self, folder: Path, port: int = BROKER[1], **mqtt_keys: Any) -> None:
        self.line = f"test-{uuid.uuid4().hex[:10]}"
        self.path = write_config(folder, port, self.line, **mqtt_keys)
        self.cfg = config.load(self.path)
        self.prefix = f"inspector/{self.line}/st-1"
        self.store = Store(self.cfg.database.url)
        self.next = 0

    def record(self, n: int, **kw: Any) -> list[int]:
        """Record n new verdicts through the Store; their ids, in order."""
        rows = [row(self.next + i, "st-1", self.line, **kw) for i in range(n)]
        self.next += n
        ids = self.store.record(rows)
        assert None not in ids
        return [i for i in ids if i is not None]


@pytest.fixture
def broker() -> int:
    """The port of the machine's Mosquitto at 127.0.0.1:1883 (skip when it is not there)."""
    if not reachable(*BROKER):
        pytest.skip("no MQTT broker at 127.0.0.1:1883 (Debian package mosquitto)")
    return BROKER[1]


class OwnBroker:
    """A mosquitto of this test on a free port, with persistence, that the test stops and starts again."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
        if binary is None:
            pytest.skip("mosquitto binary not installed (Debian package mosquitto)")
        self.binary = binary
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser root\n"
                             f"persistence true\npersistence_location {folder}/\nautosave_interval 1\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: reachable("127.0.0.1", self.port), 15, f"mosquitto on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
        self.proc = None


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    """A started mosquitto of this test (stopped at the end)."""
    b = OwnBroker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop(signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- config


def test_mqtt_is_off_by_default_and_config_toml_lists_it() -> None:
    cfg = config.load(REPO / "config.toml")
    assert cfg.mqtt == config.MqttConfig() and cfg.mqtt.url == ""
    assert (cfg.mqtt.topic, cfg.mqtt.qos, cfg.mqtt.heartbeat_s) == ("inspector/{line}/{station}", 1, 1.0)
    assert isinstance(open_publisher(cfg, None), NullPublisher)  # type: ignore[arg-type] - never touched


@pytest.mark.parametrize(("text", "key"), [
    ('url = "http://broker"', "mqtt.url"),
    ('url = "mqtt://user:secret@broker"', "mqtt.url"),
    ('url = "mqtt://broker:99999"', "mqtt.url"),
    ('url = "mqtt://broker/some/path"', "mqtt.url"),
    ('qos = 0', "mqtt.qos"),
    ('qos = "1"', "mqtt.qos"),
    ('keepalive_s = 0', "mqtt.keepalive_s"),
    ('heartbeat_s = -1', "mqtt.heartbeat_s"),
    ('max_age_s = -0.5', "mqtt.max_age_s"),
    ('topic = "inspector/+/x"', "mqtt.topic"),
    ('topic = "inspector/{plant}"', "mqtt.topic"),
    ('topic = "/inspector"', "mqtt.topic"),
    ('part_id_regex = "(\\\\d+)"', "mqtt.part_id_regex"),
    ('part_id_regex = "(?P<part>"', "mqtt.part_id_regex"),
    ('password_file = "pw"', "mqtt.password_file"),
    ('url = "mqtt://broker"\nca_file = "ca.pem"', "mqtt.ca_file"),
    ('colour = "red"', "mqtt.colour"),
])
def test_bad_mqtt_settings_are_config_errors_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "c.toml").write_text(f"[mqtt]\n{text}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as caught:
        config.load(tmp_path / "c.toml")
    assert "secret" not in str(caught.value)


def test_settings_resolve_files_against_the_config_folder_and_read_the_password(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text("s3cret\n")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt" if Path("/etc/ssl/certs/ca-certificates.crt").is_file()
                else ssl.get_default_verify_paths().cafile, tmp_path / "ca.pem")
    (tmp_path / "c.toml").write_text('[station]\nname = "press 4"\nline = "L7"\n[mqtt]\n'
                                     'url = "mqtts://broker.plant"\nca_file = "ca.pem"\nusername = "cam"\n'
                                     'password_file = "secrets/pw"\npart_id_regex = "^(?P<part>[A-Z]\\\\d+)_"\n')
    s = MqttSettings.from_config(config.load(tmp_path / "c.toml"))
    assert (s.tls, s.host, s.port, s.topic) == (True, "broker.plant", 8883, "inspector/L7/press 4")
    assert s.ca_file == tmp_path / "ca.pem" and (s.username, s.password) == ("cam", "s3cret")
    assert "s3cret" not in repr(s)
    (tmp_path / "secrets" / "pw").unlink()
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        MqttSettings.from_config(config.load(tmp_path / "c.toml"))
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file"):
        MqttSettings.from_config(config.load(tmp_path / "c.toml"))
    (tmp_path / "c.toml").write_text('[station]\nname = "a+b"\n[mqtt]\nurl = "mqtt://b"\n')
    with pytest.raises(ConfigError, match=r"mqtt\.topic"):
        MqttSettings.from_config(config.load(tmp_path / "c.toml"))


# ---------------------------------------------------------------------------------------------- messages


def test_part_id_is_the_stem_or_the_named_group() -> None:
    import re

    assert part_id("A123_top.jpg", None) == "A123_top"
    pattern = re.compile(r"^(?P<part>[A-Z]\d+)_")
    assert part_id("A123_top.jpg", pattern) == "A123"
    assert part_id("unnamed.jpg", pattern) is None


def test_verdict_message_carries_the_row_its_latency_and_late() -> None:
    settings = MqttSettings(host="h", port=1883, topic="t", station="s", line="l", camera="c", max_age_s=2.0)
    r = row(4, "s", "l", id=17, received_at=T0, inspected_at=T0 + timedelta(milliseconds=80),
            score=float("nan"))
    fresh = verdict_message(r, settings, T0 + timedelta(milliseconds=120), "0f4c6b5e-8d1b-4a55-9a57-5d6a3f2c9e10")
    assert fresh == {"result_id": 17, "database_id": "0f4c6b5e-8d1b-4a55-9a57-5d6a3f2c9e10", "part_id": "part_00004", "name": "part_00004.jpg", "sha256": f"{4:064x}",
                     "verdict": "defect", "reason": None, "score": None, "threshold": 1.5, "product": "default",
                     "profile_version": "v1", "received_at": "2026-12-01T08:00:00.000+00:00", "inspected_at": "2026-12-01T08:00:00.080+00:00",
                     "latency_ms": 120.0, "station": "s", "line": "l", "camera": "cam-A", "late": False}
    assert verdict_message(r, settings, T0 + timedelta(seconds=3))["late"] is True
    assert verdict_message({**r, "product": "casting"}, settings, T0)["product"] == "casting"
    never = MqttSettings(host="h", port=1883, topic="t", station="s", line="l", camera="c", max_age_s=0)
    assert verdict_message(r, never, T0 + timedelta(days=1))["late"] is False
    json.dumps(fresh, allow_nan=False)


# ---------------------------------------------------------------------------------------------- migration


OLD_ROW = ("INSERT INTO inspections (sha256, name, source_path, received_at, inspected_at, verdict, station, line,"
           " camera) VALUES (:sha, :name, '/in/x.jpg', :at, :at, 'ok', 'st-1', 'L1', 'c')")


def check_migration(url: str) -> None:
    """0004 -> 0005 keeps old rows and counts them published; new rows wait; 0005 -> 0004 -> 0005 round-trips."""
    with Store(url, migrate=False) as s:
        with s.engine.execution_options(immediate=True).begin() as conn:
            command.upgrade(alembic_config(conn), "0004")
        with s.engine.begin() as conn:
            for i in range(3):
                conn.execute(sa.text(OLD_ROW), {"sha": f"{i:064x}", "name": f"old_{i}.jpg", "at": T0})
    with Store(url) as s:
        assert s.revision() == HEAD == "0013"
        with s.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == [], s.dialect
        indexes = {i["name"]: i["column_names"] for i in sa.inspect(s.engine).get_indexes("inspections")}
        assert indexes["ix_inspections_station_published_at_id"] == ["station", "published_at", "id"]
        old = s.list(limit=None)
        assert len(old) == 3 and all(r["published_at"] is not None for r in old)
        assert all(r["published_at"].tzinfo is not None and r["published_at"] > T0 for r in old)
        assert s.unpublished("st-1") == [] and s.count_unpublished("st-1") == 0
        [new] = s.record([row(10, "st-1", "L1")])
        assert [r["id"] for r in s.unpublished("st-1")] == [new]
        with s.engine.execution_options(immediate=True).begin() as conn:
            command.downgrade(alembic_config(conn), "0004")
        assert s.revision() == "0004" and s.count() == 4
        assert "published_at" not in {c["name"] for c in sa.inspect(s.engine).get_columns("inspections")}
        assert "ix_inspections_station_published_at_id" not in {
            i["name"] for i in sa.inspect(s.engine).get_indexes("inspections")}
        assert s.upgrade() == "0013" and s.count_unpublished("st-1") == 0  # again: what is there counts as sent


def test_migration_0005_on_sqlite(tmp_path: Path) -> None:
    check_migration(f"sqlite:///{tmp_path / 'm.db'}")


def test_migration_0005_on_postgres(postgres_database) -> None:
    check_migration(postgres_database())


def check_outbox_reads(url: str) -> None:
    with Store(url) as s:
        ids = s.record([row(i, "st-1" if i % 4 else "st-2", "L1") for i in range(12)])
        mine = [i for n, i in enumerate(ids) if n % 4]
        assert [r["id"] for r in s.unpublished("st-1", limit=100)] == mine
        assert [r["id"] for r in s.unpublished("st-1", "L1", limit=3)] == mine[:3]
        assert [r["id"] for r in s.unpublished("st-1", after_id=mine[4])] == mine[5:]
        assert s.unpublished("st-1", "other line") == []
        assert [r["id"] for r in s.unpublished("st-1", "L1", camera="cam-A", limit=2)] == mine[:2]
        assert s.unpublished("st-1", camera="cam-B") == [] and s.unpublished("st-1", "L1", camera="cam-B") == []
        first = s.unpublished("st-1", limit=1)[0]
        assert first == s.get(mine[0])  # the same columns and values as any other read of the row
        assert first["inspected_at"].tzinfo is not None
        assert s.mark_published(mine[:5]) == 5 and s.mark_published(mine[:6]) == 1
        assert [r["id"] for r in s.unpublished("st-1")] == mine[6:]
        assert s.count_unpublished("st-1") == 3 and s.count_unpublished("st-2") == 3


def test_outbox_reads_on_postgres(postgres_database) -> None:
    check_outbox_reads(postgres_database())


def test_outbox_reads_in_id_order_per_station_and_marks_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    check_outbox_reads(url)
    with Store(url) as s:
        assert s.mark_published([]) == 0
        with pytest.raises(ValueError):
            s.unpublished("st-1", limit=0)


# ---------------------------------------------------------------------------------------------- publisher


def test_verdicts_state_and_heartbeat_reach_a_subscriber(broker: int, tmp_path: Path) -> None:
    st = Station(tmp_path, broker, max_age_s=60.0)
    sub = Subscriber(st.prefix)
    counters = {"judged": 5, "verdicts": {"ok": 3, "defect": 1, "rejected": 1}, "queue_depth": 2,
                "degraded": False, "profile_version": "v1"}
    pub = open_publisher(st.cfg, st.store, counters=lambda: counters)
    try:
        assert isinstance(pub, Publisher) and pub.wait_connected(15)
        wait_until(lambda: "online" in sub.payloads("state"), 10, "state online")
        ids = st.record(5)
        ids += st.record(1, received_at=datetime.now(timezone.utc) - timedelta(hours=1))  # too old for the PLC
        pub.notify()
        wait_until(lambda: len(sub.verdicts()) >= 6, 15, "six verdicts")
        got = sub.verdicts()
        assert [v["result_id"] for v in got] == ids
        stored = {r["id"]: r for r in st.store.list(limit=None)}
        for v in got:
            r = stored[v["result_id"]]
            assert (v["name"], v["sha256"], v["verdict"], v["reason"], v["score"], v["threshold"]) == (
                r["name"], r["sha256"], r["verdict"], r["reason"], r["score"], r["threshold"])
            assert (v["station"], v["line"], v["camera"], v["profile_version"]) == ("st-1", st.line, "cam-A", "v1")
            assert v["database_id"] == st.store.database_id()
            assert v["part_id"] == r["name"].removesuffix(".jpg") and v["latency_ms"] >= 0
            assert datetime.fromisoformat(v["received_at"]) == r["received_at"].replace(
                microsecond=r["received_at"].microsecond // 1000 * 1000)
        assert [v["late"] for v in got] == [False] * 5 + [True]
        wait_until(lambda: st.store.count_unpublished("st-1") == 0, 10, "rows marked published")
        # heartbeats go every 0.2 s from the start: the ones already here may predate the mark (the rows are
        # marked in the database, then counted), so the one read is at least two beats after the rows were marked
        beats = len(sub.payloads("heartbeat"))
        wait_until(lambda: len(sub.payloads("heartbeat")) >= max(3, beats + 2), 10, "heartbeats")
        beat = json.loads(sub.payloads("heartbeat")[-1])
        assert {k: beat[k] for k in counters} == counters
        assert beat["outbox"]["published"] == 6 and beat["outbox"]["last_result_id"] == ids[-1]
        assert (beat["station"], beat["line"], beat["outbox"]["database_ok"]) == ("st-1", st.line, True)
    finally:
        pub.stop()
    wait_until(lambda: sub.payloads("state")[-1:] == ["offline"], 10, "state offline after a clean stop")
    sub.close()
    later = Subscriber(st.prefix)  # a controller connecting later reads the retained state
    wait_until(lambda: later.payloads("state") == ["offline"], 10, "retained offline")
    assert later.messages[0][2] is True
    later.close()
    clear_retained(st.prefix, broker)


def test_a_database_created_anew_has_another_identity_so_repeated_ids_are_not_repeats(tmp_path: Path) -> None:
    """A reviewer reproduced it: after the database was deleted and made again (as the watcher's degraded message
    advises), ids 1, 2, 3 were published a second time for other parts, and a consumer dropping repeats by
    result_id dropped real verdicts. Each database gets its own random id, carried by every verdict."""
    first = Store(f"sqlite:///{tmp_path / 'a.db'}")
    ident = first.database_id()
    assert ident == first.database_id() and len(ident) == 36
    first.close()
    (tmp_path / "a.db").unlink()
    again = Store(f"sqlite:///{tmp_path / 'a.db'}")
    assert again.database_id() != ident
    again.close()


def test_a_publisher_sends_only_its_own_cameras_rows(broker: int, tmp_path: Path) -> None:
    """Two cameras of one station and line on one database, each with its publisher on a topic of its own: each
    topic carries its camera's verdicts only (a reviewer found both topics carrying all of them)."""
    line = f"test-{uuid.uuid4().hex[:10]}"
    stores, pubs, subs = [], [], []
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    try:
        for cam in ("cam-A", "cam-B"):
            folder = tmp_path / cam
            path = write_config(folder, broker, line, topic="inspector/{line}/{station}/{camera}")
            path.write_text(path.read_text().replace('url = "sqlite:///inspector.db"', f'url = "{url}"')
                            .replace('camera = "cam-A"', f'camera = "{cam}"'))
            cfg = config.load(path)
            store = Store(cfg.database.url)
            stores.append(store)
            subs.append(Subscriber(f"inspector/{line}/st-1/{cam}", broker))
            pubs.append(open_publisher(cfg, store))
        ids = {cam: stores[0].record([row(100 + i, "st-1", line, camera=cam)
                                      for i in range(3 * k, 3 * k + 3)]) for k, cam in enumerate(("cam-A", "cam-B"))}
        for pub in pubs:
            pub.notify()
        for sub, cam in zip(subs, ("cam-A", "cam-B")):
            wait_until(lambda sub=sub: len(sub.verdicts()) >= 3, 15, f"{cam}'s verdicts")
        time.sleep(0.5)  # a stray message of the other camera would have arrived by now
        for sub, cam in zip(subs, ("cam-A", "cam-B")):
            assert [v["result_id"] for v in sub.verdicts()] == ids[cam]
            assert {v["camera"] for v in sub.verdicts()} == {cam}
    finally:
        for pub in pubs:
            pub.stop()
        for sub, cam in zip(subs, ("cam-A", "cam-B")):
            sub.close()
            clear_retained(f"inspector/{line}/st-1/{cam}", broker)
        for store in stores:
            store.close()


def test_a_restart_resumes_from_the_database_and_old_rows_are_not_sent(broker: int, tmp_path: Path) -> None:
    st = Station(tmp_path, broker)
    st.store.mark_published(st.record(4))  # e.g. rows from before the migration: counted as published
    waiting = st.record(3)  # recorded while no publisher runs
    sub = Subscriber(st.prefix)
    try:
        with open_publisher(st.cfg, st.store):
            wait_until(lambda: sub.first_seen_ids() == waiting, 15, "the rows recorded while stopped")
        more = st.record(2)
        with open_publisher(st.cfg, st.store) as pub:
            pub.notify()
            wait_until(lambda: sub.first_seen_ids() == waiting + more, 15, "the rows recorded since")
            wait_until(lambda: st.store.count_unpublished("st-1") == 0, 10, "rows marked published")
        assert [v["result_id"] for v in sub.verdicts()] == waiting + more  # clean stops: not one repeat
    finally:
        sub.close()
        clear_retained(st.prefix, broker)


def test_two_broker_outages_lose_nothing_and_keep_the_order(own_broker: OwnBroker, tmp_path: Path) -> None:
    """2,000 verdicts recorded through the Store while the test's broker is stopped and started twice, the
    publisher having started while the broker was down: every verdict arrives, in recorded order."""
    st = Station(tmp_path, own_broker.port, heartbeat_s=0.5)
    own_broker.stop()
    pub = open_publisher(st.cfg, st.store)
    ids: list[int] = []
    sub: Subscriber | None = None
    try:
        ids += st.record(100)  # the broker is down: the watcher's commits go on, notify() returns at once
        pub.notify()
        assert not pub.wait_connected(0.5)
        own_broker.start()
        sub = Subscriber(st.prefix, own_broker.port, persistent=True)
        wait_until(lambda: pub.status.connects == 1, 30, "the first connection")
        for phase in range(3):
            for _ in range(30):  # 30 commits of 10, notified, while the subscriber watches
                ids += st.record(10)
                pub.notify()
                time.sleep(0.005)
            if phase < 2:
                own_broker.stop()  # verdicts in flight stay in the broker's persistent sessions
                for _ in range(30):
                    ids += st.record(10)
                    pub.notify()
                own_broker.start()
                wait_until(lambda: pub.status.connects == phase + 2, 30, "a connection to the restarted broker")
        ids += st.record(2000 - len(ids))
        pub.notify()
        wait_until(lambda: len(sub.first_seen_ids()) >= len(ids), 120, f"{len(ids)} verdicts")
        assert sub.first_seen_ids() == ids
        assert len(ids) == 2000
        wait_until(lambda: st.store.count_unpublished("st-1") == 0, 15, "every row marked published")
    finally:
        pub.stop()
        if sub is not None:
            sub.close()


PUBLISHER = """
import sys, time
from inspector import config
from inspector.publisher import open_publisher
from inspector.store import Store
cfg = config.load(sys.argv[1])
pub = open_publisher(cfg, Store(cfg.database.url), counters=lambda: {"judged": 0})
print("connected" if pub.wait_connected(30) else "no broker", flush=True)
while True:
    time.sleep(1)
"""


def start_publisher_process(cfg: Path) -> subprocess.Popen:
    """A publisher in its own process (as the watcher would be), once connected."""
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(cfg)], cwd=cfg.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "connected", "publisher did not connect"
    return proc


def test_a_killed_publisher_turns_state_offline_by_its_last_will(broker: int, tmp_path: Path) -> None:
    st = Station(tmp_path, broker, keepalive_s=1, heartbeat_s=0.2)
    sub = Subscriber(st.prefix)
    proc = start_publisher_process(st.path)
    try:
        wait_until(lambda: sub.payloads("state")[-1:] == ["online"], 10, "state online")
        wait_until(lambda: len(sub.payloads("heartbeat")) >= 2, 10, "heartbeats")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: sub.payloads("state")[-1:] == ["offline"], 1.5 * 1 + 15, "last will offline")
    finally:
        proc.kill()
        sub.close()
        clear_retained(st.prefix, broker)


def test_a_hung_publisher_stops_its_heartbeat_and_goes_offline_after_keepalive(broker: int, tmp_path: Path) -> None:
    st = Station(tmp_path, broker, keepalive_s=1, heartbeat_s=0.2)
    sub = Subscriber(st.prefix)
    proc = start_publisher_process(st.path)
    try:
        wait_until(lambda: len(sub.payloads("heartbeat")) >= 2, 10, "heartbeats")
        proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        wait_until(lambda: sub.payloads("state")[-1:] == ["offline"], 1.5 * 1 + 15, "offline after keepalive")
        late = [t for leaf, _, _, t in sub.messages if leaf == "heartbeat" and t > stopped + 0.5]
        assert late == [], "heartbeats went on while the publisher was stopped"
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        sub.close()
        clear_retained(st.prefix, broker)


def test_an_unreachable_broker_never_blocks_notify_or_stop(tmp_path: Path) -> None:
    st = Station(tmp_path, free_port())
    pub = open_publisher(st.cfg, st.store)
    started = time.monotonic()
    for _ in range(100):
        st.record(1)
        pub.notify()
    pub.stop(timeout_s=2.0)
    assert time.monotonic() - started < 15  # generous: nothing waited for the broker
    assert st.store.count_unpublished("st-1") == 100 and pub.status.published == 0


def make_tls_broker(folder: Path) -> tuple[OwnBroker, int]:
    """A mosquitto with a plain anonymous listener (the test's subscriber) and a TLS listener that needs a user
    and password (the publisher): a CA and a server certificate for 127.0.0.1 made with openssl."""
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("openssl or mosquitto_passwd missing")
    b = OwnBroker(folder)
    tls_port = free_port()

    def run(*argv: str) -> None:
        subprocess.run(argv, cwd=folder, check=True, capture_output=True, timeout=60)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days",
        "2", "-subj", "/CN=inspector test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
        "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    run("mosquitto_passwd", "-b", "-c", "passwd", "camera", "right horse")
    b.conf.write_text(f"per_listener_settings true\nuser root\n"
                      f"listener {b.port} 127.0.0.1\nallow_anonymous true\n"
                      f"listener {tls_port} 127.0.0.1\nallow_anonymous false\npassword_file {folder}/passwd\n"
                      f"cafile {folder}/ca.crt\ncertfile {folder}/server.crt\nkeyfile {folder}/server.key\n")
    b.start()
    wait_until(lambda: reachable("127.0.0.1", tls_port), 15, "the TLS listener")
    return b, tls_port


def test_mqtts_with_a_user_and_a_password_file(tmp_path: Path) -> None:
    broker, tls_port = make_tls_broker(tmp_path / "broker")
    try:
        (tmp_path / "pw").write_text("right horse\n")
        (tmp_path / "wrong").write_text("wrong horse\n")
        st = Station(tmp_path, 0, url=f"mqtts://127.0.0.1:{tls_port}", ca_file="broker/ca.crt", username="camera",
                     password_file="pw")
        sub = Subscriber(st.prefix, broker.port)
        with open_publisher(st.cfg, st.store) as pub:
            assert pub.wait_connected(15)
            ids = st.record(3)
            pub.notify()
            wait_until(lambda: sub.first_seen_ids() == ids, 15, "verdicts over TLS")
        sub.close()
        refused = Station(tmp_path / "other", 0, url=f"mqtts://127.0.0.1:{tls_port}", ca_file="../broker/ca.crt",
                          username="camera", password_file="../wrong")
        lines: list[str] = []
        pub = open_publisher(refused.cfg, refused.store, emit=lambda event, level, text, **f: lines.append(text))
        try:
            wait_until(lambda: any("refused" in line for line in lines), 15, "the refusal logged")
            assert not pub.wait_connected(1.0)
        finally:
            pub.stop(timeout_s=2.0)
        assert sum("refused" in line for line in lines) == 1  # logged once, not at every attempt
    finally:
        broker.stop(signal.SIGKILL)


def test_a_command_sent_the_moment_online_is_seen_is_answered(broker: int, tmp_path: Path) -> None:
    """`online` means listening: a PLC that publishes a command from its handler of `online` is always answered
    (the publisher says online only after the broker acknowledged the command subscription). 30 connects."""
    st = Station(tmp_path, broker, heartbeat_s=0)
    answered: list[str] = []
    sent: list[str] = []
    plc = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)

    def on_state(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/state") and msg.payload == b"online" and not msg.retain:
            sent.append(f"p{len(sent)}")
            c.publish(f"{st.prefix}/recipe/set", sent[-1], qos=1)

    subscribed = threading.Event()
    plc.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{st.prefix}/state", qos=1)
    plc.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    plc.on_message = on_state
    plc.connect(*BROKER, keepalive=5)
    plc.loop_start()
    try:
        assert subscribed.wait(10), "the PLC got no SUBACK"
        for k in range(30):
            pub = Publisher(MqttSettings.from_config(st.cfg), st.store,
                            commands={"recipe/set": lambda text: answered.append(text) or text})
            pub.start()
            try:
                wait_until(lambda: len(sent) > k, 10, f"online #{k + 1}")
                wait_until(lambda: len(answered) > k, 5, f"the answer to the command sent on online #{k + 1}")
            finally:
                pub.stop()
        assert answered == sent
    finally:
        plc.disconnect()
        plc.loop_stop()
        clear_retained(st.prefix, broker)
