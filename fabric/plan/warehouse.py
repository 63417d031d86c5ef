"""Roles, schema ownership and shares in managed warehouses, as records to diff.  [pure]

For a warehouse of fabric.yaml with `manage_roles: true`, every tenant that writes there gets:

- `acme.role.loader`: its login role `<prefix>acme_loader` (no superuser or other attributes,
  member of nothing, CONNECT and TEMPORARY on the database, USAGE only on the schemas shared
  with it, and nothing PUBLIC could lend it);
- `acme.schema.<name>`: the ownership of each schema it writes (pipelines' datasets and their
  dlt `_staging` schema, transformations' schemas), and of everything in them;
- `acme.grant.<name>`: who else may read one of its schemas: the tenants it shares it with
  (USAGE, SELECT on current tables and on tables made later), nobody else.

The observed side comes from the warehouse itself (WarehouseFacts, read by the shell in one
query), so the same diff as the control plane's gives creates, updates and deletes, and a grant
made by hand shows as drift. Roles fabric made carry a comment `fabric:<database>:<tenant>`,
which is how a role of a removed tenant is still found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from fabric.addresses import Address, Kind
from fabric.config.specs import WarehouseSpec
from fabric.domain.state import DesiredState, TenantState
from fabric.plan.diff import Action, Change, FieldChange, Observed, diff
from fabric.plan.fingerprint import record_fingerprint
from fabric.plan.records import Record

WAREHOUSE_KINDS = frozenset({Kind.ROLE, Kind.SCHEMA, Kind.GRANT})
ROLE = "loader"
DATABASE_PRIVILEGES = ("CONNECT", "TEMPORARY")
PASSWORD_SECRET = "FABRIC_ROLE_LOADER"
"""The tenant secret holding its role's generated password (encrypted like any secret)."""
WAREHOUSE_DRIFT = "drift: changed in the warehouse outside git"
STRAY_GRANT = "drift: granted in the warehouse outside git"
SYSTEM_SCHEMAS = ("information_schema",)


def role_name(spec: WarehouseSpec, tenant: str) -> str:
    return login_role(spec.role_prefix, tenant)


def login_role(prefix: str, tenant: str) -> str:
    """The PostgreSQL role of `acme.role.loader`: `<prefix>acme_loader`."""
    return f"{prefix}{tenant}_{ROLE}"


def role_comment(spec: WarehouseSpec, tenant: str) -> str:
    return f"fabric:{spec.database}:{tenant}"


