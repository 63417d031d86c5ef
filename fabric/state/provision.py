"""New tenant schemas, provisioned ahead of an apply's switch in batches of bounded size.  [shell]

Why: every relation a transaction creates stays locked until it commits, and PostgreSQL's lock
table is shared and small by default (`max_locks_per_transaction` 64 times `max_connections`
100 entries, about 6,400). A tenant schema is 50 relations (tables, indexes, sequences, TOAST)
plus a few object locks, so one transaction creating every new tenant ran out of shared memory
near 130 tenants on a stock server. Here each batch is one transaction that stays within a
quarter of the lock table, whatever the number of tenants.

Invariants:
- A provisioned schema is invisible to `plan`, `run` and `status` until the switch registers its
  tenant: they read tenants from the shared `tenants` table only. Its id is reserved from that
  table's identity sequence, so no other tenant can ever get the same `tenant_<id>`.
- Every provisioned schema carries a comment naming its apply's token; the apply holds the
  advisory lock (PROVISION, token) until its switch commits or rolls back. A schema that is
  unregistered, carries such a comment and whose token lock is free is an orphan of a dead
  apply, and `drop_orphans` drops it. Nothing fabric did not provision is ever dropped.
"""

from __future__ import annotations

import re
import secrets as _secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from fabric.errors import ApplyTooLargeError
from fabric.state import tables
from fabric.state.locks import LockNamespace
from fabric.state.migrate import tenant_schemas_script

LOCKS_PER_TENANT = 96
"""Lock-table entries a transaction holds per tenant schema it creates and fills (measured: 85
more per tenant with the snapshot, macro, seed and test tables; tests/state/test_provision.py
fails if the schema outgrows this)."""
LOCKS_PER_TABLE_WRITE = 5
"""Entries an INSERT/UPDATE into an existing tenant table takes: the table, its indexes, its
TOAST table and index (measured: 4.7 with TOASTed rows; a test fails if it grows past this)."""
SWITCH_BASE_LOCKS = 64
"""What the switch holds besides tenant tables: shared tables, the staging table, xids."""
BATCH_SHARE = 4
"""Provisioning batches running at once may use at most 1/BATCH_SHARE of the lock table."""
PARALLEL = 2
"""Connections provisioning at once: schema creation is CPU-bound in the server, and two
sessions use two cores (measured on 2 shared cores: 43-57 ms a tenant on two connections,
71-78 ms on one)."""
SWITCH_SHARE = 4 / 3
"""The switch may use at most 1/SWITCH_SHARE of the lock table (it also holds one lock per
tenant). Measured on a stock server (bench/switch_bound.py): the server itself took a switch
changing one table in each of 1,500 tenants; this allows about 790, a margin for the locks
of other sessions."""
MAX_BATCH = 100
"""Larger batches are no faster (measured: 5 to 60 tenants a batch cost the same per tenant);
a cap keeps one batch's transaction short."""
_COMMENT = "fabric tenant schema, provisioned by apply {token}"
_COMMENT_RE = re.compile(r"^fabric tenant schema, provisioned by apply (-?\d+)$")


@dataclass(frozen=True, slots=True)
class LockBudget:
    """The server's lock table, as its settings size it."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int

    @property
    def capacity(self) -> int:
        """Entries in the shared lock table (PostgreSQL's documented formula; the real table
        is slightly larger, as background workers get slots too)."""
        return self.max_locks_per_transaction * (
            self.max_connections + self.max_prepared_transactions
        )

    @property
    def batch_tenants(self) -> int:
        """New tenants per provisioning transaction."""
        share = self.capacity // BATCH_SHARE // PARALLEL
        return max(1, min(MAX_BATCH, share // LOCKS_PER_TENANT))

    @property
    def switch_locks(self) -> int:
        """Entries the switch transaction may take."""
        return int(self.capacity / SWITCH_SHARE)

    def describe(self) -> str:
        return (
            f"max_locks_per_transaction={self.max_locks_per_transaction}, "
            f"max_connections={self.max_connections}"
        )


def lock_budget(conn: Connection) -> LockBudget:
    row = conn.execute(
        text(
            "SELECT current_setting('max_locks_per_transaction')::int, "
            "current_setting('max_connections')::int, "
            "current_setting('max_prepared_transactions')::int"
        )
    ).one()
    return LockBudget(*row)


def check_switch(touched: int, existing: int, tables_written: int, budget: LockBudget) -> None:
    """Refuse a switch that would not fit the lock table, saying how many tenants would.

    The switch holds one apply lock per touched tenant, and locks every existing tenant table
    it writes (with its indexes) until it commits, which is what makes the change atomic.

    Raises:
        ApplyTooLargeError: with the number of existing tenants one apply can change.
    """
    needed = SWITCH_BASE_LOCKS + touched + tables_written * LOCKS_PER_TABLE_WRITE
    if needed <= budget.switch_locks:
        return
    per_tenant = max(1, -(-tables_written // max(1, existing)))
    room = budget.switch_locks - SWITCH_BASE_LOCKS
    fits = max(0, room // (1 + per_tenant * LOCKS_PER_TABLE_WRITE))
    raise ApplyTooLargeError(
        tenants=existing, tables=tables_written, fits=fits, server=budget.describe()
    )


def new_token() -> int:
    """A random signed 32-bit key naming one apply's provisional schemas."""
    return int.from_bytes(_secrets.token_bytes(4), "big", signed=True)


