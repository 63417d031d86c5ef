"""Apply a plan: lock, re-check what it read, provision, then switch in one transaction.  [shell]

Two connections. The *switch* connection opens one transaction that takes the per-tenant
advisory locks (sorted) and, at the end, runs the switch: new tenants registered, existing
tenants' rows written, the apply recorded, committed at once. Meanwhile the *work* connection,
in short transactions of its own: re-reads the touched tenants and refuses a stale plan naming
what moved, encrypts secrets, drops orphaned provisional schemas, and provisions new tenants'
schemas and rows in batches sized to the server's lock table (fabric/state/provision.py).

What `plan` and `run` see changes only when the switch commits: all of the apply or none of it.
A failure or a killed process before that leaves, at most, unregistered schemas, which this
apply drops on failure and the next apply drops after a crash. Neither transaction's lock count
grows with the number of new tenants, so a stock PostgreSQL (`max_locks_per_transaction` 64)
takes a first apply of thousands of tenants; a switch that would change more existing tenants'
tables than the lock table holds is refused before anything is locked, saying how many fit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, assert_never

from fabric.addresses import Address, Kind
from fabric.config.references import parse_reference
from fabric.errors import (
    MissingSecretError,
    StalePlanError,
    StateError,
    UnauthorizedError,
    UnsafePlanError,
)
from fabric.plan import steps
from fabric.plan.authorize import Refusal, authorize, governing
from fabric.plan.diff import Action, Change, counts, tenants_of
from fabric.plan.fingerprint import record_fingerprint
from fabric.plan.plan import Plan
from fabric.plan.safety import SafetyOptions, unsafe_reasons
from fabric.state import history, locks, provision, schedules, tables, writes
from fabric.state.engine import DatabaseError, client_name
from fabric.state.migrate import shared_is_current, upgrade_shared
from fabric.state.snapshot import TenantRow, read_snapshot, read_tenant_rows

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from fabric.state.secrets import SecretBox


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyOptions:
    lock_timeout: float = 30.0
    safety: SafetyOptions = field(default_factory=SafetyOptions)
    git_commit: str | None = None
    author: str | None = None
    project: Mapping[str, Any] | None = None
    """fabric.yaml as JSON, recorded with the apply so `fabric export` can write it back."""
    warehouses: Mapping[str, Any] = field(default_factory=dict)
    """Managed warehouses (name -> WarehouseSpec) of fabric.yaml, for role and grant changes."""
    drop_data: bool = False
    """Drop (not keep) the data schemas a plan takes away from a tenant (`--drop-data`)."""
    on_step: Callable[[steps.Step], None] | None = None
    """Called before each step runs (progress output, timings); an exception it raises aborts
    the apply like a failing step would."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    apply_id: int | None
    counts: Mapping[str, int]
    tenants: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    """After the commit: connections whose login reaches beyond its tenant (api.apply)."""

    @property
    def changed(self) -> bool:
        return self.apply_id is not None


def apply_plan(
    engine: Engine,
    plan: Plan,
    *,
    box: SecretBox | None,
    environ: Mapping[str, str],
    options: ApplyOptions,
) -> ApplyResult:
    reasons = unsafe_reasons(plan.changes, options.safety)
    if reasons:
        raise UnsafePlanError(reasons)
    touched = tenants_of(plan.changes)
    if not touched:
        return ApplyResult(None, counts(()), ())
    _check_env(plan, environ)
    try:
        return _apply(engine, plan, touched, box, environ, options)
    except DatabaseError as exc:
        raise StateError(_database_failure(exc)) from None


