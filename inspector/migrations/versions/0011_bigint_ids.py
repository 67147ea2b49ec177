"""Widen the ids to 64 bits on PostgreSQL: inspection and review ids, and the columns that refer to them.

PostgreSQL's `integer` (what 0001, 0002 and 0006 created there, with `integer` sequences behind the ids) ends at
2,147,483,647: a line of several stations sharing one database at 100 parts a second gets there in eight months,
and from then on every part would fail to be recorded. SQLite's INTEGER PRIMARY KEY is 64 bits already, so nothing
changes there. On PostgreSQL the columns become `bigint` and the id sequences `AS bigint` (their largest value
follows: it was the old type's largest). The ALTERs rewrite the tables (each once) under an exclusive lock: on a
large database run `inspector db upgrade` while the stations' watchers are stopped (a watcher started on the new
version would otherwise migrate at its start while the others wait, degraded).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-18 09:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: Union[str, Sequence[str], None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = {"inspections": ("id",), "reviews": ("id", "inspection_id"), "deliveries": ("inspection_id",),
           "delivery_cursors": ("floor_id",)}
SEQUENCES = (("inspections", "id"), ("reviews", "id"))


def _widen(sql_type: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite: INTEGER is 64 bits, and its ids are the rowid
    for table, columns in COLUMNS.items():  # one ALTER TABLE each: a table is rewritten once, not per column
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {sql_type}" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")
    for table, column in SEQUENCES:
        name = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": column}).scalar()
        if name:
            op.execute(f"ALTER SEQUENCE {name} AS {sql_type}")


def upgrade() -> None:
    """PostgreSQL: ids and the columns that refer to them become bigint, the id sequences too."""
    _widen("bigint")


def downgrade() -> None:
    """Back to integer (fails where an id has grown past 2,147,483,647)."""
    _widen("integer")
