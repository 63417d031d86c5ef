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
    state_names: Mapping[Address, str] = field(default_factory=dict)
    """Pipelines whose dlt pipeline is not named after their current name: a renamed one keeps
    the name its row had first (its dlt state and work folder), and one created later under a
    name a renamed pipeline had gets its row id appended (see state_names)."""
    files: Mapping[Address, Mapping[str, Any]] = field(default_factory=dict)
    """dbt files the tenant brings that are not nodes (macros, singular tests): address ->
    stored spec."""
    project_packages: tuple[Mapping[str, Any], ...] = ()
    """fabric.yaml's `dbt.packages` as the last apply recorded them (every tenant's)."""


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
        f"SELECT '{table}' AS tbl, id, name, spec, secrets "
        f'FROM "{tenant.schema_name}".{table} '
        "WHERE deleted_at IS NULL"
        + (" AND name = ANY(:names)" if "names" in params and table == "pipelines" else "")
        for table in tables
    ]
    nodes: dict[Address, Mapping[str, Any]] = {}
    connections: dict[str, StoredConnection] = {}
    schedules: dict[str, Mapping[str, Any]] = {}
    edges: list[tuple[Address, Address]] = []
    pipeline_ids: dict[str, int] = {}
    files: dict[Address, Mapping[str, Any]] = {}
    for r in conn.execute(text("\nUNION ALL\n".join(parts)), params):
        kind = TABLE_KINDS[r.tbl]
        address = Address(slug, kind, r.name)
        if kind is Kind.PIPELINE:
            pipeline_ids[r.name] = r.id
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
    moved = conn.execute(
        text(
            "SELECT resource_id, from_name FROM fabric.moves "
            "WHERE tenant_id = :t AND kind = 'pipeline' ORDER BY id"
        ),
        {"t": tenant.id},
    ).all()
    names = state_names(pipeline_ids, [(r.resource_id, r.from_name) for r in moved])
    project = (read_project(conn) or {}) if pipelines is None else {}
    return AppliedTenant(
        tenant,
        spec,
        nodes,
        connections,
        schedules,
        tuple(sorted(edges)),
        state_names={Address(slug, Kind.PIPELINE, n): s for n, s in names.items()},
        files=files,
        project_packages=tuple((project.get("dbt") or {}).get("packages") or ()),
    )


def state_names(ids: Mapping[str, int], moves: list[tuple[int, str]]) -> dict[str, str]:
    """Pipeline name -> the name its dlt pipeline has, where the two differ.  [pure]

    `ids` are the live pipelines' row ids by name; `moves` the recorded renames (row id, old
    name) in the order they were made. A renamed row keeps its first name; a name once held
    by another row is taken by no one else's dlt pipeline (that state is not theirs).
    """
    first: dict[int, str] = {}
    for resource_id, old in moves:
        first.setdefault(resource_id, old)
    claimed = {old: rid for rid, old in first.items()}
    left = {old for _, old in moves}
    out: dict[str, str] = {}
    for name, rid in ids.items():
        if rid in first:
            out[name] = first[rid]
        elif name in left and claimed.get(name) != rid:
            out[name] = f"{name}__{rid}"
    return out
