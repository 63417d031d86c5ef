"""Read what has been applied for one tenant: the runner's view of the control plane.  [shell]"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from fabric.addresses import Address, Kind
from fabric.domain.runs import StoredConnection
from fabric.errors import TenantNotAppliedError
from fabric.state.history import read_project
from fabric.state.snapshot import KIND_TABLES, TABLE_KINDS, TenantRow, read_tenant_rows


@dataclass(frozen=True, slots=True)
class AppliedTenant:
    tenant: TenantRow
    spec: Mapping[str, Any]
    nodes: Mapping[Address, Mapping[str, Any]]
    """Pipelines, transformations, snapshots and seeds (the DAG's nodes): address -> stored spec."""
    connections: Mapping[str, StoredConnection]
    schedules: Mapping[str, Mapping[str, Any]]
    edges: tuple[tuple[Address, Address], ...]
    """(upstream, downstream) dependencies."""
    files: Mapping[Address, Mapping[str, Any]] = field(default_factory=dict)
    project_packages: tuple[Mapping[str, Any], ...] = ()
    """fabric.yaml's `dbt.packages` as the last apply recorded them (every tenant's)."""
    """dbt files the tenant brings that are not nodes (macros, singular tests): address ->
    stored spec."""


def read_applied(
    conn: Connection,
    slug: str,
    *,
    pipelines: Iterable[Address] | None = None,
    row: TenantRow | None = None,
) -> AppliedTenant:
    """Everything the runner needs about a tenant, in two queries.

    `pipelines`: only these pipelines (with the tenant's connections), no transformation,
    schedule or dependency: what a queue worker needs to run pipeline nodes. Reading and
    decoding a 300-node tenant for each node cost more than the node's whole bookkeeping.
    `row`: the tenant's row, when the caller read it already (three round trips fewer)."""
    if row is None:
        rows = read_tenant_rows(conn, [slug])
        if slug not in rows:
            raise TenantNotAppliedError(slug)
        row = rows[slug]
    tenant = row
    spec = conn.execute(
        text("SELECT spec FROM fabric.tenants WHERE slug = :s AND deleted_at IS NULL"), {"s": slug}
    ).scalar_one()
    params: dict[str, Any] = {}
    if pipelines is None:
        tables = list(KIND_TABLES.values())
    else:
        tables = [KIND_TABLES[Kind.CONNECTION], KIND_TABLES[Kind.PIPELINE]]
        params["names"] = sorted({a.name for a in pipelines if a.kind is Kind.PIPELINE})
    parts = [
        f"SELECT '{table}' AS tbl, name, spec, secrets FROM \"{tenant.schema_name}\".{table} "
        "WHERE deleted_at IS NULL"
        + (" AND name = ANY(:names)" if "names" in params and table == "pipelines" else "")
        for table in tables
    ]
    nodes: dict[Address, Mapping[str, Any]] = {}
    connections: dict[str, StoredConnection] = {}
    schedules: dict[str, Mapping[str, Any]] = {}
    edges: list[tuple[Address, Address]] = []
    files: dict[Address, Mapping[str, Any]] = {}
    for r in conn.execute(text("\nUNION ALL\n".join(parts)), params):
        kind = TABLE_KINDS[r.tbl]
        address = Address(slug, kind, r.name)
        if kind in (Kind.PIPELINE, Kind.TRANSFORMATION, Kind.SNAPSHOT, Kind.SEED):
            nodes[address] = r.spec
        elif kind is Kind.CONNECTION:
            connections[r.name] = StoredConnection(
                address=address, spec=r.spec, secrets=r.secrets or {}
            )
        elif kind is Kind.SCHEDULE:
            schedules[r.name] = r.spec
        elif kind in (Kind.MACRO, Kind.TEST):
            files[address] = r.spec
        else:
            edges.append(address.edge())
    project = (read_project(conn) or {}) if pipelines is None else {}
    packages = tuple((project.get("dbt") or {}).get("packages") or ())
    return AppliedTenant(
        tenant, spec, nodes, connections, schedules, tuple(sorted(edges)), files, packages
    )
