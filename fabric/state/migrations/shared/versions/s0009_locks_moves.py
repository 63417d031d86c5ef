"""Pull-request locks and the record of moves (renames).

- `pr_locks`: a pull request holds a tenant from `fabric plan --lock-for PR` until the apply
  of its plan (or `fabric unlock`); one holder per tenant.
- `moves`: every rename apply made, by row id, so a renamed pipeline keeps its dlt state (the
  runner names the dlt pipeline after the name the row had first).
- `tenants.written`: the `tenant:` section as its YAML wrote it, for `fabric export` (the
  tenant schemas' resource tables get the same column in t0009_written).

Revision ID: s0009_locks_moves
Revises: s0006_queue
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "s0009_locks_moves"
down_revision = "s0006_queue"

SCHEMA = "fabric"


def upgrade() -> None:
    op.create_table(
        "pr_locks",
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("pr", sa.Text, nullable=False),
        sa.Column("author", sa.Text),
        sa.Column("plan_hash", sa.Text),
        sa.Column(
            "since", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_index("pr_locks_pr", "pr_locks", ["pr"], schema=SCHEMA)
    op.create_table(
        "moves",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.BigInteger,
            sa.ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("resource_id", sa.BigInteger, nullable=False),
        sa.Column("from_name", sa.Text, nullable=False),
        sa.Column("to_name", sa.Text, nullable=False),
        sa.Column(
            "moved_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_index("moves_tenant_kind", "moves", ["tenant_id", "kind"], schema=SCHEMA)
    op.add_column("tenants", sa.Column("written", JSONB), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("tenants", "written", schema=SCHEMA)
    op.drop_table("moves", schema=SCHEMA)
    op.drop_table("pr_locks", schema=SCHEMA)
