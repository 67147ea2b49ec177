"""The verdict log on PostgreSQL (issue 5, first part): the same migrations reach the same schema as on SQLite,
the Store API behaves as on SQLite, and a real `inspector watch --once`, the CLI commands, retraining and the
review page all work with `[database] url = "postgresql+psycopg://..."`.

Runs against the server of INSPECTOR_TEST_POSTGRES_URL (skips when unset); every test works in its own fresh
database made by the `postgres_database` fixture (conftest.py), dropped at the end of the module. Rows written
by the code under test are read back with plain psycopg, not through the Store.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from inspector import cli, config, profiles
from inspector.store import MIGRATION_LOCK, Base, DatabaseError, Store, alembic_config
from inspector.web import create_app
from test_retrain import train, variant_jpeg, write_good
from test_store import T0, rejected, row
from watchkit import Site, make_site, part_jpeg, run_once

ORIGIN = "http://localhost"
STATION = {"station": "test-station", "line": "L1", "camera": "cam-A"}  # what watchkit's config names


def libpq(url: str) -> dict[str, Any]:
    """A SQLAlchemy URL as psycopg connection arguments."""
    parsed = sa.make_url(url)
    return {**parsed.translate_connect_args(username="user", database="dbname"), **parsed.query}


def pg_rows(url: str, sql: str = "SELECT * FROM inspections ORDER BY id", *params: Any) -> list[dict]:
    """Rows read with plain psycopg (not the code under test)."""
    with psycopg.connect(**libpq(url), row_factory=psycopg.rows.dict_row) as con:
        return con.execute(sql, params).fetchall()


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """`inspector ARGV` in-process: exit code, stdout, stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------- schema


def _family(t: sa.types.TypeEngine) -> str:
    """A reflected column type reduced to what both backends can tell: integer, bigint, float, datetime, text,
    varchar(N)."""
    for kind, name in ((sa.BigInteger, "bigint"), (sa.Integer, "integer"), (sa.Float, "float"),
                       (sa.DateTime, "datetime"), (sa.Text, "text")):
        if isinstance(t, kind):
            return name
    if isinstance(t, sa.String):
        return f"varchar({t.length})"
    return type(t).__name__.lower()


def schema(engine: sa.Engine) -> dict[str, Any]:
    """Tables with their columns, primary key, unique and check constraints (by name), indexes (those that do not
    merely back a unique constraint) and foreign keys, as plain comparable data."""
    insp = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        pk = insp.get_pk_constraint(table)
        out[table] = {
            "columns": [(c["name"], c["nullable"], _family(c["type"])) for c in insp.get_columns(table)],
            "primary_key": (pk["name"], pk["constrained_columns"]),
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
            "checks": sorted(c["name"] for c in insp.get_check_constraints(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(table) if not i.get("duplicates_constraint")),
            "foreign_keys": sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"],
                                    tuple(f["referred_columns"])) for f in insp.get_foreign_keys(table)),
        }
    return out


