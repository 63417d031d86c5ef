"""Write a plan's changes: bulk statements per tenant and kind, in the caller's tx.  [shell]

Each group of creates, updates or deletes of one kind in one tenant is one statement, fed by a
JSON array (`jsonb_to_recordset`), so a first apply of 50k resources is a few hundred
statements, not 50k. PostgreSQL computes `content_md5` itself, with the same expression the
snapshot reads with, so a later hand edit shows up as drift.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from fabric.addresses import Address, Kind
from fabric.plan.diff import Action, Change
from fabric.state import tables
from fabric.state.migrate import create_tenant_schemas, head
from fabric.state.snapshot import KIND_TABLES, TenantRow

_RECORDSET = (
    "jsonb_to_recordset(CAST(:rows AS jsonb)) "
    "AS x(name text, spec jsonb, secrets jsonb, fingerprint text, protect boolean)"
)
_CONTENT_X = tables.CONTENT_MD5_SQL.format(spec="x.spec", secrets="x.secrets", protect="x.protect")


@dataclass(frozen=True, slots=True)
class RowWrite:
    """One create or update, ready to write: secrets already encrypted."""

    change: Change
    secrets: Mapping[str, Any]
    fingerprint: str


def _payload(writes: Sequence[RowWrite]) -> str:
    rows = []
    for w in writes:
        assert w.change.target is not None
        rows.append(
            {
                "name": w.change.address.name,
                "spec": dict(w.change.target.spec),
                "secrets": dict(w.secrets),
                "fingerprint": w.fingerprint,
                "protect": w.change.target.protect,
            }
        )
    return json.dumps(rows)


def create_tenants(conn: Connection, writes: Sequence[RowWrite]) -> dict[str, TenantRow]:
    """Insert new tenant rows, then create and stamp their schemas, in one round trip each."""
    if not writes:
        return {}
    result = conn.execute(
        text(
            f"INSERT INTO {tables.SHARED_SCHEMA}.tenants "
            "(slug, spec, secrets, fingerprint, protect, content_md5, schema_version) "
            f"SELECT x.name, x.spec, x.secrets, x.fingerprint, x.protect, {_CONTENT_X}, :version "
            f"FROM {_RECORDSET} RETURNING id, slug"
        ),
        {"rows": _payload(writes), "version": head("tenant")},
    )
    created = {r.slug: TenantRow(r.id, r.slug, tables.tenant_schema_name(r.id)) for r in result}
    conn.execute(
        text(
            f"UPDATE {tables.SHARED_SCHEMA}.tenants SET schema_name = 'tenant_' || id "
            "WHERE id = ANY(:ids)"
        ),
        {"ids": [t.id for t in created.values()]},
    )
    create_tenant_schemas(conn, [t.schema_name for t in created.values()])
    return created


def update_tenants(conn: Connection, writes: Sequence[RowWrite]) -> None:
    if writes:
        conn.execute(
            text(
                f"UPDATE {tables.SHARED_SCHEMA}.tenants t SET spec = x.spec, secrets = x.secrets, "
                f"fingerprint = x.fingerprint, protect = x.protect, content_md5 = {_CONTENT_X}, "
                f"updated_at = now() FROM {_RECORDSET} "
                "WHERE t.slug = x.name AND t.deleted_at IS NULL"
            ),
            {"rows": _payload(writes)},
        )


def delete_tenants(conn: Connection, slugs: Sequence[str]) -> None:
    if slugs:
        conn.execute(
            text(
                f"UPDATE {tables.SHARED_SCHEMA}.tenants SET deleted_at = now(), updated_at = now() "
                "WHERE slug = ANY(:slugs) AND deleted_at IS NULL"
            ),
            {"slugs": list(slugs)},
        )


def write_resources(
    conn: Connection,
    tenants: Mapping[str, TenantRow],
    writes: Sequence[RowWrite],
    deletes: Sequence[Change],
) -> None:
    """Creates and updates parents-first, then deletes children-first, grouped per statement."""
    groups: dict[tuple[str, Kind, Action], list[RowWrite]] = defaultdict(list)
    for w in writes:
        a = w.change.address
        groups[(a.tenant, a.kind, w.change.action)].append(w)
    order = [Kind.CONNECTION, Kind.PIPELINE, Kind.TRANSFORMATION, Kind.DEPENDENCY, Kind.SCHEDULE]
    for kind in order:
        for (slug, k, action), group in sorted(groups.items(), key=lambda i: i[0][0]):
            if k is not kind:
                continue
            table = f'"{tenants[slug].schema_name}".{KIND_TABLES[kind]}'
            if action is Action.CREATE:
                conn.execute(
                    text(
                        f"INSERT INTO {table} "
                        "(name, spec, secrets, fingerprint, protect, content_md5) "
                        f"SELECT x.name, x.spec, x.secrets, x.fingerprint, x.protect, {_CONTENT_X} "
                        f"FROM {_RECORDSET}"
                    ),
                    {"rows": _payload(group)},
                )
            else:
                conn.execute(
                    text(
                        f"UPDATE {table} t SET spec = x.spec, secrets = x.secrets, "
                        f"fingerprint = x.fingerprint, protect = x.protect, "
                        f"content_md5 = {_CONTENT_X}, updated_at = now() FROM {_RECORDSET} "
                        "WHERE t.name = x.name AND t.deleted_at IS NULL"
                    ),
                    {"rows": _payload(group)},
                )
    by_table: dict[tuple[str, Kind], list[str]] = defaultdict(list)
    for c in deletes:
        if c.address.kind is not Kind.TENANT:
            by_table[(c.address.tenant, c.address.kind)].append(c.address.name)
    for kind in reversed(order):
        for (slug, k), names in sorted(by_table.items()):
            if k is kind:
                conn.execute(
                    text(
                        f'UPDATE "{tenants[slug].schema_name}".{KIND_TABLES[kind]} '
                        "SET deleted_at = now(), updated_at = now() "
                        "WHERE name = ANY(:names) AND deleted_at IS NULL"
                    ),
                    {"names": names},
                )


def tenant_addresses(changes: Sequence[Change]) -> list[Address]:
    return [c.address for c in changes if c.address.kind is Kind.TENANT]
