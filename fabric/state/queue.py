"""Queue runs: advanced by whoever finishes a node; jobs in procrastinate.  [shell]

fabric's run and node-run tables are the source of truth; procrastinate's jobs only say "run
these nodes of this run" (tenant slug, run id, node addresses: ids, never secrets). Every step
is one transaction on the control plane that both writes fabric's records and defers jobs on the
same connection (procrastinate defers on the caller's connection), so a crash never leaves a
node recorded as queued without its job, or a job without its node.

- fabric.state.runs.open_run creates a run and defers its roots (`fabric run`, the scheduler).
- `claim` starts an attempt: the node goes `running` with a fresh fencing token.
- `record` writes an attempt's result only if its token is still the node's: a worker that was
  declared lost and comes back later changes nothing.
- `advance` skips what can never run, defers what is ready (fabric.graph.ready decides, as for
  the local executor) and finishes the run when every node is done.
- `reap` settles the jobs of workers whose heartbeat lapsed: `failed: worker_lost`, retried when
  the node's policy allows.
- At most one active run per (tenant, node): a run whose nodes overlap an active run's is
  refused (naming it) or waits as `queued` and starts when that run ends.
"""

from __future__ import annotations

import functools
import json
import secrets
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, text

from fabric.addresses import DBT_KINDS, Address
from fabric.domain.runs import FINISHED, FailureKind, NodeResult, NodeStatus, RunStatus
from fabric.errors import FabricError
from fabric.graph.dag import Dag
from fabric.graph.ready import ready_nodes, run_status, to_skip
from fabric.state.locks import LockNamespace
from fabric.state.snapshot import TenantRow

TASK = "fabric.nodes"
"""The one procrastinate task: run these nodes of this run."""
QUEUE = "fabric"
"""The default queue; `fabric worker --queues` picks others (a run's `queue`)."""
ACTIVE = ("running", "queued")


