"""Alembic environment of one tenant schema; the schema comes in `attributes["schema"]`.

Migrations are written against the placeholder schema `tenant`; schema_translate_map binds
them to the real `tenant_<id>` schema, whose own alembic_version table records its revision.
"""

from alembic import context

from fabric.state import tables

config = context.config
schema = config.attributes["schema"]
connection = config.attributes["connection"].execution_options(
    schema_translate_map={tables.TENANT_PLACEHOLDER: schema}
)
context.configure(
    connection=connection,
    target_metadata=tables.tenant,
    version_table="alembic_version",
    version_table_schema=schema,
    include_schemas=True,
)
with context.begin_transaction():
    context.run_migrations()
