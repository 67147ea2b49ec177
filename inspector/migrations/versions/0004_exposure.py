"""Add inspections.exposure: the part's exposure relative to its profile's reference (1.0 = as trained).

Nullable: rows recorded before it, and files that were never decoded, have none. Drift monitoring
(`inspector stats`, the review page's banner) replays it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the nullable exposure column (a plain ADD COLUMN on SQLite and PostgreSQL: no table copy)."""
    op.add_column("inspections", sa.Column("exposure", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop the exposure column (SQLite: batch mode copies the table)."""
    with op.batch_alter_table("inspections") as batch:
        batch.drop_column("exposure")
