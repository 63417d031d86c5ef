"""Run what has been applied: build the DAG, record the run, execute, settle.  [shell]

One run record per tenant (runs live in the tenant's schema); with several tenants their DAGs
run together on one worker pool. Connections are resolved here, where the secret keys and the
caller's environment are: a worker receives each node's own credentials and nothing else.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric.addresses import DBT_KINDS, Address, Kind
from fabric.config.references import is_reserved_env
from fabric.domain.runs import (
    FailureKind,
    NodeResult,
    NodeSpec,
    NodeStatus,
    RunStatus,
    SessionLimits,
)
from fabric.errors import SecretDecryptError, SecretNotFoundError
from fabric.graph.dag import Dag
from fabric.graph.ready import run_status
from fabric.runner.credentials import managed_connection, resolve_connection
from fabric.runner.local import Event, LocalExecutor, NodeFunction, RetryPolicy
from fabric.state import runs as records
from fabric.state.applied import AppliedTenant, read_applied
from fabric.state.snapshot import TenantRow, read_tenant_rows

PASSWORD_SECRET = "FABRIC_ROLE_LOADER"  # fabric.plan.warehouse's (not imported: pydantic)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fabric.state.secrets import SecretBox


@dataclass(frozen=True, slots=True)
class RunOptions:
    selectors: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    workers: int | None = None
    trigger: str = "manual"
    who: str | None = None
    full_refresh: bool = False
    tests_only: bool = False
    control_plane_url: str = field(default="", repr=False)
    workdir: Path = Path(".fabric/work")
    repo_root: Path = Path(".")
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The caller's environment, for the `${env:NAME}` references of connections."""
    session: SessionLimits = field(default_factory=SessionLimits)
    """Timeouts of every warehouse and source session a node opens (from Settings)."""
    secret_box: Callable[[], SecretBox] | None = field(default=None, repr=False)
    """Opens the secret box, when a node's connection has secrets (None: none may)."""
    execute: NodeFunction | None = field(default=None, repr=False)
    """What a worker calls for a node (tests pass their own); fabric's by default."""
    run_ids: Mapping[str, int] = field(default_factory=dict)
    """Tenant -> a run created beforehand (`pending`, e.g. by the scheduler): started, not
    created. When another dispatcher started it already, that tenant runs nothing."""
    if_active: str = "refuse"
    """When an active run (local or queue) shares a node: refuse (RunConflictError naming
    it), or wait: a queue run waits `queued`, a local runner tries again until it may start."""
    wait_poll: float = 1.0
    """Seconds between a waiting local runner's attempts."""


@dataclass
class RunResult:
    runs: dict[str, int] = field(default_factory=dict)
    """Tenant -> run id."""
    status: dict[str, RunStatus] = field(default_factory=dict)
    nodes: dict[Address, NodeStatus] = field(default_factory=dict)
    attempts: dict[Address, int] = field(default_factory=dict)
    rows: dict[Address, Mapping[str, int]] = field(default_factory=dict)
    errors: dict[Address, str] = field(default_factory=dict)
    results: dict[Address, NodeResult] = field(default_factory=dict)
    """The last attempt's result of every node that ran (times, failure kind)."""
    abandoned: list[tuple[str, int]] = field(default_factory=list)
    cancelled: bool = False

    def seconds(self, node: Address) -> float:
        """The node's time (finished - started of its last attempt), as shown everywhere."""
        result = self.results.get(node)
        return result.seconds if result is not None else 0.0

    @property
    def ok(self) -> bool:
        return all(s is RunStatus.SUCCESS for s in self.status.values())


def who_am_i() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def tenant_dag(applied: AppliedTenant) -> Dag:
    tags = {a: spec.get("tags") or () for a, spec in applied.nodes.items()}
    return Dag.build(applied.nodes, applied.edges, tags)


def tests_dag(dag: Dag) -> Dag:
    """`dag`'s transformations without edges: tests need only the built models, so they all
    run together (one dbt invocation per tenant) and a failing test skips nothing."""
    keep = [n for n in dag.nodes if n.kind in DBT_KINDS]
    return Dag.build(keep, [], {n: dag.tags[n] for n in keep})


@dataclass(frozen=True, slots=True)
class ManagedLogin:
    """How a tenant's nodes reach managed warehouses: the warehouses of the applied fabric.yaml
    and the tenant's role password (decrypted here, in the runner; the admin's is not here)."""

    warehouses: Mapping[str, Mapping[str, Any]]
    role_prefix: Mapping[str, str]
    password: str = field(repr=False)


