"""Add the reviews table: operator decisions on inspections, kept as a history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 03:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the reviews table with its named constraints and index."""
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.ForeignKeyConstraint(["inspection_id"], ["inspections.id"],
                                name=op.f("fk_reviews_inspection_id_inspections")),
        sa.CheckConstraint("decision IN ('defect', 'good')", name=op.f("ck_reviews_decision")),
    )
    op.create_index(op.f("ix_reviews_inspection_id_id"), "reviews", ["inspection_id", "id"], unique=False)


def downgrade() -> None:
    """Drop the reviews table."""
    op.drop_index(op.f("ix_reviews_inspection_id_id"), table_name="reviews")
    op.drop_table("reviews")
