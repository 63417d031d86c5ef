"""`fabric worker`: take node jobs from the queue, run them in per-tenant processes.  [shell]

A worker is a procrastinate worker (its jobs are claimed with SKIP LOCKED, it writes a
heartbeat) running one fabric task: "run these nodes of this run". For each job it claims the
nodes' attempts (fresh fencing tokens), resolves their connections here, where the secret keys
are (as the local runner does), and hands each node to a process of the node's tenant forked
from the clean, preloaded forkserver (fabric.runner.warmup): that process holds no key, sees
only its tenant's credentials and never runs another tenant's node. Processes are kept between
nodes (dlt and dbt stay imported, dbt's caches warm). The result is written with the attempt's
token, and the run advanced, in one transaction (fabric.state.queue).

Every worker also reaps: jobs whose worker stopped sending heartbeats are settled as
`failed: worker_lost` and retried when the node's policy allows (procrastinate does not retry
stalled jobs by itself). SIGTERM stops taking jobs and finishes the running ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fabric import settings
from fabric.addresses import Address, Kind
from fabric.clock import utcnow
from fabric.domain.runs import FailureKind, NodeResult, NodeSpec
from fabric.errors import SecretDecryptError, SecretNotFoundError
from fabric.runner.driver import RunOptions, node_spec, policy_of, unresolvable
from fabric.runner.local import BatchFunction, NodeFunction, _Worker
from fabric.runner.warmup import start_worker_server

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fabric.state.secrets import SecretBox

_ABORT_POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency: int = 1
    queues: tuple[str, ...] = ()
    """Queues to take jobs from (empty: all)."""
    name: str = ""
    lost_after: float = 30.0
    """A worker whose heartbeat is older than this many seconds is lost."""
    heartbeat: float = 5.0
    """Seconds between this worker's heartbeats."""
    reap_every: float = 5.0
    log_format: str = "text"
    log: IO[str] = field(default=sys.stderr, repr=False)
    workdir: Path = Path(".fabric/work")
    repo_root: Path = Path(".")
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    secret_box: Callable[[], SecretBox] | None = field(default=None, repr=False)
    execute: NodeFunction | None = field(default=None, repr=False)
    execute_batch: BatchFunction | None = field(default=None, repr=False)


class EventLog:
    """One line per event: `key=value` text, or one JSON object with `--log-format json`."""

    def __init__(self, stream: IO[str], fmt: str, worker: str) -> None:
        self.stream, self.fmt, self.worker = stream, fmt, worker
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        at = utcnow().isoformat(timespec="milliseconds")
        if self.fmt == "json":
            line = json.dumps({"at": at, "event": event, "worker": self.worker, **fields})
        else:
            rest = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{at} {event} {rest}".rstrip()
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "at": utcnow().isoformat(timespec="milliseconds"),
                "event": "log",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


class TenantPool:
    """Up to `size` warm node processes, each of one tenant for its whole life (thread-safe).

    A job takes an idle process of its tenant (warm: dlt and dbt imported, dbt's caches of
    this tenant's project), or a new one forked from the clean forkserver, in place of an idle
    process of another tenant when the pool is full.
    """

    def __init__(
        self,
        size: int,
        functions: tuple[NodeFunction, BatchFunction],
        environ: Mapping[str, str],
        workdir: Path,
    ) -> None:
        import multiprocessing

        self.size = size
        self._functions = functions
        self._base = settings.base_environment(environ)
        self._workdir = workdir
        self._ctx = multiprocessing.get_context("forkserver")
        self._idle: list[_Worker] = []
        self._busy = 0
        self._lock = threading.Lock()
        start_worker_server(self._base)

    def acquire(self, tenant: str) -> _Worker:
        with self._lock:
            for worker in self._idle:
                if worker.tenant == tenant and worker.process.is_alive():
                    self._idle.remove(worker)
                    self._busy += 1
                    return worker
            while self._idle and len(self._idle) + self._busy >= self.size:
                self._idle.pop(0).stop()
            self._busy += 1
        home = self._workdir / tenant / "home"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return _Worker(
            self._ctx, self._functions, tenant, settings.worker_environment(self._base, home)
        )

    def release(self, worker: _Worker, *, healthy: bool) -> None:
        with self._lock:
            self._busy -= 1
            if healthy and worker.process.is_alive():
                self._idle.append(worker)
                return
        worker.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()


