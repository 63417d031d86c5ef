"""Shared schema: tenants and apply history.

Revision ID: s0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "s0001"
down_revision = None

SCHEMA = "fabric"


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    ]


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.create_table(
        "tenants",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("secrets", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("content_md5", sa.Text, nullable=False),
        sa.Column("protect", sa.Boolean, nullable=False, server_default=sa.text("false")),
        *_timestamps(),
        sa.Column("slug", sa.Text, nullable=False),
        sa.Column("schema_name", sa.Text),
        sa.Column("schema_version", sa.Text),
        schema=SCHEMA,
    )
    op.create_index(
        "tenants_live_slug",
        "tenants",
        ["slug"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "applies",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("git_commit", sa.Text),
        sa.Column("author", sa.Text),
        sa.Column("plan_hash", sa.Text, nullable=False),
        sa.Column("source_hash", sa.Text, nullable=False),
        sa.Column("tenants", ARRAY(sa.Text), nullable=False),
        sa.Column("creates", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("updates", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("deletes", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("error", sa.Text),
        sa.Column("client", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("applies", schema=SCHEMA)
    op.drop_table("tenants", schema=SCHEMA)