def _database_failure(exc: DatabaseError) -> str:
    """A one-paragraph account of a failed statement: never the statement (it may be huge)."""
    orig = exc.orig
    first = str(orig).strip().splitlines()[0] if orig is not None else type(exc).__name__
    code = getattr(orig, "sqlstate", None)
    hint = ""
    if code == "53200":  # out_of_memory in the lock table
        hint = (
            " The server's lock table was full (PostgreSQL locks every table a transaction "
            "creates or writes until it commits, and all sessions share the table): retry when "
            "the server is less busy, apply fewer tenants at a time with --tenant, or raise "
            "max_locks_per_transaction."
        )
    return f"The apply failed and was rolled back; nothing was changed. Server said: {first}.{hint}"


@dataclass(slots=True)
class _Progress:
    """What the steps of one apply hand to each other."""

    row_writes: dict[Address, writes.RowWrite] = field(default_factory=dict)
    tenant_rows: dict[str, TenantRow] = field(default_factory=dict)
    new_ids: dict[str, int] = field(default_factory=dict)
    token: int | None = None
    apply_id: int | None = None


def _apply(
    engine: Engine,
    plan: Plan,
    touched: tuple[str, ...],
    box: SecretBox | None,
    environ: Mapping[str, str],
    options: ApplyOptions,
) -> ApplyResult:
    started = dt.datetime.now(dt.UTC)
    all_steps = steps.apply_steps(plan.changes)
    progress = _Progress()
    _ = plan.plan_hash  # cached; computed now so that the switch stays short
    with engine.connect() as work, engine.connect() as switch:
        budget = provision.lock_budget(work)
        _refuse_if_too_large(plan, budget)
        work.commit()
        try:
            with switch.begin():
                locks.name_session(switch, client_name())
                for step in all_steps:
                    if options.on_step is not None:
                        options.on_step(step)
                    if isinstance(step, steps.SWITCH_STEPS):
                        _switch_step(switch, step, plan, progress, started, box, environ, options)
                    else:
                        _prepare_step(
                            engine,
                            work,
                            switch,
                            step,
                            plan,
                            progress,
                            budget,
                            box,
                            environ,
                            options,
                        )
                        work.commit()
        except BaseException:
            work.rollback()
            if progress.token is not None:
                _drop_own_schemas(work, budget)
            raise
    return ApplyResult(progress.apply_id, counts(plan.changes), touched)


def _prepare_step(
    engine: Engine,
    work: Connection,
    switch: Connection,
    step: steps.Step,
    plan: Plan,
    progress: _Progress,
    budget: provision.LockBudget,
    box: SecretBox | None,
    environ: Mapping[str, str],
    options: ApplyOptions,
) -> None:
    """One step before the switch: on the work connection (own transactions) except the locks,
    which the switch connection's transaction takes and keeps."""
    by_address = {c.address: c for c in plan.changes}
    locks.name_session(work, client_name())
    match step:
        case steps.MigrateSharedSchema():
            if not shared_is_current(work):
                locks.acquire_migration_lock(work)
                upgrade_shared(work)
        case steps.LockTenants(tenants=slugs):
            locks.acquire_tenant_locks(switch, slugs, timeout=options.lock_timeout)
        case steps.RefuseIfStale(tenants=slugs):
            _refuse_if_stale(work, plan, slugs)
            progress.tenant_rows.update(read_tenant_rows(work, slugs))
        case steps.Authorize(tenants=slugs):
            refusals = authorization(work, plan.changes, slugs, options)
            if refusals:
                raise UnauthorizedError(refusals, options.author)
        case steps.PrepareRows(addresses=addresses):
            changes = tuple(by_address[a] for a in addresses)
            for w in _row_writes(work, changes, progress.tenant_rows, box, environ):
                progress.row_writes[w.change.address] = w
        case steps.DropOrphanSchemas():
            provision.drop_orphans(work, budget.batch_tenants)
        case steps.ProvisionTenants(tenants=slugs, upserts=upserts):
            progress.token = provision.new_token()
            provision.hold_token(switch, progress.token)
            ids = provision.reserve_ids(work, len(slugs))
            progress.new_ids = dict(zip(slugs, ids, strict=True))
            work.commit()
            rows = {
                s: TenantRow(i, s, tables.tenant_schema_name(i))
                for s, i in progress.new_ids.items()
            }
            by_tenant: dict[str, list[writes.RowWrite]] = {s: [] for s in slugs}
            for a in upserts:
                by_tenant[a.tenant].append(progress.row_writes[a])

            def one_batch(conn: Connection, batch: Sequence[str]) -> None:
                locks.name_session(conn, client_name())
                provision.create_schemas(conn, [rows[s].schema_name for s in batch], token)
                batch_writes = [w for s in batch for w in by_tenant[s]]
                writes.write_resources(conn, rows, batch_writes, [])

            token = progress.token
            provision.run_batches(engine, provision.batches(slugs, budget.batch_tenants), one_batch)
        case _:
            raise AssertionError(f"{step!r} is a switch step")


