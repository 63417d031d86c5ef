"""Make a plan: read the control plane once, resolve secret fingerprints, diff.  [shell]

The pure steps (records, diff, ordering, safety) live in fabric/plan; this module feeds them
what only the shell can know: the stored state and the current secret values' fingerprints.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from fabric.addresses import Address, Kind
from fabric.config.references import parse_reference
from fabric.domain.state import DesiredState
from fabric.plan.diff import (
    Change,
    addresses_to_inspect,
    desired_fingerprints,
    diff,
    order_changes,
    tenants_of,
    usable_moves,
)
from fabric.plan.plan import Plan
from fabric.plan.records import Record, desired_records
from fabric.plan.safety import SafetyOptions, unsafe_reasons
from fabric.state.secrets import pending_fingerprints
from fabric.state.snapshot import Snapshot, load_specs, read_secret_fingerprints, read_snapshot

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fabric.state.secrets import SecretBox

SecretFps = dict[Address, dict[str, str | None]]


def make_plan(
    conn: Connection,
    desired: DesiredState,
    *,
    repo: str,
    box: SecretBox | None,
    environ: Mapping[str, str],
    tenants: Iterable[str] = (),
    safety: SafetyOptions | None = None,
) -> Plan:
    """The plan of `desired` against the control plane. `conn` must not be inside
    `engine.begin()`: the reads end its transaction between batches (state/snapshot.py)."""
    only = frozenset(tenants)
    snapshot = read_snapshot(conn, only or None, release=True)
    scope = set(desired.tenants) | set(snapshot.tenants)
    if only:
        scope &= only
    records = desired_records(desired, frozenset(scope))
    store_fps = _store_fingerprints(conn, snapshot, records)
    notes: list[str] = []
    fps = _secret_fps(records, store_fps, box, environ, {}, notes)
    observed = dict(snapshot.observed)
    fingerprints = desired_fingerprints(records, fps)
    inspect = addresses_to_inspect(
        fingerprints, {a: (o.fingerprint, o.intact) for a, o in observed.items()}
    )
    declared_moves = {
        m.new: m.old
        for slug in sorted(scope)
        if slug in desired.tenants
        for m in desired.tenants[slug].moves
    }
    moves, move_notes = usable_moves(declared_moves, observed)
    notes.extend(move_notes)
    # a moved object is diffed against its stored spec; a deleted node's spec says where its
    # tables are (the plan says they stay)
    gone = {
        a
        for a in observed
        if a.tenant in scope and a not in records and a.kind in (Kind.PIPELINE, Kind.TRANSFORMATION)
    }
    inspect = inspect | frozenset(moves.values()) | gone
    loaded = load_specs(conn, snapshot.tenants, inspect, release=True)
    for address, (spec, secret_fps) in loaded.items():
        observed[address] = replace(observed[address], spec=spec, secret_fps=secret_fps)
    # Prefer the keys that made the stored fingerprints, so adding a key changes nothing.
    rechecked = {a: records[a] for a in loaded if a in records and records[a].secret_refs}
    if rechecked:
        stored = {a: observed[a].secret_fps for a in rechecked}
        fps.update(_secret_fps(rechecked, store_fps, box, environ, stored, []))
        fingerprints.update(desired_fingerprints(rechecked, fps))
    changes = diff(records, fps, observed, tenants=scope, fingerprints=fingerprints, moves=moves)
    changes = (*changes, *_warehouse_changes(conn, desired, snapshot, scope, changes, environ))
    changes = order_changes(changes)
    read_set: dict[Address, str | None] = {
        a: token for a, token in snapshot.tokens.items() if a.tenant in scope
    }
    for change in changes:
        read_set.setdefault(change.address, None)
    options = safety or SafetyOptions(
        allow_delete=desired.project.apply.allow_delete,
        max_deletes=desired.project.apply.max_deletes,
    )
    return Plan(
        source_hash=desired.source_hash,
        repo=repo,
        tenants=tuple(sorted(scope)),
        read_set=MappingProxyType(read_set),
        changes=changes,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        warnings=unsafe_reasons(changes, options),
        notes=tuple(sorted(set(notes))),
    )


def _warehouse_changes(
    conn: Connection,
    desired: DesiredState,
    snapshot: Snapshot,
    scope: Iterable[str],
    changes: Iterable[Change],
    environ: Mapping[str, str],
) -> tuple[Change, ...]:
    """Roles, schema ownership and shares of managed warehouses: desired vs what each
    warehouse says now (one query per warehouse, through its admin connection)."""
    from fabric.plan import warehouse as wh
    from fabric.state.warehouse import connect_admin, read_facts

    managed = wh.managed_warehouses(desired)
    if not managed:
        return ()
    scope = sorted(scope)
    desired_wh = wh.desired_warehouse_records(desired, scope)
    rows = [snapshot.tenants[s] for s in scope if s in snapshot.tenants]
    has_password = frozenset(
        slug
        for slug, names in read_secret_fingerprints(conn, rows).items()
        if wh.PASSWORD_SECRET in names
    )
    observed: dict[Address, dict] = {}
    for name, spec in sorted(managed.items()):
        mine = {a: r for a, r in desired_wh.items() if r.spec["warehouse"] == name}
        roles = [str(r.spec["role"]) for a, r in mine.items() if a.kind is Kind.ROLE]
        with connect_admin(spec, environ, name) as admin:
            facts = read_facts(admin, spec, roles)
        observed.update(wh.observed_warehouse_records(name, spec, facts, mine, has_password))
    return wh.warehouse_changes(
        desired_wh,
        observed,
        tenants=scope,
        declared=frozenset(desired.tenants),
        changed_in_git=frozenset(tenants_of(changes)),
    )


def _store_fingerprints(
    conn: Connection, snapshot: Snapshot, records: Mapping[Address, Record]
) -> dict[str, dict[str, str]]:
    """Fingerprints of `${secret:NAME}` values in the tenants' secret stores."""
    wanted = {
        a.tenant
        for a, r in records.items()
        if any(ref.startswith("${secret:") for ref in r.secret_refs.values())
    }
    rows = [snapshot.tenants[slug] for slug in sorted(wanted) if slug in snapshot.tenants]
    new = sorted(slug for slug in wanted if slug not in snapshot.tenants)
    # a new tenant's secrets may be stored before its first apply (pending), which binds them
    return {**read_secret_fingerprints(conn, rows, release=True), **pending_fingerprints(conn, new)}


