"""Indexes for reads that do not grow with the log (issue 15, item 1).

* (inspected_at, id) replaces (inspected_at): the review queue with every verdict pages by the key
  (inspected_at, id), newest first, and `inspector stats` counts each time bucket as an index range; PostgreSQL
  needs the id in the index for both (SQLite appends the rowid to every index anyway).
* (verdict, inspected_at, id): the queue of one verdict by key, the defect and rejected counts per time bucket,
  `list --verdict V --since T`.
* (station, line, verdict, inspected_at): the same counts for one station or line, and the (station, line)
  pairs the filter menus list, found by skipping through the index instead of reading the table.

"Unreviewed" is an anti-join on reviews (inspection_id, id), which migration 0002 created.

Building them reads the table once: on PostgreSQL writers wait while it runs (about a minute per 10 million rows
here), so run `inspector db upgrade` when the line is quiet.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 09:00:00

"""
from typing import Sequence, Union

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

NEW = {
    "ix_inspections_inspected_at_id": ["inspected_at", "id"],
    "ix_inspections_verdict_inspected_at_id": ["verdict", "inspected_at", "id"],
    "ix_inspections_station_line_verdict_inspected_at": ["station", "line", "verdict", "inspected_at"],
}
OLD = {"ix_inspections_inspected_at": ["inspected_at"]}


def upgrade() -> None:
    """Create the read indexes, then drop the (inspected_at) index the first one replaces."""
    for name, columns in NEW.items():
        op.create_index(name, "inspections", columns)
    for name in OLD:
        op.drop_index(name, table_name="inspections")


def downgrade() -> None:
    """Put back the (inspected_at) index and drop the read indexes."""
    for name, columns in OLD.items():
        op.create_index(name, "inspections", columns)
    for name in NEW:
        op.drop_index(name, table_name="inspections")
