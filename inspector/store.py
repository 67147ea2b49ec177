"""The verdict log: the `inspections` table (SQLAlchemy 2.x ORM model) and the Store that writes and queries it.

The schema is created and changed only by the Alembic migrations in `inspector/migrations/`, which Store runs
programmatically (`Store(url)` upgrades to head; cheap when already there). SQLite is the default backend
(WAL journal, synchronous=FULL, a busy timeout, and `BEGIN IMMEDIATE` for every write transaction so that
concurrent writers queue instead of failing). PostgreSQL (`postgresql+psycopg://user@host/db`) runs the same
migrations: none of the SQLite connection setup applies there, concurrent starts are serialised by a
transaction-level advisory lock taken before migrating, datetimes are `timestamptz`, pooled connections are
pinged before use, and connecting gives up after CONNECT_TIMEOUT_S unless the URL sets `connect_timeout`.
Rows are handed in and out as plain dicts keyed by column name, with timezone-aware UTC datetimes.

Errors: operational failures (cannot open or create the file, locked past the busy timeout, not a database,
unknown schema revision, a server that refuses or does not answer) raise DatabaseError with a one-line
message. A row that breaks a NOT NULL or CHECK constraint is a programming error of the caller:
sqlalchemy.exc.IntegrityError propagates unchanged and the whole batch is rolled back.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from inspector.errors import InspectorError

if TYPE_CHECKING:  # Alembic is imported only when a database needs migrating: it costs ~0.4 s at every start
    from alembic.config import Config

SCRIPT_LOCATION = "inspector:migrations"
VERDICTS = ("ok", "defect", "rejected")
IN_CHUNK = 500  # max sha256 values per IN (...) list
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
CONNECT_TIMEOUT_S = 10  # PostgreSQL: seconds to wait for a server before giving up (libpq waits forever)
MAX_ID = 2**63 - 1  # the largest integer an id column holds (SQLite INTEGER, PostgreSQL bigint)
HEAD = "0005"  # the newest migration in inspector/migrations/versions (a test keeps the two in step)
VERSION_TABLE = "alembic_version"
MIGRATION_LOCK = 0x696E_7370_6563_7472  # PostgreSQL advisory lock key held while migrating ("inspectr")
_LIBPQ_DRIVERS = ("psycopg", "psycopg2")  # drivers that take libpq's connect_timeout


class DatabaseError(InspectorError):
    """The verdict database cannot be opened, migrated, read or written; the message is one line."""

    exit_code = 6


# ---------------------------------------------------------------------------------------------- model


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime; naive values are refused. SQLite stores naive UTC with microseconds,
    PostgreSQL a timestamptz (read back in the session's time zone, converted to UTC here)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive UTC on SQLite)."""
        if value is None:
            return None
        value = to_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base; the naming convention keeps constraint names stable for batch migrations."""

    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",  # CheckConstraint(name="verdict") -> ck_inspections_verdict
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class Inspection(Base):
    """One verdict: an image judged ok/defect, or a file rejected before judging."""

    __tablename__ = "inspections"
    __table_args__ = (
        UniqueConstraint("sha256", name="uq_inspections_sha256"),
        UniqueConstraint("source_key", name="uq_inspections_source_key"),
        CheckConstraint("(sha256 IS NULL) <> (source_key IS NULL)", name="identity"),
        CheckConstraint("verdict IN ('ok', 'defect', 'rejected')", name="verdict"),
        Index("ix_inspections_inspected_at", "inspected_at"),
        Index("ix_inspections_verdict_id", "verdict", "id"),
        Index("ix_inspections_station_published_at_id", "station", "published_at", "id"),  # the outbox (0005)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    source_key: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(Text)
    source_path: Mapped[str] = mapped_column(Text)
    archived_path: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    inspected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    profile_version: Mapped[str | None] = mapped_column(String(32))
    overlay_path: Mapped[str | None] = mapped_column(Text)
    ms: Mapped[float | None] = mapped_column(Float)
    station: Mapped[str] = mapped_column(String(64))
    line: Mapped[str] = mapped_column(String(64))
    camera: Mapped[str] = mapped_column(String(64))
    exposure: Mapped[float | None] = mapped_column(Float)  # relative to the profile's reference (1.0 = as trained)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # broker acknowledged it; NULL = in the outbox


class DatabaseIdentity(Base):
    """One row: a random id given to this database when it was created (migration 0005). Inspection ids start
    again at 1 in a database created anew or restored from a backup; the MQTT consumer tells the two apart by it."""

    __tablename__ = "database_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    uuid: Mapped[str] = mapped_column(String(36))


class Review(Base):
    """One operator decision on an inspection; decisions are only ever added, the newest one counts."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("decision IN ('defect', 'good')", name="decision"),
        Index("ix_reviews_inspection_id_id", "inspection_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(Integer, ForeignKey("inspections.id"))
    decision: Mapped[str] = mapped_column(String(16))  # "defect" (confirmed) or "good" (a false alarm)
    note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(64))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ClaimRow(Base):
    """A station working on a file of a shared folder, until `expires_at` (then any station may take it over)."""

    __tablename__ = "claims"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the file's path in the folder
    station: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: whether this station got the file, and whose expired claim it took over."""

    got: bool
    holder: str | None = None  # the station holding it, when not got
    took_over: str | None = None  # the station whose expired claim was taken over


COLUMNS: tuple[str, ...] = tuple(c.key for c in Inspection.__table__.columns)
REVIEW_COLUMNS: tuple[str, ...] = tuple(c.key for c in Review.__table__.columns)
DECISIONS = ("defect", "good")
_DATETIMES = ("received_at", "inspected_at")


# ---------------------------------------------------------------------------------------------- helpers


def to_utc(value: datetime) -> datetime:
    """Return an aware datetime converted to UTC; ValueError for a naive one."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} refused: give a timezone-aware datetime")
    return value.astimezone(timezone.utc)