def managed_warehouses(desired: DesiredState) -> dict[str, WarehouseSpec]:
    return {n: w for n, w in desired.project.warehouses.items() if w.manage_roles}


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleFacts:
    name: str
    comment: str | None
    login: bool
    superuser: bool
    createdb: bool
    createrole: bool
    replication: bool
    bypassrls: bool
    member_of: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaFacts:
    name: str
    owner: str
    acl: tuple[tuple[str, str], ...] = ()
    """(grantee, privilege); grantee "PUBLIC" for everyone. The owner's own rights left out."""
    foreign_objects: int = 0
    """Tables, views and sequences in it not owned by the schema's owner."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WarehouseFacts:
    """What the warehouse says, as read through the admin connection."""

    roles: Mapping[str, RoleFacts] = field(default_factory=dict)
    schemas: Mapping[str, SchemaFacts] = field(default_factory=dict)
    database_acl: tuple[tuple[str, str], ...] = ()
    default_acl: tuple[tuple[str, str | None, str, str], ...] = ()
    """(owner role, schema or None for everywhere, grantee, privilege) on tables."""


def tenant_schemas(tenant: TenantState, managed: Mapping[str, WarehouseSpec]) -> dict[str, str]:
    """Schema -> managed warehouse name, for every schema the tenant writes in one."""
    conn_wh = {
        name: str(getattr(d.spec, "warehouse", None))
        for name, d in tenant.connections.items()
        if getattr(d.spec, "warehouse", None) in managed
    }
    out: dict[str, str] = {}
    for d in tenant.pipelines.values():
        wh = conn_wh.get(str(d.spec.destination))
        if wh is not None:
            out[d.spec.dataset] = wh
            out[f"{d.spec.dataset}_staging"] = wh  # dlt's staging dataset (merge, replace)
    for d in (*tenant.transformations.values(), *tenant.snapshots.values(), *tenant.seeds.values()):
        wh = conn_wh.get(str(d.spec.warehouse))
        if wh is not None and d.spec.schema_ is not None:
            out[d.spec.schema_] = wh
    return out


def tenant_warehouse(tenant: TenantState, managed: Mapping[str, WarehouseSpec]) -> str | None:
    names = {
        str(getattr(d.spec, "warehouse", None))
        for d in tenant.connections.values()
        if getattr(d.spec, "warehouse", None) in managed
    }
    return min(names) if names else None


def shared_with(desired: DesiredState) -> dict[str, set[str]]:
    """Tenant -> schemas other tenants share with it."""
    out: dict[str, set[str]] = {}
    for tenant in desired.tenants.values():
        for share in tenant.spec.share:
            for reader in share.with_:
                out.setdefault(reader, set()).update(share.schemas)
    return out


def desired_warehouse_records(desired: DesiredState, scope: Iterable[str]) -> dict[Address, Record]:
    """The roles, schema ownerships and shares that `scope`'s tenants should have."""
    managed = managed_warehouses(desired)
    if not managed:
        return {}
    shares = shared_with(desired)
    out: dict[Address, Record] = {}
    for slug in sorted(scope):
        tenant = desired.tenants.get(slug)
        wh_name = tenant_warehouse(tenant, managed) if tenant is not None else None
        if tenant is None or wh_name is None:
            continue
        wh = managed[wh_name]
        role = role_name(wh, slug)
        out[Address(slug, Kind.ROLE, ROLE)] = _record(
            Address(slug, Kind.ROLE, ROLE),
            _role_spec(wh_name, role, reads=sorted(shares.get(slug, ())), stored=True),
        )
        for schema in sorted(tenant_schemas(tenant, managed)):
            address = Address(slug, Kind.SCHEMA, schema)
            out[address] = _record(address, _schema_spec(wh_name, schema, role, 0))
        readers: dict[str, set[str]] = {}
        for share in tenant.spec.share:
            for schema in share.schemas:
                readers.setdefault(schema, set()).update(
                    role_name(wh, r) for r in share.with_ if r != slug
                )
        for schema, names in sorted(readers.items()):
            address = Address(slug, Kind.GRANT, schema)
            out[address] = _record(address, _grant_spec(wh_name, schema, sorted(names), []))
    return out


def _role_spec(
    warehouse: str,
    role: str,
    *,
    reads: list[str],
    stored: bool,
    facts: RoleFacts | None = None,
    database: list[str] | None = None,
    public: list[str] | None = None,
    default_grants: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "warehouse": warehouse,
        "role": role,
        "login": facts.login if facts else True,
        "superuser": facts.superuser if facts else False,
        "createdb": facts.createdb if facts else False,
        "createrole": facts.createrole if facts else False,
        "replication": facts.replication if facts else False,
        "bypassrls": facts.bypassrls if facts else False,
        "member_of": sorted(facts.member_of) if facts else [],
        "database": database if database is not None else list(DATABASE_PRIVILEGES),
        "reads": reads,
        "public": public or [],
        "default_grants": default_grants or [],
        "password": "stored encrypted" if stored else "not stored",
    }


def _schema_spec(warehouse: str, schema: str, owner: str, foreign: int) -> dict[str, Any]:
    return {"warehouse": warehouse, "schema": schema, "owner": owner, "objects_of_others": foreign}


def _grant_spec(
    warehouse: str, schema: str, readers: list[str], other: list[str]
) -> dict[str, Any]:
    return {
        "warehouse": warehouse,
        "schema": schema,
        "usage": readers,
        "select_on_new_tables": readers,
        "other": other,
    }


def _record(address: Address, spec: dict[str, Any]) -> Record:
    return Record(address=address, spec=MappingProxyType(spec), secret_refs=MappingProxyType({}))