def _run_on(
    worker: _Worker,
    specs: list[NodeSpec],
    deadline: float | None,
    should_abort: Callable[[], bool],
) -> tuple[list[NodeResult], bool, bool]:
    """Send the node(s) to `worker` and wait for the results, the worker's death, the deadline
    or an abort. Returns (results, healthy, aborted)."""
    since = utcnow()
    worker.conn.send(specs if len(specs) > 1 else specs[0])

    def lost(why: str, kind: FailureKind) -> list[NodeResult]:
        return [
            NodeResult.failed(s.address, why, kind, started_at=since, finished_at=utcnow())
            for s in specs
        ]

    while True:
        try:
            if worker.conn.poll(_ABORT_POLL_SECONDS):
                return worker.conn.recv(), True, False
        except (EOFError, OSError):
            pass
        if not worker.process.is_alive() or worker.conn.closed:
            worker.process.join(timeout=5)
            code = worker.process.exitcode
            why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
            return lost(f"crashed: worker died ({why})", FailureKind.CRASHED), False, False
        if should_abort():
            return lost("run cancelled", FailureKind.CANCELLED), False, True
        if deadline is not None and time.monotonic() >= deadline:
            return (
                lost("timeout: killed after its timeout_seconds", FailureKind.TIMEOUT),
                False,
                False,
            )


