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
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
    and_,
    bindparam,
    case,
    cast,
    create_engine,
    event,
    extract,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column
from sqlalchemy.types import TypeDecorator

from inspector.errors import InspectorError

if TYPE_CHECKING:  # Alembic is imported only when a database needs migrating: it costs ~0.4 s at every start
    from alembic.config import Config

# ids and the columns that refer to them: 64 bits on both (PostgreSQL bigint, migration 0011; on SQLite the
# INTEGER PRIMARY KEY, 64 bits already, which must stay INTEGER to be the rowid)
ID = BigInteger().with_variant(Integer(), "sqlite")
SCRIPT_LOCATION = "inspector:migrations"
VERDICTS = ("ok", "defect", "rejected")
IN_CHUNK = 500  # max sha256 values per IN (...) list
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
CONNECT_TIMEOUT_S = 10  # PostgreSQL: seconds to wait for a server before giving up (libpq waits forever)
MAX_ID = 2**63 - 1  # the largest integer an id column holds (SQLite INTEGER, PostgreSQL bigint since 0011)
HEAD = "0013"  # the newest migration in inspector/migrations/versions (a test keeps the two in step)
DEFAULT_PRODUCT = "default"  # the product of a row recorded without one (the same as products.DEFAULT)
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


# the rows retention walks (migration 0008): an archived file not yet pruned
UNPRUNED = "pruned_at IS NULL AND archived_path IS NOT NULL"


