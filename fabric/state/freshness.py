"""The last source freshness check of a tenant's tables, kept for `fabric status`.  [shell]"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from fabric.domain.freshness import TableFreshness
from fabric.state.snapshot import TenantRow


def write_freshness(conn: Connection, tenant: TenantRow, results: Sequence[TableFreshness]) -> None:
    """Replace the tenant's stored check with `results` (tables no longer loaded drop out)."""
    schema = f'"{tenant.schema_name}"'
    conn.execute(text(f"DELETE FROM {schema}.source_freshness"))
    if results:
        conn.execute(
            text(
                f"INSERT INTO {schema}.source_freshness (pipeline, table_name, relation, status, "
                "loaded_at, checked_at, error) VALUES (:p, :t, :r, :s, :l, :c, :e)"
            ),
            [
                {
                    "p": r.pipeline,
                    "t": r.table,
                    "r": r.relation,
                    "s": r.status,
                    "l": r.loaded_at,
                    "c": r.checked_at,
                    "e": r.error,
                }
                for r in results
            ],
        )


def read_freshness(conn: Connection, tenant: TenantRow) -> list[TableFreshness]:
    """The stored check, by pipeline and table (one query; empty before the first check)."""
    rows = conn.execute(
        text(f'SELECT * FROM "{tenant.schema_name}".source_freshness ORDER BY pipeline, table_name')
    )
    return [
        TableFreshness(
            pipeline=r.pipeline,
            table=r.table_name,
            relation=r.relation,
            status=r.status,
            loaded_at=r.loaded_at,
            checked_at=r.checked_at,
            error=r.error,
        )
        for r in rows
    ]
