"""What `fabric apply` does with a plan, as an ordered list of steps.  [pure]

`apply_steps(changes)` decides the order once, as data; fabric.apply runs the steps one by one
with a `match`, and `fabric plan --explain` prints them. Ordering is then tested without a
database, and the runner cannot silently skip a step it does not know (`assert_never`).

Two phases, so that an apply's lock count does not grow with the number of tenants it creates
(PostgreSQL's default lock table fits about 130 new tenant schemas in one transaction):
- preparation, each step in its own short transactions, under the session's apply locks:
  locks, stale check, rows, orphan clean-up, then new tenants' schemas and rows provisioned in
  batches. Nothing of it is visible to `plan` or `run`, which see only registered tenants;
- the switch (`SWITCH_STEPS`), one transaction: new tenants registered, existing tenants'
  changes written, the apply recorded. A crash before its commit leaves only unregistered
  schemas, which the next apply drops.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fabric.addresses import Address, Kind
from fabric.plan.diff import Action, Change, tenants_of
from fabric.plan.warehouse import WAREHOUSE_KINDS, change_spec


@dataclass(frozen=True, slots=True)
class MigrateSharedSchema:
    """Bring the shared schema to head if it is behind (under its own lock)."""


@dataclass(frozen=True, slots=True)
class LockTenants:
    """Per-tenant advisory locks, in sorted order (no deadlocks between applies)."""

    tenants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RefuseIfStale:
    """Re-read the touched tenants; refuse the plan if anything it read has moved."""

    tenants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Authorize:
    """Refuse the plan if its author may not make every change: members and project admins
    as the control plane holds them (fabric/plan/authorize.py)."""

    tenants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PrepareRows:
    """The rows to write: `${env:}` / `${secret:}` values resolved and encrypted (those of
    `with_secrets`), fingerprints settled."""

    addresses: tuple[Address, ...]
    with_secrets: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class DropOrphanSchemas:
    """Drop the provisional schemas of applies that died before their switch."""


@dataclass(frozen=True, slots=True)
class ProvisionTenants:
    """New tenants' schemas (`tenant_<id>`, ids reserved now) and their resources' rows, in
    batches of bounded size, one transaction each; unregistered, so invisible until the switch."""

    tenants: tuple[str, ...]
    upserts: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class RegisterTenants:
    """The switch begins: the provisioned tenants' rows in the shared `tenants` table."""

    tenants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpdateTenants:
    tenants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WriteResources:
    """Upserts parents-first and soft deletes children-first, in bulk."""

    upserts: tuple[Address, ...]
    deletes: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class DeleteTenants:
    tenants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApplyWarehouse:
    """Roles, schema ownership and grants of one managed warehouse, in its own transaction
    (committed just before the control plane's): roles, ownership, grants, then revokes and
    drops. A role's generated password is stored (encrypted) in the tenant's secrets."""

    warehouse: str
    changes: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class RecordApply:
    """The history row: commit, author, plan hash, counts, outcome."""

    tenants: tuple[str, ...]


Step = (
    MigrateSharedSchema
    | LockTenants
    | RefuseIfStale
    | Authorize
    | PrepareRows
    | DropOrphanSchemas
    | ProvisionTenants
    | RegisterTenants
    | UpdateTenants
    | WriteResources
    | DeleteTenants
    | ApplyWarehouse
    | RecordApply
)