def _secret_fps(
    records: Mapping[Address, Record],
    store_fps: Mapping[str, Mapping[str, str]],
    box: SecretBox | None,
    environ: Mapping[str, str],
    stored: Mapping[Address, Mapping[str, str]],
    notes: list[str],
) -> SecretFps:
    out: SecretFps = {}
    for address, record in records.items():
        if not record.secret_refs:
            continue
        fps: dict[str, str | None] = {}
        for path, ref_text in record.secret_refs.items():
            ref = parse_reference(ref_text)
            assert ref is not None
            previous = stored.get(address, {}).get(path)
            if ref.scheme == "secret":
                fps[path] = store_fps.get(address.tenant, {}).get(ref.name)
                if fps[path] is None:
                    notes.append(
                        f"secret {ref.name!r} of tenant {address.tenant} is not set yet: "
                        f"`fabric secrets set {address.tenant} {ref.name}` "
                        "(runs needing it fail until then)"
                    )
                continue
            value = environ.get(ref.name)
            if value is None:
                notes.append(f"${{env:{ref.name}}} is not set here: its value was not compared")
                fps[path] = previous
                continue
            if box is None:
                raise RuntimeError("a secret box is needed to fingerprint secrets")
            prefer = previous.split(":", 1)[0] if previous else None
            fps[path] = box.fingerprint(value, prefer_key_id=prefer)
        out[address] = fps
    return out


def plan_needs_secrets(desired: DesiredState) -> bool:
    return any(
        r.secret_refs
        for r in desired_records(desired).values()
        if r.address.kind is not Kind.TENANT
    )
