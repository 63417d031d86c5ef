"""Read the control plane's state for a plan: a constant number of queries per tenant.  [shell]

Phase one reads, for every live stored object, only keys, fingerprints and content hashes
(PostgreSQL hashes the JSONB itself; nothing is decoded in Python). Phase two loads full specs
only for the addresses whose fingerprint differs or whose row drifted. Tenant schemas are read
in batches of UNION ALL statements, so the statement count grows with tenants, not resources.

With `release=True` each batch ends the caller's transaction (the connection must not be inside
`engine.begin()`): a statement locks every table and index it reads until its transaction ends,
and thousands of tenants' tables read in one transaction fill a stock server's lock table
(`max_locks_per_transaction` 64). Nothing is lost: every statement already reads its own
snapshot (READ COMMITTED), and apply re-checks what a plan read under its locks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from fabric.addresses import Address, Kind
from fabric.state import tables
from fabric.state.migrate import shared_is_current

if TYPE_CHECKING:  # imported in read_snapshot: `runs` and `status` need no spec models
    from fabric.plan.diff import Observed

BATCH_TENANTS = 100
KIND_TABLES: dict[Kind, str] = {
    Kind.CONNECTION: "connections",
    Kind.PIPELINE: "pipelines",
    Kind.TRANSFORMATION: "transformations",
    Kind.DEPENDENCY: "dependencies",
    Kind.SCHEDULE: "schedules",
    Kind.SNAPSHOT: "snapshots",
    Kind.MACRO: "macros",
    Kind.SEED: "seeds",
    Kind.TEST: "tests",
}
TABLE_KINDS = {v: k for k, v in KIND_TABLES.items()}
_CONTENT = tables.CONTENT_MD5_SQL.format(spec="spec", secrets="secrets", protect="protect")
_TOKEN = f"md5({_CONTENT} || fingerprint)"


@dataclass(frozen=True, slots=True)
class TenantRow:
    id: int
    slug: str
    schema_name: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a plan read: stored objects (no specs yet), their tokens, and the tenant rows."""

    tenants: Mapping[str, TenantRow]
    observed: Mapping[Address, Observed]
    tokens: Mapping[Address, str]
    """Content token per stored object: changes with any write or hand edit."""


def read_tenant_rows(conn: Connection, slugs: Iterable[str] | None = None) -> dict[str, TenantRow]:
    if not shared_is_current(conn):
        return {}
    sql = (
        f"SELECT id, slug, schema_name FROM {tables.SHARED_SCHEMA}.tenants WHERE deleted_at IS NULL"
    )
    params: dict[str, Any] = {}
    if slugs is not None:
        sql += " AND slug = ANY(:slugs)"
        params["slugs"] = sorted(set(slugs))
    return {r.slug: TenantRow(r.id, r.slug, r.schema_name) for r in conn.execute(text(sql), params)}


def _end_batch(conn: Connection, release: bool) -> None:
    if release:
        conn.commit()


