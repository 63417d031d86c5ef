"""Run and node-run records in the tenant's schema, written as the run goes.  [shell]

A runner holds a session advisory lock per run for as long as it drives it; a run left
`running` whose lock nobody holds belonged to a runner that died, and the next runner marks it
`failed: abandoned`. The run row is inserted and its lock taken in one transaction, so no other
runner can ever see a live run without its lock.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from fabric.addresses import Address
from fabric.domain.runs import FailureKind, NodeStatus, RunStatus
from fabric.state.locks import LockNamespace
from fabric.state.snapshot import TenantRow


def run_lock_key(schema: str, run_id: int) -> int:
    value = zlib.crc32(f"{schema}:{run_id}".encode())
    return value - (1 << 32) if value >= (1 << 31) else value


def create_run(
    conn: Connection,
    tenant: TenantRow,
    *,
    trigger: str,
    selection: Iterable[str],
    who: str,
    nodes: Iterable[Address],
) -> int:
    """Insert the run and its pending node runs; lock the run on `conn` (a session lock).

    `conn` must stay open while the run goes on: closing it (or dying) releases the lock.
    """
    schema = tenant.schema_name
    run_id = conn.execute(
        text(
            f'INSERT INTO "{schema}".runs (trigger, selection, status, who, started_at, '
            "heartbeat_at) VALUES (:trigger, CAST(:selection AS jsonb), 'running', :who, "
            "now(), now()) RETURNING id"
        ),
        {"trigger": trigger, "selection": json.dumps(list(selection)), "who": who},
    ).scalar_one()
    _lock_and_add_nodes(conn, schema, run_id, nodes)
    conn.commit()  # one transaction: nobody sees the run before its lock is held
    return run_id


def _lock_and_add_nodes(
    conn: Connection, schema: str, run_id: int, nodes: Iterable[Address]
) -> None:
    """Hold the run's lock (the runner's session owns the run) and add its pending nodes."""
    conn.execute(
        text("SELECT pg_advisory_lock(:ns, :key)"),
        {"ns": LockNamespace.RUN, "key": run_lock_key(schema, run_id)},
    )
    rows = [{"run": run_id, "node": str(n)} for n in sorted(nodes)]
    if rows:
        conn.execute(
            text(
                f'INSERT INTO "{schema}".node_runs (run_id, node, status) '
                "VALUES (:run, :node, 'pending')"
            ),
            rows,
        )


def start_run(
    conn: Connection,
    tenant: TenantRow,
    run_id: int,
    *,
    who: str,
    nodes: Iterable[Address],
) -> bool:
    """Start a run created beforehand (a scheduled run, `pending`): as `create_run`, but the row
    exists. False when it is not pending any more (another dispatcher started it, or it ended):
    a pending run starts once, whoever tries."""
    schema = tenant.schema_name
    started = conn.execute(
        text(
            f"UPDATE \"{schema}\".runs SET status = 'running', who = :who, started_at = now(), "
            "heartbeat_at = now() WHERE id = :id AND status = 'pending' RETURNING id"
        ),
        {"id": run_id, "who": who},
    ).scalar_one_or_none()
    if started is None:
        conn.rollback()
        return False
    _lock_and_add_nodes(conn, schema, run_id, nodes)
    conn.commit()
    return True


def fail_pending_run(conn: Connection, tenant: TenantRow, run_id: int, error: str) -> None:
    """A created run that cannot start (its selection matches nothing now): failed, with why."""
    conn.execute(
        text(
            f"UPDATE \"{tenant.schema_name}\".runs SET status = 'failed', finished_at = now(), "
            "error = :error WHERE id = :id AND status = 'pending'"
        ),
        {"id": run_id, "error": error},
    )
    conn.commit()


def release_run(conn: Connection, tenant: TenantRow, run_id: int) -> None:
    conn.execute(
        text("SELECT pg_advisory_unlock(:ns, :key)"),
        {"ns": LockNamespace.RUN, "key": run_lock_key(tenant.schema_name, run_id)},
    )
    conn.commit()


def update_node(
    conn: Connection,
    tenant: TenantRow,
    run_id: int,
    node: Address,
    *,
    status: NodeStatus,
    attempts: int | None = None,
    queued_at: datetime | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    finished: bool = False,
    failure: FailureKind | None = None,
    rows_loaded: Mapping[str, int] | None = None,
    error: str | None = None,
    log_tail: str | None = None,
) -> None:
    """Write what is known of a node's (latest) attempt.

    Times follow fabric.domain.runs: `queued_at` when the node was handed to a worker (it also
    stands for started_at until the worker reports its own), `started_at`/`finished_at` as the
    worker saw its work; `finished` without a time (skipped, cancelled) stamps the server's now.
    """
    sets = ["status = :status", "updated_at = now()"]
    params: dict[str, Any] = {"run": run_id, "node": str(node), "status": status.value}
    if attempts is not None:
        sets.append("attempts = :attempts")
        params["attempts"] = attempts
    if queued_at is not None:
        sets += ["queued_at = :queued", "started_at = :queued", "finished_at = NULL"]
        params["queued"] = queued_at
    if started_at is not None:
        sets.append("started_at = :started")
        params["started"] = started_at
    if finished_at is not None:
        sets.append("finished_at = :finished")
        params["finished"] = finished_at
    elif finished:
        sets.append("finished_at = now()")
    if failure is not None or status is NodeStatus.SUCCESS:
        sets.append("failure = :failure")
        params["failure"] = failure.value if failure is not None else None
    if rows_loaded is not None:
        sets.append("rows_loaded = CAST(:rows AS jsonb)")
        params["rows"] = json.dumps(dict(rows_loaded))
    if error is not None:
        sets.append("error = :error")
        params["error"] = error
    if log_tail is not None:
        sets.append("log_tail = :log_tail")
        params["log_tail"] = log_tail
    conn.execute(
        text(
            f'UPDATE "{tenant.schema_name}".node_runs SET {", ".join(sets)} '
            "WHERE run_id = :run AND node = :node"
        ),
        params,
    )
    conn.commit()


def finish_run(
    conn: Connection, tenant: TenantRow, run_id: int, status: RunStatus, error: str | None = None
) -> None:
    conn.execute(
        text(
            f'UPDATE "{tenant.schema_name}".runs SET status = :status, finished_at = now(), '
            "heartbeat_at = now(), error = :error WHERE id = :id"
        ),
        {"status": status.value, "error": error, "id": run_id},
    )
    conn.commit()


def heartbeat(conn: Connection, tenant: TenantRow, run_id: int) -> None:
    conn.execute(
        text(f'UPDATE "{tenant.schema_name}".runs SET heartbeat_at = now() WHERE id = :id'),
        {"id": run_id},
    )
    conn.commit()


def mark_abandoned(conn: Connection, tenants: Iterable[TenantRow]) -> list[tuple[str, int]]:
    """Runs left `running` by a runner that is gone: failed, with their nodes settled."""
    found: list[tuple[str, int]] = []
    held = {
        r.key
        for r in conn.execute(
            text(
                "SELECT objid::bigint AS key FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = :ns AND objsubid = 2 AND granted"
            ),
            {"ns": LockNamespace.RUN},
        )
    }
    for tenant in tenants:
        running = conn.execute(
            text(
                f"SELECT id FROM \"{tenant.schema_name}\".runs WHERE status = 'running' "
                "AND executor IS DISTINCT FROM 'queue'"  # queue runs are not held by a runner
            )
        ).scalars()
        for run_id in list(running):
            if run_lock_key(tenant.schema_name, run_id) & 0xFFFFFFFF in held:
                continue
            schema = tenant.schema_name
            conn.execute(
                text(
                    f"UPDATE \"{schema}\".runs SET status = 'failed', finished_at = now(), "
                    "error = 'abandoned: the runner driving this run stopped without finishing "
                    "it' WHERE id = :id AND status = 'running'"
                ),
                {"id": run_id},
            )
            conn.execute(
                text(
                    f'UPDATE "{schema}".node_runs SET updated_at = now(), '
                    "finished_at = coalesce(finished_at, now()), "
                    "status = CASE status WHEN 'running' THEN 'failed' ELSE 'cancelled' END, "
                    "failure = CASE status WHEN 'running' THEN 'worker_lost' ELSE 'cancelled' "
                    "END, "
                    "error = CASE status WHEN 'running' THEN 'abandoned: its runner stopped' "
                    "ELSE error END "
                    "WHERE run_id = :id AND status IN ('running', 'pending')"
                ),
                {"id": run_id},
            )
            found.append((tenant.slug, run_id))
    conn.commit()
    return found


@dataclass(frozen=True, slots=True)
class RunRecord:
    tenant: str
    id: int
    trigger: str
    selection: tuple[str, ...]
    status: str
    who: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    nodes: tuple[NodeRunRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeRunRecord:
    node: str
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    rows_loaded: Mapping[str, int]
    error: str | None
    log_tail: str | None
    queued_at: datetime | None = None
    failure: str | None = None
    """A FailureKind value, for failed, skipped and cancelled nodes."""

    @property
    def seconds(self) -> float | None:
        """finished_at - started_at: the one duration every display shows."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


