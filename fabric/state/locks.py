"""Per-tenant advisory locks for apply: transaction-scoped, in a fixed order.  [shell]

`pg_advisory_xact_lock` is released by commit, rollback or a dead connection, and works behind
a transaction-mode pooler. Locks are taken in sorted order, so two applies of different tenants
run side by side and two applies of overlapping tenants can never deadlock. A waiter gives up
after `timeout` seconds (PostgreSQL's lock_timeout) and names the holder as the server sees
it: its application_name, client, and since when it has held its transaction.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from fabric.errors import LockTimeoutError


class LockNamespace(IntEnum):
    """First key of every advisory lock fabric takes (the second identifies the object).

    One enum, so two kinds of lock can never share a namespace by accident (a test checks the
    values are distinct)."""

    APPLY = 0x0FAB
    """Per tenant, transaction-scoped, while an apply writes (key: crc32 of the slug)."""
    RUN = 0x0FAC
    """Per run, session-scoped, held by the runner driving it (key: crc32 of schema:run id)."""
    PIPELINE = 0x0FAD
    """Per pipeline, session-scoped, while a load runs (key: crc32 of the address)."""
    DATASET = 0x0FAE
    """Per warehouse dataset, on the warehouse, while a load step writes into it."""
    MIGRATION = 0x0FAF
    """Transaction-scoped, while an apply migrates the shared schema (key: 0)."""
    PROVISION = 0x0FB0
    """Per apply, transaction-scoped, held from before it provisions new tenant schemas until
    its switch ends (key: a random token written on those schemas; see state/provision.py)."""
    ADMIT = 0x0FB1
    """Per tenant, transaction-scoped, while a queue run is admitted, finished or promoted
    (one active run per node; key: crc32 of the tenant's schema)."""


def tenant_lock_key(slug: str) -> int:
    """A stable signed 32-bit key per tenant slug (a collision only serialises two tenants)."""
    value = zlib.crc32(slug.encode())
    return value - (1 << 32) if value >= (1 << 31) else value


@dataclass(frozen=True, slots=True)
class LockHolder:
    tenant: str | None
    pid: int
    application_name: str
    client: str | None
    since: datetime | None
    state: str | None


def acquire_tenant_locks(conn: Connection, slugs: Iterable[str], *, timeout: float) -> None:
    """Lock every tenant, in sorted order, within the caller's transaction.

    First all at once without waiting (one statement, however many tenants: a first apply of
    1,000 tenants took 5,000 round trips one by one); if any is taken, those just got are given
    back (rollback to a savepoint releases them) and the tenants are locked one by one, waiting.
    """
    ordered = sorted(set(slugs))
    if _try_all(conn, ordered):
        return
    ms = max(1, int(timeout * 1000))
    for slug in ordered:
        conn.execute(text("SAVEPOINT fabric_lock"))
        conn.execute(text(f"SET LOCAL lock_timeout = '{ms}ms'"))
        try:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                {"ns": LockNamespace.APPLY, "key": tenant_lock_key(slug)},
            )
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            conn.execute(text("ROLLBACK TO SAVEPOINT fabric_lock"))
            holder = lock_holder(conn, slug)
            raise LockTimeoutError(
                tenant=slug,
                holder=_describe(holder) if holder else "another session (gone by now)",
                since=holder.since if holder else None,
            ) from None
        conn.execute(text("RESET lock_timeout"))
        conn.execute(text("RELEASE SAVEPOINT fabric_lock"))


def _try_all(conn: Connection, slugs: list[str]) -> bool:
    conn.execute(text("SAVEPOINT fabric_locks"))
    missed = conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE NOT got) FROM (SELECT "
            "pg_try_advisory_xact_lock(:ns, k) AS got FROM unnest(CAST(:keys AS int[])) AS k) s"
        ),
        {"ns": LockNamespace.APPLY, "keys": [tenant_lock_key(s) for s in slugs]},
    ).scalar_one()
    ending = "ROLLBACK TO SAVEPOINT" if missed else "RELEASE SAVEPOINT"
    conn.execute(text(f"{ending} fabric_locks"))
    return not missed


_HOLDERS_SQL = """
SELECT l.objid::bigint AS key, a.pid, coalesce(a.application_name, '') AS application_name,
       coalesce(host(a.client_addr), 'local socket') AS client,
       coalesce(a.xact_start, a.backend_start) AS since, a.state
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :ns AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def held_locks(conn: Connection, slugs: Iterable[str] = ()) -> list[LockHolder]:
    """Every fabric apply lock held right now on this database, as the server reports it."""
    names = {_unsigned(tenant_lock_key(s)): s for s in slugs}
    rows = conn.execute(text(_HOLDERS_SQL), {"ns": LockNamespace.APPLY})
    return [
        LockHolder(names.get(r.key), r.pid, r.application_name, r.client, r.since, r.state)
        for r in rows
    ]


def lock_holder(conn: Connection, slug: str) -> LockHolder | None:
    return next((h for h in held_locks(conn, [slug]) if h.tenant == slug), None)


def _unsigned(key: int) -> int:
    return key & 0xFFFFFFFF


def _describe(holder: LockHolder) -> str:
    name = holder.application_name or "(no application_name)"
    return f"{name} (pid {holder.pid}, {holder.client})"


def name_session(conn: Connection, name: str) -> None:
    """Set application_name for the transaction, so a waiter's message names this session."""
    conn.execute(text("SELECT set_config('application_name', :n, true)"), {"n": name})


def acquire_migration_lock(conn: Connection) -> None:
    """Serialise shared-schema migrations (transaction-scoped)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": LockNamespace.MIGRATION})
