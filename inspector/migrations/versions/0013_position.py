"""Add inspections.pos_x and pos_y: where a located part lies, from where the profile's reference lies, as
fractions of the photo's width and height (positive: right, below).

Nullable: rows recorded before it, rejected parts and parts not found have none. The drift monitor's `placement_x`
and `placement_y` alarms (the recent parts' median position off where the good parts lay: a camera, its mount or a
fixture moved) replay them for `inspector stats` and the review page's banner as the watcher feeds them live.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: Union[str, Sequence[str], None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the two nullable columns (a plain ADD COLUMN on SQLite and PostgreSQL: no table copy)."""
    op.add_column("inspections", sa.Column("pos_x", sa.Float(), nullable=True))
    op.add_column("inspections", sa.Column("pos_y", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop the two columns (a plain ALTER TABLE DROP COLUMN, as 0012: no table copy)."""
    op.drop_column("inspections", "pos_y")
    op.drop_column("inspections", "pos_x")