def managed_login(
    conn: Any, tenant: TenantRow, box: Callable[[], SecretBox | None]
) -> ManagedLogin | None:
    """The tenant's managed login, or None when no role password is stored for it."""
    from fabric.state.history import read_project
    from fabric.state.secrets import read_secret_entry

    opened = box()
    if opened is None:
        return None
    entry = read_secret_entry(conn, opened, tenant.slug, tenant.schema_name, PASSWORD_SECRET)
    if entry is None:
        return None
    project = read_project(conn) or {}
    warehouses = {
        str(n): w for n, w in (project.get("warehouses") or {}).items() if w.get("manage_roles")
    }
    prefixes = {n: str(w.get("role_prefix") or "") for n, w in warehouses.items()}
    return ManagedLogin(warehouses, prefixes, entry[0])


def node_spec(
    applied: AppliedTenant,
    address: Address,
    options: RunOptions,
    box: Callable[[], SecretBox | None] = lambda: None,
    login: ManagedLogin | None = None,
) -> NodeSpec:
    """The node as a worker needs it, its connections resolved (secrets decrypted, `${env:}`
    interpolated from `options.environ`) and the tenant's declared `env:` variables taken from
    `options.environ` (never a reserved one, even from a tampered stored spec).

    Raises SecretNotFoundError or SecretDecryptError when a connection cannot be resolved.
    """
    spec = applied.nodes[address]
    names = (
        [spec.get("source"), spec.get("destination")]
        if address.kind is Kind.PIPELINE
        else [spec.get("warehouse")]
    )
    project: dict[str, Any] = {}
    if address.kind in DBT_KINDS:
        project = {
            "tenant": address.tenant,
            "transformations": {
                a.name: s for a, s in applied.nodes.items() if a.kind is Kind.TRANSFORMATION
            },
            "pipelines": {a.name: s for a, s in applied.nodes.items() if a.kind is Kind.PIPELINE},
            "seeds": {a.name: s for a, s in applied.nodes.items() if a.kind is Kind.SEED},
            "connections": {name: c.spec for name, c in applied.connections.items()},
            "snapshots": {a.name: s for a, s in applied.nodes.items() if a.kind is Kind.SNAPSHOT},
            "macros": {a.name: s for a, s in applied.files.items() if a.kind is Kind.MACRO},
            "tests": {a.name: s for a, s in applied.files.items() if a.kind is Kind.TEST},
            "packages": [*applied.project_packages, *(applied.spec.get("packages") or ())],
        }
    connections = {}
    for name in names:
        stored = applied.connections.get(name) if name else None
        managed = stored.spec.get("warehouse") if stored is not None else None
        if stored is not None and managed:
            if login is None or managed not in login.warehouses:
                raise SecretNotFoundError(address.tenant, PASSWORD_SECRET)
            role = f"{login.role_prefix[managed]}{address.tenant}_loader"  # login_role()
            connections[name] = managed_connection(
                stored, login.warehouses[managed], role, login.password, options.environ
            )
        elif stored is not None:
            needs_box = any(e.get("ct") is not None for e in stored.secrets.values())
            connections[name] = resolve_connection(
                stored, box() if needs_box else None, options.environ
            )
    declared = [str(n) for n in applied.spec.get("env") or () if not is_reserved_env(str(n))]
    return NodeSpec(
        address=address,
        kind=address.kind.value,
        spec=spec,
        connections=connections,
        environment={n: options.environ[n] for n in declared if n in options.environ},
        control_plane_url=options.control_plane_url,
        session=options.session,
        workdir=str((options.workdir / address.tenant).resolve()),
        repo_root=str(options.repo_root),
        full_refresh=options.full_refresh,
        state_name=applied.state_names.get(address, ""),
        tests_only=options.tests_only,
        project=project,
    )


def unresolvable(address: Address, exc: Exception) -> NodeResult:
    """The result of a node whose connections cannot be resolved: it never starts."""
    if isinstance(exc, SecretNotFoundError) and exc.name == PASSWORD_SECRET:
        why = (
            "the tenant's role in its managed warehouse is not set up (no stored password): "
            "run `fabric apply`"
        )
    elif isinstance(exc, SecretNotFoundError) and exc.tenant == "(environment)":
        why = f"environment variable {exc.name} is not set (a connection's ${{env:{exc.name}}})"
    elif isinstance(exc, SecretNotFoundError):
        why = f"secret {exc.name} is not set: fabric secrets set {address.tenant} {exc.name}"
    else:
        why = str(exc)
    return NodeResult.failed(address, f"cannot start: {why}")


