"""Tenant schema: declared resources, secrets, runs and node runs.

Revision ID: t0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "t0001"
down_revision = None

SCHEMA = "tenant"  # bound to tenant_<id> by schema_translate_map in env.py
RESOURCES = ("connections", "pipelines", "transformations", "dependencies", "schedules")


def _now() -> sa.sql.elements.ColumnElement:
    return sa.func.now()


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
                "created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()
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
    op.create_table(
        "secrets",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        schema=SCHEMA,
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("selection", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("who", sa.Text),
        sa.Column("schedule_name", sa.Text),
        sa.Column("fire_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.UniqueConstraint("schedule_name", "fire_at", name="runs_schedule_fire_at"),
        schema=SCHEMA,
    )
    op.create_table(
        "node_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey(f"{SCHEMA}.runs.id"), nullable=False),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("rows_loaded", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("error", sa.Text),
        sa.Column("log_tail", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.UniqueConstraint("run_id", "node", name="node_runs_run_node"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for name in ("node_runs", "runs", "secrets", *reversed(RESOURCES)):
        op.drop_table(name, schema=SCHEMA)
