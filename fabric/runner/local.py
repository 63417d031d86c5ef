"""The local executor: a pool of warm worker processes driven by the pure ready/skip rules.  [shell]

Each worker is a process of its own, in its own process group, that runs one node at a time
(dlt and dbt keep process-global state; a crash kills only that worker, and the pool starts a
new one). A worker belongs to one tenant for its whole life (tenants are hostile to each other:
nothing one leaves in a process may reach another), and its environment is built from scratch
(fabric.settings.worker_environment): no fabric setting, key or control-plane URL, with HOME and
TMPDIR in the tenant's own work folder. The executor owns nothing but processes: which node
may run is decided by fabric.graph.ready from the statuses, and everything that happens is
reported through `on_event`, which the caller uses to write run records and show progress.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from fabric import settings
from fabric.addresses import Address
from fabric.clock import utcnow
from fabric.domain.runs import FINISHED, FailureKind, NodeResult, NodeSpec, NodeStatus
from fabric.graph.dag import Dag
from fabric.graph.ready import ready_nodes, to_skip
from fabric.runner import lifeline
from fabric.runner.warmup import start_worker_server

MAX_BACKOFF_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 0
    backoff_seconds: float = 30.0
    timeout_seconds: float | None = None

    def delay(self, attempt: int) -> float:
        """Exponential backoff after the `attempt`-th failure, capped."""
        return min(MAX_BACKOFF_SECONDS, self.backoff_seconds * 2 ** (attempt - 1))


NodeFunction = Callable[[NodeSpec], NodeResult]
BatchFunction = Callable[[list[NodeSpec]], list[NodeResult]]


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    """started | finished | retrying | skipped | cancelled"""
    address: Address
    attempt: int = 0
    result: NodeResult | None = None
    retry_in: float = 0.0
    at: datetime | None = None
    """For `started`: when the node was handed to a worker (its queued_at)."""


@dataclass
class Outcome:
    status: dict[Address, NodeStatus]
    attempts: dict[Address, int]
    results: dict[Address, NodeResult] = field(default_factory=dict)
    cancelled: bool = False


def _worker_main(
    conn: Connection,
    environment: Mapping[str, str],
    execute: NodeFunction,
    execute_batch: BatchFunction,
) -> None:
    """Body of a worker process: its own process group and its tenant's environment, then node
    after node until told to stop."""
    os.setpgrp()  # Ctrl-C in the terminal reaches the runner only; killing the group kills all
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lifeline.die_with_parent()  # the runner, or the forkserver that dies with it
    _die_with_the_runner()
    with settings.only_environment(environment):
        tempfile.tempdir = None  # computed again from this environment's TMPDIR
        _serve(conn, execute, execute_batch)


def _serve(conn: Connection, execute: NodeFunction, execute_batch: BatchFunction) -> None:
    while True:
        try:
            node = conn.recv()
        except EOFError:
            return
        if node is None:
            return
        started_at = utcnow()
        results = execute_batch(node) if isinstance(node, list) else [execute(node)]
        conn.send([_timed(r, started_at) for r in results])


def _die_with_the_runner() -> None:
    """Kill this worker's whole process group as soon as the runner that started it is gone.

    A runner killed with SIGKILL cannot stop its workers, and a worker busy in a load would
    otherwise go on holding the pipeline's run lock and its source cursor. multiprocessing
    hands each child a sentinel that becomes readable when its parent exits; a daemon thread
    waits on it.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="fabric-runner-watch", daemon=True).start()


def _timed(result: NodeResult, started_at: datetime) -> NodeResult:
    """Fill the times a node function left out with the worker's own view of them."""
    if result.started_at is not None and result.finished_at is not None:
        return result
    return replace(
        result,
        started_at=result.started_at or started_at,
        finished_at=result.finished_at or utcnow(),
    )


class _Worker:
    def __init__(
        self,
        ctx: Any,
        functions: tuple[NodeFunction, BatchFunction],
        tenant: str,
        environment: Mapping[str, str],
    ) -> None:
        self.tenant = tenant
        """The only tenant whose nodes this worker ever runs."""
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, dict(environment), *functions), daemon=True
        )
        self.process.start()
        child.close()
        self.nodes: tuple[Address, ...] = ()
        """What the worker is running now: one node, or a batch (e.g. several dbt models)."""
        self.deadline: float | None = None
        self.since: datetime | None = None
        """When the current node(s) were handed over."""
        self.batch_key: object | None = None
        """The batch key of the last batch it ran (a dbt project it has warm caches for)."""

    def kill(self) -> None:
        """Kill the worker's whole process group (dlt may have children of its own)."""
        pid = self.process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


