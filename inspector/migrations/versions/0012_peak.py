"""Add inspections.peak_x and peak_y: where a defect's anomaly map peaks, as fractions of the photo's width and height.

Nullable: rows recorded before it, and every verdict but `defect`, have none. The drift monitor's `same_place`
alarm (parts flagged at one place in the photo: dust on the lens, a scratched window) replays them for `inspector
stats` and the review page's banner as the watcher feeds them live.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 00:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: Union[str, Sequence[str], None] = "0011"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the two nullable columns (a plain ADD COLUMN on SQLite and PostgreSQL: no table copy)."""
    op.add_column("inspections", sa.Column("peak_x", sa.Float(), nullable=True))
    op.add_column("inspections", sa.Column("peak_y", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop the two columns (a plain ALTER TABLE DROP COLUMN, as 0008 and 0009: no table copy, which the reviews'
    foreign key would refuse on SQLite)."""
    op.drop_column("inspections", "peak_y")
    op.drop_column("inspections", "peak_x")
