"""Run the control plane's migrations: the shared schema first, then every tenant schema.  [shell]

Alembic owns the history (fabric/state/migrations/{shared,tenant}). A *new* tenant schema is
created in one round trip from DDL compiled once per process and stamped at the tenant head,
which is what `alembic upgrade head` would produce (a test compares the two), at a fraction of
the cost: apply creates a tenant's schema in the same transaction as its resources.

Alembic is imported only to migrate: every command checks that the shared schema is current,
which needs just the head revision, kept in `HEADS` (a test compares it with Alembic's).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.schema import CreateIndex, CreateTable

from fabric.state import tables

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEADS = {"shared": "s0006_queue", "tenant": "t0007_dbt_files"}
"""The head revision of each migration history; a new migration updates it (a test checks)."""
_TOKEN = "fabric_tenant_schema_placeholder"


def _config(kind: str, conn: Connection, schema: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / kind))
    cfg.attributes["connection"] = conn
    cfg.attributes["schema"] = schema
    return cfg


def head(kind: str) -> str:
    return HEADS[kind]


def alembic_head(kind: str) -> str:
    """The head revision as Alembic reads it from the migration scripts (slow: imports them)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / kind))
    revision = ScriptDirectory.from_config(cfg).get_current_head()
    assert revision is not None
    return revision


def shared_is_current(conn: Connection) -> bool:
    found = conn.execute(
        text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{tables.SHARED_SCHEMA}.alembic_version"}
    ).scalar_one()
    if not found:
        return False
    version = conn.execute(
        text(f"SELECT version_num FROM {tables.SHARED_SCHEMA}.alembic_version")
    ).scalar_one_or_none()
    return version == head("shared")


def upgrade_shared(conn: Connection) -> None:
    """Bring the shared schema to head (a no-op when it is there already)."""
    if not shared_is_current(conn):
        # Alembic creates its version table before the first migration runs, inside `fabric`.
        from alembic import command

        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {tables.SHARED_SCHEMA}"))
        command.upgrade(_config("shared", conn), "head")


def upgrade_tenant(conn: Connection, schema: str) -> None:
    from alembic import command

    command.upgrade(_config("tenant", conn, schema), "head")
    conn.execute(
        text(
            f"UPDATE {tables.SHARED_SCHEMA}.tenants SET schema_version = :v WHERE schema_name = :s"
        ),
        {"v": head("tenant"), "s": schema},
    )


def upgrade_all(conn: Connection) -> list[str]:
    """Shared schema, then every tenant schema that is behind; returns the upgraded schemas."""
    upgrade_shared(conn)
    behind = conn.execute(
        text(
            f"SELECT schema_name FROM {tables.SHARED_SCHEMA}.tenants "
            "WHERE schema_name IS NOT NULL AND deleted_at IS NULL "
            "AND schema_version IS DISTINCT FROM :head ORDER BY id"
        ),
        {"head": head("tenant")},
    ).scalars()
    upgraded = []
    for schema in list(behind):
        upgrade_tenant(conn, schema)
        upgraded.append(schema)
    return upgraded


@functools.cache
def _tenant_ddl() -> str:
    from sqlalchemy import MetaData
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    statements = [f'CREATE SCHEMA "{_TOKEN}"']
    # Copies bound to the token schema: schema_translate_map is applied only at execution.
    copy = MetaData()
    for table in tables.tenant.sorted_tables:
        table.to_metadata(copy, schema=_TOKEN)
    for table in copy.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            statements.append(str(CreateIndex(index).compile(dialect=dialect)))
    statements.append(
        f'CREATE TABLE "{_TOKEN}".alembic_version (version_num VARCHAR(32) NOT NULL, '
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
    )
    statements.append(f"INSERT INTO \"{_TOKEN}\".alembic_version VALUES ('{head('tenant')}')")
    return ";\n".join(s.strip() for s in statements)


def tenant_schemas_script(schemas: list[str]) -> str:
    """The SQL that creates these tenant schemas at head (statements joined by `;`)."""
    ddl = _tenant_ddl()
    return ";\n".join(ddl.replace(_TOKEN, schema) for schema in schemas)


def create_tenant_schemas(conn: Connection, schemas: list[str]) -> None:
    """Create new tenant schemas at head, in one round trip, inside the caller's transaction."""
    if schemas:
        conn.exec_driver_sql(tenant_schemas_script(schemas))
