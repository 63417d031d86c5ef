"""Desired state -> flat records, one per address, as the control plane stores them.  [pure]

A record is the JSON form of a spec (every field, defaults included, so a hand edit of any
field shows up as drift), the references of its secret fields, and its `protect` flag.
Secret *values* are never part of a record: only references, and keyed fingerprints added by
the shell when it resolves them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fabric.addresses import Address, Kind
from fabric.config.references import is_secret_key, parse_reference
from fabric.domain.state import DesiredState, TenantState


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    address: Address
    spec: Mapping[str, Any]
    """JSON-able spec; secret fields hold their `${env:X}` / `${secret:X}` reference."""
    secret_refs: Mapping[str, str]
    """Dotted field path -> reference, for every secret field."""
    protect: bool = False
    written: Mapping[str, Any] | None = None
    """The resource as its YAML wrote it, for `fabric export` (never diffed or fingerprinted)."""


def desired_records(
    desired: DesiredState, tenants: frozenset[str] | None = None
) -> dict[Address, Record]:
    records: dict[Address, Record] = {}
    for slug, tenant in desired.tenants.items():
        if tenants is not None and slug not in tenants:
            continue
        for record in tenant_records(tenant):
            records[record.address] = record
    return records


def tenant_records(tenant: TenantState) -> Iterator[Record]:
    yield _record(
        Address.of_tenant(tenant.slug),
        tenant.spec.model_dump(mode="json", by_alias=True),
        written=tenant.written,
    )
    # Only connections have secret fields (the specs say so); other kinds skip that walk.
    for declared in tenant.connections.values():
        spec = declared.spec.model_dump(mode="json", by_alias=True)
        yield _record(declared.address, spec, has_secrets=True, written=declared.written)
    for declared in tenant.pipelines.values():
        spec = declared.spec.model_dump(mode="json", by_alias=True)
        if spec.get("freshness") is None:  # records from before `freshness:` stay unchanged
            spec.pop("freshness", None)
        yield _record(declared.address, spec, written=declared.written)
    for declared in tenant.transformations.values():
        spec = declared.spec.model_dump(mode="json", by_alias=True)
        spec["sql"] = tenant.sql.get(declared.address.name, spec.get("sql"))
        yield _record(declared.address, spec, written=declared.written)
    for declared in tenant.schedules.values():
        spec = declared.spec.model_dump(mode="json", by_alias=True)
        yield _record(declared.address, spec, written=declared.written)
    for declared in tenant.snapshots.values():  # like a transformation: the SQL's text in it
        spec = declared.spec.model_dump(mode="json", by_alias=True)
        spec["sql"] = tenant.snapshot_sql.get(declared.address.name, spec.get("sql"))
        yield _record(declared.address, spec, written=declared.written)
    for declared in (*tenant.macros.values(), *tenant.seeds.values(), *tenant.tests.values()):
        yield _record(declared.address, declared.spec.model_dump(mode="json", by_alias=True))
    for dep in tenant.dependencies:
        address = Address.of_edge(dep.upstream, dep.downstream)
        spec = {
            "upstream": str(dep.upstream),
            "downstream": str(dep.downstream),
            "origin": dep.origin,
        }
        yield _record(address, spec)


def _record(
    address: Address,
    spec: dict[str, Any],
    *,
    has_secrets: bool = False,
    written: Mapping[str, Any] | None = None,
) -> Record:
    protect = bool(spec.pop("protect", False))
    spec.pop("renamed_from", None)  # a rename is a move (plan), not a field of the object
    refs = dict(secret_paths(spec)) if has_secrets else {}
    return Record(
        address=address,
        spec=MappingProxyType(spec),
        secret_refs=MappingProxyType(refs),
        protect=protect,
        written=written,
    )


def secret_paths(value: Any, prefix: str = "", parent: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, reference) of every secret field: named like one, or under credentials."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(item, str) and (is_secret_key(str(key)) or parent == "credentials"):
                if parse_reference(item) is not None:
                    yield path, item
            else:
                yield from secret_paths(item, path, str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from secret_paths(item, f"{prefix}.{i}", parent)


KIND_ORDER = {
    Kind.TENANT: 0,
    Kind.CONNECTION: 1,
    Kind.PIPELINE: 2,
    Kind.TRANSFORMATION: 2,
    Kind.SNAPSHOT: 2,
    Kind.MACRO: 2,
    Kind.SEED: 2,
    Kind.TEST: 2,
    Kind.DEPENDENCY: 3,
    Kind.SCHEDULE: 4,
    Kind.ROLE: 5,
    Kind.SCHEMA: 6,
    Kind.GRANT: 7,
}
