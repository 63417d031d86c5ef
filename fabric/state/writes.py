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
from fabric.state.migrate import head
from fabric.state.snapshot import KIND_TABLES, TenantRow

_RECORDSET = (
    "jsonb_to_recordset(CAST(:rows AS jsonb)) "
    "AS x(name text, spec jsonb, secrets jsonb, fingerprint text, protect boolean, written jsonb)"
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
                "written": dict(w.change.target.written)
                if w.change.target.written is not None
                else None,
            }
        )
    return json.dumps(rows)


def register_tenants(
    conn: Connection, writes: Sequence[RowWrite], ids: Mapping[str, int]
) -> dict[str, TenantRow]:
    """Insert the rows of new tenants whose schemas were provisioned under the reserved `ids`.

    One statement into the shared table: the switch's lock count does not grow with tenants.
    """
    if not writes:
        return {}
    rows = json.loads(_payload(writes))
    for row in rows:
        row["id"] = ids[row["name"]]
        row["schema_name"] = tables.tenant_schema_name(row["id"])
    result = conn.execute(
        text(
            f"INSERT INTO {tables.SHARED_SCHEMA}.tenants "
            "(id, slug, schema_name, spec, secrets, fingerprint, protect, content_md5, "
            f"schema_version, written) SELECT x.id, x.name, x.schema_name, x.spec, x.secrets, "
            f"x.fingerprint, x.protect, {_CONTENT_X}, :version, x.written "
            "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(id bigint, schema_name text, "
            "name text, spec jsonb, secrets jsonb, fingerprint text, protect boolean, "
            "written jsonb) "
            "RETURNING id, slug, schema_name"
        ),
        {"rows": json.dumps(rows), "version": head("tenant")},
    )
    return {r.slug: TenantRow(r.id, r.slug, r.schema_name) for r in result}