def _switch_step(
    conn: Connection,
    step: steps.Step,
    plan: Plan,
    progress: _Progress,
    started: dt.datetime,
    box: SecretBox | None,
    environ: Mapping[str, str],
    options: ApplyOptions,
) -> None:
    """One step of the switch transaction (the switch connection's, open since the locks)."""
    by_address = {c.address: c for c in plan.changes}
    row_writes = progress.row_writes
    match step:
        case steps.RegisterTenants(tenants=slugs):
            from fabric.state.secrets import bind_pending_secrets

            new = [row_writes[Address.of_tenant(s)] for s in slugs]
            registered = writes.register_tenants(conn, new, progress.new_ids)
            progress.tenant_rows.update(registered)
            # secrets set before the tenant's first apply move into its store now
            bind_pending_secrets(conn, {s: r.schema_name for s, r in registered.items()})
            new_tenants = set(slugs)
            provisioned = tuple(
                c.address
                for c in plan.changes
                if c.address.tenant in new_tenants and c.action is not Action.DELETE
            )  # their schedules start ticking with the switch, not before
            _sync_schedule_clock(conn, progress.tenant_rows, by_address, provisioned, (), started)
        case steps.UpdateTenants(tenants=slugs):
            writes.update_tenants(conn, [row_writes[Address.of_tenant(s)] for s in slugs])
        case steps.WriteResources(upserts=upserts, deletes=deletes):
            writes.write_resources(
                conn,
                progress.tenant_rows,
                [row_writes[a] for a in upserts],
                [by_address[a] for a in deletes],
            )
            _sync_schedule_clock(conn, progress.tenant_rows, by_address, upserts, deletes, started)
        case steps.DeleteTenants(tenants=slugs):
            schedules.drop_tenants(conn, list(slugs))
            writes.delete_tenants(conn, list(slugs))
        case steps.ApplyWarehouse(warehouse=name, changes=addresses):
            _apply_warehouse(
                conn,
                name,
                [by_address[a] for a in addresses],
                progress.tenant_rows,
                box,
                environ,
                options,
            )
        case steps.RecordApply(tenants=slugs):
            progress.apply_id = history.record_apply(
                conn,
                started_at=started,
                outcome="success",
                plan_hash=plan.plan_hash,
                source_hash=plan.source_hash,
                tenants=slugs,
                counts=counts(plan.changes),
                git_commit=options.git_commit,
                author=options.author,
                client=client_name(),
                project=options.project,
            )
            history.record_changes(conn, progress.apply_id, plan.changes)
        case (
            steps.MigrateSharedSchema()
            | steps.LockTenants()
            | steps.RefuseIfStale()
            | steps.Authorize()
            | steps.PrepareRows()
            | steps.DropOrphanSchemas()
            | steps.ProvisionTenants()
        ):
            raise AssertionError(f"{step!r} is not a switch step")
        case _:
            assert_never(step)


def _drop_own_schemas(work: Connection, budget: provision.LockBudget) -> None:
    """After a failed switch: drop what this apply provisioned (its token lock is released with
    the switch transaction). Best effort: if the server is gone, the next apply drops them."""
    with contextlib.suppress(DatabaseError):
        provision.drop_orphans(work, budget.batch_tenants)


