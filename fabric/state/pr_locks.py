"""Locks that span pull requests: which PR holds which tenant until its plan is applied.  [shell]

Off by default: nothing is locked until a `fabric plan --lock-for PR` claims the tenants its
plan changes. A claim is all or nothing (a PR never holds half of what it plans), one holder
per tenant (the table's primary key), and the same PR may claim again (a new push refreshes its
plan hash). `fabric apply` of that PR's saved plan releases its locks when it succeeds;
`fabric unlock` releases them by hand (the holder's author or a project admin, see api.unlock).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from fabric.state import tables

_TABLE = f"{tables.SHARED_SCHEMA}.pr_locks"
PR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9#._/\-]{0,63}")
"""What names a pull request: a number, a GitLab iid, `owner/repo#12`; no spaces or
control characters (it is printed to other people's terminals and PR comments)."""


def check_pr(pr: str) -> str:
    if not PR_NAME.fullmatch(pr):
        raise ValueError(
            f"{pr!r} does not name a pull request: use its number (e.g. 42) or owner/repo#42"
        )
    return pr


@dataclass(frozen=True, slots=True)
class PrLock:
    tenant: str
    pr: str
    author: str | None
    plan_hash: str | None
    since: datetime

    def describe(self) -> str:
        who = f" ({self.author})" if self.author else ""
        since = f"{self.since:%Y-%m-%d %H:%M %Z}".strip()
        return f"tenant {self.tenant} is locked by pull request {self.pr}{who} since {since}"


def table_exists(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": _TABLE}).scalar())


def read_locks(conn: Connection, tenants: Iterable[str] | None = None) -> list[PrLock]:
    """The locks held now (of `tenants` only, when given), by tenant."""
    if not table_exists(conn):
        return []
    where, params = "", {}
    if tenants is not None:
        where, params = "WHERE tenant = ANY(:t)", {"t": sorted(set(tenants))}
    rows = conn.execute(
        text(f"SELECT tenant, pr, author, plan_hash, since FROM {_TABLE} {where} ORDER BY tenant"),
        params,
    )
    return [PrLock(r.tenant, r.pr, r.author, r.plan_hash, r.since) for r in rows]


def claim(
    conn: Connection, pr: str, author: str | None, plan_hash: str, tenants: Sequence[str]
) -> tuple[list[PrLock], list[PrLock]]:
    """(held now by `pr`, held by other PRs). Claims nothing when another PR holds any of
    `tenants`. In the caller's transaction; rows are locked in tenant order (no deadlock)."""
    check_pr(pr)
    wanted = sorted(set(tenants))
    if not wanted:
        return [], []
    # serialise claims of the same tenants: lock the existing rows, and the insert's conflict
    conn.execute(
        text(f"SELECT tenant FROM {_TABLE} WHERE tenant = ANY(:t) ORDER BY tenant FOR UPDATE"),
        {"t": wanted},
    )
    others = [lock for lock in read_locks(conn, wanted) if lock.pr != pr]
    if others:
        return [], others
    conn.execute(
        text(
            f"INSERT INTO {_TABLE} (tenant, pr, author, plan_hash) "
            "SELECT t, :pr, :author, :hash FROM unnest(CAST(:t AS text[])) AS t ORDER BY t "
            "ON CONFLICT (tenant) DO UPDATE SET plan_hash = EXCLUDED.plan_hash, "
            f"author = EXCLUDED.author WHERE {_TABLE}.pr = EXCLUDED.pr"
        ),
        {"pr": pr, "author": author, "hash": plan_hash, "t": wanted},
    )
    return [lock for lock in read_locks(conn, wanted) if lock.pr == pr], []


def release(
    conn: Connection, *, pr: str | None = None, tenants: Iterable[str] | None = None
) -> list[PrLock]:
    """Delete the locks of `pr` (and/or of `tenants`); returns what was released."""
    if not table_exists(conn) or (pr is None and tenants is None):
        return []
    clauses, params = [], {}
    if pr is not None:
        clauses.append("pr = :pr")
        params["pr"] = pr
    if tenants is not None:
        clauses.append("tenant = ANY(:t)")
        params["t"] = sorted(set(tenants))
    rows = conn.execute(
        text(
            f"DELETE FROM {_TABLE} WHERE {' AND '.join(clauses)} "
            "RETURNING tenant, pr, author, plan_hash, since"
        ),
        params,
    )
    return sorted(
        (PrLock(r.tenant, r.pr, r.author, r.plan_hash, r.since) for r in rows),
        key=lambda lock: lock.tenant,
    )
