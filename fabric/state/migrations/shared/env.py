"""Alembic environment of the shared schema `fabric`; run through fabric.state.migrations."""

from alembic import context

from fabric.state import tables

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=tables.shared,
    version_table="alembic_version",
    version_table_schema=tables.SHARED_SCHEMA,
    include_schemas=True,
)
with context.begin_transaction():
    context.run_migrations()
