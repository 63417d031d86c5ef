"""Schedule fires: what became of each (schedule, fire time), exactly once.

Revision ID: t0005_sched
Revises: t0002
"""

import sqlalchemy as sa
from alembic import op

revision = "t0005_sched"
down_revision = "t0002"

SCHEMA = "tenant"  # bound to tenant_<id> by schema_translate_map in env.py


def upgrade() -> None:
    op.create_table(
        "schedule_fires",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("schedule_name", sa.Text, nullable=False),
        sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey(f"{SCHEMA}.runs.id")),
        sa.Column("reason", sa.Text),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("schedule_name", "fire_at", name="schedule_fires_schedule_fire_at"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("schedule_fires", schema=SCHEMA)
