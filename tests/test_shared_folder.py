"""Several stations, one shared folder, one PostgreSQL: each file is claimed once through the database, a
station killed mid-part leaves a claim that another station takes over when its lease expires, and every file
ends with exactly one verdict, checked against the test's own ledger. Skips without
INSPECTOR_TEST_POSTGRES_URL (see conftest.postgres_database)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from watchkit import Site, atomic_drop, part_jpeg, start, stop, wait_for, wait_started

N_FILES = 1000


def station(root: Path, name: str, models: Path, url: str, inbox: Path, archive: Path) -> Site:
    """A station's own folder and config, watching the shared inbox and archiving into the shared archive. The
    lease is long enough that a live station's claim never runs out on a loaded machine (a 3 s lease once
    expired while a station was still judging its part, and another station took that claim over)."""
    site = Site(root / name, models)
    site.root.mkdir(parents=True)
    site.config.write_text(
        f'[models]\ndir = "{models}"\n\n[database]\nurl = "{url}"\n\n'
        f'[station]\nname = "{name}"\nline = "L1"\ncamera = "cam-{name}"\n\n'
        f'[watch]\ndir = "{inbox}"\narchive_dir = "{archive}"\noverlays_dir = "{root / "overlays"}"\n'
        'shared = true\nclaim_lease_s = 10.0\nrescan_s = 1.0\nsettle_s = 0.2\nworkers = 1\nstats_every_s = 0\n')
    return site


def pg_rows(url: str, sql: str) -> list[dict]:
    """Rows of a query, read with a plain connection (not the code under test)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def test_three_stations_share_a_folder_and_one_is_killed(postgres_database, tmp_path: Path, models: Path) -> None:
    url = postgres_database()
    inbox, archive = tmp_path / "inbox", tmp_path / "archive"
    inbox.mkdir()
    sites = [station(tmp_path, name, models, url, inbox, archive) for name in ("s1", "s2", "s3")]
    procs = {}
    for site in sites:
        procs[site.root.name] = start(site)
        wait_started(site, procs[site.root.name])

    ledger: dict[str, str] = {}

    def camera() -> None:
        for i in range(N_FILES):
            data = part_jpeg(70_000 + i)
            atomic_drop(inbox, f"part-{i:04d}.jpg", data)
            ledger[f"part-{i:04d}.jpg"] = hashlib.sha256(data).hexdigest()
            time.sleep(0.004)

    dropper = threading.Thread(target=camera)
    dropper.start()
    try:
        # kill s2 midway, while it holds a claim on a part it has not recorded yet (another station must take
        # that claim over and judge the part). Decided after the kill, when s2 can no longer change anything.
        wait_for(lambda: len(pg_rows(url, "SELECT id FROM inspections")) >= N_FILES // 3, 120, "a third judged")
        held: list[dict] = []
        kills = 0
        deadline = time.monotonic() + 60
        while not held and time.monotonic() < deadline:
            if pg_rows(url, "SELECT key FROM claims WHERE station = 's2'"):
                os.kill(procs["s2"].pid, signal.SIGKILL)
                assert procs["s2"].wait(timeout=30) == -signal.SIGKILL
                kills += 1
                time.sleep(0.2)  # a COMMIT already sent before the kill lands on the server first
                held = pg_rows(url, "SELECT key, path FROM claims WHERE station = 's2' AND path NOT IN "
                                    "(SELECT name FROM inspections)")
                if not held:  # it had recorded those parts (the claims go stale): start it again, retry
                    procs["s2"] = start(sites[1])
                    wait_started(sites[1], procs["s2"], count=kills + 1)
        assert held, "s2 never died holding a claim on an unrecorded part"
        dropper.join()
        wait_for(lambda: len(pg_rows(url, "SELECT id FROM inspections")) >= N_FILES
                 and not any(inbox.glob("*.jpg")), 180, "every file judged and archived")
        wait_for(lambda: not pg_rows(url, "SELECT key FROM claims"), 60, "every claim released")
    finally:
        dropper.join()
        for name, proc in procs.items():
            if proc.poll() is None:
                assert stop(proc) == 0, name

    rows = pg_rows(url, "SELECT sha256, name, station, archived_path FROM inspections")
    assert sorted(r["sha256"] for r in rows) == sorted(ledger.values())  # exactly one verdict each, nothing else
    assert {r["name"]: r["sha256"] for r in rows} == ledger
    archived = [p for p in archive.rglob("*") if p.is_file()]
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in archived) == sorted(ledger.values())
    stations = {r["station"] for r in rows}
    assert {"s1", "s3"} <= stations  # the work was shared
    logs = "".join((s.root / "watch.log").read_text() for s in (sites[0], sites[2]))
    assert "took over the expired claim of s2" in logs
    taken = {h["path"] for h in held}
    finished_by = {r["name"]: r["station"] for r in rows}
    assert all(finished_by[name] in ("s1", "s3") for name in taken), (taken, finished_by)
