"""Migrations: the shared schema, and a new tenant schema made fast equals one made by Alembic."""

from sqlalchemy import text

from fabric.state import migrate
from fabric.state.engine import make_engine

CATALOG = """
SELECT 'column' AS what, table_name || '.' || column_name || ' ' || data_type || ' '
       || is_nullable || ' ' || coalesce(column_default, '') || ' ' || is_identity AS detail
FROM information_schema.columns WHERE table_schema = :s
UNION ALL
SELECT 'index', tablename || ' ' || regexp_replace(indexdef, 'ON \\S+\\.', 'ON ')
FROM pg_indexes WHERE schemaname = :s
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || contype::text || ' ' ||
       regexp_replace(pg_get_constraintdef(oid), '\\w+\\.runs', 'runs')
FROM pg_constraint WHERE connamespace = CAST(:s AS regnamespace)
UNION ALL
SELECT 'version', version_num FROM {schema}.alembic_version
"""


def catalog(conn, schema):
    sql = CATALOG.replace("{schema}", schema)
    rows = conn.execute(text(sql), {"s": schema}).all()
    return sorted((w, d.replace(schema + ".", "")) for w, d in rows)


def test_shared_upgrade_on_an_empty_database_is_idempotent(make_database):
    engine = make_engine(make_database())
    with engine.begin() as conn:
        migrate.upgrade_shared(conn)
        assert migrate.shared_is_current(conn)
        migrate.upgrade_shared(conn)
        assert conn.execute(text("SELECT count(*) FROM fabric.tenants")).scalar() == 0
    engine.dispose()


def test_fast_tenant_schema_equals_alembic_upgrade(make_database):
    engine = make_engine(make_database())
    with engine.begin() as conn:
        migrate.upgrade_shared(conn)
        migrate.create_tenant_schemas(conn, ["tenant_1"])
        conn.execute(text("CREATE SCHEMA tenant_2"))
        conn.execute(
            text(
                "INSERT INTO fabric.tenants (slug, spec, fingerprint, content_md5, schema_name) "
                "VALUES ('b', '{}', 'x', 'x', 'tenant_2')"
            )
        )
        migrate.upgrade_tenant(conn, "tenant_2")
        fast, alembic = catalog(conn, "tenant_1"), catalog(conn, "tenant_2")
        assert fast == alembic
        assert ("version", migrate.head("tenant")) in fast
        version = conn.execute(text("SELECT schema_version FROM fabric.tenants")).scalar()
        assert version == migrate.head("tenant")
    engine.dispose()


def test_upgrade_all_brings_lagging_tenants_to_head(make_database):
    engine = make_engine(make_database())
    with engine.begin() as conn:
        migrate.upgrade_shared(conn)
        conn.execute(text("CREATE SCHEMA tenant_7"))
        conn.execute(
            text(
                "INSERT INTO fabric.tenants (slug, spec, fingerprint, content_md5, schema_name) "
                "VALUES ('late', '{}', 'x', 'x', 'tenant_7')"
            )
        )
        assert migrate.upgrade_all(conn) == ["tenant_7"]
        assert migrate.upgrade_all(conn) == []
    engine.dispose()


def test_the_recorded_heads_are_the_heads_of_the_migration_scripts():
    for kind in ("shared", "tenant"):
        assert migrate.head(kind) == migrate.alembic_head(kind), (
            f"a new {kind} migration: update migrate.HEADS[{kind!r}]"
        )