def update_tenants(conn: Connection, writes: Sequence[RowWrite]) -> None:
    if writes:
        conn.execute(
            text(
                f"UPDATE {tables.SHARED_SCHEMA}.tenants t SET spec = x.spec, secrets = x.secrets, "
                f"fingerprint = x.fingerprint, protect = x.protect, content_md5 = {_CONTENT_X}, "
                f"written = x.written, updated_at = now() FROM {_RECORDSET} "
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
    """Creates and updates parents-first, then deletes children-first.

    Rows travel once, by COPY, into a temporary staging table; one script of INSERT/UPDATE
    ... SELECT statements (one per tenant, kind and action) then moves them into the tenant
    tables in a single round trip.
    """
    order = [
        Kind.CONNECTION,
        Kind.MACRO,
        Kind.SEED,
        Kind.PIPELINE,
        Kind.TRANSFORMATION,
        Kind.SNAPSHOT,
        Kind.TEST,
        Kind.DEPENDENCY,
        Kind.SCHEDULE,
    ]
    script: list[str] = []
    if writes:
        _stage(conn, writes)
        groups = sorted(
            {(w.change.address.tenant, w.change.address.kind, w.change.action) for w in writes},
            key=lambda g: (order.index(g[1]), g[0], g[2].value),
        )
        content = tables.CONTENT_MD5_SQL.format(
            spec="x.spec", secrets="x.secrets", protect="x.protect"
        )
        for slug, kind, action in groups:
            table = f'"{tenants[slug].schema_name}".{KIND_TABLES[kind]}'
            where = (
                f"x.tenant = '{slug}' AND x.kind = '{kind.value}' AND x.action = '{action.value}'"
            )
            if action is Action.CREATE:
                script.append(
                    f"INSERT INTO {table} "
                    "(name, spec, secrets, fingerprint, protect, content_md5, written) "
                    f"SELECT x.name, x.spec, x.secrets, x.fingerprint, x.protect, {content}, "
                    "x.written "
                    f"FROM fabric_stage x WHERE {where}"
                )
            else:
                # a moved object's row is found by its old name and renamed in place
                script.append(
                    f"UPDATE {table} t SET name = x.name, spec = x.spec, secrets = x.secrets, "
                    f"fingerprint = x.fingerprint, protect = x.protect, content_md5 = {content}, "
                    f"written = x.written, updated_at = now() FROM fabric_stage x "
                    f"WHERE {where} AND t.name = x.old_name AND t.deleted_at IS NULL"
                )
        script += _move_statements(tenants, [w.change for w in writes if w.change.moved_from])
    by_table: dict[tuple[str, Kind], list[str]] = defaultdict(list)
    for c in deletes:
        if c.address.kind is not Kind.TENANT:
            by_table[(c.address.tenant, c.address.kind)].append(c.address.name)
    for (slug, kind), names in sorted(
        by_table.items(), key=lambda i: (-order.index(i[0][1]), i[0][0])
    ):
        quoted = ", ".join("'" + n.replace("'", "''") + "'" for n in names)
        script.append(
            f'UPDATE "{tenants[slug].schema_name}".{KIND_TABLES[kind]} '
            "SET deleted_at = now(), updated_at = now() "
            f"WHERE name IN ({quoted}) AND deleted_at IS NULL"
        )
    if script:
        # Names, slugs and kinds are validated identifiers; values travel only through COPY.
        conn.exec_driver_sql(";\n".join(script))


def _move_statements(tenants: Mapping[str, TenantRow], moved: Sequence[Change]) -> list[str]:
    """After the renames: the node's run history follows it (node_runs name nodes by
    address), and each move is recorded in `fabric.moves` by row id, which is how the runner
    keeps a renamed pipeline's dlt state (runner/driver.py `state_name`)."""

    def quote(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    out: list[str] = []
    for c in moved:
        assert c.moved_from is not None
        row = tenants[c.address.tenant]
        table = f'"{row.schema_name}".{KIND_TABLES[c.address.kind]}'
        old, new = str(c.moved_from), str(c.address)
        if c.address.kind in (Kind.PIPELINE, Kind.TRANSFORMATION):
            out.append(
                f'UPDATE "{row.schema_name}".node_runs SET node = {quote(new)} '
                f"WHERE node = {quote(old)}"
            )
        out.append(
            f"INSERT INTO {tables.SHARED_SCHEMA}.moves "
            "(tenant_id, kind, resource_id, from_name, to_name) "
            f"SELECT {int(row.id)}, {quote(c.address.kind.value)}, t.id, "
            f"{quote(c.moved_from.name)}, {quote(c.address.name)} FROM {table} t "
            f"WHERE t.name = {quote(c.address.name)} AND t.deleted_at IS NULL"
        )
    return out


def _stage(conn: Connection, writes: Sequence[RowWrite]) -> None:
    cursor = conn.connection.driver_connection.cursor()  # psycopg 3, same transaction
    with cursor:
        cursor.execute(
            "CREATE TEMP TABLE fabric_stage (tenant text, kind text, action text, name text, "
            "spec jsonb, secrets jsonb, fingerprint text, protect boolean, old_name text, "
            "written jsonb) "
            "ON COMMIT DROP"
        )
        with cursor.copy("COPY fabric_stage FROM STDIN") as copy:
            for w in writes:
                a, target = w.change.address, w.change.target
                assert target is not None
                copy.write_row(
                    (
                        a.tenant,
                        a.kind.value,
                        w.change.action.value,
                        a.name,
                        json.dumps(dict(target.spec)),
                        json.dumps(dict(w.secrets)),
                        w.fingerprint,
                        target.protect,
                        (w.change.moved_from or a).name,
                        json.dumps(dict(target.written)) if target.written is not None else None,
                    )
                )
        cursor.execute("CREATE INDEX ON fabric_stage (tenant, kind, action)")
        cursor.execute("ANALYZE fabric_stage")


def tenant_addresses(changes: Sequence[Change]) -> list[Address]:
    return [c.address for c in changes if c.address.kind is Kind.TENANT]