def _refuse_if_too_large(plan: Plan, budget: provision.LockBudget) -> None:
    """Refuse, before locking anything, a switch that would not fit the server's lock table.

    New tenants cost the switch one lock each; changes to existing tenants' tables cost a few
    per table written, all held at once so that the change is atomic.
    """
    created = {
        c.address.tenant
        for c in plan.changes
        if c.address.kind is Kind.TENANT and c.action is Action.CREATE
    }
    tables_written = {
        (c.address.tenant, c.address.kind)
        for c in plan.changes
        if c.address.kind is not Kind.TENANT and c.address.tenant not in created
    }
    existing = {t for t, _ in tables_written}
    touched = len(tenants_of(plan.changes))
    provision.check_switch(touched, len(existing), len(tables_written), budget)


def _apply_warehouse(
    conn: Connection,
    name: str,
    changes: list[Change],
    tenants: Mapping[str, TenantRow],
    box: SecretBox | None,
    environ: Mapping[str, str],
    options: ApplyOptions,
) -> None:
    """One managed warehouse's changes. Role passwords: the stored one, else a new one, stored
    in this (control-plane) transaction; the warehouse commits first, so a failure between the
    two commits leaves a role whose password is not stored, which the next plan shows and the
    next apply sets again."""
    import secrets as py_secrets

    from fabric.addresses import Kind
    from fabric.errors import FabricError
    from fabric.plan.diff import Action
    from fabric.plan.warehouse import PASSWORD_SECRET
    from fabric.state.secrets import read_secret_entry, set_secret
    from fabric.state.warehouse import apply_warehouse, connect_admin

    spec = options.warehouses.get(name)
    if spec is None:
        raise FabricError(
            f"The plan changes roles in warehouse {name!r}, which fabric.yaml does not declare "
            "with manage_roles: true. Make the plan again."
        )
    passwords: dict[str, str] = {}
    for change in changes:
        if change.address.kind is not Kind.ROLE or change.action is Action.DELETE:
            continue
        slug = change.address.tenant
        row = tenants.get(slug)
        if row is None:
            raise FabricError(f"tenant {slug} is not in the control plane; apply it first")
        entry = read_secret_entry(conn, _box(box), slug, row.schema_name, PASSWORD_SECRET)
        if entry is None:
            password = py_secrets.token_urlsafe(32)
            set_secret(conn, _box(box), slug, row.schema_name, PASSWORD_SECRET, password)
        else:
            password = entry[0]
        passwords[slug] = password
    with connect_admin(spec, environ, name) as admin:
        apply_warehouse(admin, spec, changes, passwords=passwords, drop_data=options.drop_data)


def authorization(
    conn: Connection, changes: tuple[Change, ...], slugs: tuple[str, ...], options: ApplyOptions
) -> tuple[Refusal, ...]:
    """The changes `options.author` may not make, judged by what the control plane holds:
    the touched tenants' members and the recorded fabric.yaml (see plan/authorize.governing)."""
    exists = history.shared_tables_exist(conn)
    governance, project_changed = governing(
        history.read_project(conn) if exists else None, options.project
    )
    if governance.enforce is False:
        return ()
    members = history.read_members(conn, slugs) if exists else {}
    return authorize(
        changes,
        stored_members=members,
        governance=governance,
        author=options.author,
        project_changed=project_changed,
    )


def _sync_schedule_clock(
    conn: Connection,
    tenant_rows: Mapping[str, TenantRow],
    by_address: Mapping[Address, Change],
    upserts: tuple[Address, ...],
    deletes: tuple[Address, ...],
    now: dt.datetime,
) -> None:
    """Keep the scheduler's clock in step with the schedules written, in this transaction."""
    changed = [
        (a.tenant, a.name, by_address[a].target.spec)  # type: ignore[union-attr]
        for a in upserts
        if a.kind is Kind.SCHEDULE and by_address[a].target is not None
    ]
    gone = [(a.tenant, a.name) for a in deletes if a.kind is Kind.SCHEDULE]
    schedules.sync_clock(conn, tenant_rows, changed, gone, now)


