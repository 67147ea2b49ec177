"""PostgreSQL becomes unreachable for 10 s while parts arrive: the watcher says it is degraded, holds the
verdicts and the files, retries with backoff, and afterwards every file has exactly one verdict. The outage is
a TCP proxy the test controls between the watcher and the server. Skips without INSPECTOR_TEST_POSTGRES_URL."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from watchkit import Site, atomic_drop, part_jpeg, start, stop, wait_for, wait_started

OUTAGE_S = 10.0


class Proxy:
    """A TCP forwarder to the database that can be cut off (every connection closed, new ones refused)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None

    def up(self) -> None:
        """Listen and forward."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        with self._lock:
            self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every open connection."""
        with self._lock:  # under the lock: a connection being set up sees that it was cut off (see _accept)
            server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(); close alone does not
            except OSError:
                pass
            server.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._sockets.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._server is not server:  # cut off while this one was being connected: it must not survive
                    client.close()
                    upstream.close()
                    continue
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def count(url: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM inspections")).scalar_one()
    finally:
        engine.dispose()


def test_a_10_s_database_outage_loses_nothing(postgres_database, tmp_path: Path, models: Path) -> None:
    direct = sa.make_url(postgres_database())
    proxy = Proxy((direct.host or "127.0.0.1", direct.port or 5432))
    proxy.up()
    via_proxy = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    direct_url = direct.render_as_string(hide_password=False)
    site = Site(tmp_path / "site", models)
    site.root.mkdir()
    site.inbox.mkdir()
    site.write_config(workers=2)
    text = site.config.read_text().replace('url = "sqlite:///inspector.db"', f'url = "{via_proxy}"')
    site.config.write_text(text)
    proc = start(site)
    ledger: dict[str, str] = {}
    try:
        wait_started(site, proc)

        def drop(first: int, n: int, pause: float) -> None:
            for i in range(first, first + n):
                data = part_jpeg(90_000 + i)
                atomic_drop(site.inbox, f"p{i:04d}.jpg", data)
                ledger[f"p{i:04d}.jpg"] = hashlib.sha256(data).hexdigest()
                time.sleep(pause)

        drop(0, 40, 0.02)
        wait_for(lambda: count(direct_url) >= 20, 60, "verdicts before the outage", proc, site)
        proxy.down()
        cut = time.monotonic()
        drop(40, 80, OUTAGE_S / 100)  # parts keep arriving during the outage
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut)))
        assert proc.poll() is None, "the watcher must ride out the outage"
        proxy.up()
        drop(120, 20, 0.02)
        wait_for(lambda: count(direct_url) >= len(ledger) and not any(site.inbox.glob("*.jpg")), 120,
                 "every verdict after the outage", proc, site)
    finally:
        assert stop(proc) == 0
        proxy.down()
    engine = sa.create_engine(direct_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT name, sha256 FROM inspections"))]
    engine.dispose()
    assert sorted(r["sha256"] for r in rows) == sorted(ledger.values())
    assert {r["name"]: r["sha256"] for r in rows} == ledger
    log = site.log.read_text()
    assert "database unavailable" in log  # it said it was degraded
    assert "Traceback" not in log and "thread is inactive" not in log
