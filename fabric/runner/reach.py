"""What a tenant's warehouse or SQL source login must not reach, and the warning when it can.
[pure]

A tenant's connection logs in with credentials the tenant chose. When they belong to a
superuser, or to a role that can use schemas other tenants' pipelines and transformations
write, or that may connect to the control plane's database, every isolation fabric builds on
top is moot: `fabric connections test` and `fabric apply` say so (a warning, never an error;
the probe is fabric.runner.probes.probe_reach, one query with the tenant's own credentials).
The warning names what is reachable (schema names, "superuser", the control plane database's
name) and never a credential.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fabric.addresses import Kind
from fabric.plan.diff import Action, Change

__all__ = [
    "Reach",
    "ReachScope",
    "connections_to_probe",
    "other_tenant_schemas",
    "reach_warning",
]

LOGIN_FIELDS = frozenset({"type", "host", "port", "database", "username", "password", "url"})
"""A change to one of these (or to `options`, e.g. a role) can change what the login reaches."""

MAX_SCHEMAS_SHOWN = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class ReachScope:
    """What a tenant's login is checked against."""

    other_schemas: tuple[str, ...] = ()
    """Schemas other tenants write (pipelines' datasets, transformations' schemas)."""
    control_database: str | None = None
    """The control plane's database name (None: not checked)."""
    control_started: datetime | None = None
    """pg_postmaster_start_time() of the control plane's server: a login on the same server
    (same start time) that may CONNECT to `control_database` reaches the control plane."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reach:
    """What one login can reach, as the server answered."""

    superuser: bool = False
    schemas: tuple[str, ...] = ()
    """Other tenants' schemas this login has USAGE on, sorted."""
    control_database: str | None = None
    """The control plane's database, when this login may connect to it."""


_WRITES = {"pipeline": "dataset", "transformation": "schema", "snapshot": "schema"}
"""The field holding the schema a node of each kind writes."""


def other_tenant_schemas(
    tenant: str, records: Mapping[str, Iterable[tuple[str, Mapping[str, Any]]]]
) -> tuple[str, ...]:
    """Every schema another tenant writes, from {slug: [(kind, spec), ...]}: a pipeline's
    `dataset`, a transformation's or snapshot's `schema`. `tenant`'s own are left out."""
    out: set[str] = set()
    for slug, specs in records.items():
        if slug == tenant:
            continue
        for kind, spec in specs:
            field = _WRITES.get(kind)
            value = spec.get(field) if field else None
            if isinstance(value, str) and value:
                out.add(value)
    return tuple(sorted(out))


def connections_to_probe(changes: Iterable[Change]) -> dict[str, tuple[str, ...]]:
    """{tenant: connection names} an apply checks: PostgreSQL connections created, or updated
    in a field that decides who logs in where. Others were checked when their login last
    changed, and `fabric connections test` checks any at will (a `${secret:}` re-set with
    `fabric secrets set` changes no plan)."""
    out: dict[str, list[str]] = {}
    for change in changes:
        if change.address.kind is not Kind.CONNECTION or change.target is None:
            continue
        if change.target.spec.get("type") != "postgres":
            continue
        login = change.action is Action.CREATE or any(
            f.name.split(".")[0] in LOGIN_FIELDS or f.name.startswith("options")
            for f in change.fields
        )
        if login:
            out.setdefault(change.address.tenant, []).append(change.address.name)
    return {tenant: tuple(sorted(names)) for tenant, names in sorted(out.items())}


def reach_warning(name: str, reach: Reach) -> str | None:
    """One line saying what connection `name` can reach beyond its tenant, or None."""
    parts = []
    if reach.schemas:
        shown = ", ".join(reach.schemas[:MAX_SCHEMAS_SHOWN])
        more = len(reach.schemas) - MAX_SCHEMAS_SHOWN
        shown += f" and {more} more" if more > 0 else ""
        parts.append(f"other tenants' schemas {shown}")
    if reach.control_database:
        parts.append(f"control plane database {reach.control_database}")
    if not parts and not reach.superuser:
        return None
    fix = "give it a login of its own that can use only this tenant's schemas"
    if reach.control_database:
        fix += (
            f", and REVOKE CONNECT ON DATABASE {reach.control_database} FROM PUBLIC "
            "(and from that login)"
        )
    if reach.superuser:  # a superuser reaches everything; the rest says what is at stake here
        also = f" (among them {'; '.join(parts)})" if parts else ""
        return (
            f"connection {name} logs in as a superuser, which reads and writes everything on "
            f"its server{also}: {fix}."
        )
    return f"connection {name} logs in as a role that can reach {'; '.join(parts)}: {fix}."