def test_migrations_reach_the_same_schema_on_postgres_and_sqlite(postgres_database, tmp_path: Path) -> None:
    schemas = {}
    for url in (postgres_database(), f"sqlite:///{tmp_path / 'inspector.db'}"):
        with Store(url, migrate=False) as store:
            assert store.revision() is None and not sa.inspect(store.engine).get_table_names()
            assert store.upgrade() == "0013" == store.revision()
            with store.engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == [], store.dialect
            schemas[store.dialect] = schema(store.engine)
            if store.dialect == "postgresql":  # UTCDateTime is a timestamptz there
                for table, column in (("inspections", "received_at"), ("inspections", "inspected_at"),
                                      ("reviews", "reviewed_at")):
                    [found] = [c for c in sa.inspect(store.engine).get_columns(table) if c["name"] == column]
                    assert found["type"].timezone is True, (table, column)
    pg, lite = schemas["postgresql"], schemas["sqlite"]
    assert set(pg) == {"alembic_version", "inspections", "reviews", "claims", "database_identity",
                       "deliveries", "delivery_cursors", "hour_counts"}
    # ids are 64 bits on both: bigint on PostgreSQL (0011), SQLite's INTEGER PRIMARY KEY (its rowid) on SQLite
    wide = {("inspections", "id"), ("reviews", "id"), ("reviews", "inspection_id"), ("deliveries", "inspection_id"),
            ("delivery_cursors", "floor_id")}
    for table, column in wide:
        [pg_type] = [c[2] for c in pg[table]["columns"] if c[0] == column]
        [lite_type] = [c[2] for c in lite[table]["columns"] if c[0] == column]
        assert (pg_type, lite_type) == ("bigint", "integer"), (table, column)
        pg[table]["columns"] = [(c[0], c[1], "integer" if c[0] == column else c[2]) for c in pg[table]["columns"]]
    assert pg == lite
    # the comparison has teeth: it sees what the issue cares about
    assert ("uq_inspections_sha256", ("sha256",)) in pg["inspections"]["unique"]
    assert pg["inspections"]["checks"] == ["ck_inspections_identity", "ck_inspections_verdict"]
    assert ("station", False, "varchar(64)") in pg["inspections"]["columns"]
    assert pg["reviews"]["foreign_keys"] == [("fk_reviews_inspection_id_inspections", ("inspection_id",),
                                              "inspections", ("id",))]


def test_downgrade_and_upgrade_again_on_postgres(postgres_database) -> None:
    url = postgres_database()
    with Store(url) as store:
        store.record([row(1)])
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert sa.inspect(store.engine).get_table_names() == ["alembic_version"]
        assert store.revision() is None
        assert store.upgrade() == "0013" and store.count() == 0


