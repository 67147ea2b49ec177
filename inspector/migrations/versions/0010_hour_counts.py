"""Add hour_counts: the inspections counted per UTC hour as they are recorded (issue 15, item 1).

One row per UTC hour (hours since the epoch) and the dimensions the reads select or group by: station, line,
product, verdict, the reason of a rejection ('' for the other verdicts and for a rejection without one) and the
latest operator decision ('' for none, 'defect', 'good'); `n` parts, and the first and last inspected_at among
them. The Store keeps it in the same transaction as the rows it counts (Store.record adds the new parts, a
decision moves its part from one decision's row to another's, undoing one moves it back), with an upsert
(INSERT .. ON CONFLICT DO UPDATE SET n = n + excluded.n) that is atomic on SQLite and PostgreSQL alike. Reads of
whole hours (Store.bucket_counts) sum this table instead of counting millions of rows.

The upgrade fills it from the existing rows (their latest decisions by the anti-join on reviews (inspection_id,
id)) in one INSERT .. SELECT: one pass over the log, inside the migration's transaction.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-17 09:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: Union[str, Sequence[str], None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLE = "hour_counts"
KEY = ("hour", "station", "line", "product", "verdict", "reason", "decision")

BACKFILL = """
INSERT INTO hour_counts (hour, station, line, product, verdict, reason, decision, n, first_at, last_at)
SELECT {hour} AS hour, i.station, i.line, i.product, i.verdict,
       CASE WHEN i.verdict = 'rejected' THEN coalesce(i.reason, '') ELSE '' END AS reason,
       coalesce(latest.decision, '') AS decision, count(*), min(i.inspected_at), max(i.inspected_at)
FROM inspections AS i LEFT JOIN (
    SELECT r.inspection_id, r.decision FROM reviews AS r
    WHERE NOT EXISTS (SELECT 1 FROM reviews AS newer WHERE newer.inspection_id = r.inspection_id AND newer.id > r.id)
) AS latest ON latest.inspection_id = i.id
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""
# the UTC hour of inspected_at: SQLite stores naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (whole seconds, then
# integer division), PostgreSQL a timestamptz (exact numeric epoch)
HOURS = {"sqlite": "CAST(strftime('%s', substr(i.inspected_at, 1, 19)) AS INTEGER) / 3600",
         "postgresql": "CAST(floor(extract(epoch FROM i.inspected_at) / 3600) AS bigint)"}


def upgrade() -> None:
    """Create the table (its primary key is the upsert's conflict target and the reads' hour range) and fill it."""
    op.create_table(
        TABLE,
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("line", sa.String(64), nullable=False),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, name="pk_hour_counts"),
    )
    bind = op.get_bind()
    op.execute(sa.text(BACKFILL.format(hour=HOURS[bind.dialect.name])))


def downgrade() -> None:
    """Drop the table (the rows it counted are all still in inspections and reviews)."""
    op.drop_table(TABLE)