def read_snapshot(
    conn: Connection, slugs: Iterable[str] | None = None, *, release: bool = False
) -> Snapshot:
    """Phase one: every live object of the given tenants (all tenants when None)."""
    from fabric.plan.diff import Observed

    rows = read_tenant_rows(conn, slugs)
    observed: dict[Address, Observed] = {}
    tokens: dict[Address, str] = {}
    if not rows:
        return Snapshot(rows, observed, tokens)
    tenant_rows = conn.execute(
        text(
            f"SELECT slug, fingerprint, protect, content_md5 = {_CONTENT} AS intact, "
            f"{_TOKEN} AS token FROM {tables.SHARED_SCHEMA}.tenants "
            "WHERE deleted_at IS NULL AND slug = ANY(:slugs)"
        ),
        {"slugs": sorted(rows)},
    )
    for r in tenant_rows:
        address = Address.of_tenant(r.slug)
        observed[address] = Observed(
            address=address, fingerprint=r.fingerprint, intact=r.intact, protect=r.protect
        )
        tokens[address] = r.token
    ordered = sorted(rows.values(), key=lambda t: t.id)
    for start in range(0, len(ordered), BATCH_TENANTS):
        batch = ordered[start : start + BATCH_TENANTS]
        parts = [
            f"SELECT {t.id} AS tenant_id, '{table}' AS tbl, name, fingerprint, protect, "
            f"content_md5, {_CONTENT} AS content "
            f'FROM "{t.schema_name}".{table} WHERE deleted_at IS NULL'
            for t in batch
            for table in KIND_TABLES.values()
        ]
        by_id = {t.id: t for t in batch}
        # PostgreSQL hashes each row's content once; intact and token both derive from it.
        sql = (
            "SELECT tenant_id, tbl, name, fingerprint, protect, content_md5 = content AS intact, "
            "md5(content || fingerprint) AS token FROM (\n"
            + "\nUNION ALL\n".join(parts)
            + "\n) AS rows"
        )
        for r in conn.execute(text(sql)):
            address = Address(by_id[r.tenant_id].slug, TABLE_KINDS[r.tbl], r.name)
            observed[address] = Observed(
                address=address, fingerprint=r.fingerprint, intact=r.intact, protect=r.protect
            )
            tokens[address] = r.token
        _end_batch(conn, release)
    return Snapshot(rows, observed, tokens)


def load_specs(
    conn: Connection,
    tenants: Mapping[str, TenantRow],
    addresses: Iterable[Address],
    *,
    release: bool = False,
) -> dict[Address, tuple[dict[str, Any], dict[str, str]]]:
    """Phase two: (spec, secret fingerprints) of the given stored objects, one query a batch."""
    wanted: dict[str, dict[Kind, list[str]]] = defaultdict(lambda: defaultdict(list))
    for a in addresses:
        wanted[a.tenant][a.kind].append(a.name)
    out: dict[Address, tuple[dict[str, Any], dict[str, str]]] = {}
    if not wanted:
        return out
    tenant_specs = [a for a in wanted if Kind.TENANT in wanted[a]]
    if tenant_specs:
        for r in conn.execute(
            text(
                f"SELECT slug, spec, secrets FROM {tables.SHARED_SCHEMA}.tenants "
                "WHERE deleted_at IS NULL AND slug = ANY(:slugs)"
            ),
            {"slugs": tenant_specs},
        ):
            out[Address.of_tenant(r.slug)] = (r.spec, _fps(r.secrets))
    parts: list[str] = []
    params: dict[str, Any] = {}
    for slug, kinds in sorted(wanted.items()):
        tenant = tenants[slug]
        for kind, names in kinds.items():
            if kind is Kind.TENANT:
                continue
            key = f"n{len(params)}"
            params[key] = names
            parts.append(
                f"SELECT '{slug}' AS slug, '{KIND_TABLES[kind]}' AS tbl, name, spec, secrets "
                f'FROM "{tenant.schema_name}".{KIND_TABLES[kind]} '
                f"WHERE deleted_at IS NULL AND name = ANY(:{key})"
            )
    for start in range(0, len(parts), 500):
        for r in conn.execute(text("\nUNION ALL\n".join(parts[start : start + 500])), params):
            out[Address(r.slug, TABLE_KINDS[r.tbl], r.name)] = (r.spec, _fps(r.secrets))
        _end_batch(conn, release)
    return out


def _fps(secrets: Mapping[str, Any] | None) -> dict[str, str]:
    return {path: entry.get("fp") for path, entry in (secrets or {}).items()}


def read_tokens(conn: Connection, slugs: Iterable[str]) -> dict[Address, str]:
    """Current content token of every live object of these tenants (for the stale check)."""
    return dict(read_snapshot(conn, slugs).tokens)