def resolve_url(url: str) -> str:
    """Return the URL unchanged after checking it parses and names a supported backend (else DatabaseError)."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        shown = f" {url!r}" if "@" not in url else ""
        raise DatabaseError(f"invalid database URL{shown}: expected e.g. sqlite:///inspector.db") from None
    if parsed.get_backend_name() not in _INSERTS:
        raise DatabaseError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")
    return url


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name when empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory and URI-style databases."""
    db = url.database or ""
    if db in ("", ":memory:") or db.startswith("file:") or url.query.get("uri") == "true":
        return None
    return Path(db)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config for the packaged migrations, optionally carrying an open connection to migrate."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def lock_for_migration(connection: Connection) -> None:
    """Serialise migrations: on PostgreSQL take a transaction-level advisory lock (released at commit or
    rollback), so a second station starting at the same time waits and then finds the schema at head. On
    SQLite the write transaction itself (BEGIN IMMEDIATE) already excludes other writers."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def _install_sqlite_events(engine: Engine, busy_timeout_ms: int) -> None:
    """Set the PRAGMAs on every new connection and let SQLAlchemy's begin event emit BEGIN [IMMEDIATE]."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own BEGIN
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


def _as_dict(row: Inspection) -> dict[str, Any]:
    """A row as a dict keyed by column name."""
    return {key: getattr(row, key) for key in COLUMNS}


_INSERT_COLUMNS = tuple(c for c in COLUMNS if c != "id")


