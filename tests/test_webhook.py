"""Verdicts to an MES over HTTP (issue 13, item 3): [webhook] config, migration 0006 (the delivery record), the
DeliveryLog, and the sender against a real HTTP server.

No mocks: the endpoint is a `http.server.ThreadingHTTPServer` of this module on a free port (started late,
stopped, answering 5xx, 4xx or slowly as each test scripts it); the database is a real SQLite file (and
PostgreSQL when INSPECTOR_TEST_POSTGRES_URL is set); the end-to-end tests run `inspector watch --once`. Signatures
are checked here with hmac directly, as an MES would. Times are generous liveness bounds or lower bounds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from inspector import config, webhook
from inspector.deliveries import SETTLE_S, DeliveryLog, Done
from inspector.errors import ConfigError
from inspector.store import HEAD, Base, Inspection, Store, alembic_config
from inspector.webhook import NullWebhook, WebhookSender, WebhookSettings, open_webhook
from test_mqtt import T0, free_port, row, wait_until
from watchkit import Site, atomic_drop, make_site, part_jpeg, run_once

SECRET = b"correct horse battery staple"
LINE = "L1"

Respond = Callable[[int, int], tuple[int, float, dict[str, str], bytes]]  # (result_id, attempt) -> answer


# ---------------------------------------------------------------------------------------------- the endpoint


@dataclass
class Hit:
    """One request the endpoint received."""

    at: float  # monotonic
    status: int  # what it answered (or tried to: a slow answer may find the client gone)
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> dict[str, Any]:
        return json.loads(self.body)


def ok(_rid: int, _attempt: int) -> tuple[int, float, dict[str, str], bytes]:
    """The default answer: 200 at once."""
    return 200, 0.0, {}, b"ok"


class Endpoint:
    """An HTTP endpoint on 127.0.0.1:port, recording every POST and answering as `respond` says."""

    def __init__(self, respond: Respond = ok, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self.port = port or free_port()
        self.tls = tls
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/mes/verdicts?token=abc"

    def start(self) -> Endpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rid = json.loads(body)["result_id"]
                with endpoint.lock:
                    attempt = sum(1 for h in endpoint.hits if h.message["result_id"] == rid)
                    status, delay, headers, answer = endpoint.respond(rid, attempt)
                    endpoint.hits.append(Hit(time.monotonic(), status, dict(self.headers), body))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up (its timeout)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accepted(self) -> list[int]:
        """result_ids of the requests answered 2xx, in arrival order."""
        with self.lock:
            return [h.message["result_id"] for h in self.hits if 200 <= h.status < 300]

    def attempts(self, rid: int) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.message["result_id"] == rid]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A started endpoint answering 200 (its `respond` may be replaced by the test)."""
    e = Endpoint().start()
    try:
        yield e
    finally:
        e.stop()


# ---------------------------------------------------------------------------------------------- helpers


def settings(url: str, **kw: Any) -> WebhookSettings:
    """Settings for station st-1 / L1 / cam-A with test timings."""
    values: dict[str, Any] = {"url": url, "secret": SECRET, "station": "st-1", "line": LINE, "camera": "cam-A",
                              "timeout_s": 2.0, "backoff_max_s": 1.0}
    return WebhookSettings(**(values | kw))