class QueueWorker:
    def __init__(self, engine: Engine, options: WorkerOptions) -> None:
        from fabric.runner import worker as node_functions
        from fabric.state import queue

        self.engine = engine
        self.options = options
        self.name = options.name or f"{socket.gethostname()}:{os.getpid()}"
        self.log = EventLog(options.log, options.log_format, self.name)
        self.pool = TenantPool(
            max(1, options.concurrency),
            (
                options.execute or node_functions.execute,
                options.execute_batch or node_functions.execute_batch,
            ),
            options.environ,
            options.workdir.resolve(),
        )
        self.app = queue.worker_app(engine)
        self._box: list[SecretBox] = []
        self._rows: dict[str, Any] = {}
        """Tenant slug -> its TenantRow (id and schema never change while the tenant lives)."""
        self.app.task(name=queue.TASK, pass_context=True)(self._task)

    def _secret_box(self) -> SecretBox | None:
        if not self._box and self.options.secret_box is not None:
            self._box.append(self.options.secret_box())
        return self._box[0] if self._box else None

    def _task(self, context: Any, tenant: str, run_id: int, nodes: list[str]) -> None:
        from procrastinate.exceptions import JobAborted

        try:
            aborted = self._run_job(context, tenant, run_id, nodes)
        except Exception as exc:  # a bug or a lost database: say so, never a traceback of secrets
            self.log(
                "job_error",
                job=int(context.job.id),
                tenant=tenant,
                run=run_id,
                error=type(exc).__name__,
            )
            raise
        if aborted:
            raise JobAborted("run cancelled")

    def _run_job(self, context: Any, tenant: str, run_id: int, nodes: list[str]) -> bool:
        """Claim, run and record the job's nodes; True when the run was cancelled meanwhile.

        Claimed nodes always get a result written (a failure if running them raised), so a
        node is never left `running` under a live worker."""
        from fabric.state import queue
        from fabric.state.applied import read_applied
        from fabric.state.snapshot import read_tenant_rows

        job_id = int(context.job.id)
        with self.engine.connect() as conn:
            row = self._rows.get(tenant) or read_tenant_rows(conn, [tenant]).get(tenant)
            if row is None:
                self.log("job_dropped", job=job_id, tenant=tenant, why="tenant not applied")
                return False
            try:
                claimed = queue.claim(conn, row, run_id, nodes, job_id, self.name)
            except Exception:
                self._rows.pop(tenant, None)  # deleted (and perhaps applied again) meanwhile
                raise
            self._rows[tenant] = row
            if not claimed:
                self.log("job_stale", job=job_id, tenant=tenant, run=run_id)
                return False
            pipelines_only = all(c.node.kind is Kind.PIPELINE for c in claimed)
            applied = read_applied(
                conn,
                tenant,
                pipelines=[c.node for c in claimed] if pipelines_only else None,
                row=row,
            )
            extra = queue.run_options(conn, row, run_id)
            conn.commit()
        run_options = RunOptions(
            control_plane_url=self.engine.url.render_as_string(hide_password=False),
            workdir=self.options.workdir,
            repo_root=self.options.repo_root,
            environ=self.options.environ,
            full_refresh=bool(extra.get("full_refresh")),
            tests_only=bool(extra.get("tests_only")),
        )
        specs: list[NodeSpec] = []
        results: dict[Address, NodeResult] = {}
        limits: list[float | None] = []
        for c in claimed:
            self.log("node_started", tenant=tenant, run=run_id, node=str(c.node), attempt=c.attempt)
            if c.node not in applied.nodes:
                results[c.node] = NodeResult.failed(c.node, "cannot start: no longer applied")
                continue
            try:
                spec = node_spec(applied, c.node, run_options, self._secret_box)
            except (SecretNotFoundError, SecretDecryptError) as exc:
                results[c.node] = unresolvable(c.node, exc)
                continue
            specs.append(replace(spec, run_id=run_id, attempt=c.attempt))
            limits.append(policy_of(applied.nodes[c.node]).timeout_seconds)
        aborted = False
        if specs:
            deadline = time.monotonic() + max(limits) if limits and all(limits) else None  # type: ignore[type-var]
            worker = self.pool.acquire(tenant)
            healthy = False
            try:
                got, healthy, aborted = _run_on(worker, specs, deadline, context.should_abort)
            except Exception as exc:
                why = f"internal error in the worker: {type(exc).__name__}"
                got = [NodeResult.failed(s.address, why, FailureKind.CRASHED) for s in specs]
            finally:
                self.pool.release(worker, healthy=healthy)
            by_node = {r.address: r for r in got}
            for spec in specs:
                results[spec.address] = by_node.get(spec.address) or NodeResult.failed(
                    spec.address, "the worker returned no result"
                )
        with self.engine.connect() as conn:
            for c in claimed:
                result = results[c.node]
                if result.started_at is None or result.finished_at is None:
                    result = replace(
                        result,
                        started_at=result.started_at or utcnow(),
                        finished_at=result.finished_at or utcnow(),
                    )
                written = queue.record(conn, row, run_id, result, c.token)
                self.log(
                    "node_finished" if written else "late_write_ignored",
                    tenant=tenant,
                    run=run_id,
                    node=str(c.node),
                    attempt=c.attempt,
                    status=result.status.value,
                    **({"failure": result.failure.value} if result.failure else {}),
                )
        return aborted

    def _reap_once(self, found: list[tuple[int, Mapping[str, Any]]]) -> None:
        from fabric.state import queue
        from fabric.state.snapshot import read_tenant_rows

        with self.engine.connect() as conn:
            for job_id, args in found:
                tenant = str(args.get("tenant"))
                row = read_tenant_rows(conn, [tenant]).get(tenant)
                if row is None:
                    continue
                lost = queue.lose_job(conn, row, int(args["run_id"]), job_id)
                for node in lost:
                    self.log(
                        "worker_lost", job=job_id, tenant=tenant, run=args["run_id"], node=node
                    )

    async def _reaper(self) -> None:
        from fabric.state import queue

        while True:
            try:
                found = await queue.stalled_jobs(self.app, self.options.lost_after)
                if found:
                    await asyncio.to_thread(self._reap_once, found)
            except Exception as exc:  # the reaper must outlive one bad tick
                self.log("reaper_error", error=type(exc).__name__)
            await asyncio.sleep(self.options.reap_every)

    async def run_async(self) -> None:
        self.log(
            "worker_started",
            concurrency=self.options.concurrency,
            queues=",".join(self.options.queues) or "*",
        )
        async with self.app.open_async():
            reaper = asyncio.create_task(self._reaper())
            try:
                await self.app.run_worker_async(
                    queues=list(self.options.queues) or None,
                    concurrency=max(1, self.options.concurrency),
                    name=self.name,
                    update_heartbeat_interval=self.options.heartbeat,
                    stalled_worker_timeout=self.options.lost_after,
                    fetch_job_polling_interval=1.0,
                    install_signal_handlers=True,
                )
            finally:
                reaper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reaper
                self.pool.close()
        self.log("worker_stopped")


def run_worker(engine: Engine, options: WorkerOptions) -> None:
    """Run a worker until SIGTERM or SIGINT (it finishes its running nodes first)."""
    handler = logging.StreamHandler(options.log)
    if options.log_format == "json":
        handler.setFormatter(_JsonLines())
    logging.getLogger("procrastinate").addHandler(handler)
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    asyncio.run(QueueWorker(engine, options).run_async())