_NODE_COLUMNS = (
    "node, status, attempts, started_at, finished_at, rows_loaded, error, log_tail, queued_at, "
    "failure"
)
_RUN_COLUMNS = "id, trigger, selection, status, who, started_at, finished_at, error"


def _run_record(tenant: TenantRow, r: Any) -> RunRecord:
    return RunRecord(
        tenant.slug,
        r.id,
        r.trigger,
        tuple(r.selection or ()),
        r.status,
        r.who,
        r.started_at,
        r.finished_at,
        r.error,
    )


def _node_run_record(r: Any) -> NodeRunRecord:
    return NodeRunRecord(
        r.node,
        r.status,
        r.attempts,
        r.started_at,
        r.finished_at,
        r.rows_loaded or {},
        r.error,
        r.log_tail,
        r.queued_at,
        r.failure,
    )


def list_runs(conn: Connection, tenant: TenantRow, *, limit: int = 20) -> list[RunRecord]:
    rows = conn.execute(
        text(
            f'SELECT {_RUN_COLUMNS} FROM "{tenant.schema_name}".runs ORDER BY id DESC LIMIT :limit'
        ),
        {"limit": limit},
    )
    return [_run_record(tenant, r) for r in rows]


def read_run(conn: Connection, tenant: TenantRow, run_id: int) -> RunRecord | None:
    """One run with its node runs, or None."""
    row = conn.execute(
        text(f'SELECT {_RUN_COLUMNS} FROM "{tenant.schema_name}".runs WHERE id = :id'),
        {"id": run_id},
    ).one_or_none()
    if row is None:
        return None
    nodes = conn.execute(
        text(
            f'SELECT {_NODE_COLUMNS} FROM "{tenant.schema_name}".node_runs WHERE run_id = :id '
            "ORDER BY started_at NULLS LAST, node"
        ),
        {"id": run_id},
    )
    return replace(_run_record(tenant, row), nodes=tuple(_node_run_record(r) for r in nodes))


def last_node_runs(conn: Connection, tenant: TenantRow) -> dict[str, NodeRunRecord]:
    """Each node's most recent node run, in one query."""
    rows = conn.execute(
        text(
            f"SELECT DISTINCT ON (node) {_NODE_COLUMNS} "
            f'FROM "{tenant.schema_name}".node_runs '
            "WHERE status <> 'pending' ORDER BY node, id DESC"
        )
    )
    return {r.node: _node_run_record(r) for r in rows}
