"""Apply history: who applied which plan, from which commit, with what outcome.  [shell]"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from fabric.state import tables


@dataclass(frozen=True, slots=True)
class ApplyRecord:
    id: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    git_commit: str | None
    author: str | None
    plan_hash: str
    tenants: tuple[str, ...]
    creates: int
    updates: int
    deletes: int
    error: str | None
    client: str | None


def record_apply(
    conn: Connection,
    *,
    started_at: datetime,
    outcome: str,
    plan_hash: str,
    source_hash: str,
    tenants: Sequence[str],
    counts: dict[str, int],
    git_commit: str | None,
    author: str | None,
    client: str | None,
    error: str | None = None,
    project: Mapping[str, Any] | None = None,
) -> int:
    return conn.execute(
        text(
            f"INSERT INTO {tables.SHARED_SCHEMA}.applies (started_at, finished_at, outcome, "
            "git_commit, author, plan_hash, source_hash, tenants, creates, updates, deletes, "
            "error, client, project) VALUES (:started, clock_timestamp(), :outcome, :commit, "
            ":author, :plan_hash, :source_hash, :tenants, :c, :u, :d, :error, :client, "
            "CAST(:project AS jsonb)) RETURNING id"
        ),
        {
            "started": started_at,
            "outcome": outcome,
            "commit": git_commit,
            "author": author,
            "plan_hash": plan_hash,
            "source_hash": source_hash,
            "tenants": list(tenants),
            "c": counts.get("create", 0),
            "u": counts.get("update", 0),
            "d": counts.get("delete", 0),
            "error": error,
            "client": client,
            "project": None if project is None else json.dumps(dict(project)),
        },
    ).scalar_one()


def read_project(conn: Connection) -> dict[str, Any] | None:
    """The project (fabric.yaml) recorded by the latest apply that recorded one."""
    return conn.execute(
        text(
            f"SELECT project FROM {tables.SHARED_SCHEMA}.applies WHERE project IS NOT NULL "
            "AND outcome = 'success' ORDER BY id DESC LIMIT 1"
        )
    ).scalar_one_or_none()


def read_history(
    conn: Connection, *, limit: int = 20, tenant: str | None = None, resource: str | None = None
) -> list[ApplyRecord]:
    """Applies, newest first: all, those that touched `tenant`, or those that changed
    `resource` (an address)."""
    sql = (
        "SELECT id, started_at, finished_at, outcome, git_commit, author, plan_hash, tenants, "
        f"creates, updates, deletes, error, client FROM {tables.SHARED_SCHEMA}.applies "
    )
    params: dict[str, object] = {"limit": limit}
    where = []
    if tenant:
        where.append(":tenant = ANY(tenants)")
        params["tenant"] = tenant
    if resource:
        where.append(
            f"id IN (SELECT apply_id FROM {tables.SHARED_SCHEMA}.apply_changes "
            "WHERE address = :resource)"
        )
        params["resource"] = resource
    if where:
        sql += "WHERE " + " AND ".join(where) + " "
    sql += "ORDER BY id DESC LIMIT :limit"
    return [
        ApplyRecord(
            r.id,
            r.started_at,
            r.finished_at,
            r.outcome,
            r.git_commit,
            r.author,
            r.plan_hash,
            tuple(r.tenants),
            r.creates,
            r.updates,
            r.deletes,
            r.error,
            r.client,
        )
        for r in conn.execute(text(sql), params)
    ]


# ---------------------------------------------------------------------------------------------
# The audit log: what each apply changed, field by field.


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change an apply made: which object, how, and its fields (secrets without values)."""

    apply_id: int
    address: str
    action: str
    fields: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class AuditedApply:
    """An apply and the changes it made (those asked for)."""

    apply: ApplyRecord
    changes: tuple[AuditEntry, ...]


def record_changes(conn: Connection, apply_id: int, changes: Sequence[Any]) -> None:
    """Store each change of an applied plan (fabric.plan.diff.Change), by one COPY: a
    50,000-change first apply adds one round trip, not 50,000 rows of INSERT parameters."""
    if not changes:
        return
    cursor = conn.connection.driver_connection.cursor()  # psycopg 3, same transaction
    with (
        cursor,
        cursor.copy(
            f"COPY {tables.SHARED_SCHEMA}.apply_changes (apply_id, tenant, address, action, "
            "fields) FROM STDIN"
        ) as copy,
    ):
        for c in changes:
            fields = [
                {"name": f.name, "sensitive": True}
                if f.sensitive
                else {"name": f.name, "before": f.before, "after": f.after}
                for f in c.fields
            ]
            copy.write_row(
                (apply_id, c.address.tenant, str(c.address), c.action.value, json.dumps(fields))
            )


def read_audit(
    conn: Connection,
    apply_ids: Sequence[int],
    *,
    tenant: str | None = None,
    address: str | None = None,
) -> dict[int, list[AuditEntry]]:
    """The recorded changes of these applies (of one tenant or address), in one query."""
    if not apply_ids:
        return {}
    sql = (
        f"SELECT apply_id, address, action, fields FROM {tables.SHARED_SCHEMA}.apply_changes "
        "WHERE apply_id = ANY(:ids)"
    )
    params: dict[str, object] = {"ids": list(apply_ids)}
    if tenant:
        sql += " AND tenant = :tenant"
        params["tenant"] = tenant
    if address:
        sql += " AND address = :address"
        params["address"] = address
    out: dict[int, list[AuditEntry]] = {}
    for r in conn.execute(text(sql + " ORDER BY apply_id, id"), params):
        out.setdefault(r.apply_id, []).append(
            AuditEntry(r.apply_id, r.address, r.action, tuple(r.fields))
        )
    return out


def shared_tables_exist(conn: Connection) -> bool:
    """Whether the shared tables are there (a fresh control plane has none before an apply)."""
    return conn.execute(
        text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{tables.SHARED_SCHEMA}.tenants"}
    ).scalar_one()


def read_members(conn: Connection, slugs: Sequence[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """(who, role) members of these tenants as the control plane holds them (live ones only)."""
    rows = conn.execute(
        text(
            f"SELECT slug, spec -> 'members' AS members FROM {tables.SHARED_SCHEMA}.tenants "
            "WHERE deleted_at IS NULL AND slug = ANY(:slugs)"
        ),
        {"slugs": list(slugs)},
    )
    return {
        r.slug: tuple(
            (str(m.get("who", "")), str(m.get("role", "viewer"))) for m in r.members or ()
        )
        for r in rows
    }
