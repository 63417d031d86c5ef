"""Apply a plan: lock, re-check what it read, write everything in one transaction.  [shell]

Order inside the one transaction: per-tenant advisory locks (sorted), re-read the content
tokens of the touched tenants and refuse a stale plan naming what moved, create new tenants'
schemas, encrypt secrets, write, record the apply. Any failure rolls everything back; a killed
process leaves the control plane exactly as it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, assert_never

from fabric.addresses import Address, Kind
from fabric.config.references import parse_reference
from fabric.errors import MissingSecretError, StalePlanError, StateError, UnsafePlanError
from fabric.plan import steps
from fabric.plan.diff import Change, counts, tenants_of
from fabric.plan.fingerprint import record_fingerprint
from fabric.plan.plan import Plan
from fabric.plan.safety import SafetyOptions, unsafe_reasons
from fabric.state import history, locks, schedules, writes
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


@dataclass(frozen=True, slots=True)
class ApplyResult:
    apply_id: int | None
    counts: Mapping[str, int]
    tenants: tuple[str, ...]

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
            " The server's lock table is too small for this many new tenants in one apply: "
            "raise max_locks_per_transaction (fabric's embedded server uses 1024), or apply "
            "fewer new tenants at a time with --tenant."
        )
    return f"The apply failed and was rolled back; nothing was changed. Server said: {first}.{hint}"


def _apply(
    engine: Engine,
    plan: Plan,
    touched: tuple[str, ...],
    box: SecretBox | None,
    environ: Mapping[str, str],
    options: ApplyOptions,
) -> ApplyResult:
    started = dt.datetime.now(dt.UTC)
    by_address = {c.address: c for c in plan.changes}
    row_writes: dict[Address, writes.RowWrite] = {}
    tenant_rows: dict[str, TenantRow] = {}
    apply_id: int | None = None
    with engine.begin() as conn:
        locks.name_session(conn, client_name())
        for step in steps.apply_steps(plan.changes):
            match step:
                case steps.MigrateSharedSchema():
                    if not shared_is_current(conn):
                        locks.acquire_migration_lock(conn)
                        upgrade_shared(conn)
                case steps.LockTenants(tenants=slugs):
                    locks.acquire_tenant_locks(conn, slugs, timeout=options.lock_timeout)
                case steps.RefuseIfStale(tenants=slugs):
                    _refuse_if_stale(conn, plan, slugs)
                    tenant_rows.update(read_tenant_rows(conn, slugs))
                case steps.PrepareRows(addresses=addresses):
                    changes = tuple(by_address[a] for a in addresses)
                    for w in _row_writes(conn, changes, tenant_rows, box, environ):
                        row_writes[w.change.address] = w
                case steps.CreateTenants(tenants=slugs):
                    new = [row_writes[Address.of_tenant(s)] for s in slugs]
                    tenant_rows.update(writes.create_tenants(conn, new))
                case steps.UpdateTenants(tenants=slugs):
                    writes.update_tenants(conn, [row_writes[Address.of_tenant(s)] for s in slugs])
                case steps.WriteResources(upserts=upserts, deletes=deletes):
                    writes.write_resources(
                        conn,
                        tenant_rows,
                        [row_writes[a] for a in upserts],
                        [by_address[a] for a in deletes],
                    )
                    _sync_schedule_clock(conn, tenant_rows, by_address, upserts, deletes, started)
                case steps.DeleteTenants(tenants=slugs):
                    schedules.drop_tenants(conn, list(slugs))
                    writes.delete_tenants(conn, list(slugs))
                case steps.RecordApply(tenants=slugs):
                    apply_id = history.record_apply(
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
                case _:
                    assert_never(step)
    return ApplyResult(apply_id, counts(plan.changes), touched)


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
    current = read_snapshot(conn, touched).tokens
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
    from fabric.state.secrets import read_secret_entry

    row = tenants.get(slug)
    if row is None:
        return None, None
    entry = read_secret_entry(conn, _box(box), slug, row.schema_name, name)
    return entry if entry is not None else (None, None)


def _box(box: SecretBox | None) -> SecretBox:
    if box is None:
        raise RuntimeError("secret values need a secret box (FABRIC_SECRET_KEYS)")
    return box