def observed_warehouse_records(
    warehouse: str,
    spec: WarehouseSpec,
    facts: WarehouseFacts,
    desired: Mapping[Address, Record],
    has_password: frozenset[str],
) -> dict[Address, dict[str, Any]]:
    """The warehouse's actual roles, ownerships and grants, as records at their addresses."""
    prefix = f"fabric:{spec.database}:"
    tenant_of: dict[str, str] = {}
    for name, role in facts.roles.items():
        tenant = (role.comment or "").removeprefix(prefix)
        # Both the comment and the name must be this installation's: another one sharing the
        # server (another role_prefix) keeps its roles, even for a tenant of the same name.
        if role.comment and role.comment.startswith(prefix) and name == role_name(spec, tenant):
            tenant_of[name] = tenant
    for address, record in desired.items():
        name = str(record.spec.get("role"))
        is_role = address.kind is Kind.ROLE and record.spec["warehouse"] == warehouse
        if is_role and name in facts.roles:
            tenant_of[name] = address.tenant
    managed_owner = {s.name for s in facts.schemas.values() if s.owner in tenant_of}
    out: dict[Address, dict[str, Any]] = {}
    public = sorted(f"database:{p}" for g, p in facts.database_acl if g == "PUBLIC") + sorted(
        f"{s.name}:{p}"
        for s in facts.schemas.values()
        if s.name not in managed_owner
        for g, p in s.acl
        if g == "PUBLIC"
    )
    for name, tenant in sorted(tenant_of.items()):
        role = facts.roles[name]
        reads = sorted(
            s.name if p == "USAGE" else f"{s.name}:{p}"
            for s in facts.schemas.values()
            if s.owner != name
            for g, p in s.acl
            if g == name
        )
        defaults = sorted(
            f"{g}:{p}" for o, sch, g, p in facts.default_acl if o == name and sch is None
        )
        out[Address(tenant, Kind.ROLE, ROLE)] = _role_spec(
            warehouse,
            name,
            reads=reads,
            stored=tenant in has_password,
            facts=role,
            database=sorted(p for g, p in facts.database_acl if g == name),
            public=public,
            default_grants=defaults,
        )
    desired_schemas = {
        str(r.spec["schema"]): a
        for a, r in desired.items()
        if a.kind is Kind.SCHEMA and r.spec["warehouse"] == warehouse
    }
    for schema in facts.schemas.values():
        tenant = tenant_of.get(schema.owner)
        address = (
            Address(tenant, Kind.SCHEMA, schema.name)
            if tenant is not None
            else desired_schemas.get(schema.name)
        )
        if address is None:
            continue
        out[address] = _schema_spec(warehouse, schema.name, schema.owner, schema.foreign_objects)
        if tenant is None:
            continue
        others = [(g, p) for g, p in schema.acl if g != schema.owner]
        defaults = [
            (g, p) for o, s, g, p in facts.default_acl if o == schema.owner and s == schema.name
        ]
        if not others and not defaults:
            continue
        usage = sorted({g for g, p in others if p == "USAGE"})
        new_tables = sorted({g for g, p in defaults if p == "SELECT"})
        other = sorted(
            [f"{g}:{p}" for g, p in others if p != "USAGE"]
            + [f"{g}:{p} (new tables)" for g, p in defaults if p != "SELECT"]
        )
        out[Address(tenant, Kind.GRANT, schema.name)] = {
            "warehouse": warehouse,
            "schema": schema.name,
            "usage": usage,
            "select_on_new_tables": new_tables,
            "other": other,
        }
    return out


def warehouse_changes(
    desired: Mapping[Address, Record],
    observed: Mapping[Address, Mapping[str, Any]],
    *,
    tenants: Iterable[str],
    declared: frozenset[str],
    changed_in_git: frozenset[str] = frozenset(),
) -> tuple[Change, ...]:
    """Diff desired against observed warehouse records of `tenants` (`declared`: the tenants
    in git).

    A difference in a tenant whose declaration did not change in this plan is drift; a delete
    carries what is being removed (apply needs the role's or schema's name, the tenant may be
    gone from git).
    """
    scope = frozenset(tenants)
    stored = {
        a: Observed(
            address=a,
            fingerprint=record_fingerprint(dict(spec), {}, False),
            intact=True,
            spec=MappingProxyType(dict(spec)),
        )
        for a, spec in observed.items()
        if a.tenant in scope
    }
    changes = diff(desired, {}, stored, tenants=scope)
    out = []
    for change in changes:
        if change.action is Action.DELETE:
            spec = observed[change.address]
            fields = tuple(
                FieldChange(name=k, before=v)
                for k, v in sorted(spec.items())
                if v not in ([], None)
            )
            tenant = change.address.tenant
            if tenant not in declared:
                reason = "tenant folder removed"
            elif tenant in changed_in_git:
                reason = "removed from git"
            else:
                reason = STRAY_GRANT if change.address.kind is Kind.GRANT else WAREHOUSE_DRIFT
            out.append(replace(change, fields=fields, reason=reason))
        elif change.action is Action.UPDATE and change.address.tenant not in changed_in_git:
            out.append(replace(change, reason=WAREHOUSE_DRIFT))
        else:
            out.append(replace(change, reason=None) if change.reason else change)
    return tuple(out)


def change_spec(change: Change) -> Mapping[str, Any]:
    """The target spec of a create/update, or what a delete removes."""
    if change.target is not None:
        return change.target.spec
    return {f.name: f.before for f in change.fields}
