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
    conn: Connection, *, limit: int = 20, tenant: str | None = None
) -> list[ApplyRecord]:
    sql = (
        "SELECT id, started_at, finished_at, outcome, git_commit, author, plan_hash, tenants, "
        f"creates, updates, deletes, error, client FROM {tables.SHARED_SCHEMA}.applies "
    )
    params: dict[str, object] = {"limit": limit}
    if tenant:
        sql += "WHERE :tenant = ANY(tenants) "
        params["tenant"] = tenant
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