class Rows:
    """A SQLite Store of one test and a counter for unique rows."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)
        self.next = 0

    def record(self, n: int, station: str = "st-1", **kw: Any) -> list[int]:
        rows = [row(self.next + i, station, LINE, **kw) for i in range(n)]
        self.next += n
        ids = self.store.record(rows)
        assert None not in ids
        return [i for i in ids if i is not None]


@pytest.fixture
def rows(tmp_path: Path) -> Iterator[Rows]:
    r = Rows(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        yield r
    finally:
        r.store.close()


def signed(hit: Hit, secret: bytes = SECRET) -> bool:
    """The MES's check of X-Inspector-Signature (the README's example)."""
    expected = "sha256=" + hmac.new(secret, hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers.get("X-Inspector-Signature", ""))


def outcomes(store: Store) -> dict[int, Done]:
    return {d.inspection_id: d for d in DeliveryLog(store, webhook.SINK, "st-1", LINE, "cam-A").outcomes()}


# ---------------------------------------------------------------------------------------------- config


def test_webhook_is_off_by_default_and_config_toml_lists_it(tmp_path: Path) -> None:
    cfg = config.load(Path(__file__).resolve().parents[1] / "config.toml")
    assert cfg.webhook.url == "" and cfg.webhook.secret_file == ""
    store = Store(f"sqlite:///{tmp_path / 'off.db'}")
    assert isinstance(open_webhook(cfg, store), NullWebhook)
    store.close()


@pytest.mark.parametrize("text, key", [
    ('url = "ftp://mes/x"\nsecret_file = "s"', "webhook.url"),
    ('url = "http://"\nsecret_file = "s"', "webhook.url"),
    ('url = "http://user:pw@mes/x"\nsecret_file = "s"', "webhook.url"),
    ('url = "http://mes:99999/x"\nsecret_file = "s"', "webhook.url"),
    ('url = "http://mes/x"', "webhook.secret_file"),
    ('url = "http://mes/x"\nsecret_file = "s"\nca_file = "ca.pem"', "webhook.ca_file"),
    ('url = "http://mes/x"\nsecret_file = "s"\ntimeout_s = 0', "webhook.timeout_s"),
    ('url = "http://mes/x"\nsecret_file = "s"\nbackoff_max_s = 0.1', "webhook.backoff_max_s"),
    ('url = "http://mes/x"\nsecret_file = "s"\nmax_age_s = -1', "webhook.max_age_s"),
])
def test_bad_webhook_settings_are_config_errors_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[webhook]\n{text}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        config.load(path)
    assert "\n" not in str(err.value)


def test_settings_read_the_secret_file_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[webhook]\nurl = "https://mes.example/in"\nsecret_file = "hook.secret"\n'
                    '[mqtt]\npart_id_regex = "^(?P<part>SN-[0-9]+)"\n')
    with pytest.raises(ConfigError, match=r"webhook\.secret_file .*hook\.secret: no such file"):
        WebhookSettings.from_config(config.load(path))
    (tmp_path / "hook.secret").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        WebhookSettings.from_config(config.load(path))
    (tmp_path / "hook.secret").write_text("s3cret\n")
    s = WebhookSettings.from_config(config.load(path))
    assert s.secret == b"s3cret" and "s3cret" not in repr(s) and s.part_id_regex is not None
    assert s.shown == "https://mes.example/in"


# ---------------------------------------------------------------------------------------------- delivery


def test_verdicts_arrive_once_each_in_id_order_signed(rows: Rows, endpoint: Endpoint) -> None:
    historic = rows.record(3)  # before the webhook's first start: never sent
    sender = WebhookSender(settings(endpoint.url), rows.store).start()
    try:
        mine = []
        for _ in range(5):
            mine += rows.record(4)
            rows.record(1, station="st-2")  # another station's rows are not ours
            rows.record(1, camera="cam-B")  # nor another camera's
            sender.notify()
        wait_until(lambda: len(endpoint.accepted()) >= len(mine), 20, "20 verdicts at the endpoint")
    finally:
        sender.stop()
    assert endpoint.accepted() == mine  # each once, in id order, nothing else
    database_id = rows.store.database_id()
    for hit in endpoint.hits:
        assert signed(hit) and not signed(hit, b"another secret")
        v = hit.message
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["Idempotency-Key"] == f"{database_id}:{v['result_id']}"
        assert hit.headers["X-Inspector-Result-Id"] == str(v["result_id"])
        stored = rows.store.get(v["result_id"])
        assert stored is not None
        assert (v["database_id"], v["name"], v["sha256"], v["verdict"], v["station"], v["camera"]) == (
            database_id, stored["name"], stored["sha256"], stored["verdict"], "st-1", "cam-A")
        assert v["late"] is False and v["part_id"] == Path(stored["name"]).stem
    done = outcomes(rows.store)
    assert sorted(done) == mine and {d.outcome for d in done.values()} == {"delivered"}
    assert not set(historic) & set(done)
    assert sender.status.delivered == len(mine) and sender.status.refused == 0


def test_late_is_set_after_max_age(rows: Rows, endpoint: Endpoint) -> None:
    sender = WebhookSender(settings(endpoint.url, max_age_s=60.0), rows.store).start()
    try:
        old = rows.record(1, received_at=datetime.now(timezone.utc) - timedelta(minutes=5))
        fresh = rows.record(1)
        sender.notify()
        wait_until(lambda: len(endpoint.accepted()) == 2, 20, "2 verdicts")
    finally:
        sender.stop()
    late = {h.message["result_id"]: h.message["late"] for h in endpoint.hits}
    assert late == {old[0]: True, fresh[0]: False} and sender.status.late == 1


def test_an_endpoint_that_is_down_then_up_gets_everything_in_order(rows: Rows) -> None:
    down = Endpoint()  # its port refuses connections until start()
    sender = WebhookSender(settings(down.url), rows.store).start()
    try:
        started = time.monotonic()
        ids = []
        for _ in range(10):
            ids += rows.record(3)
            sender.notify()
        assert time.monotonic() - started < 10  # recording and notify() never waited for the endpoint
        wait_until(lambda: sender.status.failures >= 2, 20, "failed attempts")
        assert not sender.status.endpoint_ok and outcomes(rows.store) == {}
        down.start()
        wait_until(lambda: len(down.accepted()) >= len(ids), 30, "every verdict after the endpoint came up")
    finally:
        sender.stop()
        down.stop()
    assert down.accepted() == ids and sorted(outcomes(rows.store)) == ids
    assert sender.status.endpoint_ok


def test_5xx_and_429_are_retried_with_growing_capped_gaps(rows: Rows, endpoint: Endpoint,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "RETRY_FIRST_S", 0.2)

    def flaky(_rid: int, attempt: int) -> tuple[int, float, dict[str, str], bytes]:
        if attempt < 3:
            return 503, 0.0, {}, b"busy"
        if attempt == 3:  # asks for an hour: the wait is capped at backoff_max_s
            return 429, 0.0, {"Retry-After": "3600"}, b"slow down"
        return ok(_rid, attempt)

    endpoint.respond = flaky
    sender = WebhookSender(settings(endpoint.url, backoff_max_s=1.0), rows.store).start()
    try:
        ids = rows.record(2)
        sender.notify()
        wait_until(lambda: len(endpoint.accepted()) == 2, 30, "2 verdicts after the retries")
    finally:
        sender.stop()
    assert endpoint.accepted() == ids
    for rid in ids:  # every row has its own 4 failures before its 200: no row overtook a failing one
        hits = endpoint.attempts(rid)
        assert [h.status for h in hits] == [503, 503, 503, 429, 200]
        gaps = [b.at - a.at for a, b in zip(hits, hits[1:])]
        assert [g >= least - 0.05 for g, least in zip(gaps, (0.2, 0.4, 0.8, 1.0))] == [True] * 4, gaps
        assert gaps[2] > gaps[0] and gaps[3] < 10, gaps
    assert sender.status.failures == 8 and sorted(outcomes(rows.store)) == ids


def test_an_answer_slower_than_the_timeout_is_a_failure_and_is_retried(rows: Rows, endpoint: Endpoint) -> None:
    endpoint.respond = lambda rid, attempt: (200, 1.5 if attempt == 0 else 0.0, {}, b"late ok")
    sender = WebhookSender(settings(endpoint.url, timeout_s=0.4), rows.store).start()
    try:
        ids = rows.record(2)
        sender.notify()
        wait_until(lambda: all(len(endpoint.attempts(i)) >= 2 for i in ids), 30, "each verdict sent twice")
        wait_until(lambda: len(outcomes(rows.store)) == 2, 10, "both recorded")
    finally:
        sender.stop()
    first_seen = list(dict.fromkeys(h.message["result_id"] for h in endpoint.hits))
    assert first_seen == ids and sender.status.delivered == 2
    assert sender.status.failures == sum(len(endpoint.attempts(i)) - 1 for i in ids) >= 2
    assert {h.headers["Idempotency-Key"] for h in endpoint.attempts(ids[0])} == {
        f"{rows.store.database_id()}:{ids[0]}"}


def test_a_restart_resumes_after_the_last_delivered_row(rows: Rows, endpoint: Endpoint, tmp_path: Path) -> None:
    first = WebhookSender(settings(endpoint.url), rows.store).start()
    ids = rows.record(5)
    first.notify()
    wait_until(lambda: len(endpoint.accepted()) == 5, 20, "the first 5")
    first.stop()
    more = rows.record(5)  # recorded while no sender runs: sent by the next one
    again = Store(rows.store.url)  # as a restarted watcher
    try:
        second = WebhookSender(settings(endpoint.url), again).start()
        wait_until(lambda: len(endpoint.accepted()) == 10, 20, "the next 5")
        time.sleep(webhook.POLL_S * 1.5)  # a further round sends nothing again
        second.stop()
    finally:
        again.close()
    assert endpoint.accepted() == ids + more and second.status.delivered == 5


def test_a_permanent_4xx_is_recorded_and_the_queue_goes_on(rows: Rows, endpoint: Endpoint) -> None:
    ids = []

    def picky(rid: int, attempt: int) -> tuple[int, float, dict[str, str], bytes]:
        if rid == ids[1]:
            return 422, 0.0, {}, b"unknown part number"
        if rid == ids[2] and attempt == 0:  # an endpoint-level refusal: retried, not recorded
            return 401, 0.0, {}, b"bad key"
        return ok(rid, attempt)

    endpoint.respond = picky
    DeliveryLog(rows.store, webhook.SINK, "st-1", LINE, "cam-A").open()  # configured before the rows came
    ids += rows.record(4)
    sender = WebhookSender(settings(endpoint.url), rows.store).start()
    try:
        wait_until(lambda: len(outcomes(rows.store)) == 4, 20, "4 outcomes")
        time.sleep(webhook.POLL_S * 1.5)
    finally:
        sender.stop()
    assert endpoint.accepted() == [ids[0], ids[2], ids[3]]
    assert len(endpoint.attempts(ids[1])) == 1 and len(endpoint.attempts(ids[2])) == 2
    done = outcomes(rows.store)
    assert (done[ids[1]].outcome, done[ids[1]].status, done[ids[1]].detail) == ("refused", 422, "unknown part number")
    assert [done[i].outcome for i in (ids[0], ids[2], ids[3])] == ["delivered"] * 3
    assert (sender.status.refused, sender.status.delivered) == (1, 3)


def test_stop_never_waits_for_an_endpoint_that_is_down(rows: Rows) -> None:
    sender = WebhookSender(settings(f"http://127.0.0.1:{free_port()}/x", backoff_max_s=30.0), rows.store).start()
    rows.record(3)
    sender.notify()
    wait_until(lambda: sender.status.failures >= 1, 20, "a failed attempt")
    started = time.monotonic()
    sender.stop(timeout_s=3.0)
    assert time.monotonic() - started < 3.0 and outcomes(rows.store) == {}


def test_https_with_a_ca_file(rows: Rows, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl missing")

    def run(*argv: str) -> None:
        subprocess.run(argv, cwd=tmp_path, check=True, capture_output=True, timeout=60)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = Endpoint(tls=context).start()
    untrusting = WebhookSender(settings(server.url), rows.store).start()  # the system's CAs: a failure, retried
    try:
        ids = rows.record(2)
        untrusting.notify()
        wait_until(lambda: untrusting.status.failures >= 1, 20, "a refused certificate")
        untrusting.stop()
        assert server.accepted() == [] and outcomes(rows.store) == {}
        trusting = WebhookSender(settings(server.url, ca_file=tmp_path / "cert.pem"), rows.store).start()
        wait_until(lambda: len(server.accepted()) == 2, 20, "2 verdicts over https")
        trusting.stop()
    finally:
        server.stop()
    assert server.accepted() == ids and all(signed(h) for h in server.hits)


# ---------------------------------------------------------------------------------------------- migration, floor


OLD_ROW = ("INSERT INTO inspections (sha256, name, source_path, received_at, inspected_at, verdict, station, line,"
           " camera) VALUES (:sha, :name, '/in/x.jpg', :at, :at, 'ok', 'st-1', 'L1', 'cam-A')")


def check_migration(url: str) -> None:
    """0005 -> 0006 keeps old rows (historic for the webhook); new rows wait; 0006 -> 0005 -> head round-trips."""
    with Store(url, migrate=False) as s:
        with s.engine.execution_options(immediate=True).begin() as conn:
            command.upgrade(alembic_config(conn), "0005")
        with s.engine.begin() as conn:
            for i in range(3):
                conn.execute(sa.text(OLD_ROW), {"sha": f"{i:064x}", "name": f"old_{i}.jpg", "at": T0})
    with Store(url) as s:
        assert s.revision() == HEAD and int(HEAD) >= 6
        with s.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == [], s.dialect
        assert {"deliveries", "delivery_cursors"} <= set(sa.inspect(s.engine).get_table_names())
        log = DeliveryLog(s, webhook.SINK, "st-1", LINE, "cam-A")
        old = [r["id"] for r in s.list(limit=None)]
        assert len(old) == 3 and log.open() == max(old) and log.pending() == []
        [new] = s.record([row(10, "st-1", LINE)])
        assert [r["id"] for r in log.pending()] == [new] and log.count_pending() == 1
        log.record([Done(new, "delivered", datetime.now(timezone.utc))])
        log.record([Done(new, "refused", datetime.now(timezone.utc), 400)])  # the first outcome stays
        assert log.pending() == [] and [(d.inspection_id, d.outcome) for d in log.outcomes()] == [(new, "delivered")]
        with pytest.raises(sa.exc.IntegrityError):
            log.record([Done(new + 100, "delivered", datetime.now(timezone.utc))])  # no such inspection
        with s.engine.execution_options(immediate=True).begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
        assert s.revision() == "0005" and s.count() == 4
        assert not {"deliveries", "delivery_cursors"} & set(sa.inspect(s.engine).get_table_names())
        assert s.upgrade() == HEAD and DeliveryLog(s, webhook.SINK, "st-1", LINE, "cam-A").open() == new


def test_migration_0006_on_sqlite(tmp_path: Path) -> None:
    check_migration(f"sqlite:///{tmp_path / 'm.db'}")


def test_migration_0006_on_postgres(postgres_database) -> None:
    check_migration(postgres_database())


def test_the_floor_moves_up_only_past_settled_rows(rows: Rows) -> None:
    log = DeliveryLog(rows.store, webhook.SINK, "st-1", LINE, "cam-A")
    assert log.open() == 0
    ids = rows.record(5)
    now = datetime.now(timezone.utc)
    log.record([Done(i, "delivered", now) for i in (ids[0], ids[1], ids[3])])
    assert log.advance(now) == 0  # delivered just now: a smaller id may still commit
    later = now + timedelta(seconds=SETTLE_S + 1)
    assert log.advance(later) == ids[1]  # never past ids[2], still waiting
    assert [r["id"] for r in log.pending()] == [ids[2], ids[4]]
    log.record([Done(ids[2], "refused", now, 400)])
    assert log.advance(later) == ids[3] and [r["id"] for r in log.pending()] == [ids[4]]
    assert DeliveryLog(rows.store, webhook.SINK, "st-1", LINE, "cam-A").open() == ids[3]  # it is stored


def test_a_row_that_commits_out_of_id_order_is_still_sent_on_postgres(postgres_database, endpoint: Endpoint,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stations on one PostgreSQL: a smaller id that commits after a larger one was delivered arrives too."""
    monkeypatch.setattr(webhook, "SWEEP_S", 0.5)
    store = Store(postgres_database())
    sender = WebhookSender(settings(endpoint.url), store).start()
    try:
        slow = store.engine.connect()
        tx = slow.begin()
        values = {k: v for k, v in row(0, "st-1", LINE).items()}
        early = slow.execute(sa.insert(Inspection).values(**values).returning(Inspection.id)).scalar_one()
        [late] = store.record([row(1, "st-1", LINE)])
        assert late > early
        sender.notify()
        wait_until(lambda: endpoint.accepted() == [late], 20, "the larger id, committed first")
        tx.commit()
        slow.close()
        sender.notify()
        wait_until(lambda: endpoint.accepted() == [late, early], 20, "the smaller id, committed later")
    finally:
        sender.stop()
        store.close()


