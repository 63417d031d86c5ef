"""Each apply records the project (fabric.yaml) it was made from, so export can write it back.

Revision ID: s0002
Revises: s0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "s0002"
down_revision = "s0001"

SCHEMA = "fabric"


def upgrade() -> None:
    op.add_column("applies", sa.Column("project", JSONB), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("applies", "project", schema=SCHEMA)