def apply_steps(changes: Iterable[Change]) -> tuple[Step, ...]:
    """The steps of applying `changes` (already ordered by the plan), in order; none when empty."""
    changes = tuple(changes)
    touched = tenants_of(changes)
    if not touched:
        return ()

    def tenant_changes(action: Action) -> tuple[str, ...]:
        return tuple(
            c.address.tenant
            for c in changes
            if c.address.kind is Kind.TENANT and c.action is action
        )

    warehouse = [c for c in changes if c.address.kind in WAREHOUSE_KINDS]
    changes = tuple(c for c in changes if c.address.kind not in WAREHOUSE_KINDS)
    resources = [c for c in changes if c.address.kind is not Kind.TENANT]
    steps: list[Step] = [
        MigrateSharedSchema(),
        LockTenants(touched),
        RefuseIfStale(touched),
        Authorize(touched),
    ]
    rows = tuple(c.address for c in changes if c.target is not None)
    if rows:
        with_secrets = tuple(
            c.address for c in changes if c.target is not None and c.target.secret_refs
        )
        steps.append(PrepareRows(rows, with_secrets))
    steps.append(DropOrphanSchemas())
    created = tenant_changes(Action.CREATE)
    new = set(created)
    written = [c.address for c in resources if c.action is not Action.DELETE]
    upserts = tuple(a for a in written if a.tenant not in new)
    if created:
        provisioned = tuple(a for a in written if a.tenant in new)
        steps.append(ProvisionTenants(created, provisioned))
        steps.append(RegisterTenants(created))
    if updated := tenant_changes(Action.UPDATE):
        steps.append(UpdateTenants(updated))
    deletes = tuple(c.address for c in changes if c.action is Action.DELETE)
    resource_deletes = tuple(a for a in deletes if a.kind is not Kind.TENANT)
    if upserts or resource_deletes:
        steps.append(WriteResources(upserts, resource_deletes))
    if gone := tenant_changes(Action.DELETE):
        steps.append(DeleteTenants(gone))
    by_warehouse: dict[str, list[Address]] = {}
    for c in warehouse:
        name = str(change_spec(c).get("warehouse"))
        by_warehouse.setdefault(name, []).append(c.address)
    for name, addresses in sorted(by_warehouse.items()):
        steps.append(ApplyWarehouse(name, tuple(addresses)))
    steps.append(RecordApply(touched))
    return tuple(steps)


SWITCH_STEPS = (
    RegisterTenants,
    UpdateTenants,
    WriteResources,
    DeleteTenants,
    ApplyWarehouse,
    RecordApply,
)
"""Steps that run together in the switch transaction; every other step comes before them."""


def describe_step(step: Step) -> str:
    """One line for `fabric plan --explain`."""

    def names(items: Iterable[object], limit: int = 6) -> str:
        shown = [str(i) for i in items]
        more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
        return ", ".join(shown[:limit]) + more

    match step:
        case MigrateSharedSchema():
            return "migrate the shared schema `fabric` to head, if it is behind"
        case LockTenants(tenants=t):
            return f"take the apply lock of {len(t)} tenant(s), in order: {names(t)}"
        case RefuseIfStale(tenants=t):
            return f"re-read {len(t)} tenant(s); refuse the plan if anything it read has changed"
        case Authorize(tenants=t):
            return (
                f"check that the author may make every change of {len(t)} tenant(s), by their "
                "members and the project admins as stored (unless ownership.enforce is false)"
            )
        case PrepareRows(addresses=a, with_secrets=s):
            secrets = f", encrypting the secrets of {names(s)}" if s else ""
            return f"prepare {len(a)} row(s) to write{secrets}"
        case DropOrphanSchemas():
            return "drop the provisional schemas of applies that died before their switch"
        case ProvisionTenants(tenants=t, upserts=u):
            return (
                f"provision the schemas of {len(t)} new tenant(s) and write their {len(u)} "
                f"resource(s), in batches, unregistered (invisible) until the switch: {names(t)}"
            )
        case RegisterTenants(tenants=t):
            return f"switch (one transaction from here): register {len(t)} new tenant(s)"
        case UpdateTenants(tenants=t):
            return f"update {len(t)} tenant(s): {names(t)}"
        case WriteResources(upserts=u, deletes=d):
            return f"write {len(u)} resource(s) and soft-delete {len(d)}, in bulk"
        case DeleteTenants(tenants=t):
            return f"delete {len(t)} tenant(s): {names(t)} (their data schemas stay)"
        case ApplyWarehouse(warehouse=w, changes=c):
            return (
                f"change warehouse {w}: {len(c)} role/schema/grant change(s) ({names(c)}), "
                "roles first, then ownership, then grants; revokes before drops"
            )
        case RecordApply(tenants=t):
            return (
                "record the apply in `fabric history` (commit, author, plan hash, counts, "
                "each change field by field)"
            )
    raise AssertionError(f"unknown step {step!r}")