def dbt_batch(spec: NodeSpec) -> object | None:
    """Transformations and snapshots of one tenant that are ready together run in one dbt
    invocation."""
    return ("dbt", spec.address.tenant) if spec.address.kind in DBT_KINDS else None


def policy_of(spec: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        retries=int(spec.get("retries") or 0),
        backoff_seconds=float(
            spec["retry_backoff_seconds"] if spec.get("retry_backoff_seconds") is not None else 30
        ),
        timeout_seconds=float(spec["timeout_seconds"]) if spec.get("timeout_seconds") else None,
    )


def _read(
    conn: Any, tenants: Sequence[str]
) -> tuple[dict[str, TenantRow], dict[str, AppliedTenant]]:
    rows = read_tenant_rows(conn, tenants)
    missing = sorted(set(tenants) - set(rows))
    if missing:
        from fabric.errors import TenantNotAppliedError

        raise TenantNotAppliedError(missing[0])
    return rows, {slug: read_applied(conn, slug) for slug in tenants}


def _selected(applied: Mapping[str, AppliedTenant], options: RunOptions) -> dict[str, Dag]:
    """Each tenant's selected sub-DAG (raises ValueError for a selector matching nothing)."""
    dags = {slug: tenant_dag(a) for slug, a in applied.items()}
    selected = {
        slug: dag.subgraph(
            dag.select(options.selectors)
            - (dag.select(options.exclude, strict=False) if options.exclude else frozenset())
        )
        for slug, dag in dags.items()
    }
    if options.tests_only:  # `fabric test`: transformations only, all at once (one dbt batch)
        selected = {slug: tests_dag(dag) for slug, dag in selected.items()}
    return selected


def queue_plan(applied: AppliedTenant, dag: Dag) -> dict[Address, Any]:
    """What the queue stores of each node of a run: its upstreams in the run, its policy."""
    from fabric.state.queue import NodePlan

    plan = {}
    for node in dag.nodes:
        policy = policy_of(applied.nodes[node])
        plan[node] = NodePlan(
            tuple(sorted(str(u) for u in dag.upstream[node])),
            policy.retries,
            policy.backoff_seconds,
            policy.timeout_seconds,
        )
    return plan


def queue_tenants(
    engine: Engine,
    tenants: Sequence[str],
    options: RunOptions,
    *,
    if_active: str = "refuse",
    queue: str | None = None,
) -> dict[str, tuple[int, str]]:
    """Create each tenant's run and defer its roots to the queue (one transaction per tenant);
    workers (`fabric worker`) do the rest. Returns tenant -> (run id, status)."""
    with engine.connect() as conn:
        _read(conn, tenants)  # every tenant applied, and every selector valid, before any run
        for slug in tenants:
            _selected({slug: read_applied(conn, slug)}, options)
    created: dict[str, tuple[int, str]] = {}
    for slug in sorted(tenants):
        with engine.connect() as conn:
            opened = dispatch_on(conn, slug, options, if_active=if_active, queue=queue)
            assert opened is not None  # a new run, not a pending one
            created[slug] = (opened.id, opened.status)
            conn.commit()
    return created


def dispatch_on(
    conn: Any,
    tenant: str,
    options: RunOptions,
    *,
    if_active: str = "refuse",
    queue: str | None = None,
    schedule_name: str | None = None,
    fire_at: Any = None,
    run_id: int | None = None,
    applied: AppliedTenant | None = None,
) -> records.OpenedRun | None:
    """Create `tenant`'s queue run of `options.selectors` (or start the pending `run_id` a
    tick created) and defer its root nodes, on `conn`, in the caller's transaction (nothing is
    committed): `fabric run --executor queue` and the scheduler's queue dispatch. None: the
    pending run was started by someone else. Raises RunConflictError (refused) or ValueError
    (a selector that matches nothing)."""
    from fabric.state import queue as jobs

    if applied is None:
        rows, read = _read(conn, [tenant])
        row, applied = rows[tenant], read[tenant]
    else:
        row = applied.tenant
    dag = _selected({tenant: applied}, options)[tenant]
    start = records.QueueStart(
        queue_plan(applied, dag),
        queue or jobs.QUEUE,
        {"full_refresh": options.full_refresh, "tests_only": options.tests_only},
        applied.spec.get("max_parallel_nodes"),
    )
    return records.open_run(
        conn,
        row,
        start,
        trigger=options.trigger,
        selection=options.selectors or ("*",),
        who=options.who or who_am_i(),
        if_active=if_active,
        schedule_name=schedule_name,
        fire_at=fire_at,
        run_id=run_id,
    )