# ---------------------------------------------------------------------------------------------- the watcher


@pytest.fixture
def site(tmp_path: Path, models: Path) -> Site:
    """A station folder using the shared models."""
    return make_site(tmp_path / "site", models)


def with_webhook(site: Site, url: str, secret_file: str = "hook.secret") -> None:
    """Add [webhook] (and the secret file) to the site's config."""
    (site.root / "hook.secret").write_bytes(SECRET + b"\n")
    (site.root / "hook.secret").chmod(0o600)
    site.config.write_text(site.config.read_text() + f'\n[webhook]\nurl = "{url}"\nsecret_file = "{secret_file}"\n'
                                                      "timeout_s = 2.0\nbackoff_max_s = 1.0\n")


def test_the_watcher_posts_each_verdict_and_resumes_after_the_endpoint_was_down(site: Site) -> None:
    down = Endpoint()
    with_webhook(site, down.url)
    for i in range(3):
        atomic_drop(site.inbox, f"SN-{i:04d}_top.jpg", part_jpeg(9_000 + i, "spot" if i == 2 else None))
    result = run_once(site)  # the endpoint is down: judged and archived all the same
    assert result.returncode == 0, result.stderr
    rows = site.rows()
    assert len(rows) == 3 and all(r["archived_path"] for r in rows) and not list(site.inbox.iterdir())
    assert "webhook" in result.stderr + result.stdout and down.hits == []
    down.start()
    try:
        atomic_drop(site.inbox, "SN-0003_top.jpg", part_jpeg(9_003))
        result = run_once(site)  # sends the 3 waiting verdicts, then the new one
        assert result.returncode == 0, result.stderr
    finally:
        down.stop()
    rows = site.rows()
    assert down.accepted() == [r["id"] for r in rows] and len(rows) == 4
    for hit, r in zip(down.hits, rows):
        assert signed(hit)
        v = hit.message
        assert (v["name"], v["sha256"], v["verdict"], v["station"]) == (r["name"], r["sha256"], r["verdict"],
                                                                       "test-station")
    assert sorted(v.message["verdict"] for v in down.hits) == ["defect", "ok", "ok", "ok"]


def test_the_watcher_refuses_to_start_without_the_secret_file(site: Site) -> None:
    with_webhook(site, "http://127.0.0.1:9/x", secret_file="missing.secret")
    result = run_once(site, timeout=60)
    assert result.returncode != 0
    assert "webhook.secret_file" in result.stderr and "missing.secret: no such file" in result.stderr
