"""The schedule clock: every live schedule of every tenant with its next fire time.

One shared table, so a scheduler tick claims the due schedules of all tenants in one
`FOR UPDATE SKIP LOCKED` query. Apply keeps it in step with the tenant schedules tables, in
the apply's transaction. Schedules applied before this migration are entered by
`fabric scheduler` on start (fabric.state.schedules.enter_missing).

Revision ID: s0005_sched
Revises: s0008_first
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "s0005_sched"
down_revision = "s0008_first"

SCHEMA = "fabric"


def upgrade() -> None:
    op.create_table(
        "schedule_clock",
        sa.Column(
            "tenant_id",
            sa.BigInteger,
            sa.ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True)),
        sa.Column("last_fire_at", sa.DateTime(timezone=True)),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("tenant_id", "name"),
        schema=SCHEMA,
    )
    op.create_index(
        "schedule_clock_due",
        "schedule_clock",
        ["next_fire_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("active"),
    )


def downgrade() -> None:
    op.drop_table("schedule_clock", schema=SCHEMA)
