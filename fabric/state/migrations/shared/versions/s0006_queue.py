"""procrastinate's own schema (its jobs, workers, events), for the queue executor.

Revision ID: s0006_queue
Revises: s0005_sched

procrastinate ships its schema as one SQL script; it is applied here, by fabric's migration
path, so `fabric apply` (and every migration) brings the queue with the control plane. Its
tables live in the connection's default schema (public), where procrastinate's queries look.
"""

from alembic import op

revision = "s0006_queue"
down_revision = "s0005_sched"


def upgrade() -> None:
    from procrastinate.schema import SchemaManager

    bind = op.get_bind()
    exists = bind.exec_driver_sql(
        "SELECT to_regclass('procrastinate_jobs') IS NOT NULL"
    ).scalar_one()
    if not exists:
        # NOTE: run by the driver itself, without parameters, so the script's `%` and `:`
        # are taken literally (it holds several statements and PL/pgSQL bodies).
        bind.connection.driver_connection.execute(SchemaManager.get_schema())


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, "
        "procrastinate_jobs, procrastinate_workers CASCADE"
    )
