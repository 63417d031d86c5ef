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
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True, slots=True)
class LocalStart:
    """Start the run here: the caller's connection holds the run's session lock (the runner
    keeps that connection open while the run goes on)."""

    nodes: frozenset[Address]


@dataclass(frozen=True, slots=True)
class QueueStart:
    """Defer the run's ready nodes to the queue; workers do the rest."""

    plan: Mapping[Address, Any]
    """Address -> fabric.state.queue.NodePlan."""
    queue: str = "fabric"
    options: Mapping[str, Any] = field(default_factory=dict)
    max_parallel: int | None = None
    """The tenant's max_parallel_nodes: at most this many of its jobs run at once."""


@dataclass(frozen=True, slots=True)
class OpenedRun:
    id: int
    status: str
    """running, or queued (behind an active run, with if_active "wait"; queue runs only)."""


def open_run(
    conn: Connection,
    tenant: TenantRow,
    start: LocalStart | QueueStart,
    *,
    trigger: str,
    selection: Iterable[str],
    who: str,
    if_active: str = "refuse",
    schedule_name: str | None = None,
    fire_at: datetime | None = None,
    run_id: int | None = None,
) -> OpenedRun | None:
    """Create a run and start it, locally or on the queue: the one way every run begins.

    `run_id` names a run created beforehand (`pending`, by a scheduler tick): it is started
    instead of created, and None comes back when it is not pending any more (another
    dispatcher started it, or it ended): a pending run starts once, whoever tries.

    Admission first, under the tenant's ADMIT lock, the same rule for both executors: a run
    that shares a node with an active run (local or queue) is refused with RunConflictError
    naming it, or, with `if_active` "wait", is created `queued` (queue runs; it starts when
    that run ends; a local runner waits by trying again, see fabric.runner.driver). A local run
    in the way whose runner died is settled (`failed: abandoned`) first: it blocks nobody.

    In the caller's transaction, not committed: the scheduler commits its claim of the fire
    time, the run rows and the queued jobs together.
    """
    from fabric.state import queue as jobs

    schema = tenant.schema_name
    local = isinstance(start, LocalStart)
    names = sorted(str(n) for n in (start.nodes if isinstance(start, LocalStart) else start.plan))
    jobs.admit_lock(conn, tenant)
    conflict = jobs.active_conflict(conn, tenant, names)
    if conflict is not None and _settle_abandoned(conn, [tenant]):
        conflict = jobs.active_conflict(conn, tenant, names)  # a dead local run was in the way
    if conflict is not None and (if_active != "wait" or local):
        raise jobs.RunConflictError(tenant.slug, *conflict)
    status = "queued" if conflict is not None else "running"
    plan = None
    if isinstance(start, QueueStart):
        plan = json.dumps(
            {
                "nodes": {str(n): p.as_json() for n, p in start.plan.items()},
                "queue": start.queue,
                "options": dict(start.options),
                "max_parallel": start.max_parallel,
            }
        )
    values = {
        "status": status,
        "who": who,
        "executor": "local" if local else "queue",
        "plan": plan,
    }
    if run_id is None:
        inserted = conn.execute(
            text(
                f'INSERT INTO "{schema}".runs (trigger, selection, status, who, started_at, '
                "heartbeat_at, executor, plan, schedule_name, fire_at) VALUES (:trigger, "
                "CAST(:selection AS jsonb), :status, :who, now(), now(), :executor, "
                "CAST(:plan AS jsonb), :schedule, :fire) RETURNING id, md5(plan::text) AS digest"
            ),
            {
                **values,
                "trigger": trigger,
                "selection": json.dumps(list(selection)),
                "schedule": schedule_name,
                "fire": fire_at,
            },
        ).one()
        run_id, digest = inserted.id, inserted.digest
    else:
        started = conn.execute(
            text(
                f'UPDATE "{schema}".runs SET status = :status, who = :who, started_at = now(), '
                "heartbeat_at = now(), executor = :executor, plan = CAST(:plan AS jsonb) "
                "WHERE id = :id AND status = 'pending' RETURNING id, md5(plan::text) AS digest"
            ),
            {**values, "id": run_id},
        ).one_or_none()
        if started is None:
            return None
        digest = started.digest
    if local:
        conn.execute(
            text("SELECT pg_advisory_lock(:ns, :key)"),
            {"ns": LockNamespace.RUN, "key": run_lock_key(schema, run_id)},
        )
    if names:
        conn.execute(
            text(
                f'INSERT INTO "{schema}".node_runs (run_id, node, status) '
                "VALUES (:run, :node, 'pending')"
            ),
            [{"run": run_id, "node": n} for n in names],
        )
    if plan is not None:
        jobs.remember_plan(digest, json.loads(plan))
        if status == "running":
            jobs.advance(conn, tenant, run_id, fresh=True)
    return OpenedRun(run_id, status)


def create_run(
    conn: Connection,
    tenant: TenantRow,
    *,
    trigger: str,
    selection: Iterable[str],
    who: str,
    nodes: Iterable[Address],
) -> int:
    """A local run, created and committed: `open_run` with LocalStart (tests, and callers
    that start one run on a connection of their own). Raises RunConflictError."""
    opened = open_run(
        conn, tenant, LocalStart(frozenset(nodes)), trigger=trigger, selection=selection, who=who
    )
    assert opened is not None
    conn.commit()  # one transaction: nobody sees the run before its lock is held
    return opened.id


def fail_pending_run(
    conn: Connection, tenant: TenantRow, run_id: int, error: str, *, commit: bool = True
) -> None:
    """A created run that cannot start (its selection matches nothing now, or an active run is
    in the way): failed, with why."""
    conn.execute(
        text(
            f"UPDATE \"{tenant.schema_name}\".runs SET status = 'failed', finished_at = now(), "
            "error = :error WHERE id = :id AND status = 'pending'"
        ),
        {"id": run_id, "error": error},
    )
    if commit:
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
    """End a local run; queue runs waiting behind it (`queued`) start now."""
    from fabric.state import queue as jobs

    conn.execute(
        text(
            f'UPDATE "{tenant.schema_name}".runs SET status = :status, finished_at = now(), '
            "heartbeat_at = now(), error = :error WHERE id = :id"
        ),
        {"status": status.value, "error": error, "id": run_id},
    )
    jobs.promote(conn, tenant)
    conn.commit()


def heartbeat(conn: Connection, tenant: TenantRow, run_id: int) -> None:
    conn.execute(
        text(f'UPDATE "{tenant.schema_name}".runs SET heartbeat_at = now() WHERE id = :id'),
        {"id": run_id},
    )
    conn.commit()


def mark_abandoned(conn: Connection, tenants: Iterable[TenantRow]) -> list[tuple[str, int]]:
    """Runs left `running` by a runner that is gone: failed, with their nodes settled."""
    found = _settle_abandoned(conn, tenants)
    conn.commit()
    return found


def _settle_abandoned(conn: Connection, tenants: Iterable[TenantRow]) -> list[tuple[str, int]]:
    """`mark_abandoned` in the caller's transaction."""
    found: list[tuple[str, int]] = []
    held = {
        r.key
        for r in conn.execute(
            text(
                "SELECT objid::bigint AS key FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = :ns AND objsubid = 2 AND granted "
                # advisory locks are per database: another control plane on the server may hold
                # the same key for its own run (its schemas and run ids start the same way)
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
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
