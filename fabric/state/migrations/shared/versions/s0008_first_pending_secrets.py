"""Secrets stored for a tenant before its first apply; that apply moves them into its schema.

Revision ID: s0008_first
Revises: s0007_owners
"""

import sqlalchemy as sa
from alembic import op

revision = "s0008_first"
down_revision = "s0007_owners"

SCHEMA = "fabric"


def upgrade() -> None:
    op.create_table(
        "pending_secrets",
        sa.Column("tenant_slug", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("pending_secrets", schema=SCHEMA)
