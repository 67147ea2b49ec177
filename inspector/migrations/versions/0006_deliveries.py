"""Add deliveries and delivery_cursors: a delivery record per sink (the webhook of issue 13, item 3).

`inspections.published_at` is the MQTT publisher's outbox. Every further sink (the webhook to an MES) keeps its
own record, so each one delivers everything independently of the others:

* deliveries (sink, inspection_id) primary key: one row per inspection a sink is done with, `outcome`
  "delivered" (the endpoint accepted it) or "refused" (a permanent 4xx: logged and recorded, never retried),
  with the time and, when refused, the HTTP status and a short detail. What a sink has to send is the anti-join
  "this station's rows with no deliveries row for this sink", so a row that commits out of id order (several
  stations on PostgreSQL: a smaller id committing after a larger one was delivered) is still found and sent.
* delivery_cursors (sink, station, line, camera) primary key: where that anti-join starts for the rows of one
  watcher (a sender sends only its own station's, line's and camera's rows, as the MQTT publisher does).
  `floor_id` is set at the sink's first start to the newest inspection id then: rows recorded before the sink
  was configured are not sent (a fresh MES gets no flood of historic verdicts, as migration 0005 did for MQTT).
  It is later moved up past rows that were delivered long enough ago that no smaller id can still be uncommitted
  (inspector/deliveries.py, SETTLE_S); it only bounds the scan.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12 09:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the deliveries and delivery_cursors tables."""
    op.create_table(
        "deliveries",
        sa.Column("sink", sa.String(length=64), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("sink", "inspection_id", name=op.f("pk_deliveries")),
        sa.ForeignKeyConstraint(["inspection_id"], ["inspections.id"],
                                name=op.f("fk_deliveries_inspection_id_inspections")),
        sa.CheckConstraint("outcome IN ('delivered', 'refused')", name=op.f("ck_deliveries_outcome")),
    )
    op.create_table(
        "delivery_cursors",
        sa.Column("sink", sa.String(length=64), nullable=False),
        sa.Column("station", sa.String(length=64), nullable=False),
        sa.Column("line", sa.String(length=64), nullable=False),
        sa.Column("camera", sa.String(length=64), nullable=False),
        sa.Column("floor_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sink", "station", "line", "camera", name=op.f("pk_delivery_cursors")),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("delivery_cursors")
    op.drop_table("deliveries")
