"""Two tenants may never write the same schema of the same warehouse.  [pure]"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Mapping

from fabric.addresses import Address
from fabric.diagnostics import Diagnostic, SourceSpan, error
from fabric.domain.state import TenantState


def warehouse_identity(spec: object) -> tuple[object, ...]:
    """What makes two connections the same database server + database."""
    kind = getattr(spec, "type", None)
    if getattr(spec, "warehouse", None) is not None:  # a managed warehouse of fabric.yaml
        return ("managed", spec.warehouse)  # type: ignore[attr-defined]
    if kind in ("postgres", "mysql", "mssql"):
        if spec.url is not None:  # type: ignore[attr-defined]
            return (kind, "url", spec.url)  # type: ignore[attr-defined]
        default_port = {"postgres": 5432, "mysql": 3306, "mssql": 1433}[kind]
        host = (spec.host or "").lower()  # type: ignore[attr-defined]
        if host in ("localhost", "::1"):
            host = "127.0.0.1"
        return (kind, host, spec.port or default_port, spec.database)  # type: ignore[attr-defined]
    if kind == "sqlite":
        return (kind, spec.path)  # type: ignore[attr-defined]
    if kind == "filesystem":
        url = spec.bucket_url.removeprefix("file://")  # type: ignore[attr-defined]
        if "://" not in url:  # a local folder: ./data/lake, data/lake/ and data/lake are one
            url = posixpath.normpath(url)
        return (kind, url.rstrip("/"))
    return (kind,)


def schema_writes(
    tenant: TenantState,
) -> Iterable[tuple[tuple[object, ...], str, Address, SourceSpan]]:
    """(warehouse identity, schema, writer, where) for every schema a tenant writes."""
    for declared in tenant.pipelines.values():
        connection = tenant.connections.get(declared.spec.destination or "")
        if connection is not None:
            identity = warehouse_identity(connection.spec)
            yield identity, declared.spec.dataset, declared.address, declared.span
    for declared in (
        *tenant.transformations.values(),
        *tenant.snapshots.values(),
        *tenant.seeds.values(),
    ):
        connection = tenant.connections.get(declared.spec.warehouse or "")
        if connection is not None and declared.spec.schema_ is not None:
            identity = warehouse_identity(connection.spec)
            yield identity, declared.spec.schema_, declared.address, declared.span


SchemaWrite = tuple[tuple[object, ...], str, Address, SourceSpan]


def check_schema_ownership(
    tenants: Mapping[str, TenantState], *, writes: Mapping[str, Iterable[SchemaWrite]] = {}
) -> list[Diagnostic]:
    """Every schema two tenants write. `writes` may hold `schema_writes` of some tenants
    already (the loader's cache keeps them, so a reload does not recompute 1,000 tenants')."""
    writers: dict[tuple[tuple[object, ...], str], dict[str, tuple[Address, SourceSpan]]] = (
        defaultdict(dict)
    )
    for slug in sorted(tenants):
        known = writes.get(slug)
        for identity, schema, address, span in (
            known if known is not None else schema_writes(tenants[slug])
        ):
            writers[(identity, schema)].setdefault(slug, (address, span))
    diags: list[Diagnostic] = []
    for (_, schema), by_tenant in writers.items():
        if len(by_tenant) < 2:
            continue
        for slug, (address, span) in by_tenant.items():
            others = ", ".join(f"{o} ({a})" for o, (a, _) in by_tenant.items() if o != slug)
            diags.append(
                error(
                    "schema-conflict",
                    "Schema written by two tenants",
                    f"{address} writes schema {schema!r}, which tenant {others} also writes "
                    "in the same warehouse.",
                    hint="Give each tenant its own schemas, e.g. prefix them with the tenant slug.",
                    span=span,
                    address=address,
                )
            )
    return diags


def managed_schemas(tenant: TenantState) -> set[str]:
    """Schemas the tenant writes through a connection to a managed warehouse."""
    return {
        schema
        for identity, schema, _, _ in schema_writes(tenant)
        if identity and identity[0] == "managed"
    }


def managed_warehouse_names(tenant: TenantState) -> set[str]:
    return {
        str(c.spec.warehouse)  # type: ignore[attr-defined]
        for c in tenant.connections.values()
        if getattr(c.spec, "warehouse", None) is not None
    }


def check_shares(tenants: Mapping[str, TenantState]) -> list[Diagnostic]:
    """A tenant uses at most one managed warehouse (its one role lives there) and shares only
    schemas it writes there, with other tenants that have a role there too."""
    diags: list[Diagnostic] = []
    for slug in sorted(tenants):
        tenant = tenants[slug]
        where = Address.of_tenant(slug)
        written = managed_schemas(tenant)
        mine = managed_warehouse_names(tenant)
        if len(mine) > 1:
            diags.append(
                error(
                    "two-managed-warehouses",
                    "Two managed warehouses",
                    f"tenant {slug} connects to managed warehouses {', '.join(sorted(mine))}; "
                    "a tenant has one login role, in one managed warehouse.",
                    hint="Point every warehouse: connection of this tenant at the same one.",
                    span=tenant.span,
                    address=where,
                )
            )
        for share in tenant.spec.share:
            for reader in share.with_:
                if (
                    reader in tenants
                    and reader != slug
                    and mine
                    and not (mine & managed_warehouse_names(tenants[reader]))
                ):
                    diags.append(
                        error(
                            "share-without-role",
                            "Share with a tenant that has no role there",
                            f"tenant {slug} shares with {reader}, which has no connection to "
                            f"managed warehouse {min(mine)} (so no role there to grant to).",
                            hint=f"Give {reader} a destination connection with "
                            f"warehouse: {min(mine)}, or remove it from share.",
                            span=tenant.span,
                            address=where,
                        )
                    )
                if reader == slug or reader not in tenants:
                    diags.append(
                        error(
                            "unknown-tenant",
                            "Share with an unknown tenant",
                            f"tenant {slug} shares with {reader!r}, "
                            + ("itself." if reader == slug else "which is not a tenant."),
                            hint=f"Tenants: {', '.join(sorted(set(tenants) - {slug})) or 'none'}.",
                            span=tenant.span,
                            address=where,
                        )
                    )
            for schema in share.schemas:
                if schema not in written:
                    diags.append(
                        error(
                            "share-not-owned",
                            "Share of a schema the tenant does not write",
                            f"tenant {slug} shares schema {schema!r}, which none of its "
                            "pipelines or transformations writes in a managed warehouse.",
                            hint="Share only this tenant's own datasets and transformation "
                            "schemas, written through a connection with warehouse:.",
                            span=tenant.span,
                            address=where,
                        )
                    )
    return diags
