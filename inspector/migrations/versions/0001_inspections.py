"""Create the inspections table: the verdict log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the inspections table with its named constraints and indexes."""
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("source_key", sa.String(length=128), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("archived_path", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inspected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("profile_version", sa.String(length=32), nullable=True),
        sa.Column("overlay_path", sa.Text(), nullable=True),
        sa.Column("ms", sa.Float(), nullable=True),
        sa.Column("station", sa.String(length=64), nullable=False),
        sa.Column("line", sa.String(length=64), nullable=False),
        sa.Column("camera", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspections")),
        sa.UniqueConstraint("sha256", name=op.f("uq_inspections_sha256")),
        sa.UniqueConstraint("source_key", name=op.f("uq_inspections_source_key")),
        sa.CheckConstraint("(sha256 IS NULL) <> (source_key IS NULL)", name=op.f("ck_inspections_identity")),
        sa.CheckConstraint("verdict IN ('ok', 'defect', 'rejected')", name=op.f("ck_inspections_verdict")),
    )
    op.create_index(op.f("ix_inspections_inspected_at"), "inspections", ["inspected_at"], unique=False)
    op.create_index(op.f("ix_inspections_verdict_id"), "inspections", ["verdict", "id"], unique=False)


def downgrade() -> None:
    """Drop the inspections table."""
    op.drop_index(op.f("ix_inspections_verdict_id"), table_name="inspections")
    op.drop_index(op.f("ix_inspections_inspected_at"), table_name="inspections")
    op.drop_table("inspections")
