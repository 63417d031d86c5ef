"""Node runs: when each was queued, and its failure kind.

Revision ID: t0002
Revises: t0001
"""

from alembic import context, op

revision = "t0002"
down_revision = "t0001"


def _table() -> str:
    # NOTE: ALTER TABLE is not schema-translated like CREATE TABLE; name the real schema.
    return f'"{context.config.attributes["schema"]}".node_runs'


def upgrade() -> None:
    op.execute(
        f"ALTER TABLE {_table()} ADD COLUMN queued_at TIMESTAMP WITH TIME ZONE, "
        "ADD COLUMN failure TEXT"
    )


def downgrade() -> None:
    op.execute(f"ALTER TABLE {_table()} DROP COLUMN failure, DROP COLUMN queued_at")