def test_ids_past_two_to_the_31_on_postgres(postgres_database, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """A year of several stations at 100 parts a second passes 2**31 ids: PostgreSQL's integer ended there (0011)."""
    url = postgres_database()
    with Store(url, migrate=False) as store:
        with store.engine.begin() as conn:  # at 0010: a row and its review as that schema takes them
            command.upgrade(alembic_config(conn), "0010")
            inspections = sa.table("inspections", *(sa.column(c) for c in row(1)), sa.column("id"))
            first = conn.execute(sa.insert(inspections).values(**row(1)).returning(inspections.c.id)).scalar_one()
            conn.execute(sa.insert(sa.table("reviews", *(sa.column(c) for c in ("inspection_id", "decision",
                                                                                  "reviewer", "reviewed_at"))))
                         .values(inspection_id=first, decision="good", reviewer="ana",
                                 reviewed_at=datetime.now(timezone.utc)))
        assert store.upgrade() == "0013"  # from 0010 with rows in it: they keep their ids
        for table in ("inspections", "reviews"):  # as if 3 billion parts had been recorded
            pg_rows(url, f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 3000000000)")
        [big] = store.record([row(2)])
        assert big == 3_000_000_001 and [r["decision"] for r in store.reviews(first)] == ["good"]
        store.add_review(big, "defect", "ana")
        assert [r["id"] for r in store.list()] == [big, first] and store.list()[0]["review"] == "defect"
    types = {(r["table_name"], r["column_name"]): r["data_type"] for r in pg_rows(
        url, "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE column_name IN "
             "('id', 'inspection_id', 'floor_id') AND table_name IN ('inspections', 'reviews', 'deliveries', "
             "'delivery_cursors')")}
    assert set(types.values()) == {"bigint"} and len(types) == 5
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n')
    code, out, _ = run(capsys, "show", str(big), "--json", "--config", str(cfg))
    assert code == 0 and json.loads(out)["id"] == big
    code, _, err = run(capsys, "mark", str(big), "--as", "good", "--by", "bo", "--config", str(cfg))
    assert code == 0, err
    code, _, err = run(capsys, "show", str(2**31), "--config", str(cfg))  # out of integer's range: simply not there
    assert code != 0 and "no inspection" in err and "range" not in err
    assert [r["decision"] for r in pg_rows(url, "SELECT decision FROM reviews WHERE inspection_id = %s ORDER BY id",
                                           big)] == ["defect", "good"]


STARTER = """
import sys
from test_store import row
from inspector.store import Store
with Store(sys.argv[1]) as store:
    store.record([row(1)])
"""


def test_concurrent_starts_on_an_empty_postgres_database_wait_for_the_migration_lock(postgres_database) -> None:
    # separate processes, as separate stations are (Alembic's `context` is process-global, not per thread); the
    # test holds the migration lock until all four found the database empty and queue for it, then lets go:
    # one migrates, the others find the schema at head
    url = postgres_database()
    waiting = ("SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
               "WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted")
    with psycopg.connect(**libpq(url)) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        procs = [subprocess.Popen([sys.executable, "-c", STARTER, url], cwd=Path(__file__).parent,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
        try:
            deadline = time.monotonic() + 30
            while pg_rows(url, waiting)[0]["n"] < 4 and time.monotonic() < deadline:
                finished = [p.communicate()[0] for p in procs if p.poll() is not None]
                assert not finished, f"a start finished while the migration lock was held: {finished}"
                time.sleep(0.05)
            assert pg_rows(url, waiting)[0]["n"] == 4, "the starts did not queue for the migration lock"
        finally:
            holder.rollback()  # releases the lock
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert [r["version_num"] for r in pg_rows(url, "SELECT * FROM alembic_version")] == ["0013"]
    assert len(pg_rows(url)) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_a_quick_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"postgresql+psycopg://postgres:secret@127.0.0.1:{_closed_port()}/test"
    started = time.monotonic()
    with pytest.raises(DatabaseError) as caught:
        Store(url)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message and "secret" not in message and "refused" in message.lower(), message
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n')
    done = subprocess.run([sys.executable, "-m", "inspector", "list", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == DatabaseError.exit_code
    assert done.stderr.startswith("inspector: error: cannot open database ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and "secret" not in done.stderr


def test_a_server_that_never_answers_times_out_with_a_one_line_error() -> None:
    # a socket that accepts connections (the kernel's backlog) but never speaks; the URL's connect_timeout wins
    # over the default CONNECT_TIMEOUT_S (libpq rounds it up to at least 2 s)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/test?connect_timeout=2"
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="timeout") as caught:
            Store(url)
        assert time.monotonic() - started < 8 and "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------- Store API


@pytest.fixture
def store(postgres_database):
    """A migrated store on a fresh database whose sessions run in Tokyo time (datetimes must still come back
    in UTC)."""
    url = sa.make_url(postgres_database()).update_query_dict({"options": "-c timezone=Asia/Tokyo"})
    with Store(url.render_as_string(hide_password=False)) as s:
        yield s


def test_record_maps_ids_back_through_duplicates_within_and_across_batches(store: Store) -> None:
    first = store.record([row(1), row(2), row(1, name="copy.png"), rejected("fifo:/in/x"), rejected("fifo:/in/x")])
    assert first[2] is None and first[4] is None and None not in (first[0], first[1], first[3])
    assert len(set(first) - {None}) == 3
    again = store.record([row(2, name="later.png"), row(3), rejected("fifo:/in/x"), rejected("fifo:/in/y")])
    assert again[0] is None and again[2] is None and again[1] is not None and again[3] is not None
    assert store.count() == 5 and store.record([]) == []
    for ids, batch in ((first, [row(1), row(2), None, rejected("fifo:/in/x")]), (again, [None, row(3)])):
        for new_id, sent in zip(ids, batch):
            if new_id is not None:
                got = store.get(new_id)
                assert (got["sha256"], got["source_key"], got["name"]) == (
                    sent.get("sha256"), sent.get("source_key"), sent["name"])
    # a batch larger than one insertmanyvalues page (1000 rows), duplicates scattered over both pages
    big = [row(i) for i in range(10, 1510)] + [row(i, name="dup") for i in (10, 700, 1400, 1509, 2)]
    ids = store.record(big)
    assert ids[-5:] == [None] * 5 and None not in ids[:-5] and len(set(ids[:-5])) == 1500
    by_id = {r["id"]: r for r in pg_rows(store.url)}
    assert all(by_id[i]["sha256"] == r["sha256"] and by_id[i]["name"] == r["name"] for i, r in zip(ids, big)
               if i is not None)
    assert store.count() == 1505


def test_constraints_refuse_bad_rows_and_roll_back_the_batch(store: Store) -> None:
    for bad in ({"source_key": "both"}, {"sha256": None}, {"verdict": "maybe"}, {"station": None}):
        with pytest.raises(IntegrityError):
            store.record([row(1), row(2, **bad)])
    assert store.count() == 0
    with pytest.raises(ValueError, match="naive"):
        store.record([row(1, received_at=datetime(2025, 1, 1))])


def test_queries_reviews_and_datetimes_on_postgres(store: Store) -> None:
    cest = timezone(timedelta(hours=2))
    ids = store.record([row(1), row(2, verdict="defect", score=2.5), row(3, verdict="defect", score=3.0),
                        rejected("k1"), row(4, inspected_at=datetime(2025, 3, 1, 16, 0, 0, 7, tzinfo=cest))])
    one, two, three, rej, four = ids
    got = store.get(one)
    assert got["inspected_at"] == T0 + timedelta(seconds=1, milliseconds=5)
    assert got["inspected_at"].tzinfo == timezone.utc and got["received_at"].utcoffset() == timedelta(0)
    assert store.get(four)["inspected_at"] == datetime(2025, 3, 1, 14, 0, 0, 7, tzinfo=timezone.utc)
    assert {k: got[k] for k in STATION} == {"station": "s1", "line": "l1", "camera": "c1"}
    assert store.get(10**9) is None
    assert store.find(sha256=f"{2:064x}")["id"] == two
    assert store.find(source_key="k1")["id"] == rej
    assert store.find(sha256="nope", source_key="k1")["id"] == rej
    assert store.find(sha256="nope") is None
    assert set(store.find_many([f"{1:064x}", f"{3:064x}", "nope"])) == {f"{1:064x}", f"{3:064x}"}
    assert store.count() == 5 and store.count("defect") == 2
    assert store.summary() == {"ok": 2, "defect": 2, "rejected": 1}

    assert [r["id"] for r in store.list()] == sorted(ids, reverse=True)
    assert [r["id"] for r in store.list(verdict="defect")] == [three, two]
    assert [r["id"] for r in store.list(limit=2)] == [four, rej]
    since = datetime(2025, 3, 1, 21, 0, 3, tzinfo=timezone(timedelta(hours=9)))  # 12:00:03 UTC
    assert [r["id"] for r in store.list(since=since)] == [four, three]

    with pytest.raises(KeyError):
        store.add_review(10**9, "good", "anna")
    first = store.add_review(two, "good", "anna", note="lamp glare",
                             at=datetime(2025, 3, 2, 9, 0, tzinfo=cest))
    store.add_review(two, "defect", "ben")
    store.add_review(three, "defect", "anna")
    history = store.reviews(two)
    assert [(r["decision"], r["reviewer"]) for r in history] == [("good", "anna"), ("defect", "ben")]
    assert history[0]["id"] == first["id"] and history[0]["note"] == "lamp glare"
    assert history[0]["reviewed_at"] == datetime(2025, 3, 2, 7, 0, tzinfo=timezone.utc)
    assert history[0]["reviewed_at"].tzinfo == timezone.utc
    assert [r["id"] for r in store.list(reviewed="defect")] == [three, two]
    assert store.list(reviewed="good") == []
    assert [r["id"] for r in store.list(unreviewed=True)] == [four, rej, one]
    assert {r["id"]: r["review"] for r in store.list(verdict="defect")} == {two: "defect", three: "defect"}

    store.set_archived(one, "/archive/ok/part_1.png")
    assert store.get(one)["archived_path"] == "/archive/ok/part_1.png"
    with pytest.raises(KeyError):
        store.set_archived(10**9, "/x")


# ---------------------------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def site(postgres_database, tmp_path_factory: pytest.TempPathFactory) -> tuple[Site, str]:
    """A station whose [database] url points at a fresh PostgreSQL database, trained on good parts, after one
    `inspector watch --once` judged 2 good parts, 5 parts of a label variant (false alarms), a spot defect
    and an empty file."""
    url = postgres_database()
    root = tmp_path_factory.mktemp("pg-site")
    site = make_site(root / "site", root / "models")
    site.config.write_text(site.config.read_text().replace('url = "sqlite:///inspector.db"', f'url = "{url}"'))
    train(site.config, write_good(root / "good"))
    for i in range(2):
        (site.inbox / f"good_{i}.jpg").write_bytes(part_jpeg(51_000 + i))
    for i in range(5):
        (site.inbox / f"variant_{i}.jpg").write_bytes(variant_jpeg(21_000 + i))
    (site.inbox / "spot.jpg").write_bytes(part_jpeg(41_000, "spot"))
    (site.inbox / "empty.jpg").write_bytes(b"")
    done = run_once(site)
    assert done.returncode == 0, done.stdout + done.stderr
    return site, url


def by_name(url: str) -> dict[str, dict]:
    return {r["name"]: r for r in pg_rows(url)}


def test_watch_once_judges_into_postgres_and_each_row_carries_its_station(site) -> None:
    site, url = site
    assert not site.db.exists(), "nothing may be written to the default SQLite file"
    rows = by_name(url)
    assert set(rows) == {"good_0.jpg", "good_1.jpg", *(f"variant_{i}.jpg" for i in range(5)), "spot.jpg", "empty.jpg"}
    assert [rows[f"good_{i}.jpg"]["verdict"] for i in range(2)] == ["ok", "ok"]
    assert rows["spot.jpg"]["verdict"] == "defect" and rows["empty.jpg"]["verdict"] == "rejected"
    assert all(rows[f"variant_{i}.jpg"]["verdict"] == "defect" for i in range(5))
    for r in rows.values():
        assert {k: r[k] for k in STATION} == STATION
        assert r["inspected_at"].utcoffset() is not None  # timestamptz
        assert r["archived_path"] and Path(r["archived_path"]).is_file()
    assert not any(site.inbox.iterdir())
    assert pg_rows(url, "SELECT version_num FROM alembic_version") == [{"version_num": "0013"}]


def test_list_show_mark_stats_export_on_postgres(site, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    site, url = site
    cfg = str(site.config)
    rows = by_name(url)
    spot = rows["spot.jpg"]["id"]

    code, out, _ = run(capsys, "list", "--json", "--verdict", "defect", "--config", cfg)
    listed = json.loads(out)
    assert code == 0 and len(listed) == 6 and [r["id"] for r in listed] == sorted((r["id"] for r in listed),
                                                                                reverse=True)
    assert all({k: r[k] for k in STATION} == STATION for r in listed)
    assert json.loads(run(capsys, "list", "--json", "--since", "1h", "--config", cfg)[1]).__len__() == 9

    code, out, _ = run(capsys, "mark", str(spot), "--as", "defect", "--by", "anna", "--note", "spot on the rim",
                       "--config", cfg)
    assert code == 0 and "marked defect by anna" in out
    code, out, _ = run(capsys, "show", str(spot), "--json", "--config", cfg)
    shown = json.loads(out)
    assert code == 0 and shown["name"] == "spot.jpg" and shown["review"] == "defect"
    assert [(r["decision"], r["reviewer"], r["note"]) for r in shown["reviews"]] == [
        ("defect", "anna", "spot on the rim")]
    assert {k: shown[k] for k in STATION} == STATION
    assert pg_rows(url, "SELECT decision, reviewer FROM reviews WHERE inspection_id = %s", spot) == [
        {"decision": "defect", "reviewer": "anna"}]
    code, out, _ = run(capsys, "list", "--json", "--reviewed", "defect", "--config", cfg)
    assert [r["id"] for r in json.loads(out)] == [spot]
    code, _, err = run(capsys, "mark", str(rows["empty.jpg"]["id"]), "--as", "good", "--by", "x", "--config", cfg)
    assert code != 0 and err.count("\n") == 1

    code, out, _ = run(capsys, "stats", "--json", "--by", "day", "--since", "all", "--config", cfg)
    periods = json.loads(out)["periods"]
    assert code == 0 and sum(p["parts"] for p in periods) == 9
    assert sum(p["defect"] for p in periods) == 6 and sum(p["rejected"] for p in periods) == 1
    assert sum(p["confirmed_defects"] for p in periods) == 1

    target = tmp_path / "export.csv"
    code, out, _ = run(capsys, "export", "--csv", str(target), "--config", cfg)
    assert code == 0 and "wrote 9 rows" in out
    lines = target.read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 10 and {"station", "line", "camera", "review"} <= set(header)
    spot_line = next(line for line in lines if ",spot.jpg," in line).split(",")
    assert spot_line[header.index("station")] == "test-station" and spot_line[header.index("review")] == "defect"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", spot_line[header.index("inspected_at")])


def test_review_page_on_postgres(site) -> None:
    site, url = site
    rows = by_name(url)
    client = create_app(config.load(site.config)).test_client()
    page = client.get("/?verdict=all&review=all")  # the queue's default is what is left to review
    assert page.status_code == 200
    for r in rows.values():
        assert f'id="part-{r["id"]}"' in page.text
    assert client.get(f'/image/{rows["spot.jpg"]["id"]}').status_code == 200
    assert client.get("/stats?since=all").status_code == 200
    assert client.get("/stats/scores.png?since=all").status_code == 200
    assert client.get("/stats/defects.png?since=all").status_code == 200

    target = rows["spot.jpg"]["id"]  # confirmed here as well as by `mark`: the retrain gate keeps it flagged
    before = pg_rows(url, "SELECT decision, reviewer, note FROM reviews WHERE inspection_id = %s ORDER BY id", target)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
    response = client.post(f"/inspections/{target}/review", headers={"Origin": ORIGIN},
                           data={"csrf_token": token, "decision": "defect", "note": "seen on the page",
                                 "reviewer": "carla"})
    assert response.status_code == 303, response.text
    after = pg_rows(url, "SELECT decision, reviewer, note FROM reviews WHERE inspection_id = %s ORDER BY id", target)
    assert after == [*before, {"decision": "defect", "reviewer": "carla", "note": "seen on the page"}]
    page = client.get("/?review=defect").text
    assert f'id="part-{target}"' in page and "seen on the page" in page


def test_retrain_from_reviews_on_postgres(site, capsys: pytest.CaptureFixture) -> None:
    site, url = site
    cfg = str(site.config)
    rows = by_name(url)
    for i in range(5):
        assert run(capsys, "mark", str(rows[f"variant_{i}.jpg"]["id"]), "--as", "good", "--by", "anna",
                   "--config", cfg)[0] == 0
    if not pg_rows(url, "SELECT 1 FROM reviews WHERE inspection_id = %s", rows["spot.jpg"]["id"]):
        assert run(capsys, "mark", str(rows["spot.jpg"]["id"]), "--as", "defect", "--by", "anna",
                   "--config", cfg)[0] == 0
    code, out, err = run(capsys, "retrain", "--json", "--config", cfg)
    assert code == 0, err
    result = json.loads(out)
    assert result["activated"] and (result["previous"], result["version"]) == ("v1", "v2")
    assert result["after"]["confirmed_caught"] == 1 and result["after"]["false_alarms_cleared"] == 5
    assert profiles.active_version(site.models) == "v2"


def test_a_session_left_idle_in_a_transaction_is_ended_so_its_locks_go(postgres_database) -> None:
    """The watcher's store asks the server to end its sessions left idle inside a transaction (a connection cut
    half-way through a write keeps its row locks, and the retry of the same verdicts would wait on them for ever);
    other stores (the CLI's long reads) do not."""
    url = postgres_database()
    watcher = Store(url, idle_in_transaction_ms=300)
    other = Store(url, migrate=False)
    try:
        for store, ended in ((watcher, True), (other, False)):
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))  # a transaction begins and is left open
                time.sleep(1.0)
                if ended:
                    with pytest.raises(sa.exc.DBAPIError, match="idle-in-transaction"):
                        conn.execute(sa.text("SELECT 1"))
                else:
                    assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        watcher.close()
        other.close()
