"""Add inspections.product: the product whose profile judged the part (issue 16, several products on one station).

NOT NULL with the server default 'default': every row recorded before products existed belongs to the default
product (the models folder itself, see inspector/products.py), and SQLite and PostgreSQL both fill existing rows
from the default of an added column without copying the table. An index (product, inspected_at, id) serves the
`--product` filters of `list`, `stats` and `export` and the review page.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-16 09:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: Union[str, Sequence[str], None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INDEX = "ix_inspections_product_inspected_at_id"


def upgrade() -> None:
    """Add the product column (existing rows: 'default') and its index."""
    op.add_column("inspections", sa.Column("product", sa.String(64), nullable=False,
                                           server_default=sa.text("'default'")))
    op.create_index(INDEX, "inspections", ["product", "inspected_at", "id"])


def downgrade() -> None:
    """Drop the index and the column (a plain ALTER TABLE DROP COLUMN, as 0008)."""
    op.drop_index(INDEX, table_name="inspections")
    op.drop_column("inspections", "product")