class RunConflictError(FabricError):
    """A run would share nodes with an active run of the same tenant (and may not wait)."""

    def __init__(self, tenant: str, run_id: int, nodes: Sequence[str]) -> None:
        self.tenant = tenant
        self.run_id = run_id
        shown = ", ".join(nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
        super().__init__(
            f"Run {run_id} of {tenant} is active and runs {shown}: one active run per pipeline. "
            f"Wait for it (`fabric runs show {run_id} --tenant {tenant}`), cancel it "
            f"(`fabric runs cancel {run_id} --tenant {tenant}`), or pass --if-active wait."
        )


@dataclass(frozen=True, slots=True)
class NodePlan:
    """What the queue needs of a node besides its address: edges and retry policy."""

    upstream: tuple[str, ...] = ()
    retries: int = 0
    backoff_seconds: float = 30.0
    timeout_seconds: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "up": list(self.upstream),
            "retries": self.retries,
            "backoff": self.backoff_seconds,
            "timeout": self.timeout_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodePlan:
        return cls(
            tuple(data.get("up") or ()),
            int(data.get("retries") or 0),
            float(data.get("backoff") if data.get("backoff") is not None else 30.0),
            data.get("timeout"),
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    node: Address
    attempt: int
    token: int


@functools.cache
def _defer_app() -> Any:
    """A procrastinate app that only defers, always on the caller's connection (no pool)."""
    import procrastinate

    return procrastinate.App(connector=procrastinate.SyncPsycopgConnector())


def _driver(conn: Connection) -> Any:
    """The psycopg connection under `conn`, in its current transaction."""
    return conn.connection.driver_connection


def admit_lock(conn: Connection, tenant: TenantRow) -> None:
    key = zlib.crc32(tenant.schema_name.encode())
    key = key - (1 << 32) if key >= (1 << 31) else key
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": LockNamespace.ADMIT, "key": key}
    )


def active_conflict(
    conn: Connection, tenant: TenantRow, nodes: Iterable[str], *, before: int | None = None
) -> tuple[int, list[str]] | None:
    """The oldest active run (older than `before`, if given) sharing a node with `nodes`."""
    rows = conn.execute(
        text(
            f'SELECT r.id, n.node FROM "{tenant.schema_name}".runs r '
            f'JOIN "{tenant.schema_name}".node_runs n ON n.run_id = r.id '
            "WHERE r.status = ANY(:active) AND n.node = ANY(:nodes) "
            "AND (CAST(:before AS bigint) IS NULL OR r.id < :before) ORDER BY r.id, n.node"
        ),
        {"active": list(ACTIVE), "nodes": list(nodes), "before": before},
    ).all()
    if not rows:
        return None
    first = rows[0].id
    return first, [r.node for r in rows if r.id == first]


def _plan(conn: Connection, tenant: TenantRow, run_id: int, *, lock: bool) -> Any:
    return conn.execute(
        text(
            f'SELECT id, status, plan FROM "{tenant.schema_name}".runs WHERE id = :id'
            + (" FOR UPDATE" if lock else "")
        ),
        {"id": run_id},
    ).one_or_none()


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A run's stored plan, parsed once per process: a plan never changes after the run is
    created, and parsing a 500-node plan on every node's advance cost more than the rest."""

    nodes: Mapping[Address, NodePlan]
    dag: Dag
    queue: str
    cap: int | None
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _RunView:
    id: int
    status: str
    plan: _Parsed | None


@dataclass(frozen=True, slots=True)
class _Row:
    node: str
    status: str
    job_id: int | None


_PARSED: dict[str, _Parsed] = {}
_PARSED_MAX = 256


def _run(conn: Connection, tenant: TenantRow, run_id: int, *, lock: bool) -> _RunView | None:
    """The run's status and parsed plan; the plan's JSON travels only when this process has
    not parsed it yet (the server's md5 of it is the cache key, so two databases' runs with
    the same id never mix)."""
    sql = (
        f'SELECT id, status, md5(plan::text) AS digest FROM "{tenant.schema_name}".runs '
        "WHERE id = :id" + (" FOR UPDATE" if lock else "")
    )
    row = conn.execute(text(sql), {"id": run_id}).one_or_none()
    if row is None:
        return None
    if row.digest is None:
        return _RunView(row.id, row.status, None)
    parsed = _PARSED.get(row.digest)
    if parsed is None:
        document = conn.execute(
            text(f'SELECT plan FROM "{tenant.schema_name}".runs WHERE id = :id'), {"id": run_id}
        ).scalar_one()
        parsed = _parse(document)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[row.digest] = parsed
    return _RunView(row.id, row.status, parsed)


def remember_plan(digest: str | None, document: Mapping[str, Any]) -> None:
    """Parse a plan this process just stored (`digest`: the server's md5 of it), so the run's
    first advance does not read it back."""
    if digest is not None and digest not in _PARSED:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[digest] = _parse(document)


def _parse(document: Mapping[str, Any]) -> _Parsed:
    nodes = {Address.parse(n): NodePlan.from_json(p) for n, p in document["nodes"].items()}
    by_name = {str(n): n for n in nodes}
    # The stored plan comes from an acyclic DAG: no need to sort it again.
    dag = Dag(
        MappingProxyType(
            {
                n: frozenset(by_name.get(u) or Address.parse(u) for u in p.upstream)
                for n, p in nodes.items()
            }
        ),
        MappingProxyType({}),
    )
    return _Parsed(
        MappingProxyType(nodes),
        dag,
        document.get("queue") or QUEUE,
        document.get("max_parallel"),
        MappingProxyType(dict(document.get("options") or {})),
    )


def _defer(
    conn: Connection,
    tenant: TenantRow,
    run_id: int,
    nodes: Sequence[str],
    queue: str,
    cap: int | None = None,
    *,
    waiting: int | None = None,
    **kw: Any,
) -> int:
    """Defer one job for `nodes` (one node, or a tenant's dbt batch) on `conn`; mark them.

    `cap` (the tenant's max_parallel_nodes) spreads the tenant's jobs over `cap` procrastinate
    locks (slots): a worker never takes a job whose lock a running job holds, and takes the
    next job of another lock instead, so at most `cap` of them run at once, across workers,
    and another tenant's jobs go past the waiting ones. Without a cap, a dbt batch still holds
    the tenant's dbt lock (one dbt invocation per tenant at a time); with one, dbt batches
    all go to slot 0, which does the same."""
    transformations = any(Address.parse(n).kind in DBT_KINDS for n in nodes)
    if waiting is None:
        waiting = _waiting(conn, tenant, queue)
    if cap:
        slot = 0 if transformations else int(waiting) % cap
        lock: str | None = f"nodes:{tenant.schema_name}:{slot}"
    else:
        lock = f"dbt:{tenant.schema_name}" if transformations else None
    deferrer = _defer_app().configure_task(
        TASK, queue=queue, lock=lock, priority=-int(waiting), **kw
    )
    deferrer.connection = _driver(conn)
    job_id = deferrer.defer(tenant=tenant.slug, run_id=run_id, nodes=list(nodes))
    conn.execute(
        text(
            f'UPDATE "{tenant.schema_name}".node_runs SET job_id = :job, queued_at = now(), '
            "updated_at = now() WHERE run_id = :run AND node = ANY(:nodes)"
        ),
        {"job": job_id, "run": run_id, "nodes": list(nodes)},
    )
    return int(job_id)


def _waiting(conn: Connection, tenant: TenantRow, queue: str) -> int:
    """The tenant's jobs waiting on `queue`. Fairness: a tenant's jobs lose priority with each
    job it already has waiting, so one tenant's hundred ready nodes do not keep another's
    first node waiting behind them."""
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo' "
                "AND queue_name = :q AND args->>'tenant' = :t"
            ),
            {"q": queue, "t": tenant.slug},
        ).scalar_one()
    )