def _check_env(plan: Plan, environ: Mapping[str, str]) -> None:
    """Every `${env:NAME}` a write needs must be set, before anything is locked or written."""
    missing: dict[str, list[Address]] = {}
    for change in plan.changes:
        if change.target is None:
            continue
        for ref_text in change.target.secret_refs.values():
            ref = parse_reference(ref_text)
            if ref is not None and ref.scheme == "env" and ref.name not in environ:
                missing.setdefault(ref.name, []).append(change.address)
    if missing:
        raise MissingSecretError(
            {name: tuple(str(a) for a in addresses) for name, addresses in sorted(missing.items())}
        )


def _refuse_if_stale(conn: Connection, plan: Plan, touched: tuple[str, ...]) -> None:
    current = read_snapshot(conn, touched, release=True).tokens
    scope = set(touched)
    moved = {
        a for a, token in plan.read_set.items() if a.tenant in scope and current.get(a) != token
    }
    moved |= {a for a in current if a.tenant in scope and a not in plan.read_set}
    if moved:
        raise StalePlanError(sorted(moved))


def _row_writes(
    conn: Connection,
    changes: tuple[Change, ...],
    tenants: Mapping[str, TenantRow],
    box: SecretBox | None,
    environ: Mapping[str, str],
) -> list[writes.RowWrite]:
    out: list[writes.RowWrite] = []
    store_cache: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    for change in changes:
        target = change.target
        if target is None:
            continue
        secrets: dict[str, Any] = {}
        fps: dict[str, str | None] = {}
        for path, ref_text in sorted(target.secret_refs.items()):
            ref = parse_reference(ref_text)
            assert ref is not None
            binding = f"{change.address}#{path}"
            value: str | None
            if ref.scheme == "env":
                value = environ[ref.name]
                planned = target.secret_fps.get(path)
                prefer = planned.split(":", 1)[0] if planned else None
                fp = _box(box).fingerprint(value, prefer_key_id=prefer)
            else:
                key = (change.address.tenant, ref.name)
                if key not in store_cache:
                    store_cache[key] = _from_store(conn, tenants, box, *key)
                    if len(store_cache) % 100 == 0:
                        conn.commit()  # release the stores' locks (see state/snapshot.py)
                value, fp = store_cache[key]
            secrets[path] = {
                "ref": ref_text,
                "ct": _box(box).encrypt(binding, value) if value is not None else None,
                "fp": fp,
            }
            fps[path] = fp
        fingerprint = target.fingerprint
        if fps != dict(target.secret_fps):  # a value resolved now differs from the planned one
            fingerprint = record_fingerprint(
                dict(target.spec), dict(sorted(fps.items())), target.protect
            )
        out.append(writes.RowWrite(change, secrets, fingerprint))
    return out


def _from_store(
    conn: Connection,
    tenants: Mapping[str, TenantRow],
    box: SecretBox | None,
    slug: str,
    name: str,
) -> tuple[str | None, str | None]:
    """(value, fingerprint) of a stored `${secret:NAME}`, or (None, None) when not set yet."""
    from fabric.state.secrets import read_pending_entry, read_secret_entry

    row = tenants.get(slug)
    if row is None:  # a new tenant: its secrets may be pending (stored before this apply)
        entry = read_pending_entry(conn, _box(box), slug, name)
        return entry if entry is not None else (None, None)
    entry = read_secret_entry(conn, _box(box), slug, row.schema_name, name)
    return entry if entry is not None else (None, None)


def _box(box: SecretBox | None) -> SecretBox:
    if box is None:
        raise RuntimeError("secret values need a secret box (FABRIC_SECRET_KEYS)")
    return box
