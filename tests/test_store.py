"""Tests of the verdict log: Alembic migrations, SQLite PRAGMAs, batched inserts, queries and concurrency.

Real SQLite files in tmp_path, no mocks. Constraint violations (CHECK, NOT NULL) surface as
sqlalchemy.exc.IntegrityError: they are caller bugs, not operator errors, so Store does not wrap them.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError

from inspector.errors import InspectorError
from inspector.store import HEAD, Base, DatabaseError, Selection, Store, alembic_config, resolve_url

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def row(i: int, **kw: Any) -> dict[str, Any]:
    """A valid inspection row whose sha256 is derived from i."""
    base: dict[str, Any] = {
        "sha256": f"{i:064x}", "name": f"part_{i}.png", "source_path": f"/in/part_{i}.png",
        "size": 1000 + i, "width": 640, "height": 480, "received_at": T0 + timedelta(seconds=i),
        "inspected_at": T0 + timedelta(seconds=i, milliseconds=5), "verdict": "ok", "score": 0.1 * i,
        "threshold": 1.5, "profile_version": "v1", "ms": 12.5, "station": "s1", "line": "l1", "camera": "c1",
    }
    return base | kw


def rejected(key: str, **kw: Any) -> dict[str, Any]:
    """A content-less rejected row identified by source_key."""
    return row(0, sha256=None, source_key=key, verdict="rejected", reason="fifo", detail="not a regular file",
               size=None, width=None, height=None, score=None, threshold=None) | kw


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite URL in a folder that does not exist yet."""
    return f"sqlite:///{tmp_path / 'db' / 'inspector.db'}"


@pytest.fixture
def store(url: str):
    """A migrated store."""
    with Store(url) as s:
        yield s


