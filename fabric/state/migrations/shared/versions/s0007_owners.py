"""The audit log: every change an apply made, with its field-level before/after.

`fabric history --resource ADDRESS` reads it. Secret fields are stored as changed, never with
values (the plan's changes never hold them).

Revision ID: s0007_owners
Revises: s0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "s0007_owners"
down_revision = "s0002"

SCHEMA = "fabric"


def upgrade() -> None:
    op.create_table(
        "apply_changes",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column(
            "apply_id",
            sa.BigInteger,
            sa.ForeignKey(f"{SCHEMA}.applies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("fields", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "apply_changes_address", "apply_changes", ["address", "apply_id"], schema=SCHEMA
    )
    op.create_index("apply_changes_tenant", "apply_changes", ["tenant", "apply_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("apply_changes", schema=SCHEMA)