def run_tenants(
    engine: Engine,
    tenants: Sequence[str],
    options: RunOptions,
    *,
    on_event: Callable[[Event, Mapping[str, Any]], None] | None = None,
) -> RunResult:
    """Run the selection in each tenant; one run record per tenant."""
    result = RunResult()
    with engine.connect() as conn:
        rows, applied = _read(conn, tenants)
        result.abandoned = records.mark_abandoned(conn, rows.values())
    selected = _selected(applied, options)
    combined = Dag.build(
        [n for d in selected.values() for n in d.nodes],
        [(u, n) for d in selected.values() for n, ups in d.upstream.items() for u in ups],
        {n: t for d in selected.values() for n, t in d.tags.items()},
    )
    opened: list[SecretBox] = []

    def box() -> SecretBox | None:  # opened once, and only when a connection has secrets
        if not opened and options.secret_box is not None:
            opened.append(options.secret_box())
        return opened[0] if opened else None

    logins: dict[str, ManagedLogin | None] = {}
    uses_managed = [
        slug
        for slug, a in applied.items()
        if any(c.spec.get("warehouse") for c in a.connections.values())
    ]
    if uses_managed:
        with engine.connect() as conn:
            for slug in uses_managed:
                logins[slug] = managed_login(conn, rows[slug], box)
    specs: dict[Address, NodeSpec] = {}
    unstartable: dict[Address, NodeResult] = {}
    for n in combined.nodes:
        try:
            specs[n] = node_spec(applied[n.tenant], n, options, box, logins.get(n.tenant))
        except (SecretNotFoundError, SecretDecryptError) as exc:
            unstartable[n] = unresolvable(n, exc)
    policies = {n: policy_of(applied[n.tenant].nodes[n]) for n in combined.nodes}
    who = options.who or who_am_i()

    lock_conn = engine.connect()  # holds each run's liveness lock until the runs end
    write_conn = engine.connect()
    try:
        opened = _open_local_runs(lock_conn, rows, selected, options, who)
        for slug, dag in selected.items():
            if slug in opened:
                result.runs[slug] = opened[slug]
            else:  # a pending run started elsewhere: run none of its nodes here
                combined = combined.subgraph(combined.nodes - dag.nodes)
        progress = {"done": 0, "total": len(combined.nodes)}

        def handle(event: Event) -> None:
            _record_event(write_conn, rows[event.address.tenant], result, event, progress)
            if on_event is not None:
                on_event(event, progress)

        with LocalExecutor(
            options.workers,
            execute=options.execute,
            environ=options.environ,
            workdir=options.workdir.resolve(),
        ) as executor:
            outcome = executor.run(
                combined, specs, policies, handle, batch_key=dbt_batch, unstartable=unstartable
            )
        result.cancelled = outcome.cancelled
        result.nodes.update(outcome.status)
        result.attempts.update(outcome.attempts)
        for slug in result.runs:
            statuses = {n: s for n, s in outcome.status.items() if n.tenant == slug}
            status = RunStatus.CANCELLED if outcome.cancelled else run_status(statuses)
            result.status[slug] = status
            failed = sum(s is NodeStatus.FAILED for s in statuses.values())
            error = f"{failed} node(s) failed" if failed else None
            records.finish_run(write_conn, rows[slug], result.runs[slug], status, error)
    finally:
        for slug, run_id in result.runs.items():
            records.release_run(lock_conn, rows[slug], run_id)
        lock_conn.close()
        write_conn.close()
    return result