def _check_row(row: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown keys, an explicit id and naive datetimes (ValueError); return the row."""
    unknown = set(row) - set(COLUMNS) | ({"id"} & set(row))
    if unknown:
        raise ValueError(f"unknown or read-only inspection fields: {', '.join(sorted(unknown))}")
    for key in _DATETIMES:
        if isinstance(row.get(key), datetime):
            to_utc(row[key])
    return row


def latest_reviews() -> Any:
    """A subquery: (inspection_id, decision) of the newest review of each reviewed inspection."""
    newest = select(func.max(Review.id).label("id")).group_by(Review.inspection_id).subquery()
    return (select(Review.inspection_id, Review.decision).join(newest, newest.c.id == Review.id)
            .subquery("latest"))


# ---------------------------------------------------------------------------------------------- store


class Store:
    """The verdict log on one database URL: migrations, batched inserts and the queries the service needs."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 30000, migrate: bool = True, pool_size: int = 5) -> None:
        """Create the engine (and the SQLite folder), check the database opens, and upgrade it when asked."""
        self.url = resolve_url(url)
        parsed = make_url(self.url)
        self.dialect: str = parsed.get_backend_name()
        self._shown = parsed.render_as_string(hide_password=True)
        # the SQLite file (None for PostgreSQL and in-memory databases)
        self.file: Path | None = sqlite_file(parsed) if self.dialect == "sqlite" else None
        self.create_missing = True  # may a connection create a missing SQLite file (see refuse_to_create)
        self.engine = self._create_engine(parsed, busy_timeout_ms, pool_size)
        self._writer = self.engine.execution_options(immediate=True)
        try:
            self._open(migrate)
        except BaseException:
            self.engine.dispose()
            raise

    def _open(self, migrate: bool) -> None:
        """Check that the database opens, and upgrade it when asked."""
        with self._guard("open"), self.engine.connect():
            pass
        if migrate:
            self.upgrade()

    def refuse_to_create(self) -> None:
        """From now on, a connection to a SQLite file that is missing fails (DatabaseError) instead of creating
        an empty database there: a long-running writer whose file was deleted must not start a new one behind
        the operator's back."""
        self.create_missing = False

    def reopen(self, migrate: bool = True) -> None:
        """Close every pooled connection and open the database afresh (the file now at the path, for SQLite),
        upgrading it when asked; DatabaseError when it cannot be opened. Connections checked out at the time
        are closed when they are returned."""
        self.engine.dispose()
        self._open(migrate)

    def _create_engine(self, parsed: URL, busy_timeout_ms: int, pool_size: int) -> Engine:
        """The engine: on SQLite with its folder created and the connection events installed, on PostgreSQL
        with pre-ping and a connect timeout."""
        path = sqlite_file(parsed) if self.dialect == "sqlite" else None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = exc.strerror or _first_line(exc)
                raise DatabaseError(f"cannot open database {self._shown}: cannot create folder "
                                    f"{path.parent}: {reason}") from None
        connect_args: dict[str, Any] = {}
        if (self.dialect == "postgresql" and parsed.get_driver_name() in _LIBPQ_DRIVERS
                and "connect_timeout" not in parsed.query):
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        try:
            engine = create_engine(parsed, pool_pre_ping=self.dialect != "sqlite", pool_size=pool_size,
                                   connect_args=connect_args)
        except ModuleNotFoundError as exc:
            hint = " (use postgresql+psycopg://...)" if self.dialect == "postgresql" else ""
            raise DatabaseError(f"cannot open database {self._shown}: driver {exc.name} is not installed"
                                f"{hint}") from None
        if self.dialect == "sqlite":
            _install_sqlite_events(engine, busy_timeout_ms)
            if path is not None:
                self._refuse_missing_file(engine, path)
        return engine

    def _refuse_missing_file(self, engine: Engine, path: Path) -> None:
        """Once refuse_to_create() was called, fail a connection to a missing file instead of creating it."""

        @event.listens_for(engine, "do_connect")
        def _on_do_connect(dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
            if not self.create_missing and not path.exists():
                raise dialect.loaded_dbapi.OperationalError(f"unable to open database file: {path} does not exist")

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn driver failures (except integrity violations) into a one-line DatabaseError."""
        try:
            yield
        except sa_exc.IntegrityError:
            raise
        except sa_exc.DBAPIError as exc:
            raise DatabaseError(f"cannot {action} database {self._shown}: {_first_line(exc.orig)}") from exc
        except sa_exc.TimeoutError as exc:  # no pooled connection became free in time
            raise DatabaseError(f"cannot {action} database {self._shown}: {_first_line(exc)}") from exc
        except self.engine.dialect.loaded_dbapi.Error as exc:  # raised raw from a connect event
            raise DatabaseError(f"cannot {action} database {self._shown}: {_first_line(exc)}") from exc

    def __enter__(self) -> Store:
        """Return self."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Close the store."""
        self.close()

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------ schema

    def upgrade(self) -> str:
        """Migrate the database to head inside one write transaction (serialising concurrent starts: BEGIN
        IMMEDIATE on SQLite, an advisory lock on PostgreSQL, taken by the migration environment); return head."""
        if self.revision() == HEAD:
            return HEAD
        from alembic import command
        from alembic.util import CommandError

        try:
            with self._guard("migrate"), self._writer.begin() as conn:
                command.upgrade(alembic_config(conn), "head")
        except CommandError as exc:
            raise DatabaseError(f"cannot migrate database {self._shown}: {_first_line(exc)} "
                                "(was it written by a newer inspector?)") from exc
        return HEAD

    def revision(self) -> str | None:
        """The Alembic revision the database is at (None before the first migration)."""
        with self._guard("read"), self.engine.connect() as conn:
            if not sa_inspect(conn).has_table(VERSION_TABLE):
                return None
            versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if len(versions) > 1:
            raise DatabaseError(f"database {self._shown} has several migration heads {sorted(versions)}")
        return versions[0] if versions else None

    # ------------------------------------------------------------------------------------------ writes

    def record(self, rows: list[dict[str, Any]]) -> list[int | None]:
        """Insert a batch in one write transaction; per row the new id, or None when its identity already exists
        (in the table, or earlier in the same batch)."""
        checked = [_check_row(row) for row in rows]
        if not checked:
            return []
        table = Inspection.__table__
        # one executemany INSERT ... ON CONFLICT DO NOTHING RETURNING: rows skipped by a conflict return nothing,
        # so results are matched back to the batch by identity (sha256 or source_key)
        stmt = (_INSERTS[self.dialect](table).on_conflict_do_nothing()
                .returning(table.c.id, table.c.sha256, table.c.source_key))
        params = [{c: row.get(c) for c in _INSERT_COLUMNS} for row in checked]
        with self._guard("write to"), self._writer.begin() as conn:
            inserted = {(r.sha256, r.source_key): r.id for r in conn.execute(stmt, params)}
        ids: list[int | None] = []
        for row in checked:
            ids.append(inserted.pop((row.get("sha256"), row.get("source_key")), None))  # pop: first copy only
        return ids

    def set_archived(self, id: int, path: str) -> None:
        """Record where the file of inspection `id` was archived; KeyError when no such row."""
        stmt = update(Inspection).where(Inspection.id == id).values(archived_path=path)
        with self._guard("write to"), self._writer.begin() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise KeyError(id)

    def update_archived(self, id: int, path: str | None, expected: str | None) -> bool:
        """Set a row's archived_path to `path` only where it is still NULL, `expected` (what this writer last
        recorded) or already `path`: a path another station filled in meanwhile is never overwritten or cleared.
        True when the row now says `path`; False when it says something else, or there is no such row."""
        col = Inspection.archived_path
        allowed = [col.is_(None)] + [col == v for v in (expected, path) if v is not None]
        stmt = update(Inspection).where(Inspection.id == id, or_(*allowed)).values(archived_path=path)
        with self._guard("write to"), self._writer.begin() as conn:
            return conn.execute(stmt).rowcount > 0

    # ------------------------------------------------------------------------------------------ reads

    def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        """Run an ORM select of Inspection and return the rows as dicts."""
        with self._guard("read"), Session(self.engine) as session:
            return [_as_dict(row) for row in session.scalars(stmt)]

    def find(self, sha256: str | None = None, source_key: str | None = None) -> dict[str, Any] | None:
        """The row with this sha256 or source_key (either may match), or None."""
        conds = [col == val for col, val in ((Inspection.sha256, sha256), (Inspection.source_key, source_key))
                 if val is not None]
        if not conds:
            raise ValueError("find() needs a sha256 or a source_key")
        rows = self._rows(select(Inspection).where(or_(*conds)).order_by(Inspection.id).limit(1))
        return rows[0] if rows else None

    def find_many(self, sha256s: list[str]) -> dict[str, dict[str, Any]]:
        """Map each given sha256 that is already recorded to its row."""
        keys = sorted(set(sha256s))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), IN_CHUNK):
            chunk = keys[start:start + IN_CHUNK]
            for row in self._rows(select(Inspection).where(Inspection.sha256.in_(chunk))):
                found[row["sha256"]] = row
        return found

    def get(self, id: int) -> dict[str, Any] | None:
        """The row with this id, or None."""
        rows = self._rows(select(Inspection).where(Inspection.id == id))
        return rows[0] if rows else None

    def count(self, verdict: str | None = None) -> int:
        """Number of rows, optionally only those with this verdict."""
        stmt = select(func.count()).select_from(Inspection)
        if verdict is not None:
            stmt = stmt.where(Inspection.verdict == verdict)
        with self._guard("read"), Session(self.engine) as session:
            return int(session.scalar(stmt) or 0)

    def summary(self) -> dict[str, int]:
        """Row counts per verdict, every verdict present."""
        stmt = select(Inspection.verdict, func.count()).group_by(Inspection.verdict)
        counts = dict.fromkeys(VERDICTS, 0)
        with self._guard("read"), Session(self.engine) as session:
            counts.update({verdict: int(n) for verdict, n in session.execute(stmt)})
        return counts

    def list(self, *, verdict: str | None = None, since: datetime | None = None, limit: int | None = 50,
             reviewed: str | None = None, unreviewed: bool = False, station: str | None = None,
             line: str | None = None, offset: int = 0) -> builtins.list[dict[str, Any]]:
        """Rows newest first (by id), optionally filtered by verdict, inspected_at >= since, and review state
        (`reviewed` = the latest decision, "defect" or "good"; `unreviewed` = no decision yet). Each row carries
        `review`, its latest decision or None."""
        latest = latest_reviews()
        stmt = (select(Inspection, latest.c.decision).outerjoin(latest, latest.c.inspection_id == Inspection.id)
                .order_by(Inspection.id.desc()))
        if verdict is not None:
            stmt = stmt.where(Inspection.verdict == verdict)
        if since is not None:
            stmt = stmt.where(Inspection.inspected_at >= to_utc(since))
        if reviewed is not None:
            stmt = stmt.where(latest.c.decision == reviewed)
        if unreviewed:
            stmt = stmt.where(latest.c.decision.is_(None))
        if station is not None:
            stmt = stmt.where(Inspection.station == station)
        if line is not None:
            stmt = stmt.where(Inspection.line == line)
        if offset:
            stmt = stmt.offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._guard("read"), Session(self.engine) as session:
            return [{**_as_dict(row), "review": decision} for row, decision in session.execute(stmt)]


    def stations(self) -> builtins.list[tuple[str, str]]:
        """The (station, line) pairs that have recorded inspections, sorted."""
        stmt = select(Inspection.station, Inspection.line).distinct().order_by(Inspection.station, Inspection.line)
        with self._guard("read"), self.engine.connect() as conn:
            return [(r.station, r.line) for r in conn.execute(stmt)]

    # ------------------------------------------------------------------------------------------ reviews

    def add_review(self, inspection_id: int, decision: str, reviewer: str, note: str | None = None,
                   at: datetime | None = None) -> dict[str, Any]:
        """Add an operator decision ("defect" or "good") to inspection `inspection_id`; KeyError when there is
        no such inspection, ValueError for another decision. Earlier decisions are kept."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        values = {"inspection_id": inspection_id, "decision": decision, "note": note or None,
                  "reviewer": reviewer, "reviewed_at": to_utc(at) if at else datetime.now(timezone.utc)}
        table = Review.__table__
        with self._guard("write to"), self._writer.begin() as conn:
            if conn.execute(select(Inspection.id).where(Inspection.id == inspection_id)).first() is None:
                raise KeyError(inspection_id)
            new_id = conn.execute(table.insert().values(**values).returning(table.c.id)).scalar_one()
        return {"id": new_id, **values}

    def reviews(self, inspection_id: int) -> builtins.list[dict[str, Any]]:
        """Every decision on one inspection, oldest first."""
        stmt = select(Review).where(Review.inspection_id == inspection_id).order_by(Review.id)
        with self._guard("read"), Session(self.engine) as session:
            return [{key: getattr(r, key) for key in REVIEW_COLUMNS} for r in session.scalars(stmt)]

    # ------------------------------------------------------------------------------------------ claims

    def claim(self, key: str, station: str, path: str, lease_s: float) -> Claim:
        """Claim the file `key` for `station` for `lease_s` seconds: got when nobody holds it, this station
        already does, or the holder's lease has expired (a station that died mid-part)."""
        table = ClaimRow.__table__
        now = datetime.now(timezone.utc)
        values = {"key": key, "station": station, "path": path, "claimed_at": now,
                  "expires_at": now + timedelta(seconds=lease_s)}
        with self._guard("write to"), self._writer.begin() as conn:
            current = conn.execute(select(table.c.station, table.c.expires_at).where(table.c.key == key)
                                   .with_for_update()).first()
            if current is None:
                stmt = _INSERTS[self.dialect](table).values(**values).on_conflict_do_nothing().returning(table.c.key)
                got = conn.execute(stmt).first() is not None
                return Claim(got, holder=None if got else "another station")
            if current.station != station and current.expires_at > now:
                return Claim(False, holder=current.station)
            conn.execute(table.update().where(table.c.key == key).values(**values))
        return Claim(True, took_over=current.station if current.station != station else None)

    def release(self, keys: builtins.list[str], station: str) -> None:
        """Drop this station's claims on `keys` (its files are recorded and archived)."""
        if not keys:
            return
        table = ClaimRow.__table__
        with self._guard("write to"), self._writer.begin() as conn:
            for start in range(0, len(keys), IN_CHUNK):
                conn.execute(table.delete().where(table.c.key.in_(keys[start:start + IN_CHUNK]),
                                                  table.c.station == station))

    def drop_stale_claims(self, present: set[str]) -> builtins.list[dict[str, Any]]:
        """Drop expired claims whose file has left the folder (`present` holds the keys of the files still
        there): a station killed after archiving a part but before releasing its claim. Returns what was dropped."""
        table = ClaimRow.__table__
        now = datetime.now(timezone.utc)
        with self._guard("write to"), self._writer.begin() as conn:
            expired = conn.execute(select(table.c.key, table.c.station, table.c.path)
                                   .where(table.c.expires_at < now)).all()
            stale = [r for r in expired if r.key not in present]
            keys = [r.key for r in stale]
            for start in range(0, len(keys), IN_CHUNK):  # still expired: a station may have taken it over meanwhile
                conn.execute(table.delete().where(table.c.key.in_(keys[start:start + IN_CHUNK]),
                                                  table.c.expires_at < now))
        return [{"key": r.key, "station": r.station, "path": r.path} for r in stale]

    def claims(self) -> builtins.list[dict[str, Any]]:
        """Every current claim (for tests and diagnosis)."""
        table = ClaimRow.__table__
        with self._guard("read"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.claimed_at))]

    # ------------------------------------------------------------------------------------------ outbox (issue 13)
    # Rows with published_at NULL are the outbox of the MQTT publisher (inspector/publisher.py): it sends them in id
    # order and marks them once the broker has acknowledged them. Rows from before migration 0005 count as published.

    def _outbox(self, station: str, line: str | None, camera: str | None = None) -> builtins.list[Any]:
        """The WHERE terms of one station's (line's, camera's) unpublished rows."""
        terms = [Inspection.station == station, Inspection.published_at.is_(None)]
        if line is not None:
            terms.append(Inspection.line == line)
        return terms if camera is None else [*terms, Inspection.camera == camera]

    def unpublished(self, station: str, line: str | None = None, *, camera: str | None = None, after_id: int = 0,
                    limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The oldest rows of `station` (and `line`, `camera`) not yet published, with id > after_id, in id order,
        at most `limit`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        stmt = (select(Inspection).where(*self._outbox(station, line, camera), Inspection.id > after_id)
                .order_by(Inspection.id).limit(limit))
        return self._rows(stmt)

    def database_id(self) -> str:
        """The random id this database was given when it was created (DatabaseError when it has none)."""
        with self._guard("read"), Session(self.engine) as session:
            found = session.scalar(select(DatabaseIdentity.uuid).where(DatabaseIdentity.id == 1))
        if not found:
            raise DatabaseError(f"database {self._shown} has no identity row (run `inspector db upgrade`)")
        return str(found)

    def count_unpublished(self, station: str, line: str | None = None, camera: str | None = None) -> int:
        """How many rows of `station` (and `line`, `camera`) are not yet published."""
        stmt = select(func.count()).select_from(Inspection).where(*self._outbox(station, line, camera))
        with self._guard("read"), Session(self.engine) as session:
            return int(session.scalar(stmt) or 0)

    def mark_published(self, ids: builtins.list[int], at: datetime | None = None) -> int:
        """Set published_at (default: now) on these rows where it is still NULL, in one write transaction; returns
        how many rows were marked (a row marked before keeps its first time)."""
        if not ids:
            return 0
        when = to_utc(at) if at is not None else datetime.now(timezone.utc)
        keys = sorted(set(ids))
        marked = 0
        with self._guard("write to"), self._writer.begin() as conn:
            for start in range(0, len(keys), IN_CHUNK):
                stmt = (update(Inspection).where(Inspection.id.in_(keys[start:start + IN_CHUNK]),
                                                 Inspection.published_at.is_(None)).values(published_at=when))
                marked += conn.execute(stmt).rowcount
        return marked