class Inspection(Base):
    """One verdict: an image judged ok/defect, or a file rejected before judging."""

    __tablename__ = "inspections"
    __table_args__ = (
        UniqueConstraint("sha256", name="uq_inspections_sha256"),
        UniqueConstraint("source_key", name="uq_inspections_source_key"),
        CheckConstraint("(sha256 IS NULL) <> (source_key IS NULL)", name="identity"),
        CheckConstraint("verdict IN ('ok', 'defect', 'rejected')", name="verdict"),
        Index("ix_inspections_inspected_at_id", "inspected_at", "id"),  # the read indexes (0007)
        Index("ix_inspections_verdict_inspected_at_id", "verdict", "inspected_at", "id"),
        Index("ix_inspections_station_line_verdict_inspected_at", "station", "line", "verdict", "inspected_at"),
        Index("ix_inspections_verdict_id", "verdict", "id"),
        Index("ix_inspections_station_published_at_id", "station", "published_at", "id"),  # the outbox (0005)
        Index("ix_inspections_unpruned", "id", sqlite_where=text(UNPRUNED), postgresql_where=text(UNPRUNED)),  # 0008
        Index("ix_inspections_product_inspected_at_id", "product", "inspected_at", "id"),  # 0009
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
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
    peak_x: Mapped[float | None] = mapped_column(Float)  # a defect: where its map peaks, fraction of the width (0012)
    peak_y: Mapped[float | None] = mapped_column(Float)  # ... and of the height (0 = top); NULL for other verdicts
    pos_x: Mapped[float | None] = mapped_column(Float)  # a located part: how far right of the reference it lies,
    pos_y: Mapped[float | None] = mapped_column(Float)  # fraction of the width; ... below, of the height (0013)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # broker acknowledged it; NULL = in the outbox
    pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # retention deleted its file (retention.py)
    # the product whose profile judged it (0009; rows from before products: 'default', see products.py)
    product: Mapped[str] = mapped_column(String(64), server_default=text("'default'"))


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

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ID, ForeignKey("inspections.id"))
    decision: Mapped[str] = mapped_column(String(16))  # "defect" (confirmed) or "good" (a false alarm)
    note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(64))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HourCount(Base):
    """The parts of one UTC hour with the same station, line, product, verdict, reason and latest decision: how
    many, and the first and last inspected_at among them (migration 0010). Kept in the write transactions that
    record parts and decisions; bucket_counts sums it over whole hours."""

    __tablename__ = "hour_counts"

    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # UTC hours since 1970
    station: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[str] = mapped_column(String(64), primary_key=True)
    product: Mapped[str] = mapped_column(String(64), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)  # a rejection's reason; '' otherwise or none
    decision: Mapped[str] = mapped_column(String(16), primary_key=True)  # the latest decision; '' for none
    n: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ClaimRow(Base):
    """A station working on a file of a shared folder, until `expires_at` (then any station may take it over)."""

    __tablename__ = "claims"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the file's path in the folder
    station: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    """A sink (the webhook) is done with an inspection: delivered, or refused for good (migration 0006; the
    queries are in inspector/deliveries.py)."""

    __tablename__ = "deliveries"
    __table_args__ = (CheckConstraint("outcome IN ('delivered', 'refused')", name="outcome"),)

    sink: Mapped[str] = mapped_column(String(64), primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ID, ForeignKey("inspections.id"), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[int | None] = mapped_column(Integer)  # the HTTP status of a refusal
    detail: Mapped[str | None] = mapped_column(Text)


class DeliveryCursor(Base):
    """Where a sink's search for undelivered rows of one station, line and camera starts (migration 0006)."""

    __tablename__ = "delivery_cursors"

    sink: Mapped[str] = mapped_column(String(64), primary_key=True)
    station: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[str] = mapped_column(String(64), primary_key=True)
    camera: Mapped[str] = mapped_column(String(64), primary_key=True)
    floor_id: Mapped[int] = mapped_column(ID)  # every row of theirs with id <= floor_id is done or historic
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: whether this station got the file, and whose expired claim it took over."""

    got: bool
    holder: str | None = None  # the station holding it, when not got
    took_over: str | None = None  # the station whose expired claim was taken over


COLUMNS: tuple[str, ...] = tuple(c.key for c in Inspection.__table__.columns)
REVIEW_COLUMNS: tuple[str, ...] = tuple(c.key for c in Review.__table__.columns)
DECISIONS = ("defect", "good")
MAX_NOTE = 500  # characters of a review's note, from the review page or `inspector mark`
MAX_REVIEWER = 64  # the reviews.reviewer column


def reviewer_name(text: str | None) -> str | None:
    """A reviewer's name stripped of surrounding space, or None when empty, longer than MAX_REVIEWER or unprintable
    (from the review page or `inspector mark` alike)."""
    name = (text or "").strip()
    if not name or len(name) > MAX_REVIEWER or not name.isprintable():
        return None
    return name
STREAM_COLUMNS: tuple[str, ...] = (*COLUMNS, "review", "reviewer", "note", "reviewed_at", "decisions")  # Store.stream
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


def _product(row: dict[str, Any]) -> str:
    """A row's product: as given ("" = none could be told), the default product when the row names none."""
    return DEFAULT_PRODUCT if row.get("product") is None else row["product"]


HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
COUNT_KEY = ("hour", "station", "line", "product", "verdict", "reason", "decision")  # hour_counts' primary key
CountKey = tuple[int, str, str, str, str, str, str]
Deltas = dict[CountKey, list[Any]]  # hour_counts key -> [n to add, first inspected_at, last inspected_at]


def hour_of(at: datetime) -> int:
    """The UTC hour of an aware datetime, in hours since the epoch (exact: integer arithmetic on timedeltas)."""
    return (to_utc(at) - _EPOCH) // HOUR


def _count_key(row: Any, decision: str | None) -> CountKey:
    """The hour_counts key of a part (a mapping of its columns) whose latest decision is `decision`."""
    reason = (row["reason"] or "") if row["verdict"] == "rejected" else ""
    return (hour_of(row["inspected_at"]), row["station"], row["line"], _product(row), row["verdict"], reason,
            decision or "")


def _add_delta(deltas: Deltas, key: CountKey, n: int, at: datetime) -> None:
    """Add n parts inspected at `at` to the deltas of one hour_counts key."""
    entry = deltas.get(key)
    if entry is None:
        deltas[key] = [n, at, at]
    else:
        entry[0] += n
        entry[1], entry[2] = min(entry[1], at), max(entry[2], at)


def _no_newer_review() -> Any:
    """NOT EXISTS a later review of the same inspection as the outer Review row: that row is the latest decision
    (an anti-join on reviews (inspection_id, id))."""
    newer = aliased(Review, name="newer")
    return ~select(newer.id).where(newer.inspection_id == Review.inspection_id, newer.id > Review.id).exists()


def latest_reviews(first_id: int | None = None, last_id: int | None = None) -> Any:
    """A subquery: the newest review of each reviewed inspection (inspection_id, decision, reviewer, note,
    reviewed_at), found by an anti-join on reviews (inspection_id, id), never by grouping every review; with
    `first_id` (`last_id`), only those of inspections from (up to) that id (a range of the same index)."""
    stmt = select(Review.inspection_id, Review.decision, Review.reviewer, Review.note, Review.reviewed_at).where(
        _no_newer_review())
    if first_id is not None:
        stmt = stmt.where(Review.inspection_id >= first_id)
    if last_id is not None:
        stmt = stmt.where(Review.inspection_id <= last_id)
    return stmt.subquery("latest")


def latest_decision(inspection_id: Any) -> Any:
    """The latest decision on the inspection whose id is the column `inspection_id` (a correlated scalar subquery:
    one probe of reviews (inspection_id, id) per row), None when there is none."""
    return (select(Review.decision).where(Review.inspection_id == inspection_id).order_by(Review.id.desc())
            .limit(1).scalar_subquery())


def unreviewed(inspection_id: Any) -> Any:
    """No operator decision on the inspection `inspection_id` (a column) yet: an anti-join on reviews
    (inspection_id, id)."""
    return ~select(Review.id).where(Review.inspection_id == inspection_id).exists()


Key = tuple[datetime, int]  # (inspected_at, id): the review queue's order, newest first


@dataclass(frozen=True)
class Selection:
    """The inspections a read is about: verdict, inspected_at >= since, station, line, review state (None: any;
    "unreviewed": no decision yet; "defect" or "good": the latest decision) and product."""

    verdict: str | None = None
    since: datetime | None = None
    station: str | None = None
    line: str | None = None
    review: str | None = None
    product: str | None = None  # the product that judged the rows (issue 16); None: every product


def _product_terms(sel: Selection, col: Any = None) -> builtins.list[Any]:
    """The WHERE term of the selection's product (none when it selects every product); `col` wraps the column."""
    col = col or (lambda c: c)
    return [] if sel.product is None else [col(Inspection.product) == sel.product]


def _epoch_bucket(column: Any, width: int, dialect: str) -> Any:
    """The number of the `width`-second UTC bucket a datetime column falls in (floor(epoch seconds / width))."""
    seconds = literal(width, BigInteger)
    if dialect == "sqlite":  # naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff': the whole seconds only (SQLite's date
        # functions round to milliseconds: 09:59:59.999999 would become 10:00); integer division floors (>= 1970)
        return cast(func.strftime("%s", func.substr(column, 1, 19)), Integer) // seconds
    return cast(func.floor(extract("epoch", column) / seconds), BigInteger)


def _unindexed(column: Any) -> Any:
    """coalesce(column, column): the same value, but no index answers a comparison with it. A join that starts
    from the latest reviews (a few per cent of the rows) checks its time window on each reviewed row this way,
    instead of a planner starting from an index range over every inspection of the window."""
    return func.coalesce(column, column)


def _buckets(dialect: str) -> Any:
    """A CTE buckets(k, s, e) of the buckets :k0 to :k1 of :width seconds, each from its start (or :lo, the
    later) to its end (or :end, the earlier), made by the database: generate_series on PostgreSQL, a recursive
    CTE on SQLite (whose bounds are the text the column holds: 'YYYY-MM-DD HH:MM:SS' of a whole second sorts
    before every value of that second with its microseconds). The statement has one shape whatever the range, so
    it is compiled and planned once (a VALUES list of the buckets took longer to plan than to count)."""
    k0, k1, width = bindparam("k0", type_=BigInteger()), bindparam("k1", type_=BigInteger()), \
        bindparam("width", type_=BigInteger())
    lo, end = bindparam("lo", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())
    if dialect == "postgresql":
        k = func.generate_series(k0, k1).table_valued("k").render_derived()
        return select(k.c.k, func.greatest(func.to_timestamp(k.c.k * width), lo).label("s"),
                      func.least(func.to_timestamp((k.c.k + 1) * width), end).label("e")).cte("buckets")
    series = select(k0.label("k")).cte("series", recursive=True)
    series = series.union_all(select(series.c.k + 1).where(series.c.k < k1))
    return select(series.c.k, func.max(func.datetime(series.c.k * width, "unixepoch"), lo).label("s"),
                  func.min(func.datetime((series.c.k + 1) * width, "unixepoch"), end).label("e")).cte("buckets")


def _iso_utc(column: Any, dialect: str) -> Any:
    """A UTC datetime column as the text datetime.isoformat() gives for its aware value ("2026-11-30T14:05:09.5+
    00:00" style: microseconds only when not zero), NULL for NULL; built by the database."""
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff'
        clock = case((func.substr(column, 20) == ".000000", func.substr(column, 12, 8)), else_=func.substr(column, 12))
        return func.substr(column, 1, 10) + literal("T", Text) + clock + literal("+00:00", Text)
    utc = func.timezone("UTC", column)
    fraction = case((cast(extract("microseconds", utc), BigInteger) % 1_000_000 == 0, literal("", Text)),
                    else_=func.to_char(utc, ".US"))
    return func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS') + fraction + literal("+00:00", Text)


def _key_param(at: datetime) -> Any:
    """An inspected_at value as a bound parameter of the column's type (for row-value comparisons)."""
    return literal(at, UTCDateTime())


def _instant(seconds: int) -> datetime:
    """An aware UTC datetime from whole seconds since the epoch."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)


def _whole_hours(width: int, lo: datetime, hi: datetime) -> tuple[int, int] | None:
    """The UTC hours h0 <= h < h1 that lie wholly inside [lo, hi] (both included), when hour_counts may answer for
    them in buckets of `width` seconds: an hour or wider, and no bucket boundary inside an hour (a multiple of an
    hour, or one bucket over all of them). None otherwise, or when there is no whole hour."""
    if width < 3600:
        return None
    h0 = -((_EPOCH - to_utc(lo)) // HOUR)  # the first hour starting at or after lo
    h1 = (to_utc(hi) + timedelta(microseconds=1) - _EPOCH) // HOUR  # hours before h1 end by hi
    if h0 >= h1 or (width % 3600 and h0 * 3600 // width != (h1 * 3600 - 1) // width):
        return None
    return h0, h1


def _bucket(out: dict[int, dict[str, Any]], k: int) -> dict[str, Any]:
    """Bucket k of bucket_counts' result, added empty when missing."""
    if k not in out:
        out[k] = {"parts": 0, "first": None, "last": None, "defect": 0, "rejected": {}, "reviewed": {}}
    return out[k]


def _merge_bucket(out: dict[int, dict[str, Any]], k: int, add: dict[str, Any]) -> None:
    """Add the aggregates of one bucket to bucket k of `out`."""
    b = _bucket(out, k)
    b["parts"] += add["parts"]
    b["defect"] += add["defect"]
    for end, pick in (("first", min), ("last", max)):
        if add[end] is not None:
            b[end] = add[end] if b[end] is None else pick(b[end], add[end])
    for name in ("rejected", "reviewed"):
        for key, n in add[name].items():
            b[name][key] = b[name].get(key, 0) + n


BUCKETS_PER_QUERY = 250  # time buckets counted by one statement (then a probe skips a stretch without parts)
DRIFT_COLUMNS = (Inspection.id, Inspection.station, Inspection.profile_version, Inspection.verdict,
                 Inspection.reason, Inspection.detail, Inspection.exposure, Inspection.score, Inspection.inspected_at,
                 Inspection.product, Inspection.peak_x, Inspection.peak_y, Inspection.pos_x, Inspection.pos_y)


# ---------------------------------------------------------------------------------------------- store


def _outbox(station: Any, line: Any = None, camera: Any = None) -> list[Any]:
    """The WHERE terms of one station's (line's, camera's) unpublished rows: values, or bind parameters of a
    statement built once; no term for a line or camera that is None."""
    terms = [Inspection.station == station, Inspection.published_at.is_(None)]
    if line is not None:
        terms.append(Inspection.line == line)
    return terms if camera is None else [*terms, Inspection.camera == camera]


class _Statements:
    """The watcher's hot statements, built once per dialect: SQLAlchemy then reuses their compiled form and cache
    key instead of rebuilding them per batch (building them cost ~3 ms of CPU per one-row batch, measured)."""

    def __init__(self, dialect: str):
        table = Inspection.__table__
        self.record = (_INSERTS[dialect](table).on_conflict_do_nothing()
                       .returning(table.c.id, table.c.sha256, table.c.source_key))
        counts = HourCount.__table__
        upsert = _INSERTS[dialect](counts)
        least, greatest = (func.min, func.max) if dialect == "sqlite" else (func.least, func.greatest)
        self.add_counts = upsert.on_conflict_do_update(index_elements=list(COUNT_KEY), set_={
            "n": counts.c.n + upsert.excluded.n, "first_at": least(counts.c.first_at, upsert.excluded.first_at),
            "last_at": greatest(counts.c.last_at, upsert.excluded.last_at)})
        self._unpublished: dict[tuple[bool, bool], Any] = {}

    def unpublished(self, by_line: bool, by_camera: bool) -> Any:
        """SELECT of one station's unpublished rows after an id, in id order, with bind parameters station,
        after_id, limit (and line, camera when filtered by them)."""
        key = (by_line, by_camera)
        if key not in self._unpublished:
            terms = _outbox(bindparam("station"), bindparam("line") if by_line else None,
                            bindparam("camera") if by_camera else None)
            table = Inspection.__table__
            self._unpublished[key] = (select(table).where(*terms, table.c.id > bindparam("after_id"))
                                      .order_by(table.c.id).limit(bindparam("limit", type_=Integer)))
        return self._unpublished[key]


def database_file(url: str) -> Path | None:
    """The SQLite file a database URL names; None for PostgreSQL, in-memory and URI-style databases (DatabaseError
    for a URL that names no supported database: see resolve_url)."""
    parsed = make_url(resolve_url(url))
    return sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None


def shown_url(url: str) -> str:
    """A database as shown to people: a SQLite file's absolute path, else the URL with its password hidden."""
    path = database_file(url)
    return str(path.absolute()) if path is not None else make_url(url).render_as_string(hide_password=True)


def _known_revisions() -> set[str]:
    """The migration revisions this build ships ("0001" .. HEAD), as Alembic reads them."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def open_recorded(url: str, busy_timeout_ms: int = 30000) -> Store:
    """The store of a database watchers record into, for reading and reviews: never created nor migrated here
    (DatabaseError when its SQLite file is missing, it holds no schema, or another revision than HEAD)."""
    path = database_file(url)
    if path is not None and not path.exists():
        raise DatabaseError(f"no database at {path}: nothing has been recorded there; check the config, or record "
                            "parts first with `inspector watch`")
    store = Store(url, busy_timeout_ms=busy_timeout_ms, migrate=False)
    try:
        store.require_head()
    except BaseException:
        store.close()
        raise
    return store


class Store:
    """The verdict log on one database URL: migrations, batched inserts and the queries the service needs."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 30000, migrate: bool = True, pool_size: int = 5,
                 idle_in_transaction_ms: int = 0) -> None:
        """Create the engine (and the SQLite folder), check the database opens, and upgrade it when asked."""
        self.url = resolve_url(url)
        parsed = make_url(self.url)
        self.dialect: str = parsed.get_backend_name()
        self._shown = parsed.render_as_string(hide_password=True)
        # the SQLite file (None for PostgreSQL and in-memory databases)
        self.file: Path | None = sqlite_file(parsed) if self.dialect == "sqlite" else None
        self.create_missing = True  # may a connection create a missing SQLite file (see refuse_to_create)
        self.engine = self._create_engine(parsed, busy_timeout_ms, pool_size, idle_in_transaction_ms)
        self._writer = self.engine.execution_options(immediate=True)
        self._statements = _Statements(self.dialect)
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

    def _create_engine(self, parsed: URL, busy_timeout_ms: int, pool_size: int, idle_in_transaction_ms: int = 0
                       ) -> Engine:
        """The engine: on SQLite with its folder created and the connection events installed, on PostgreSQL
        with pre-ping, a connect timeout and, when asked (`idle_in_transaction_ms` > 0), a server that ends a
        session of ours left idle inside a transaction that long: a connection cut half-way through a write can
        leave the server holding its row locks (it never learns the client is gone), and the retry of the same
        verdicts would wait on them for ever (seen in tests/test_pg_outage.py through a TCP proxy)."""
        path = sqlite_file(parsed) if self.dialect == "sqlite" else None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = exc.strerror or _first_line(exc)
                raise DatabaseError(f"cannot open database {self._shown}: cannot create folder "
                                    f"{path.parent}: {reason}") from None
        connect_args: dict[str, Any] = {}
        libpq = self.dialect == "postgresql" and parsed.get_driver_name() in _LIBPQ_DRIVERS
        if libpq and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        if libpq and idle_in_transaction_ms > 0 and "options" not in parsed.query:
            connect_args["options"] = f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_ms)}"
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

    def require_head(self) -> None:
        """DatabaseError unless the database is at this build's schema (HEAD): for the commands that read and review
        what watchers recorded, which never create or migrate a database (found by an adversarial test: `list` on
        an empty PostgreSQL database created the schema, on an older one ran a migration that rewrites tables under
        an exclusive lock while stations were recording; `serve` started on a new, empty database and showed an
        empty queue)."""
        revision = self.revision()
        if revision == HEAD:
            return
        if revision is None:
            raise DatabaseError(f"database {self._shown} holds no inspections (no inspector schema): nothing has "
                                "been recorded there; check the config, or record parts first with `inspector watch`")
        newer = revision not in _known_revisions()
        raise DatabaseError(
            f"database {self._shown} is at schema revision {revision}, this inspector reads {HEAD}: "
            + ("it was written by a newer inspector" if newer else
               "stop the watchers and run `inspector db upgrade` (or restart them: a watcher upgrades it)"))

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
        """Insert a batch in one write transaction, with the new parts added to hour_counts; per row the new id, or
        None when its identity already exists (in the table, or earlier in the same batch)."""
        checked = [_check_row(row) for row in rows]
        if not checked:
            return []
        # one executemany INSERT ... ON CONFLICT DO NOTHING RETURNING: rows skipped by a conflict return nothing,
        # so results are matched back to the batch by identity (sha256 or source_key)
        stmt = self._statements.record
        params = [{c: row.get(c) for c in _INSERT_COLUMNS} | {"product": _product(row)}
                  for row in checked]
        with self._guard("write to"), self._writer.begin() as conn:
            inserted = {(r.sha256, r.source_key): r.id for r in conn.execute(stmt, params)}
            ids: list[int | None] = []
            deltas: Deltas = {}
            for row, values in zip(checked, params):
                ids.append(inserted.pop((row.get("sha256"), row.get("source_key")), None))  # pop: first copy only
                if ids[-1] is not None:
                    _add_delta(deltas, _count_key(values, None), 1, values["inspected_at"])
            self._add_counts(conn, deltas)
        return ids

    def _add_counts(self, conn: Connection, deltas: Deltas) -> None:
        """Add `deltas` to hour_counts in the caller's transaction: an upsert per key (INSERT .. ON CONFLICT DO
        UPDATE SET n = n + excluded.n, atomic on both databases), in key order, so that concurrent writers lock
        the rows they share in the same order."""
        if not deltas:
            return
        conn.execute(self._statements.add_counts, [dict(zip(COUNT_KEY, key), n=n, first_at=first, last_at=last)
                            for key, (n, first, last) in sorted(deltas.items())])

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

    def restore_archived(self, id: int, path: str, expected: str | None) -> bool:
        """A part whose file retention deleted came again and was archived at `path`: record it there and clear
        pruned_at, so that the record says what is on disk and the file goes again by the policy; only where the
        row still says it was pruned from `expected`. True when the row now says `path`."""
        was = Inspection.archived_path.is_(None) if expected is None else Inspection.archived_path == expected
        stmt = (update(Inspection).where(Inspection.id == id, Inspection.pruned_at.is_not(None), was)
                .values(archived_path=path, pruned_at=None))
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
             line: str | None = None, product: str | None = None) -> builtins.list[dict[str, Any]]:
        """Rows newest first (by id), optionally filtered by verdict, inspected_at >= since, and review state
        (`reviewed` = the latest decision, "defect" or "good"; `unreviewed` = no decision yet). Each row carries
        `review`, its latest decision or None."""
        sel = Selection(verdict, to_utc(since) if since is not None else None, station, line,
                        "unreviewed" if unreviewed else reviewed, product)
        stmt = self._with_review(sel).order_by(Inspection.id.desc())
        if sel.since is not None:  # bounds the newest-first walk by id to the rows of the window
            stmt = stmt.where(Inspection.id >= self._first_id_since(sel.since))
        if limit is not None:
            stmt = stmt.limit(limit)
        return self._reviewed_rows(stmt)

    def _with_review(self, sel: Selection) -> Any:
        """A select of Inspection and its latest decision (`review`) narrowed to the selection; a selection of a
        decision is read from the latest reviews (a few per cent of the rows) and joined to their inspections."""
        if sel.review in DECISIONS:
            latest = latest_reviews()
            stmt = (select(Inspection, latest.c.decision.label("review"))
                    .join(latest, latest.c.inspection_id == Inspection.id).where(latest.c.decision == sel.review))
            return self._narrow(stmt, replace(sel, review=None), indexed=False)
        return self._narrow(select(Inspection, latest_decision(Inspection.id).label("review")), sel)

    def _reviewed_rows(self, stmt: Any) -> builtins.list[dict[str, Any]]:
        """Run a select of (Inspection, review) and return the rows as dicts with `review`."""
        with self._guard("read"), Session(self.engine) as session:
            return [{**_as_dict(row), "review": decision} for row, decision in session.execute(stmt)]

    @staticmethod
    def _first_id_since(since: datetime) -> Any:
        """The smallest id among the rows inspected at or after `since` (NULL when there is none): a scalar
        subquery that reads the window's range of the index (inspected_at, id). min(coalesce(id, id)), since a
        plain min(id) lets SQLite walk the whole table in id order until the first row of the window."""
        return (select(func.min(_unindexed(Inspection.id))).where(Inspection.inspected_at >= since)
                .scalar_subquery())

    def _pairs(self, station: str | None, line: str | None) -> builtins.list[tuple[str, str] | None]:
        """The (station, line) pairs with rows that a station and/or line filter selects (their union is the
        filter; none: nothing matches); [None] without a filter."""
        if station is None and line is None:
            return [None]
        return [(s, ln) for s, ln in self.stations()
                if (station is None or s == station) and (line is None or ln == line)]

    @staticmethod
    def _pair_terms(pair: tuple[str, str] | None, col: Any = None) -> builtins.list[Any]:
        """The WHERE terms of one (station, line) pair (none for None): both columns compared, so the index
        (station, line, verdict, inspected_at) is searched by its prefix. `col` wraps each column (_unindexed)."""
        col = col or (lambda c: c)
        return [] if pair is None else [col(Inspection.station) == pair[0], col(Inspection.line) == pair[1]]

    def _place(self, station: str | None, line: str | None, col: Any = None) -> builtins.list[Any]:
        """The WHERE terms of a station and/or line filter in one list: the pair's columns when it selects one
        (station, line) pair, nothing-matches when none, else the filter as given."""
        pairs = self._pairs(station, line)
        if len(pairs) == 1:
            return self._pair_terms(pairs[0], col)
        if not pairs:
            return [false()]
        col = col or (lambda c: c)
        return ([col(Inspection.station) == station] * (station is not None)
                + [col(Inspection.line) == line] * (line is not None))

    def _narrow(self, stmt: Any, sel: Selection, *, review: bool = True, indexed: bool = True) -> Any:
        """`stmt` (a select over Inspection) narrowed to the selection (its review state too, unless `review` is
        False): "unreviewed" is an anti-join, a decision a correlated look-up, both on reviews (inspection_id, id).
        `indexed=False` (a join that starts from the latest reviews): on SQLite, whose planner has no statistics,
        the terms are checked on each joined row, never answered by an index of inspections; PostgreSQL's planner
        weighs the two ways itself."""
        col = _unindexed if not indexed and self.dialect == "sqlite" else (lambda c: c)
        if sel.verdict is not None:
            stmt = stmt.where(col(Inspection.verdict) == sel.verdict)
        if sel.since is not None:
            stmt = stmt.where(col(Inspection.inspected_at) >= to_utc(sel.since))
        stmt = stmt.where(*self._place(sel.station, sel.line, col), *_product_terms(sel, col))
        if review and sel.review == "unreviewed":
            stmt = stmt.where(unreviewed(Inspection.id))
        elif review and sel.review is not None:
            stmt = stmt.where(latest_decision(Inspection.id) == sel.review)
        return stmt

    def stations(self) -> builtins.list[tuple[str, str]]:
        """The (station, line) pairs that have recorded inspections, sorted: found by skipping through the index
        (station, line, ...) from one station to the next and, within a station, from one line to the next (one
        index probe per pair, however many rows there are)."""
        stations = select(Inspection.station).order_by(Inspection.station).limit(1)
        lines = select(Inspection.line).order_by(Inspection.line).limit(1)
        pairs: builtins.list[tuple[str, str]] = []
        with self._guard("read"), self.engine.connect() as conn:
            station = conn.execute(stations.where(Inspection.station >= "")).scalar()  # every name: a range
            while station is not None:
                line = conn.execute(lines.where(Inspection.station == station)).scalar()
                while line is not None:
                    pairs.append((station, line))
                    line = conn.execute(lines.where(Inspection.station == station, Inspection.line > line)).scalar()
                station = conn.execute(stations.where(Inspection.station > station)).scalar()
        return pairs

    # ------------------------------------------------------------------------------------------ the review queue

    def page(self, sel: Selection, *, start: Key | None = None, newer: bool = False,
             limit: int = 50) -> builtins.list[dict[str, Any]]:
        """Up to `limit` rows of the selection in the review queue's order, newest first by the key (inspected_at,
        id): from `start` on (that key included; None: from the newest), or with `newer` the rows just newer than
        `start`, nearest first (the page before, read backwards). A key range of an index, never an OFFSET. Each
        row carries `review`, its latest decision."""
        key = tuple_(Inspection.inspected_at, Inspection.id)
        stmt = self._with_review(sel)
        if start is not None:
            bound = tuple_(_key_param(start[0]), start[1])
            stmt = stmt.where(key > bound if newer else key <= bound)
        if newer:
            stmt = stmt.order_by(Inspection.inspected_at.asc(), Inspection.id.asc())
        else:
            stmt = stmt.order_by(Inspection.inspected_at.desc(), Inspection.id.desc())
        return self._reviewed_rows(stmt.limit(limit))

    def key(self, id: int) -> Key | None:
        """The queue key (inspected_at, id) of inspection `id`, or None when there is no such row."""
        with self._guard("read"), self.engine.connect() as conn:
            at = conn.execute(select(Inspection.inspected_at).where(Inspection.id == id)).scalar()
        return None if at is None else (at, id)

    def count_newer(self, sel: Selection, start: Key, cap: int) -> int:
        """How many rows of the selection come before the key `start` in the queue (are newer), counting at most
        `cap` of them."""
        newer = self._narrow(select(Inspection.id), sel).where(
            tuple_(Inspection.inspected_at, Inspection.id) > tuple_(_key_param(start[0]), start[1])).limit(cap)
        with self._guard("read"), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(newer.subquery())).scalar() or 0)

    def review_counts(self, sel: Selection) -> dict[str, int]:
        """How many rows the selection holds, its review state left aside ("all"), and of them "unreviewed",
        "defect" and "good" (the latest decision): a count over an index range, and the latest reviews joined to
        their inspections (a few per cent of the rows)."""
        total = self._narrow(select(func.count()).select_from(Inspection), sel, review=False)
        counts = dict.fromkeys(("all", "unreviewed", *DECISIONS), 0)
        with self._guard("read"), self._snapshot() as conn:
            latest = latest_reviews(self._window_first_id(conn, sel.since))
            decided = self._narrow(select(latest.c.decision, func.count()).select_from(latest)
                                   .join(Inspection, Inspection.id == latest.c.inspection_id)
                                   .group_by(latest.c.decision), sel, review=False, indexed=False)
            counts["all"] = int(conn.execute(total).scalar() or 0)
            for decision, n in conn.execute(decided):
                counts[decision] = int(n)
        counts["unreviewed"] = counts["all"] - sum(counts[d] for d in DECISIONS)
        return counts

    def _window_first_id(self, conn: Connection, since: datetime | None) -> int | None:
        """The smallest id among the rows inspected at or after `since` (every row of the window has an id at least
        this, so a walk over the latest reviews may start at it), or None when no bound is worth finding: no
        `since`, a window that starts at or before the log's first row (finding it would read the whole index of
        inspected_at for nothing), or one without rows."""
        if since is None:
            return None
        first = conn.execute(select(func.min(Inspection.inspected_at))).scalar()
        if first is None or to_utc(since) <= first:
            return None
        return conn.execute(select(self._first_id_since(to_utc(since)))).scalar()

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A connection in a read transaction that sees one snapshot for all its statements (REPEATABLE READ on
        PostgreSQL; a SQLite read transaction does so from its first read on). On PostgreSQL without JIT
        compilation for that transaction: its statements are index look-ups and counts, whose large cost estimates
        at millions of rows start a compilation that takes longer than it saves (the latest reviews of 10 million
        rows joined to their parts: 1.0 s with JIT, 0.48 s without)."""
        options = {"isolation_level": "REPEATABLE READ"} if self.dialect == "postgresql" else {}
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL jit = off")
            yield conn

    # ------------------------------------------------------------------------------------------ counts per time bucket

    def time_span(self, sel: Selection) -> tuple[datetime, datetime] | None:
        """The first and last inspected_at among the selection's rows (its station, line and since), or None when
        it has none: index probes, per (station, line, verdict) when a place is selected."""
        terms = self._range_terms(sel)
        lows, highs = [], []
        with self._guard("read"), self._snapshot() as conn:
            for where in terms:
                low, high = conn.execute(select(func.min(Inspection.inspected_at)).where(*where)).scalar(), \
                    conn.execute(select(func.max(Inspection.inspected_at)).where(*where)).scalar()
                lows += [low] if low is not None else []
                highs += [high] if high is not None else []
        return (min(lows), max(highs)) if lows else None

    def _range_terms(self, sel: Selection) -> builtins.list[builtins.list[Any]]:
        """WHERE term lists whose union is the selection's rows (station, line, since; verdict and review state
        ignored), each answerable by an index range on inspected_at: one list without a place, else one per
        (station, line, verdict)."""
        since = [Inspection.inspected_at >= to_utc(sel.since)] if sel.since is not None else []
        since += _product_terms(sel)
        if sel.station is None and sel.line is None:
            return [since]
        return [[*self._pair_terms(pair), Inspection.verdict == v, *since]
                for pair in self._pairs(sel.station, sel.line) for v in VERDICTS]

    def bucket_counts(self, sel: Selection, width: int, lo: datetime, hi: datetime,
                      counts: bool = True) -> dict[int, dict[str, Any]]:
        """Aggregates of the selection's rows (its station, line and product; inspected from `lo` to `hi`, both
        included) per UTC time bucket of `width` seconds, bucket k holding [k * width, (k + 1) * width) seconds
        since the epoch; only buckets with rows. Per bucket: `parts`, `first` and `last` (inspected_at), `defect`,
        `rejected` ({reason: n}) and `reviewed` ({(verdict, latest decision): n}); without `counts`, only
        `defect` and `reviewed` (parts, first and last stay 0 and None, rejected empty).

        The whole UTC hours of the window, when the buckets are an hour or wider (and no bucket boundary cuts an
        hour), are summed from hour_counts (a row per hour and kind of part, whatever the number of parts); the
        rest (the partial hours at the window's edges, or every row for buckets narrower than an hour) is counted
        from the rows: parts, first, last and defects as index ranges per bucket, rejections and reviews grouped
        by the bucket number. Every statement reads the same snapshot."""
        out: dict[int, dict[str, Any]] = {}
        hours = _whole_hours(width, lo, hi)
        with self._guard("read"), self._snapshot() as conn:
            if hours is None:
                self._row_counts(conn, sel, width, lo, hi, counts, out)
                return out
            self._hour_counts(conn, sel, width, hours, counts, out)
            edges = ((lo, _instant(hours[0] * 3600) - timedelta(microseconds=1)), (_instant(hours[1] * 3600), hi))
            for a, b in edges:
                if a <= b:
                    self._row_counts(conn, sel, width, a, b, counts, out)
        return out

    @staticmethod
    def _hour_counts(conn: Connection, sel: Selection, width: int, hours: tuple[int, int], counts: bool,
                     out: dict[int, dict[str, Any]]) -> None:
        """Add the selection's parts of the UTC hours hours[0] <= h < hours[1] (each inside one bucket of `width`)
        to the buckets `out` from hour_counts: one statement grouped by bucket, verdict, reason and decision. A
        bucket is added when it holds parts (without `counts`: defects or reviewed parts); its first and last are
        taken over every row of its hours, those whose parts have moved to another decision included (they are
        the times of parts still in those hours)."""
        t = HourCount.__table__.c
        k = (t.hour * literal(3600, BigInteger)) // literal(width, BigInteger)
        where = [t.hour >= hours[0], t.hour < hours[1]]
        where += [t.station == sel.station] * (sel.station is not None) + [t.line == sel.line] * (sel.line is not None)
        where += [t.product == sel.product] * (sel.product is not None)
        if not counts:
            where.append(or_(t.verdict == "defect", t.decision != ""))
        stmt = (select(k.label("k"), t.verdict, t.reason, t.decision, func.sum(t.n), func.min(t.first_at),
                       func.max(t.last_at)).where(*where).group_by(k, t.verdict, t.reason, t.decision))
        found: dict[int, dict[str, Any]] = {}
        for key, verdict, reason, decision, n, first, last in conn.execute(stmt):
            b, n = _bucket(found, int(key)), int(n)
            if counts:
                b["parts"] += n
                b["first"] = first if b["first"] is None else min(b["first"], first)
                b["last"] = last if b["last"] is None else max(b["last"], last)
                if verdict == "rejected" and n:
                    b["rejected"][reason or "unknown"] = b["rejected"].get(reason or "unknown", 0) + n
            b["defect"] += n if verdict == "defect" else 0
            if decision and n:
                b["reviewed"][(verdict, decision)] = b["reviewed"].get((verdict, decision), 0) + n
        for key, b in found.items():
            if b["parts"] or b["defect"] or b["reviewed"]:
                _merge_bucket(out, key, b)

    def _row_counts(self, conn: Connection, sel: Selection, width: int, lo: datetime, hi: datetime, counts: bool,
                    out: dict[int, dict[str, Any]]) -> None:
        """Add the selection's rows inspected from `lo` to `hi` to the buckets `out`, counted from the rows: parts,
        first, last and defects as index ranges per bucket (no row leaves the database, nothing is sorted);
        rejections and reviews (a few per cent of the rows) grouped by the bucket number."""
        ranges = self._bucket_ranges(sel, counts)
        first_k, last_k = math.floor(lo.timestamp() / width), math.floor(hi.timestamp() / width)
        number = _epoch_bucket(Inspection.inspected_at, width, self.dialect).label("k")
        chunk: int | None = first_k
        while chunk is not None and chunk <= last_k:
            ks = range(chunk, min(chunk + BUCKETS_PER_QUERY, last_k + 1))
            for k, adds, n, first, last in self._range_counts(conn, ks, width, lo, hi, ranges):
                b = _bucket(out, k)
                for key in adds:
                    b[key] += n
                if first is not None:
                    b["first"] = first if b["first"] is None else min(b["first"], first)
                    b["last"] = last if b["last"] is None else max(b["last"], last)
            chunk = self._next_bucket(conn, ranges, width, ks.stop)  # over a stretch without parts
        bounds = self._review_bounds(conn, lo, hi)  # reviews of parts outside the window are not walked
        for pair in self._pairs(sel.station, sel.line):
            place = self._pair_terms(pair) + _product_terms(sel)
            rejected = (select(number, Inspection.reason, func.count())
                        .where(Inspection.verdict == "rejected", Inspection.inspected_at >= lo,
                               Inspection.inspected_at <= hi, *place).group_by(number, Inspection.reason))
            for k, reason, n in conn.execute(rejected) if counts else ():
                reasons = _bucket(out, int(k))["rejected"]
                reasons[reason or "unknown"] = reasons.get(reason or "unknown", 0) + int(n)
            for k, verdict, decision, n in conn.execute(
                    self._reviews_by_bucket(width, lo, hi, pair, bounds, sel.product)) if bounds else ():
                counted = _bucket(out, int(k))["reviewed"]
                counted[(verdict, decision)] = counted.get((verdict, decision), 0) + int(n)

    def _review_bounds(self, conn: Connection, lo: datetime, hi: datetime) -> tuple[int | None, int | None] | None:
        """The first and last inspection ids (None: unbounded) between which the parts inspected from `lo` to `hi`
        lie, for the walk over the latest reviews; None when there are none. A window of at most an hour (an edge of
        whole hours) is bounded on both sides by one read of its range of the index (inspected_at, id); a longer
        one below, by _window_first_id."""
        if hi - lo > HOUR:
            return self._window_first_id(conn, lo), None
        ids = _unindexed(Inspection.id)
        first, last = conn.execute(select(func.min(ids), func.max(ids)).where(
            Inspection.inspected_at >= lo, Inspection.inspected_at <= hi)).one()
        return None if first is None else (first, last)

    def _reviews_by_bucket(self, width: int, lo: datetime, hi: datetime, pair: tuple[str, str] | None,
                           ids: tuple[int | None, int | None] = (None, None), product: str | None = None) -> Any:
        """(bucket number, verdict, latest decision, n) of the reviewed rows inspected from `lo` to `hi` (of one
        (station, line) pair, unless None):
        a walk over the latest reviews (a few per cent of the rows; of the inspections from ids[0] to ids[1], those
        given: the window's ids, see _review_bounds), each joined to its inspection by id. SQLite
        checks the window on each joined row (see _unindexed); PostgreSQL gets a LATERAL look-up per review, since
        its planner would otherwise hash the window's whole range of an index."""
        latest = latest_reviews(*ids)
        if self.dialect == "sqlite":
            at = _unindexed(Inspection.inspected_at)
            number = _epoch_bucket(Inspection.inspected_at, width, self.dialect)
            place = self._pair_terms(pair, _unindexed) + _product_terms(Selection(product=product), _unindexed)
            return (select(number, Inspection.verdict, latest.c.decision, func.count()).select_from(latest)
                    .join(Inspection, Inspection.id == latest.c.inspection_id).where(at >= lo, at <= hi, *place)
                    .group_by(number, Inspection.verdict, latest.c.decision))
        inspection = (select(Inspection.inspected_at, Inspection.verdict)
                      .where(Inspection.id == latest.c.inspection_id, Inspection.inspected_at >= lo,
                             Inspection.inspected_at <= hi, *self._pair_terms(pair),
                             *_product_terms(Selection(product=product))).limit(1).lateral("inspection"))
        number = _epoch_bucket(inspection.c.inspected_at, width, self.dialect)
        return (select(number, inspection.c.verdict, latest.c.decision, func.count()).select_from(latest)
                .join(inspection, true()).group_by(number, inspection.c.verdict, latest.c.decision))

    def _bucket_ranges(self, sel: Selection,
                       counts: bool = True) -> builtins.list[tuple[builtins.list[Any], tuple[str, ...], bool]]:
        """What bucket_counts counts per bucket as index ranges: (WHERE terms, the counts each row adds to, whether
        first and last are wanted). Without a place: every row (index (inspected_at, id)) and the defects (index
        (verdict, inspected_at, id)); with one: each (station, line, verdict) of it (index (station, line, verdict,
        inspected_at)). Without `counts`, only the defects."""
        product = _product_terms(sel)
        if sel.station is None and sel.line is None:
            every = [(product, ("parts",), True)] if counts else []
            return [*every, ([Inspection.verdict == "defect", *product], ("defect",), False)]
        adds = {"ok": ("parts",), "defect": ("parts", "defect"), "rejected": ("parts",)} if counts else \
            {"defect": ("defect",)}
        return [([*self._pair_terms(pair), Inspection.verdict == v, *product], adds[v], counts)
                for pair in self._pairs(sel.station, sel.line) for v in adds]

    @staticmethod
    def _next_bucket(conn: Connection, ranges: builtins.list[tuple[builtins.list[Any], tuple[str, ...], bool]],
                     width: int, k: int) -> int | None:
        """The first bucket from k on that holds a row of `ranges` (one index probe per range), None when none
        does: the buckets of a stretch without parts (a line stopped for weeks) are never counted one by one."""
        at = _instant(k * width)
        found = [conn.execute(select(func.min(Inspection.inspected_at)).where(*where, Inspection.inspected_at >= at))
                 .scalar() for where, _adds, _ends in ranges]
        found = [f for f in found if f is not None]
        return math.floor(min(found).timestamp() / width) if found else None

    @staticmethod
    def _range_counts(conn: Connection, ks: range, width: int, lo: datetime, hi: datetime,
                      ranges: builtins.list[tuple[builtins.list[Any], tuple[str, ...], bool]]
                      ) -> Iterator[tuple[int, tuple[str, ...], int, Any, Any]]:
        """(k, adds, rows, first, last) for the buckets `ks` that have rows from `lo` to `hi`, per range of
        _bucket_ranges: one statement over the buckets (_buckets), each counted by correlated subqueries over an
        index range (its two bounds are the only ones on inspected_at: a third would become the range's end)."""
        params = {"k0": ks.start, "k1": ks.stop - 1, "width": width, "lo": lo, "end": hi + timedelta(microseconds=1)}
        b = _buckets(conn.dialect.name)
        for where, adds, ends in ranges:
            inside = (*where, Inspection.inspected_at >= b.c.s, Inspection.inspected_at < b.c.e)
            columns = [select(func.count()).select_from(Inspection).where(*inside).scalar_subquery()]
            if ends:
                columns += [select(func.min(Inspection.inspected_at)).where(*inside).scalar_subquery(),
                            select(func.max(Inspection.inspected_at)).where(*inside).scalar_subquery()]
            for k, count, *span in conn.execute(select(b.c.k, *columns), params):
                if count:
                    yield int(k), adds, int(count), *(span or (None, None))

    # ------------------------------------------------------------------------------------------ streaming reads

    @contextmanager
    def stream(self, sel: Selection, columns: Sequence[str] = (), batch: int = 1000) -> Iterator[Iterator[Any]]:
        """Every row of the selection (its review state ignored), oldest first by id, as sequences of `columns`
        (names from STREAM_COLUMNS; all of them by default): the inspection's columns, its latest decision joined
        in SQL (`review`, `reviewer`, `note`, `reviewed_at`) and its number of decisions (`decisions`). Times come
        as ISO 8601 text in UTC, written by the database (what datetime.isoformat() gives for them: a CSV export
        spends its time on rows, not on parsing and printing dates). Read `batch` rows at a time through a
        server-side cursor (PostgreSQL) or SQLite's stepping cursor: memory stays flat whatever the size."""
        r = aliased(Review, name="r")
        newer = aliased(Review, name="newer")
        latest = and_(r.inspection_id == Inspection.id,
                      ~select(newer.id).where(newer.inspection_id == r.inspection_id, newer.id > r.id).exists())
        decisions = case((r.id.is_(None), 0), else_=select(func.count()).select_from(Review)
                         .where(Review.inspection_id == Inspection.id).scalar_subquery())
        joined = {**Inspection.__table__.columns, "review": r.decision, "reviewer": r.reviewer, "note": r.note,
                  "reviewed_at": r.reviewed_at, "decisions": decisions}
        times = {name for name, col in joined.items() if isinstance(getattr(col, "type", None), UTCDateTime)}
        stmt = (select(*((_iso_utc(joined[name], self.dialect) if name in times else joined[name]).label(name)
                         for name in columns or STREAM_COLUMNS)).select_from(Inspection).outerjoin(r, latest))
        stmt = self._narrow(stmt, replace(sel, review=None))
        if sel.since is not None:
            stmt = stmt.where(Inspection.id >= self._first_id_since(to_utc(sel.since)))
        with self._guard("read"), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(
                stmt.order_by(Inspection.id))
            yield iter(result)  # Row objects: sequences in the order of `columns`

    def drift_rows(self, sel: Selection, window: int) -> builtins.list[dict[str, Any]]:
        """Each station's newest `window` rows of the selection (its station, line and since), oldest first by id,
        with the columns the drift replay reads."""
        stations = sorted({s for s, _ in self.stations() if sel.station is None or s == sel.station})
        rows: builtins.list[dict[str, Any]] = []
        for station in stations:
            rows += self.newest(Selection(since=sel.since, station=station, line=sel.line, product=sel.product),
                                DRIFT_COLUMNS, window)
        return sorted(rows, key=lambda r: r["id"])

    def newest(self, sel: Selection, columns: Sequence[Any], limit: int, *where: Any,
               verdicts: Sequence[str] | None = None) -> builtins.list[dict[str, Any]]:
        """The newest `limit` rows of the selection (its review state ignored) that meet `where` (terms on columns
        without an index) and, with `verdicts`, have one of those; newest first by id, with only `columns`. A walk
        down the ids that stops after `limit` rows, bounded below by the window's first id. SQLite, whose planner
        has no statistics, checks the filters on each row: answered by an index, they would have it sort every
        matching row first."""
        stmt = self._narrow(select(*columns).where(*where), replace(sel, review=None), indexed=False)
        if verdicts is not None:
            col = _unindexed if self.dialect == "sqlite" else (lambda c: c)
            stmt = stmt.where(col(Inspection.verdict).in_(verdicts))
        if sel.since is not None:
            stmt = stmt.where(Inspection.id >= self._first_id_since(to_utc(sel.since)))
        stmt = stmt.order_by(Inspection.id.desc()).limit(limit)
        with self._guard("read"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    # ------------------------------------------------------------------------------------------ reviews

    def add_review(self, inspection_id: int, decision: str, reviewer: str, note: str | None = None,
                   at: datetime | None = None) -> dict[str, Any]:
        """Add an operator decision ("defect" or "good") to inspection `inspection_id`; KeyError when there is
        no such inspection, ValueError for another decision. Earlier decisions are kept."""
        values = {"inspection_id": inspection_id, "decision": decision, "note": note or None,
                  "reviewer": reviewer, "reviewed_at": to_utc(at) if at else datetime.now(timezone.utc)}
        return {"id": self.add_reviews([values])[0], **values}

    def add_reviews(self, reviews: builtins.list[dict[str, Any]]) -> builtins.list[int]:
        """Add operator decisions (dicts of inspection_id, decision, reviewer, note, reviewed_at: aware) in one write
        transaction, each part's newest one becoming its latest decision in hour_counts; their ids, in order.
        KeyError when an inspection does not exist, ValueError for a decision other than "defect" or "good"."""
        for review in reviews:
            if review["decision"] not in DECISIONS:
                raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {review['decision']!r}")
            to_utc(review["reviewed_at"])
        if not reviews:
            return []
        table = Review.__table__
        values = [{c: review.get(c) for c in REVIEW_COLUMNS if c != "id"} for review in reviews]
        with self._guard("write to"), self._writer.begin() as conn:
            parts = self._decided_parts(conn, {v["inspection_id"] for v in values})
            missing = {v["inspection_id"] for v in values} - set(parts)
            if missing:
                raise KeyError(min(missing))
            ids = list(conn.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True),
                                    values).scalars())
            newest: dict[int, tuple[int, str]] = {}
            for id_, v in zip(ids, values):
                newest[v["inspection_id"]] = max(newest.get(v["inspection_id"], (id_, v["decision"])),
                                                 (id_, v["decision"]))
            self._move_decisions(conn, [(parts[i], decision) for i, (_id, decision) in newest.items()])
        return ids

    def _decided_parts(self, conn: Connection, ids: set[int]) -> dict[int, dict[str, Any]]:
        """The counted columns of the inspections `ids` with their latest decision (`decision`, None for none),
        their rows locked first (PostgreSQL: FOR UPDATE, in id order; a SQLite write transaction already excludes
        every other writer), so no other decision on them lands between this read and the caller's commit."""
        columns = (Inspection.id, Inspection.inspected_at, Inspection.station, Inspection.line, Inspection.product,
                   Inspection.verdict, Inspection.reason)
        keys = sorted(ids)
        parts: dict[int, dict[str, Any]] = {}
        for start in range(0, len(keys), IN_CHUNK):
            chunk = keys[start:start + IN_CHUNK]
            conn.execute(select(Inspection.id).where(Inspection.id.in_(chunk)).order_by(Inspection.id)
                         .with_for_update()).all()
            # a statement of its own after the lock: its snapshot (READ COMMITTED) holds a decision committed
            # by a writer the lock waited for
            for row in conn.execute(select(*columns, latest_decision(Inspection.id).label("decision"))
                                    .where(Inspection.id.in_(chunk))).mappings():
                parts[row["id"]] = dict(row)
        return parts

    def _move_decisions(self, conn: Connection, moves: builtins.list[tuple[dict[str, Any], str | None]]) -> None:
        """Move each part (as _decided_parts gives it) from its current latest decision's hour_counts row to that
        of its new latest decision (None: no decision any more), in the caller's transaction."""
        deltas: Deltas = {}
        for part, decision in moves:
            if decision != part["decision"]:
                _add_delta(deltas, _count_key(part, part["decision"]), -1, part["inspected_at"])
                _add_delta(deltas, _count_key(part, decision), 1, part["inspected_at"])
        self._add_counts(conn, deltas)

    def undo_review(self, review_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Delete review `review_id` when it still is the newest decision on its part, the part moved back to the
        decision before it in hour_counts, in one write transaction; returns (the deleted review, the decision that
        counts now or None). KeyError when there is no such review, ValueError when its part was reviewed again
        since."""
        table = Review.__table__
        with self._guard("write to"), self._writer.begin() as conn:
            part_id = conn.execute(select(table.c.inspection_id).where(table.c.id == review_id)).scalar()
            if part_id is None:
                raise KeyError(review_id)
            part = self._decided_parts(conn, {part_id})[part_id]
            found = conn.execute(select(table).where(table.c.id == review_id)).mappings().first()
            if found is None:  # undone by another writer while this one waited for the lock
                raise KeyError(review_id)
            newest = conn.execute(select(func.max(table.c.id)).where(table.c.inspection_id == part_id)).scalar()
            if newest != review_id:
                raise ValueError(f"part #{part_id} was reviewed again since; nothing was undone")
            conn.execute(table.delete().where(table.c.id == review_id))
            before = conn.execute(select(table).where(table.c.inspection_id == part_id)
                                  .order_by(table.c.id.desc()).limit(1)).mappings().first()
            self._move_decisions(conn, [(part, before["decision"] if before is not None else None)])
        return dict(found), dict(before) if before is not None else None

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

    def unpublished(self, station: str, line: str | None = None, *, camera: str | None = None, after_id: int = 0,
                    limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The oldest rows of `station` (and `line`, `camera`) not yet published, with id > after_id, in id order,
        at most `limit`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        stmt = self._statements.unpublished(line is not None, camera is not None)
        values = {"station": station, "line": line, "camera": camera, "after_id": after_id, "limit": limit}
        with self._guard("read"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt, values)]

    def database_id(self) -> str:
        """The random id this database was given when it was created (DatabaseError when it has none)."""
        with self._guard("read"), Session(self.engine) as session:
            found = session.scalar(select(DatabaseIdentity.uuid).where(DatabaseIdentity.id == 1))
        if not found:
            raise DatabaseError(f"database {self._shown} has no identity row (run `inspector db upgrade`)")
        return str(found)

    def count_unpublished(self, station: str, line: str | None = None, camera: str | None = None) -> int:
        """How many rows of `station` (and `line`, `camera`) are not yet published."""
        stmt = select(func.count()).select_from(Inspection).where(*_outbox(station, line, camera))
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
