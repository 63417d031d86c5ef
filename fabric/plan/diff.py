"""Diff the desired records against a snapshot of the control plane.  [pure]

Invariants:
- Pure: the same inputs give the same changes, in the same order.
- Fingerprints are compared first; specs are looked at only for what differs, so a no-op plan
  over 50k resources never decodes a stored spec.
- A secret field is compared by keyed fingerprint; its value never enters a Change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fabric.addresses import Address, Kind
from fabric.plan.destructive import data_fate
from fabric.plan.fingerprint import record_fingerprint
from fabric.plan.records import KIND_ORDER, Record

DRIFT = "drift: changed outside git"


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldChange:
    name: str
    before: Any = None
    after: Any = None
    sensitive: bool = False
    """True for secret fields: before/after are never set."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What apply writes for a create or update: the full record and its fingerprint."""

    spec: Mapping[str, Any]
    secret_refs: Mapping[str, str]
    secret_fps: Mapping[str, str | None]
    protect: bool
    fingerprint: str
    written: Mapping[str, Any] | None = None
    """The YAML's own spelling of the resource, stored for `fabric export`; not fingerprinted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    address: Address
    action: Action
    fields: tuple[FieldChange, ...] = ()
    reason: str | None = None
    """Shown to people ("drift: changed outside git"). Apply never branches on it."""
    target: Target | None = None
    protected: bool = False
    """The stored resource is protected (deletes of it are refused)."""
    moved_from: Address | None = None
    """An update of the object stored at this address (a rename: `moved:` / `renamed_from:`);
    apply renames that row in place, so its id, run history, dlt state and secrets stay."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """One stored record as read from the control plane."""

    address: Address
    fingerprint: str
    intact: bool
    """False when the row was edited outside fabric (its content no longer matches its hash)."""
    protect: bool = False
    spec: Mapping[str, Any] | None = None
    """Loaded only for addresses whose fingerprint differs."""
    secret_fps: Mapping[str, str] = field(default_factory=dict)


def desired_fingerprints(
    records: Mapping[Address, Record], secret_fps: Mapping[Address, Mapping[str, str | None]]
) -> dict[Address, str]:
    return {
        a: record_fingerprint(dict(r.spec), _fps(secret_fps.get(a, {})), r.protect)
        for a, r in records.items()
    }


def _fps(fps: Mapping[str, str | None]) -> dict[str, str | None]:
    return dict(sorted(fps.items()))


def addresses_to_inspect(
    desired: Mapping[Address, str], observed: Mapping[Address, tuple[str, bool]]
) -> frozenset[Address]:
    """Stored records whose spec must be loaded: the fingerprint differs or the row drifted."""
    return frozenset(
        a
        for a, (fp, intact) in observed.items()
        if a in desired and (desired[a] != fp or not intact)
    )


def diff(
    records: Mapping[Address, Record],
    secret_fps: Mapping[Address, Mapping[str, str | None]],
    observed: Mapping[Address, Observed],
    *,
    tenants: Iterable[str],
    fingerprints: Mapping[Address, str] | None = None,
    moves: Mapping[Address, Address] | None = None,
) -> tuple[Change, ...]:
    """Changes that make the observed state of `tenants` equal to the desired records.

    `fingerprints` may pass desired_fingerprints(records, secret_fps) when already computed.
    `moves` (new address -> old, see usable_moves) turn a create of the new address and a
    delete of the old one into one update of the stored object (its spec must be loaded).
    """
    scope = frozenset(tenants)
    if fingerprints is None:
        fingerprints = desired_fingerprints(records, secret_fps)
    moves = moves or {}
    consumed: set[Address] = set()
    changes: list[Change] = []
    for address, record in records.items():
        fps = _fps(secret_fps.get(address, {}))
        target = Target(
            spec=record.spec,
            secret_refs=record.secret_refs,
            secret_fps=fps,
            protect=record.protect,
            fingerprint=fingerprints[address],
            written=record.written,
        )
        stored = observed.get(address)
        old = moves.get(address)
        if stored is None and old is not None and old in observed:
            stored = observed[old]
            consumed.add(old)
            changes.append(
                Change(
                    address=address,
                    action=Action.UPDATE,
                    fields=(
                        FieldChange(name="name", before=old.name, after=address.name),
                        *_changed_fields(record, fps, stored),
                    ),
                    reason=DRIFT if not stored.intact else None,
                    target=target,
                    protected=stored.protect,
                    moved_from=old,
                )
            )
            continue
        if stored is None:
            changes.append(
                Change(
                    address=address,
                    action=Action.CREATE,
                    fields=_created_fields(record),
                    target=target,
                )
            )
            continue
        if stored.fingerprint == fingerprints[address] and stored.intact:
            continue
        fields = _changed_fields(record, fps, stored)
        reason = DRIFT if not stored.intact else None
        if not fields and reason is None:
            # Same meaning, other bytes: the stored spec lacks only fields that a newer fabric
            # added with an empty default. Rewriting every record after an upgrade would show
            # as a change of every resource; the record is left as it is.
            continue
        changes.append(
            Change(
                address=address,
                action=Action.UPDATE,
                fields=fields,
                reason=reason,
                target=target,
                protected=stored.protect,
            )
        )
    for address, stored in observed.items():
        if address.tenant in scope and address not in records and address not in consumed:
            tenant_gone = Address.of_tenant(address.tenant) not in records
            reason = "tenant folder removed" if tenant_gone else "removed from git"
            fate = data_fate(address.kind.value, address.name, stored.spec)
            changes.append(
                Change(
                    address=address,
                    action=Action.DELETE,
                    reason=f"{reason}; {fate}" if fate else reason,
                    protected=stored.protect,
                )
            )
    return order_changes(changes)


def usable_moves(
    moves: Mapping[Address, Address], observed: Mapping[Address, object]
) -> tuple[dict[Address, Address], tuple[str, ...]]:
    """The moves plan can make (new -> old), and a note for each it ignores.

    Like Terraform: a move from an object the control plane does not hold is ignored (the new
    one is created); one whose new address is stored already was made by an earlier apply
    (nothing to do, or, if the old one is stored too, both stay what they are).
    """
    usable: dict[Address, Address] = {}
    notes: list[str] = []
    for new, old in sorted(moves.items()):
        if new in observed:
            if old in observed:
                notes.append(
                    f"move {old} -> {new} ignored: both are in the control plane "
                    f"({old} is deleted if no longer declared)"
                )
            continue
        if old not in observed:
            notes.append(
                f"move {old} -> {new} ignored: the control plane holds no {old} ({new} is created)"
            )
            continue
        usable[new] = old
    return usable, tuple(notes)


def order_changes(changes: Iterable[Change]) -> tuple[Change, ...]:
    """Creates and updates parents-first, then deletes children-first; ties by address."""
    upserts = sorted(
        (c for c in changes if c.action is not Action.DELETE),
        key=lambda c: (c.address.tenant, KIND_ORDER[c.address.kind], c.address),
    )
    deletes = sorted(
        (c for c in changes if c.action is Action.DELETE),
        key=lambda c: (c.address.tenant, -KIND_ORDER[c.address.kind], c.address),
    )
    return (*upserts, *deletes)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _created_fields(record: Record) -> tuple[FieldChange, ...]:
    flat = _flatten(dict(record.spec))
    fields = [
        FieldChange(name=name, after=value)
        for name, value in sorted(flat.items())
        if value not in (None, [], {}) and name not in record.secret_refs
    ]
    fields += [FieldChange(name=name, sensitive=True) for name in sorted(record.secret_refs)]
    if record.protect:
        fields.append(FieldChange(name="protect", after=True))
    return tuple(sorted(fields, key=lambda f: f.name))


_EMPTY: tuple[Any, ...] = (None, [], {}, ())


def _same(before: Any, after: Any) -> bool:
    """Equal values, or both empty: a field that is absent, null, [] or {} means the same."""
    return before == after or (before in _EMPTY and after in _EMPTY)


def _changed_fields(
    record: Record, fps: Mapping[str, str | None], stored: Observed
) -> tuple[FieldChange, ...]:
    before = _flatten(dict(stored.spec or {}))
    after = _flatten(dict(record.spec))
    fields = [
        FieldChange(name=name, before=before.get(name), after=after.get(name))
        for name in sorted(before.keys() | after.keys())
        if not _same(before.get(name), after.get(name)) and name not in record.secret_refs
    ]
    for name in sorted(record.secret_refs.keys() | stored.secret_fps.keys()):
        if fps.get(name) != stored.secret_fps.get(name) or before.get(name) != after.get(name):
            fields.append(FieldChange(name=name, sensitive=True))
    if record.protect != stored.protect:
        fields.append(FieldChange(name="protect", before=stored.protect, after=record.protect))
    return tuple(sorted(fields, key=lambda f: f.name))


def tenants_of(changes: Iterable[Change]) -> tuple[str, ...]:
    return tuple(sorted({c.address.tenant for c in changes}))


def counts(changes: Iterable[Change]) -> dict[str, int]:
    out = {a.value: 0 for a in Action}
    for c in changes:
        out[c.action.value] += 1
    return out


def is_tenant_delete(change: Change) -> bool:
    return change.action is Action.DELETE and change.address.kind is Kind.TENANT