def head() -> str:
    """Head revision of the packaged migrations."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# ------------------------------------------------------------------------------------------ schema


def test_head_constant_is_the_newest_packaged_migration() -> None:
    """Store checks the revision against HEAD without importing Alembic; it must name the real head."""
    assert HEAD == head()


def test_migration_creates_schema_at_head(url: str) -> None:
    with Store(url, migrate=False) as s:
        assert s.revision() is None
        assert s.upgrade() == head() == "0013"
        assert s.revision() == "0013"
        assert s.dialect == "sqlite" and s.url == url
        insp = sa.inspect(s.engine)
        assert "inspections" in insp.get_table_names()
        assert {u["name"] for u in insp.get_unique_constraints("inspections")} == {
            "uq_inspections_sha256", "uq_inspections_source_key"}
        assert {c["name"] for c in insp.get_check_constraints("inspections")} == {
            "ck_inspections_identity", "ck_inspections_verdict"}
        assert {i["name"]: i["column_names"] for i in insp.get_indexes("inspections")} == {
            "ix_inspections_inspected_at_id": ["inspected_at", "id"], "ix_inspections_verdict_id": ["verdict", "id"],
            "ix_inspections_verdict_inspected_at_id": ["verdict", "inspected_at", "id"],
            "ix_inspections_station_line_verdict_inspected_at": ["station", "line", "verdict", "inspected_at"],
            "ix_inspections_station_published_at_id": ["station", "published_at", "id"],
            "ix_inspections_unpruned": ["id"],
            "ix_inspections_product_inspected_at_id": ["product", "inspected_at", "id"]}


def test_migration_0012_keeps_where_defects_peak_and_goes_back_without_it(url: str) -> None:
    """A defect's peak (0012) is stored and listed; the downgrade to 0011 drops the columns and keeps the rows and
    their reviews (a plain DROP COLUMN: a table copy would trip the reviews' foreign key on SQLite); the upgrade
    brings them back empty."""
    with Store(url) as s:
        [bad] = s.record([row(1, verdict="defect", score=9.0, peak_x=0.25, peak_y=0.75)])
        s.record([row(2)])
        s.add_review(bad, "defect", "ana")
        assert {(r["id"], r["peak_x"], r["peak_y"]) for r in s.list()} == {(bad, 0.25, 0.75), (bad + 1, None, None)}
        with s.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0011")
        assert "peak_x" not in {c["name"] for c in sa.inspect(s.engine).get_columns("inspections")}
        assert s.count() == 2 and s.revision() == "0011"
        assert s.upgrade() == "0013" and [r["peak_x"] for r in s.list()] == [None, None]
        assert [r["decision"] for r in s.reviews(bad)] == ["defect"]


def test_migration_0013_keeps_where_parts_lie_and_goes_back_without_it(url: str) -> None:
    """Where a part lay (0013) is stored and listed; the downgrade to 0012 drops the two columns and keeps the rows,
    their peaks and their reviews; the upgrade brings them back empty."""
    with Store(url) as s:
        [bad] = s.record([row(1, verdict="defect", score=9.0, peak_x=0.25, peak_y=0.75, pos_x=0.031,
                              pos_y=-0.002)])
        s.record([row(2, pos_x=-0.004, pos_y=0.001)])
        s.add_review(bad, "defect", "ana")
        assert {(r["id"], r["pos_x"], r["pos_y"]) for r in s.list()} == {(bad, 0.031, -0.002),
                                                                           (bad + 1, -0.004, 0.001)}
        assert [(r["pos_x"], r["pos_y"]) for r in s.drift_rows(Selection(), 10)] == [(0.031, -0.002),
                                                                                         (-0.004, 0.001)]
        with s.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0012")
        columns = {c["name"] for c in sa.inspect(s.engine).get_columns("inspections")}
        assert "pos_x" not in columns and "pos_y" not in columns and "peak_x" in columns
        assert s.count() == 2 and s.revision() == "0012"
        assert s.upgrade() == "0013" and [r["pos_x"] for r in s.list()] == [None, None]
        assert sorted((r["id"], r["peak_x"]) for r in s.list()) == [(bad, 0.25), (bad + 1, None)]
        assert [r["decision"] for r in s.reviews(bad)] == ["defect"]


def test_upgrade_twice_is_noop(store: Store, url: str) -> None:
    store.record([row(1)])
    assert store.upgrade() == "0013"
    with Store(url) as again:
        assert again.revision() == "0013" and again.count() == 1


def test_orm_metadata_matches_migrated_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_downgrade_drops_table(store: Store) -> None:
    with store.engine.execution_options(immediate=True).begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert "inspections" not in sa.inspect(store.engine).get_table_names()
    assert store.revision() is None


def test_pragmas(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'p.db'}", busy_timeout_ms=1234) as s, s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


# ------------------------------------------------------------------------------------------ writes


def test_record_batch_returns_ids(store: Store) -> None:
    ids = store.record([row(1), row(2), rejected("fifo:/in/x")])
    assert ids == [1, 2, 3]
    assert store.count() == 3
    assert store.record([]) == []


def test_duplicate_sha256_returns_none(store: Store) -> None:
    [first] = store.record([row(1)])
    assert store.record([row(1, name="again.png"), row(2)]) == [None, first + 1]
    assert store.count() == 2
    assert store.get(first)["name"] == "part_1.png"
    assert store.record([row(3), row(3)])[1] is None  # duplicate inside one batch


def test_duplicate_source_key_returns_none(store: Store) -> None:
    assert store.record([rejected("k1")])[0] is not None
    assert store.record([rejected("k1", detail="again"), rejected("k2")])[0] is None
    assert store.count("rejected") == 2


@pytest.mark.parametrize("bad", [
    {"source_key": "both"},  # sha256 and source_key
    {"sha256": None},  # neither
    {"verdict": "maybe"},
    {"station": None},
])
def test_constraints_refuse_bad_rows_and_roll_back_batch(store: Store, bad: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError):
        store.record([row(1), row(2, **bad)])
    assert store.count() == 0


def test_record_refuses_unknown_keys_and_naive_datetimes(store: Store) -> None:
    with pytest.raises(ValueError, match="colour"):
        store.record([row(1, colour="red")])
    with pytest.raises(ValueError, match="naive"):
        store.record([row(1, inspected_at=datetime(2025, 1, 1))])
    assert store.count() == 0


def test_set_archived(store: Store) -> None:
    [i] = store.record([row(1)])
    store.set_archived(i, "/archive/2025/part_1.png")
    assert store.get(i)["archived_path"] == "/archive/2025/part_1.png"
    with pytest.raises(KeyError):
        store.set_archived(999, "/nowhere")


# ------------------------------------------------------------------------------------------ reads


def test_get_find_find_many(store: Store) -> None:
    ids = store.record([row(1), row(2), rejected("k1")])
    r = store.get(ids[0])
    assert r is not None and set(r) == {c.key for c in Base.metadata.tables["inspections"].columns}
    assert r["id"] == ids[0] and r["sha256"] == f"{1:064x}" and r["size"] == 1001
    assert store.get(999) is None
    assert store.find(sha256=f"{2:064x}")["id"] == ids[1]
    assert store.find(source_key="k1")["id"] == ids[2]
    assert store.find(sha256="0" * 63 + "f") is None and store.find(source_key="nope") is None
    with pytest.raises(ValueError):
        store.find()
    assert store.find_many([]) == {}
    found = store.find_many([f"{1:064x}", f"{2:064x}", "f" * 64])
    assert {k: v["id"] for k, v in found.items()} == {f"{1:064x}": ids[0], f"{2:064x}": ids[1]}


def test_find_many_chunks_large_lists(store: Store) -> None:
    store.record([row(i) for i in range(1, 1201)])
    found = store.find_many([f"{i:064x}" for i in range(1, 1401)])
    assert len(found) == 1200


def test_list_count_summary(store: Store) -> None:
    store.record([row(1), row(2, verdict="defect"), row(3), rejected("k1", inspected_at=T0 + timedelta(hours=1))])
    assert [r["id"] for r in store.list()] == [4, 3, 2, 1]
    assert [r["id"] for r in store.list(verdict="ok")] == [3, 1]
    assert [r["id"] for r in store.list(limit=2)] == [4, 3]
    assert len(store.list(limit=None)) == 4
    assert [r["id"] for r in store.list(since=T0 + timedelta(seconds=2))] == [4, 3, 2]
    assert [r["id"] for r in store.list(since=T0 + timedelta(seconds=2, milliseconds=6))] == [4, 3]
    assert store.count() == 4 and store.count("defect") == 1
    assert store.summary() == {"ok": 2, "defect": 1, "rejected": 1}
    with pytest.raises(ValueError):
        store.list(since=datetime(2025, 1, 1))


def test_summary_of_empty_store(store: Store) -> None:
    assert store.summary() == {"ok": 0, "defect": 0, "rejected": 0}
    assert store.list() == [] and store.count() == 0


def test_datetimes_round_trip_as_aware_utc(store: Store) -> None:
    cet = timezone(timedelta(hours=1))
    received = datetime(2025, 3, 1, 13, 30, 15, 654321, tzinfo=cet)
    [i] = store.record([row(1, received_at=received)])
    r = store.get(i)
    assert r["received_at"] == received and r["received_at"].tzinfo == timezone.utc
    assert r["received_at"].hour == 12 and r["received_at"].microsecond == 654321
    assert r["inspected_at"] == T0 + timedelta(seconds=1, milliseconds=5)
    with store.engine.connect() as conn:  # SQLite stores naive UTC text
        raw = conn.exec_driver_sql("SELECT received_at FROM inspections").scalar()
    assert raw == "2025-03-01 12:30:15.654321"


# ------------------------------------------------------------------------------------------ concurrency


def test_two_stores_write_interleaved_batches(url: str) -> None:
    errors: list[BaseException] = []
    with Store(url) as a, Store(url) as b:

        def writer(s: Store, offset: int) -> None:
            try:
                for n in range(30):
                    s.record([row(offset + n * 10 + k) for k in range(10)])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(s, off)) for s, off in ((a, 1), (b, 100_001))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert a.count() == b.count() == 600
        assert a.record([row(1)]) == [None] and b.record([row(100_001)]) == [None]


def test_concurrent_reader_threads(store: Store) -> None:
    errors: list[BaseException] = []
    store.record([row(i) for i in range(1, 11)])

    def reader() -> None:
        try:
            for _ in range(50):
                assert len(store.list(limit=5)) == 5 and store.count() >= 10
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(20):
        store.record([row(100 + n)])
    for t in threads:
        t.join()
    assert errors == []


READER = """
import os, sqlite3, sys
path, stop = sys.argv[1], sys.argv[2]
n = 0
print("ready", flush=True)
while not os.path.exists(stop):
    con = sqlite3.connect(path)
    con.execute("SELECT count(*) FROM inspections").fetchone()
    con.close()
    n += 1
print(n)
"""


def test_reader_process_never_sees_locked_database(store: Store, tmp_path: Path) -> None:
    path = store.engine.url.database
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", READER, path, str(stop)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        for b in range(50):
            store.record([row(b * 20 + k) for k in range(1, 21)])
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "locked" not in err and err == ""
    assert int(out.strip()) > 0
    assert store.count() == 1000


# ------------------------------------------------------------------------------------------ errors


def test_folder_that_cannot_be_created_is_one_line_database_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatabaseError) as info:
        Store(f"sqlite:///{blocker / 'sub' / 'x.db'}")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("cannot open database sqlite:///") and "cannot create folder" in msg
    assert isinstance(info.value, InspectorError) and info.value.exit_code == 6


def test_not_a_database_is_database_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="cannot open database .*not a database") as info:
        Store(f"sqlite:///{junk}")
    assert "\n" not in str(info.value)


def test_unknown_revision_is_database_error(store: Store, url: str) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseError, match="9999") as info:
        Store(url)
    assert "\n" not in str(info.value)


def test_resolve_url() -> None:
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(DatabaseError, match="invalid database URL"):
        resolve_url("not a url")
    with pytest.raises(DatabaseError, match="unsupported"):
        resolve_url("mysql://u@h/db")


# ---------------------------------------------------------------------------------------------- reviews


def test_reviews_keep_every_decision_and_the_newest_counts(store: Store) -> None:
    ids = store.record([row(i) for i in range(1, 5)])
    first = store.add_review(ids[0], "good", "ana", note="glare on the label")
    store.add_review(ids[0], "defect", "ben", note="crack under the glare")
    store.add_review(ids[1], "defect", "ana")
    history = store.reviews(ids[0])
    assert [(r["decision"], r["reviewer"], r["note"]) for r in history] == [
        ("good", "ana", "glare on the label"), ("defect", "ben", "crack under the glare")]
    assert history[0]["id"] == first["id"] and history[0]["reviewed_at"].tzinfo is not None
    by_id = {r["id"]: r["review"] for r in store.list(limit=None)}
    assert by_id == {ids[0]: "defect", ids[1]: "defect", ids[2]: None, ids[3]: None}
    assert sorted(r["id"] for r in store.list(reviewed="defect", limit=None)) == sorted(ids[:2])
    assert store.list(reviewed="good", limit=None) == []
    assert sorted(r["id"] for r in store.list(unreviewed=True, limit=None)) == sorted(ids[2:])


def test_a_review_needs_an_inspection_and_a_known_decision(store: Store) -> None:
    [i] = store.record([row(1)])
    with pytest.raises(KeyError):
        store.add_review(i + 100, "good", "ana")
    with pytest.raises(ValueError):
        store.add_review(i, "fine", "ana")
    assert store.reviews(i) == []


def test_upgrade_from_0001_keeps_the_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Store(url, migrate=False) as s:
        with s.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
        assert s.revision() == "0001"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO inspections (sha256, name, source_path, received_at, inspected_at, verdict, station, line,"
            " camera) VALUES ('" + "a" * 64 + "', 'old.jpg', '/in/old.jpg', '2026-11-01 08:00:00',"
            " '2026-11-01 08:00:01', 'ok', 's', 'l', 'c')"))
    engine.dispose()
    with Store(url) as s:
        assert s.revision() == "0013"
        [old] = s.list()
        assert old["name"] == "old.jpg" and old["review"] is None
        s.add_review(old["id"], "good", "ana")
        assert s.list(reviewed="good")[0]["id"] == old["id"]


def test_0004_adds_a_nullable_exposure_and_downgrades_to_0003(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    with Store(url, migrate=False) as s:
        with s.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0003")
        assert "exposure" not in {c["name"] for c in sa.inspect(s.engine).get_columns("inspections")}
    with Store(url) as s:
        assert s.revision() == "0013"
        [a, b] = s.record([row(1, exposure=0.9), row(2)])
        assert s.get(a)["exposure"] == 0.9 and s.get(b)["exposure"] is None
        with s.engine.execution_options(immediate=True).begin() as conn:
            command.downgrade(alembic_config(conn), "0003")
        assert s.revision() == "0003" and s.count() == 2
        assert "exposure" not in {c["name"] for c in sa.inspect(s.engine).get_columns("inspections")}
        assert {c["name"] for c in sa.inspect(s.engine).get_check_constraints("inspections")} == {
            "ck_inspections_identity", "ck_inspections_verdict"}


def test_claims_are_taken_over_only_after_their_lease_and_stale_ones_are_dropped(store: Store) -> None:
    assert store.claim("a", "s1", "a.jpg", 60).got
    held = store.claim("a", "s2", "a.jpg", 60)
    assert not held.got and held.holder == "s1"
    assert store.claim("a", "s1", "a.jpg", 60) == store.claim("a", "s1", "a.jpg", 60)  # its own claim: renewed
    # s1 died holding "b" (still in the folder) and "c" (already archived): both leases have run out
    assert store.claim("b", "s1", "b.jpg", -1).got and store.claim("c", "s1", "c.jpg", -1).got
    assert store.drop_stale_claims(present={"a", "b"}) == [{"key": "c", "station": "s1", "path": "c.jpg"}]
    assert {c["key"] for c in store.claims()} == {"a", "b"}  # a live claim and a claim on a file still there stay
    taken = store.claim("b", "s2", "b.jpg", 60)
    assert taken.got and taken.took_over == "s1"
    assert store.drop_stale_claims(present=set()) == []  # "a" and "b" are live: nothing to drop
    store.release(["a", "b"], "s2")  # only the holder's own claims go
    assert [(c["key"], c["station"]) for c in store.claims()] == [("a", "s1")]


def check_migration_0009(url: str) -> None:
    """0008 -> 0009: rows recorded before products are the default product; the product filter reads them; a row
    recorded with a product keeps it; head -> 0008 -> head round-trips."""
    from inspector.store import Selection

    with Store(url, migrate=False) as s:
        with s.engine.execution_options(immediate=True).begin() as conn:
            command.upgrade(alembic_config(conn), "0008")
        with s.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO inspections (sha256, name, source_path, received_at, inspected_at, verdict, station, line,"
                " camera) VALUES (:sha, 'old.jpg', '/in/old.jpg', :at, :at, 'ok', 's1', 'l1', 'c1')"),
                {"sha": "a" * 64, "at": T0})
    with Store(url) as s:
        assert s.revision() == HEAD == "0013"
        with s.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == [], s.dialect
        [old] = s.list()
        assert old["product"] == "default"
        [cap, plain, unknown] = s.record([row(1, product="cap"), row(2), row(3, product="")])
        assert [r["id"] for r in s.list(product="cap")] == [cap]
        assert [r["id"] for r in s.list(product="default")] == [plain, old["id"]]
        assert [r["id"] for r in s.list(product="")] == [unknown]
        assert s.review_counts(Selection(product="cap"))["all"] == 1
        with s.stream(Selection(product="default"), ("id", "product")) as rows:
            assert [tuple(r) for r in rows] == [(old["id"], "default"), (plain, "default")]
        with s.engine.execution_options(immediate=True).begin() as conn:
            command.downgrade(alembic_config(conn), "0008")
        assert s.revision() == "0008" and s.count() == 4
        assert "product" not in {c["name"] for c in sa.inspect(s.engine).get_columns("inspections")}
        assert s.upgrade() == "0013" and {r["product"] for r in s.list()} == {"default"}


def test_migration_0009_on_sqlite(tmp_path: Path) -> None:
    check_migration_0009(f"sqlite:///{tmp_path / 'm.db'}")


def test_migration_0009_on_postgres(postgres_database) -> None:
    check_migration_0009(postgres_database())
