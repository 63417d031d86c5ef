"""dbt files a tenant brings: macros, seeds and singular tests, stored like other resources.

Revision ID: t0007_dbt_files
Revises: t0006_queue
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "t0007_dbt_files"
down_revision = "t0006_queue"

SCHEMA = "tenant"  # bound to tenant_<id> by schema_translate_map in env.py
RESOURCES = ("macros", "seeds", "tests")


def upgrade() -> None:
    for name in RESOURCES:
        op.create_table(
            name,
            sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
            sa.Column("spec", JSONB, nullable=False),
            sa.Column("secrets", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
            sa.Column("fingerprint", sa.Text, nullable=False),
            sa.Column("content_md5", sa.Text, nullable=False),
            sa.Column("protect", sa.Boolean, nullable=False, server_default=sa.text("false")),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            ),
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            ),
            sa.Column("deleted_at", sa.DateTime(timezone=True)),
            sa.Column("name", sa.Text, nullable=False),
            schema=SCHEMA,
        )
        op.create_index(
            f"{name}_live_name",
            name,
            ["name"],
            unique=True,
            schema=SCHEMA,
            postgresql_where=sa.text("deleted_at IS NULL"),
        )


def downgrade() -> None:
    for name in reversed(RESOURCES):
        op.drop_table(name, schema=SCHEMA)
