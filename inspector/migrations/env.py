"""Alembic environment for the verdict log.

Programmatic use (what inspector.store does): the caller puts an open connection, already inside a
transaction, in `config.attributes["connection"]`; the migrations run on it and the caller commits.
CLI use (`alembic -x url=sqlite:///inspector.db upgrade head`, with `script_location = inspector:migrations`
in an alembic.ini): the URL comes from `-x url=...` or `sqlalchemy.url`; offline mode (`--sql`) prints SQL.
Logging is left to the application: fileConfig is never called.
The same migrations serve SQLite and PostgreSQL; on PostgreSQL an advisory lock taken inside the migration
transaction makes concurrent upgrades wait for each other.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from inspector.store import Base, Store, lock_for_migration

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """The database URL for CLI use: `-x url=...` first, then sqlalchemy.url."""
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=sqlite:///inspector.db or set sqlalchemy.url")
    return url


def run_on(connection: Connection) -> None:
    """Run the migrations on an open connection, holding the migration lock (PostgreSQL) until the commit."""
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      transactional_ddl=True)
    with context.begin_transaction():
        lock_for_migration(connection)
        context.run_migrations()


def run_offline() -> None:
    """Emit the migration SQL for a URL without connecting."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True,
                      transactional_ddl=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate the handed-over connection, or open the URL (with the store's PRAGMAs) and migrate it."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    with Store(_url(), migrate=False) as store, store.engine.connect() as conn:
        run_on(conn.execution_options(immediate=True))


if context.is_offline_mode():
    run_offline()
else:
    run_online()