def read_records(
    conn: Connection,
    tenants: Mapping[str, TenantRow],
    *,
    release: bool = False,
    written: dict[Address, Any] | None = None,
) -> dict[Address, tuple[dict[str, Any], bool]]:
    """(spec, protect) of every live object of these tenants; for export, not for plans.

    `written`, when given, receives each object's stored YAML spelling (where there is one)."""
    out: dict[Address, tuple[dict[str, Any], bool]] = {}
    if not tenants:
        return out
    for r in conn.execute(
        text(
            f"SELECT slug, spec, protect, written FROM {tables.SHARED_SCHEMA}.tenants "
            "WHERE deleted_at IS NULL AND slug = ANY(:slugs)"
        ),
        {"slugs": sorted(tenants)},
    ):
        out[Address.of_tenant(r.slug)] = (r.spec, r.protect)
        if written is not None and r.written is not None:
            written[Address.of_tenant(r.slug)] = r.written
    ordered = sorted(tenants.values(), key=lambda t: t.id)
    for start in range(0, len(ordered), BATCH_TENANTS):
        batch = ordered[start : start + BATCH_TENANTS]
        by_id = {t.id: t for t in batch}
        parts = [
            f"SELECT {t.id} AS tenant_id, '{table}' AS tbl, name, spec, protect, written "
            f'FROM "{t.schema_name}".{table} WHERE deleted_at IS NULL'
            for t in batch
            for table in KIND_TABLES.values()
        ]
        for r in conn.execute(text("\nUNION ALL\n".join(parts))):
            address = Address(by_id[r.tenant_id].slug, TABLE_KINDS[r.tbl], r.name)
            out[address] = (r.spec, r.protect)
            if written is not None and r.written is not None:
                written[address] = r.written
        _end_batch(conn, release)
    return out


def read_written_schemas(conn: Connection, tenants: Mapping[str, TenantRow]) -> dict[str, set[str]]:
    """Slug -> the schemas its live pipelines (`dataset`), transformations and snapshots
    (`schema`) write, one query per batch of tenants (what fabric.runner.reach checks a login
    against)."""
    out: dict[str, set[str]] = {slug: set() for slug in tenants}
    ordered = sorted(tenants.values(), key=lambda t: t.id)
    for start in range(0, len(ordered), BATCH_TENANTS):
        batch = ordered[start : start + BATCH_TENANTS]
        parts = [
            f"SELECT {t.id} AS tenant_id, spec->>'{field}' AS schema "
            f'FROM "{t.schema_name}".{table} WHERE deleted_at IS NULL'
            for t in batch
            for table, field in (
                ("pipelines", "dataset"),
                ("transformations", "schema"),
                ("snapshots", "schema"),
            )
        ]
        by_id = {t.id: t.slug for t in batch}
        for r in conn.execute(text("\nUNION ALL\n".join(parts))):
            if r.schema:
                out[by_id[r.tenant_id]].add(r.schema)
    return out


def read_shared_with(conn: Connection) -> dict[str, set[str]]:
    """Slug -> the schemas other live tenants share with it read-only (`share:`), one query."""
    out: dict[str, set[str]] = defaultdict(set)
    rows = conn.execute(
        text(
            "SELECT share->'with' AS readers, share->'schemas' AS schemas "
            f"FROM {tables.SHARED_SCHEMA}.tenants, "
            "jsonb_array_elements(coalesce(spec->'share', '[]'::jsonb)) AS share "
            "WHERE deleted_at IS NULL"
        )
    )
    for r in rows:
        for reader in r.readers or ():
            out[reader].update(r.schemas or ())
    return dict(out)


def read_secret_fingerprints(
    conn: Connection, tenants: Iterable[TenantRow], *, release: bool = False
) -> dict[str, dict[str, str]]:
    """Stored fingerprint of every `${secret:NAME}` of these tenants, one query a batch."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    ordered = sorted(tenants, key=lambda t: t.id)
    for start in range(0, len(ordered), BATCH_TENANTS * 5):
        batch = ordered[start : start + BATCH_TENANTS * 5]
        parts = [
            f"SELECT '{t.slug}' AS slug, name, fingerprint FROM \"{t.schema_name}\".secrets"
            for t in batch
        ]
        for r in conn.execute(text("\nUNION ALL\n".join(parts))):
            out[r.slug][r.name] = r.fingerprint
        _end_batch(conn, release)
    return dict(out)
