"""The queue executor: each run keeps its DAG; each node attempt carries a fencing token.

Revision ID: t0006_queue
Revises: t0005_sched
"""

from alembic import context, op

revision = "t0006_queue"
down_revision = "t0005_sched"


def _schema() -> str:
    # NOTE: ALTER TABLE is not schema-translated like CREATE TABLE; name the real schema.
    return f'"{context.config.attributes["schema"]}"'


def upgrade() -> None:
    op.execute(f"ALTER TABLE {_schema()}.runs ADD COLUMN executor TEXT, ADD COLUMN plan JSONB")
    op.execute(
        f"ALTER TABLE {_schema()}.node_runs ADD COLUMN token BIGINT, ADD COLUMN job_id BIGINT, "
        "ADD COLUMN worker TEXT"
    )


def downgrade() -> None:
    op.execute(
        f"ALTER TABLE {_schema()}.node_runs DROP COLUMN worker, DROP COLUMN job_id, "
        "DROP COLUMN token"
    )
    op.execute(f"ALTER TABLE {_schema()}.runs DROP COLUMN plan, DROP COLUMN executor")
