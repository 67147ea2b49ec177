"""Add inspections.pruned_at: when retention deleted the part's archived file (issue 15, item 2).

The row stays (the verdict, its review history and its counts are kept for ever); only its file, and its overlay,
go. NULL = the file is still where archived_path says (or was never archived).

A partial index on id, over the rows whose file is archived and not yet pruned, is what `inspector prune` and the
watcher's daily prune walk in id order: its size is the archive's, not the log's, so a daily run reads the rows
that may have a file to delete (the newest days, and the parts kept for ever), never the millions already pruned.
Both SQLite and PostgreSQL support partial indexes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-15 09:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INDEX = "ix_inspections_unpruned"
WHERE = "pruned_at IS NULL AND archived_path IS NOT NULL"


def upgrade() -> None:
    """Add the nullable pruned_at column (a plain ADD COLUMN: no table copy) and the partial index."""
    op.add_column("inspections", sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(INDEX, "inspections", ["id"], sqlite_where=sa.text(WHERE), postgresql_where=sa.text(WHERE))


def downgrade() -> None:
    """Drop the index and the column: a plain ALTER TABLE DROP COLUMN (SQLite 3.35 and later), never a table copy,
    which SQLite refuses while other tables (the webhook's deliveries, 0006) still reference inspections' rows."""
    op.drop_index(INDEX, table_name="inspections")
    op.drop_column("inspections", "pruned_at")