def _open_local_runs(
    conn: Any,
    rows: Mapping[str, TenantRow],
    selected: Mapping[str, Dag],
    options: RunOptions,
    who: str,
) -> dict[str, int]:
    """Open every tenant's run in one transaction (all admitted, or none): tenant -> run id.

    A refusal (an active run shares a node) raises RunConflictError; with `if_active` "wait"
    the runner tries again every `wait_poll` seconds until no active run is in the way."""
    import time

    from fabric.state.queue import RunConflictError

    while True:
        opened: dict[str, int] = {}
        try:
            for slug, dag in sorted(selected.items()):
                run = records.open_run(
                    conn,
                    rows[slug],
                    records.LocalStart(dag.nodes),
                    trigger=options.trigger,
                    selection=options.selectors or ("*",),
                    who=who,
                    run_id=options.run_ids.get(slug),
                )
                if run is not None:
                    opened[slug] = run.id
            conn.commit()  # one transaction: nobody sees a run before its lock is held
            return opened
        except BaseException as exc:
            conn.rollback()
            # Session locks outlive a rollback: give back those this attempt took (this
            # connection holds no other).
            conn.exec_driver_sql("SELECT pg_advisory_unlock_all()")
            conn.commit()
            if not isinstance(exc, RunConflictError) or options.if_active != "wait":
                raise
        time.sleep(options.wait_poll)


def _record_event(
    conn: Any,
    tenant: TenantRow,
    result: RunResult,
    event: Event,
    progress: dict[str, int],
) -> None:
    run_id = result.runs[event.address.tenant]
    node = event.address
    match event.kind:
        case "started":
            records.update_node(
                conn,
                tenant,
                run_id,
                node,
                status=NodeStatus.RUNNING,
                attempts=event.attempt,
                queued_at=event.at,
            )
        case "retrying":
            assert event.result is not None
            records.update_node(
                conn,
                tenant,
                run_id,
                node,
                status=NodeStatus.PENDING,
                attempts=event.attempt,
                error=event.result.error,
                log_tail=event.result.log_tail,
            )
        case "finished":
            r = event.result
            assert r is not None
            progress["done"] += 1
            result.rows[node] = dict(r.rows_loaded)
            result.results[node] = r
            if r.error:
                result.errors[node] = r.error
            records.update_node(
                conn,
                tenant,
                run_id,
                node,
                status=r.status,
                attempts=event.attempt,
                started_at=r.started_at,
                finished_at=r.finished_at,
                failure=r.failure,
                rows_loaded=r.rows_loaded,
                error=r.error,
                log_tail=r.log_tail,
            )
        case "skipped" | "cancelled":
            progress["done"] += 1
            status = NodeStatus.SKIPPED if event.kind == "skipped" else NodeStatus.CANCELLED
            why = "upstream failed" if event.kind == "skipped" else "run cancelled"
            kind = FailureKind.UPSTREAM_FAILED if event.kind == "skipped" else FailureKind.CANCELLED
            records.update_node(
                conn, tenant, run_id, node, status=status, failure=kind, finished=True, error=why
            )
            result.errors[node] = why


def follow_runs(
    engine: Engine,
    runs: Mapping[str, int],
    *,
    poll_seconds: float = 0.25,
    on_node: Callable[[str, Any], None] | None = None,
) -> RunResult:
    """Follow queue runs until each has ended (`fabric run --executor queue --wait`); the
    result is read from the run records, as a local run's would be. `on_node` sees each node
    run once, when it has finished."""
    import time

    result = RunResult(runs=dict(runs))
    shown: set[tuple[str, str]] = set()
    with engine.connect() as conn:
        rows = read_tenant_rows(conn, list(runs))
        while True:
            records_ = {
                slug: records.read_run(conn, rows[slug], run_id) for slug, run_id in runs.items()
            }
            conn.rollback()  # a fresh snapshot each round
            for slug, record in records_.items():
                assert record is not None
                for n in record.nodes:
                    if n.status in {"success", "failed", "skipped", "cancelled"} and (
                        (slug, n.node) not in shown
                    ):
                        shown.add((slug, n.node))
                        if on_node is not None:
                            on_node(slug, n)
            if all(
                r is not None and r.status not in ("running", "queued") for r in records_.values()
            ):
                break
            time.sleep(poll_seconds)
    for slug, record in records_.items():
        assert record is not None
        result.status[slug] = RunStatus(record.status)
        result.cancelled = result.cancelled or record.status == "cancelled"
        for n in record.nodes:
            address = Address.parse(n.node)
            result.nodes[address] = NodeStatus(n.status)
            result.attempts[address] = n.attempts
            result.rows[address] = dict(n.rows_loaded)
            if n.error:
                result.errors[address] = n.error
    return result
