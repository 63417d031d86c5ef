"""Each declared resource keeps the form its YAML was written in, for `fabric export`.

Revision ID: t0009_written
Revises: t0008_snap
"""

from alembic import context, op

revision = "t0009_written"
down_revision = "t0008_snap"
TABLES = (
    "connections",
    "pipelines",
    "transformations",
    "dependencies",
    "schedules",
    "snapshots",
    "macros",
    "seeds",
    "tests",
)


def _schema() -> str:
    # NOTE: ALTER TABLE is not schema-translated like CREATE TABLE; name the real schema.
    return f'"{context.config.attributes["schema"]}"'


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {_schema()}.{table} ADD COLUMN written JSONB")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {_schema()}.{table} DROP COLUMN written")