class LocalExecutor:
    """Runs a DAG's nodes on up to `workers` warm processes, each of one tenant.

    `execute` / `execute_batch` are what a worker calls for one node or a batch: fabric's
    (fabric.runner.worker) by default; tests pass their own module-level functions.
    `environ` is the runner's environment (the process's by default): workers keep only its
    harmless part (fabric.settings.base_environment). A tenant's worker has its HOME in
    `<workdir>/<tenant>/home` (`workdir` None: a temporary folder the executor removes).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        execute: NodeFunction | None = None,
        execute_batch: BatchFunction | None = None,
        environ: Mapping[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        from fabric.runner import worker

        self.workers = max(1, workers or os.cpu_count() or 1)
        self._functions = (execute or worker.execute, execute_batch or worker.execute_batch)
        self._base = settings.base_environment(
            settings.process_environ() if environ is None else environ
        )
        self._scratch = tempfile.TemporaryDirectory(prefix="fabric-") if workdir is None else None
        self._workdir = Path(self._scratch.name) if self._scratch else workdir
        self._ctx = multiprocessing.get_context("forkserver")
        start_worker_server(self._base)
        self._pool: list[_Worker] = []

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._pool:
            worker.stop()
        self._pool.clear()
        if self._scratch is not None:
            self._scratch.cleanup()

    def _idle(self, tenant: str, key: object | None = None) -> _Worker | None:
        """An idle worker of `tenant`: one that last ran a batch of `key` (warm for it), another
        warm one, a new one, or a new one in place of an idle worker of another tenant when the
        pool is full (None: every worker is busy)."""
        mine = [w for w in self._pool if not w.nodes and w.tenant == tenant]
        for worker in mine:
            if key is not None and worker.batch_key == key:
                return worker
        for worker in mine:
            return worker
        if len(self._pool) >= self.workers:
            other = next((w for w in self._pool if not w.nodes), None)
            if other is None:
                return None
            other.stop()
            self._pool.remove(other)
        assert self._workdir is not None
        home = self._workdir / tenant / "home"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        worker = _Worker(
            self._ctx, self._functions, tenant, settings.worker_environment(self._base, home)
        )
        self._pool.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._pool.remove(worker)

    def run(
        self,
        dag: Dag,
        specs: Mapping[Address, NodeSpec],
        policies: Mapping[Address, RetryPolicy],
        on_event: Callable[[Event], None],
        batch_key: Callable[[NodeSpec], object | None] = lambda spec: None,
        unstartable: Mapping[Address, NodeResult] | None = None,
    ) -> Outcome:
        """Run every node; nodes ready together with the same non-None `batch_key` are sent
        to one worker as a batch (dbt runs several models in one invocation). `unstartable`
        nodes (their connections could not be resolved) fail at once with the given result."""
        status = {n: NodeStatus.PENDING for n in dag.nodes}
        attempts = {n: 0 for n in dag.nodes}
        not_before: dict[Address, float] = {}
        outcome = Outcome(status, attempts)
        for node, result in sorted((unstartable or {}).items()):
            status[node] = result.status
            outcome.results[node] = result
            on_event(Event("finished", node, 0, result))
        try:
            self._loop(dag, specs, policies, on_event, outcome, not_before, batch_key)
        except KeyboardInterrupt:
            outcome.cancelled = True
            for worker in list(self._pool):
                if worker.nodes:
                    nodes = worker.nodes
                    self._replace(worker)
                    for node in nodes:
                        status[node] = NodeStatus.CANCELLED
                        on_event(Event("cancelled", node, attempts[node]))
            for node in sorted(n for n, s in status.items() if s is NodeStatus.PENDING):
                status[node] = NodeStatus.CANCELLED
                on_event(Event("cancelled", node, attempts[node]))
        return outcome

    def _loop(
        self,
        dag: Dag,
        specs: Mapping[Address, NodeSpec],
        policies: Mapping[Address, RetryPolicy],
        on_event: Callable[[Event], None],
        outcome: Outcome,
        not_before: dict[Address, float],
        batch_key: Callable[[NodeSpec], object | None],
    ) -> None:
        status, attempts = outcome.status, outcome.attempts
        running: set[Address] = set()

        def settle(result: NodeResult) -> None:
            node = result.address
            running.discard(node)
            policy = policies.get(node, RetryPolicy())
            if (
                result.status is NodeStatus.FAILED
                and result.retryable
                and attempts[node] <= policy.retries
            ):
                delay = policy.delay(attempts[node])
                not_before[node] = time.monotonic() + delay
                on_event(Event("retrying", node, attempts[node], result, delay))
                return
            status[node] = result.status
            outcome.results[node] = result
            on_event(Event("finished", node, attempts[node], result))

        def dispatch(worker: _Worker, nodes: list[Address], now: float) -> None:
            batch = []
            for node in nodes:
                attempts[node] += 1
                batch.append(replace(specs[node], attempt=attempts[node]))
            limits = [policies.get(n, RetryPolicy()).timeout_seconds for n in nodes]
            worker.nodes = tuple(nodes)
            if (key := batch_key(specs[nodes[0]])) is not None:
                worker.batch_key = key
            worker.deadline = now + max(limits) if all(limits) else None  # type: ignore[type-var]
            worker.since = utcnow()
            worker.conn.send(batch if len(batch) > 1 else batch[0])
            for node in nodes:
                running.add(node)
                on_event(Event("started", node, attempts[node], at=worker.since))

        while True:
            for node in to_skip(dag, status):
                status[node] = NodeStatus.SKIPPED
                on_event(Event("skipped", node))
            if all(s in FINISHED for s in status.values()):
                return
            now = time.monotonic()
            # NOTE: one batch of a key at a time (one dbt invocation per tenant, like dbt's own
            # one process per project): what becomes ready meanwhile waits and goes with the
            # next batch, preferably to the same worker, whose dbt caches are warm. Two
            # invocations side by side would each pay dbt's start-up for no gain on few cores.
            in_flight = {batch_key(specs[n]) for n in running} - {None}
            groups: dict[object, list[Address]] = {}
            for node in ready_nodes(dag, status):
                if node in running or not_before.get(node, 0.0) > now:
                    continue
                key = batch_key(specs[node])
                if key is not None and key in in_flight:
                    continue
                groups.setdefault(("single", node) if key is None else ("batch", key), []).append(
                    node
                )
            for group, nodes in groups.items():
                worker = self._idle(nodes[0].tenant, group[1] if group[0] == "batch" else None)
                if worker is None:
                    break
                dispatch(worker, nodes, now)
            busy = [w for w in self._pool if w.nodes]
            wake = [w.deadline for w in busy if w.deadline is not None]
            wake += [t for n, t in not_before.items() if status[n] is NodeStatus.PENDING]
            if not busy and not wake:
                raise RuntimeError("runner stalled: nothing running and nothing ready")
            timeout = max(0.0, min(wake) - time.monotonic()) if wake else None
            waitables: list[Any] = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            ready = wait(waitables, timeout=timeout) if waitables else time.sleep(timeout or 0)
            ready = set(ready or ())
            for worker in busy:
                nodes = worker.nodes
                if worker.conn in ready:
                    try:
                        results = worker.conn.recv()
                    except (EOFError, OSError):
                        results = None
                    if results is not None:
                        since, worker.nodes, worker.deadline = worker.since, (), None
                        by_node = {r.address: r for r in results}
                        for node in nodes:
                            settle(
                                by_node.get(node)
                                or _lost(node, "the worker returned no result", since)
                            )
                        continue
                if worker.conn in ready or worker.process.sentinel in ready:
                    worker.process.join(timeout=5)  # the pipe closes before the exit is reaped
                    code = worker.process.exitcode
                    self._replace(worker)
                    why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                    for node in nodes:
                        settle(
                            _lost(
                                node,
                                f"crashed: worker died ({why})",
                                worker.since,
                                FailureKind.CRASHED,
                            )
                        )
                elif worker.deadline is not None and time.monotonic() >= worker.deadline:
                    self._replace(worker)
                    for node in nodes:
                        limit = policies[node].timeout_seconds or 0
                        settle(
                            _lost(
                                node,
                                f"timeout: killed after {limit:g} s",
                                worker.since,
                                FailureKind.TIMEOUT,
                            )
                        )


def _lost(
    node: Address,
    error: str,
    since: datetime | None,
    failure: FailureKind = FailureKind.TERMINAL,
) -> NodeResult:
    """A failure the executor saw itself (the worker could not report it)."""
    return NodeResult.failed(node, error, failure, started_at=since, finished_at=utcnow())