def advance(
    conn: Connection, tenant: TenantRow, run_id: int, *, fresh: bool = False
) -> RunStatus | None:
    """Skip what can never run, defer what is ready, finish the run when all is done.

    In the caller's transaction; the run row is locked, so two workers finishing nodes of one
    run at once take turns. Returns the run's status when this call finished it. `fresh`: the
    run was created in this transaction (every node pending, none deferred: not read back).
    """
    run = _run(conn, tenant, run_id, lock=True)
    if run is None or run.status != "running" or run.plan is None:
        return None
    schema = tenant.schema_name
    queue, cap, dag = run.plan.queue, run.plan.cap, run.plan.dag
    by_name = {str(n): n for n in run.plan.nodes}
    rows = (
        [_Row(str(n), NodeStatus.PENDING.value, None) for n in run.plan.nodes]
        if fresh
        else conn.execute(
            text(f'SELECT node, status, job_id FROM "{schema}".node_runs WHERE run_id = :id'),
            {"id": run_id},
        ).all()
    )
    status = {by_name.get(r.node) or Address.parse(r.node): NodeStatus(r.status) for r in rows}
    deferred = {by_name.get(r.node) or Address.parse(r.node) for r in rows if r.job_id is not None}
    blocked = {NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
    skip = to_skip(dag, status) if blocked & set(status.values()) else ()
    if skip:
        conn.execute(
            text(
                f"UPDATE \"{schema}\".node_runs SET status = 'skipped', failure = :f, "
                "error = 'upstream failed', finished_at = now(), updated_at = now() "
                "WHERE run_id = :run AND node = ANY(:nodes)"
            ),
            {
                "f": FailureKind.UPSTREAM_FAILED.value,
                "run": run_id,
                "nodes": [str(n) for n in skip],
            },
        )
        status.update({n: NodeStatus.SKIPPED for n in skip})
    if all(s in FINISHED for s in status.values()):
        final = run_status(status)
        failed = sum(s is NodeStatus.FAILED for s in status.values())
        conn.execute(
            text(
                f'UPDATE "{schema}".runs SET status = :s, finished_at = now(), '
                "heartbeat_at = now(), error = :e WHERE id = :id"
            ),
            {"s": final.value, "e": f"{failed} node(s) failed" if failed else None, "id": run_id},
        )
        promote(conn, tenant)
        return final
    ready = [n for n in ready_nodes(dag, status) if n not in deferred]
    pipelines = [n for n in ready if n.kind not in DBT_KINDS]
    models = [n for n in ready if n.kind in DBT_KINDS]
    in_flight = any(
        n.kind in DBT_KINDS and n in deferred and status[n] not in FINISHED for n in status
    )
    batches = [[str(n)] for n in pipelines]
    if models and not in_flight:  # one dbt invocation per tenant at a time, as locally
        batches.append([str(n) for n in models])
    if batches:
        waiting = _waiting(conn, tenant, queue)
        for i, nodes in enumerate(batches):
            _defer(conn, tenant, run_id, nodes, queue, cap, waiting=waiting + i)
    return None


def promote(conn: Connection, tenant: TenantRow) -> None:
    """Start the queued runs that no longer share a node with an active run, oldest first."""
    admit_lock(conn, tenant)
    queued = conn.execute(
        text(f"SELECT id FROM \"{tenant.schema_name}\".runs WHERE status = 'queued' ORDER BY id")
    ).scalars()
    for run_id in list(queued):
        nodes = conn.execute(
            text(f'SELECT node FROM "{tenant.schema_name}".node_runs WHERE run_id = :id'),
            {"id": run_id},
        ).scalars()
        conflict = active_conflict(conn, tenant, list(nodes), before=run_id)
        running = conn.execute(
            text(
                f'SELECT 1 FROM "{tenant.schema_name}".runs r JOIN '
                f'"{tenant.schema_name}".node_runs n ON n.run_id = r.id '
                "WHERE r.status = 'running' AND n.node IN (SELECT node FROM "
                f'"{tenant.schema_name}".node_runs WHERE run_id = :id) LIMIT 1'
            ),
            {"id": run_id},
        ).first()
        if conflict is None and running is None:
            conn.execute(
                text(
                    f"UPDATE \"{tenant.schema_name}\".runs SET status = 'running', "
                    "started_at = now(), heartbeat_at = now() WHERE id = :id"
                ),
                {"id": run_id},
            )
            advance(conn, tenant, run_id)


def claim(
    conn: Connection, tenant: TenantRow, run_id: int, nodes: Sequence[str], job_id: int, worker: str
) -> list[Claimed]:
    """Start an attempt of each node this job was deferred for and that is still pending.

    Each gets a fresh token; a node already claimed, cancelled or re-deferred under another job
    is left alone (the job is stale). Commits.
    """
    rows = conn.execute(
        text(
            f"UPDATE \"{tenant.schema_name}\".node_runs n SET status = 'running', "
            "attempts = n.attempts + 1, token = :token + n.id, worker = :worker, "
            "started_at = now(), finished_at = NULL, updated_at = now() "
            f"FROM \"{tenant.schema_name}\".runs r WHERE r.id = n.run_id AND r.status = 'running' "
            "AND n.run_id = :run AND n.node = ANY(:nodes) AND n.job_id = :job "
            "AND n.status = 'pending' RETURNING n.node, n.attempts, n.token"
        ),
        {
            "token": secrets.randbits(52),
            "worker": worker,
            "run": run_id,
            "nodes": list(nodes),
            "job": job_id,
        },
    ).all()
    conn.commit()
    return [Claimed(Address.parse(r.node), r.attempts, r.token) for r in rows]


def record(
    conn: Connection, tenant: TenantRow, run_id: int, result: NodeResult, token: int
) -> bool:
    """Write an attempt's result if `token` is still the node's, retry it per its policy, and
    advance the run; one transaction. False: the token is stale (the attempt was declared lost
    or cancelled meanwhile) and nothing changed."""
    schema = tenant.schema_name
    run = _run(conn, tenant, run_id, lock=True)
    current = conn.execute(
        text(
            f'SELECT attempts FROM "{schema}".node_runs WHERE run_id = :run AND node = :node '
            "AND token = :token AND status = 'running' FOR UPDATE"
        ),
        {"run": run_id, "node": str(result.address), "token": token},
    ).one_or_none()
    if run is None or current is None:
        conn.rollback()
        return False
    plan = (run.plan.nodes if run.plan else {}).get(result.address) or NodePlan()
    retry = (
        result.status is NodeStatus.FAILED
        and result.retryable
        and current.attempts <= plan.retries
        and run.status == "running"
    )
    conn.execute(
        text(
            f'UPDATE "{schema}".node_runs SET status = :status, failure = :failure, '
            "rows_loaded = CAST(:rows AS jsonb), error = :error, log_tail = :log, "
            "started_at = coalesce(:started, started_at), finished_at = :finished, "
            "token = NULL, job_id = CASE WHEN :retry THEN NULL ELSE job_id END, "
            "updated_at = now() WHERE run_id = :run AND node = :node"
        ),
        {
            "status": NodeStatus.PENDING.value if retry else result.status.value,
            "failure": result.failure.value if result.failure else None,
            "rows": json.dumps(dict(result.rows_loaded)),
            "error": result.error,
            "log": result.log_tail,
            "started": result.started_at,
            "finished": None if retry else result.finished_at,
            "retry": retry,
            "run": run_id,
            "node": str(result.address),
        },
    )
    if retry:
        delay = min(600.0, plan.backoff_seconds * 2 ** (current.attempts - 1))
        queue = run.plan.queue if run.plan else QUEUE
        cap = run.plan.cap if run.plan else None
        _defer(
            conn,
            tenant,
            run_id,
            [str(result.address)],
            queue,
            cap,
            schedule_in={"seconds": delay},
        )
    advance(conn, tenant, run_id)
    conn.commit()
    return True


def lose_job(conn: Connection, tenant: TenantRow, run_id: int, job_id: int) -> list[str]:
    """The job's worker stopped sending heartbeats: its running attempts fail `worker_lost`
    (their tokens cleared, so a late write changes nothing), each retried if its policy
    allows; nodes it never claimed go back to be deferred again; the job itself is marked
    failed in procrastinate. One transaction; returns the nodes declared lost."""
    from procrastinate import sql

    schema = tenant.schema_name
    doing = conn.execute(
        text("SELECT status FROM procrastinate_jobs WHERE id = :id FOR UPDATE"), {"id": job_id}
    ).scalar_one_or_none()
    if doing == "doing":
        _defer_app().connector.execute_query_all_with_connection(
            _driver(conn),
            query=sql.queries["finish_job"],
            job_id=job_id,
            status="failed",
            delete_job=False,
        )
    run = _plan(conn, tenant, run_id, lock=True)
    lost = conn.execute(
        text(
            f"UPDATE \"{schema}\".node_runs SET status = 'failed', failure = :f, token = NULL, "
            "error = 'worker_lost: its worker stopped sending heartbeats', "
            "finished_at = now(), updated_at = now() "
            "WHERE run_id = :run AND job_id = :job AND status = 'running' RETURNING node, attempts"
        ),
        {"f": FailureKind.WORKER_LOST.value, "run": run_id, "job": job_id},
    ).all()
    conn.execute(
        text(
            f'UPDATE "{schema}".node_runs SET job_id = NULL, updated_at = now() '
            "WHERE run_id = :run AND job_id = :job AND status = 'pending'"
        ),
        {"run": run_id, "job": job_id},
    )
    if run is not None and run.status == "running":
        plans = (run.plan or {}).get("nodes", {})
        for row in lost:
            if row.attempts <= NodePlan.from_json(plans.get(row.node, {})).retries:
                conn.execute(
                    text(
                        f"UPDATE \"{schema}\".node_runs SET status = 'pending', job_id = NULL, "
                        "finished_at = NULL WHERE run_id = :run AND node = :node"
                    ),
                    {"run": run_id, "node": row.node},
                )
        advance(conn, tenant, run_id)
    conn.commit()
    return [r.node for r in lost]


def cancel_run(conn: Connection, tenant: TenantRow, run_id: int) -> list[str]:
    """Stop a queue run: queued jobs dropped, running ones asked to abort (their workers kill
    the node's process), every unfinished node `cancelled`. One transaction; returns the nodes
    cancelled. Raises FabricError when the run is not active."""
    schema = tenant.schema_name
    run = _plan(conn, tenant, run_id, lock=True)
    if run is None:
        raise FabricError(
            f"Tenant {tenant.slug} has no run {run_id}. List runs with `fabric runs`."
        )
    if run.status not in ACTIVE:
        raise FabricError(f"Run {run_id} of {tenant.slug} is {run.status}: nothing to cancel.")
    rows = conn.execute(
        text(
            f"UPDATE \"{schema}\".node_runs SET status = 'cancelled', failure = :f, "
            "token = NULL, error = 'run cancelled', finished_at = now(), updated_at = now() "
            "WHERE run_id = :run AND status IN ('pending', 'running') RETURNING node, job_id"
        ),
        {"f": FailureKind.CANCELLED.value, "run": run_id},
    ).all()
    conn.execute(
        text(
            f"UPDATE \"{schema}\".runs SET status = 'cancelled', finished_at = now(), "
            "error = 'cancelled' WHERE id = :id"
        ),
        {"id": run_id},
    )
    manager = _defer_app().job_manager
    for job_id in sorted({r.job_id for r in rows if r.job_id is not None}):
        manager.cancel_job_by_id(job_id, abort=True, connection=_driver(conn))
    promote(conn, tenant)
    conn.commit()
    return sorted(r.node for r in rows)


def retry_run(
    conn: Connection, tenant: TenantRow, run_id: int, *, if_active: str = "refuse"
) -> list[str]:
    """Run a finished queue run's failed and skipped nodes again (the others keep their
    results); the run is active again. One transaction; returns the nodes to run again."""
    schema = tenant.schema_name
    # The run's row first, then the tenant's admission lock: the order a worker finishing a
    # node of this run takes them in, so the two can never wait for each other.
    run = _plan(conn, tenant, run_id, lock=True)
    if run is None:
        raise FabricError(
            f"Tenant {tenant.slug} has no run {run_id}. List runs with `fabric runs`."
        )
    admit_lock(conn, tenant)
    if not run.plan:
        raise FabricError(
            f"Run {run_id} of {tenant.slug} ran on the local executor; only queue runs can be "
            "retried. Run the failed nodes again with `fabric run`."
        )
    if run.status in ACTIVE:
        raise FabricError(f"Run {run_id} of {tenant.slug} is still {run.status}.")
    again = (
        conn.execute(
            text(
                f'SELECT node FROM "{schema}".node_runs WHERE run_id = :run '
                "AND status IN ('failed', 'skipped') ORDER BY node"
            ),
            {"run": run_id},
        )
        .scalars()
        .all()
    )
    if not again:
        raise FabricError(f"Run {run_id} of {tenant.slug} has no failed or skipped node.")
    conflict = active_conflict(conn, tenant, again)
    if conflict is not None and if_active != "wait":
        raise RunConflictError(tenant.slug, *conflict)
    conn.execute(
        text(
            f"UPDATE \"{schema}\".node_runs SET status = 'pending', failure = NULL, error = NULL, "
            "job_id = NULL, token = NULL, finished_at = NULL, updated_at = now() "
            "WHERE run_id = :run AND node = ANY(:nodes)"
        ),
        {"run": run_id, "nodes": list(again)},
    )
    conn.execute(
        text(
            f'UPDATE "{schema}".runs SET status = :s, finished_at = NULL, error = NULL '
            "WHERE id = :id"
        ),
        {"s": "queued" if conflict else "running", "id": run_id},
    )
    if conflict is None:
        advance(conn, tenant, run_id)
    conn.commit()
    return list(again)


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: int
    last_heartbeat: datetime | None
    jobs: tuple[Mapping[str, Any], ...]
    """The jobs it runs now: {"job": id, "tenant": slug, "run_id": n, "nodes": [...]}."""


def list_workers(conn: Connection) -> list[WorkerRow]:
    """Every worker procrastinate knows (pruned after its heartbeat lapses) and its jobs."""
    workers = conn.execute(
        text("SELECT id, last_heartbeat FROM procrastinate_workers ORDER BY id")
    ).all()
    jobs = conn.execute(
        text(
            "SELECT id, worker_id, args FROM procrastinate_jobs WHERE status = 'doing' "
            "AND task_name = :t ORDER BY id"
        ),
        {"t": TASK},
    ).all()
    return [
        WorkerRow(
            w.id,
            w.last_heartbeat,
            tuple({"job": j.id, **j.args} for j in jobs if j.worker_id == w.id),
        )
        for w in workers
    ]


def run_state(conn: Connection, tenant: TenantRow, run_id: int) -> str | None:
    """A run's status (None: no such run)."""
    return conn.execute(
        text(f'SELECT status FROM "{tenant.schema_name}".runs WHERE id = :id'), {"id": run_id}
    ).scalar_one_or_none()


def worker_app(engine: Any) -> Any:
    """A procrastinate app for a worker: an async pool on the control plane (`engine`'s URL)."""
    import procrastinate

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=4)
    )


async def stalled_jobs(app: Any, lost_after: float) -> list[tuple[int, Mapping[str, Any]]]:
    """(job id, args) of fabric's jobs whose worker's heartbeat is older than `lost_after` s."""
    jobs = await app.job_manager.get_stalled_jobs(
        task_name=TASK, seconds_since_heartbeat=lost_after
    )
    return [(int(j.id), dict(j.task_kwargs)) for j in jobs]


def run_options(conn: Connection, tenant: TenantRow, run_id: int) -> Mapping[str, Any]:
    """The options the run was started with (full refresh, tests only)."""
    run = _run(conn, tenant, run_id, lock=False)
    return dict(run.plan.options) if run is not None and run.plan is not None else {}
