"""Add inspections.published_at: the outbox of the MQTT publisher (issue 13).

A verdict row is committed first (published_at NULL); the publisher sends the unpublished rows of its station
in id order and sets published_at once the broker has acknowledged them. The index (station, published_at, id)
makes "the oldest unpublished rows of this station" an index range, however long the table.

It also gives the database a random identity (table database_identity, one row): inspection ids start again at
1 in a database created anew or restored from a backup, so a consumer drops a repeated verdict by (database_id,
result_id), never by result_id alone.

Rows recorded before this migration count as published (published_at = the time of the migration): they
predate the outbox, and a line controller has no use for a flood of old verdicts at the first start. Only
rows recorded from now on are sent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 09:00:00

"""
import uuid
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INDEX = "ix_inspections_station_published_at_id"


def upgrade() -> None:
    """Add the nullable published_at column, mark every existing row published, index the outbox."""
    op.add_column("inspections", sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
    inspections = sa.table("inspections", sa.column("published_at", sa.DateTime(timezone=True)))
    # CURRENT_TIMESTAMP: UTC text without a zone on SQLite (as the store writes), a timestamptz on PostgreSQL
    op.execute(inspections.update().values(published_at=sa.func.current_timestamp()))
    op.create_index(INDEX, "inspections", ["station", "published_at", "id"])
    identity = op.create_table("database_identity", sa.Column("id", sa.Integer(), primary_key=True),
                               sa.Column("uuid", sa.String(36), nullable=False))
    op.bulk_insert(identity, [{"id": 1, "uuid": str(uuid.uuid4())}])


def downgrade() -> None:
    """Drop the identity, the index and the column (SQLite: batch mode copies the table)."""
    op.drop_table("database_identity")
    op.drop_index(INDEX, table_name="inspections")
    with op.batch_alter_table("inspections") as batch:
        batch.drop_column("published_at")