def hold_token(conn: Connection, token: int) -> None:
    """Take (PROVISION, token) for the caller's transaction: while it is open, no clean-up
    touches this apply's schemas."""
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:ns, :key)"),
        {"ns": LockNamespace.PROVISION, "key": token},
    )


def reserve_ids(conn: Connection, count: int) -> list[int]:
    """`count` new tenant ids from the shared table's identity sequence (never handed out twice,
    even when the transaction that took them rolls back)."""
    return list(
        conn.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": f"{tables.SHARED_SCHEMA}.tenants", "n": count},
        ).scalars()
    )


def create_schemas(conn: Connection, schemas: Sequence[str], token: int) -> None:
    """Create these tenant schemas at head and mark them as this apply's, in one round trip."""
    comment = _COMMENT.format(token=token)
    marks = [f"COMMENT ON SCHEMA \"{s}\" IS '{comment}'" for s in schemas]
    conn.exec_driver_sql(";\n".join([tenant_schemas_script(list(schemas)), *marks]))


def batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def run_batches(
    engine: Engine,
    work: Sequence[Sequence[str]],
    one_batch: Callable[[Connection, Sequence[str]], None],
    *,
    parallel: int = PARALLEL,
) -> None:
    """Run `one_batch` on every batch, each in its own committed transaction, on up to
    `parallel` connections at once. The first failure stops the others after their current
    batch and is raised; what was committed stays provisional (unregistered)."""
    pending = list(reversed(work))
    guard = threading.Lock()
    failed = threading.Event()

    def worker() -> None:
        with engine.connect() as conn:
            while not failed.is_set():
                with guard:
                    if not pending:
                        return
                    batch = pending.pop()
                try:
                    one_batch(conn, batch)
                    conn.commit()
                except BaseException:
                    failed.set()
                    raise

    workers = max(1, min(parallel, len(work)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(worker) for _ in range(workers)]
    for future in futures:
        future.result()  # the first failure, if any


_ORPHANS_SQL = f"""
SELECT n.nspname AS schema, d.description AS comment
FROM pg_namespace n
JOIN pg_description d ON d.objoid = n.oid AND d.classoid = 'pg_namespace'::regclass
WHERE n.nspname ~ '^tenant_[0-9]+$' AND d.description LIKE 'fabric tenant schema, %'
  AND NOT EXISTS (SELECT 1 FROM {tables.SHARED_SCHEMA}.tenants t WHERE t.schema_name = n.nspname)
ORDER BY n.nspname
"""


def unregistered_schemas(conn: Connection) -> dict[str, int]:
    """Provisional schemas no tenant row names yet: schema -> token of the apply that made it."""
    out: dict[str, int] = {}
    for r in conn.execute(text(_ORPHANS_SQL)):
        match = _COMMENT_RE.match(r.comment)
        if match:
            out[r.schema] = int(match.group(1))
    return out


def drop_orphans(conn: Connection, batch: int) -> list[str]:
    """Drop the provisional schemas of applies that are gone; returns the dropped schemas.

    Each batch is its own transaction (dropping a schema locks its relations like creating it).
    A token whose lock is held belongs to a live apply, whose schemas are left alone; the
    registration check is repeated once the lock is held, because an apply releases its token
    only after its switch has committed.
    """
    dropped: list[str] = []
    tokens = sorted(set(unregistered_schemas(conn).values()))
    conn.commit()
    for token in tokens:
        while True:
            got = conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:ns, :key)"),
                {"ns": LockNamespace.PROVISION, "key": token},
            ).scalar_one()
            if not got:
                conn.rollback()
                break
            mine = [s for s, t in unregistered_schemas(conn).items() if t == token][:batch]
            if not mine:
                conn.commit()
                break
            conn.exec_driver_sql(";\n".join(f'DROP SCHEMA "{s}" CASCADE' for s in mine))
            conn.commit()
            dropped.extend(mine)
    return dropped
