"""`fabric scheduler`: the tick loop, and the local dispatch of the runs it fires.  [shell]

Any number of replicas may run against one control plane: a tick claims due schedules with
`FOR UPDATE SKIP LOCKED` (fabric.state.schedules.tick), so each (schedule, fire time) is
fired by exactly one of them. A tick creates the runs (`pending`) and commits; the runs are
then handed to a *dispatch*, a function of the fired runs:

- `LocalDispatch` (`--executor local`) starts each run on this machine through the ordinary
  runner (fabric.runner.driver.run_tenants), at most `max_runs` at once; the rest wait, still
  `pending`, in this process. A scheduler that stops leaves the waiting runs pending and the
  next scheduler to start adopts them (a run starts once, whoever tries).
- the queue executor's dispatch (defer the run's root nodes to procrastinate) plugs in here
  with the same signature: `Dispatch = Callable[[Sequence[FiredRun]], None]`.

One log line per event (tick, fired, missed, skipped, run finished, stop); `log` receives
(event, fields) and the CLI renders them (fabric.render.events).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fabric.clock import utcnow
from fabric.runner.driver import RunOptions, run_tenants
from fabric.state import schedules
from fabric.state.engine import DatabaseError
from fabric.state.schedules import FiredRun
from fabric.state.snapshot import TenantRow

if TYPE_CHECKING:
    from sqlalchemy import Engine

Dispatch = Callable[[Sequence[FiredRun]], None]
"""Starts (or enqueues) the runs a tick created. Called after the tick committed."""
Log = Callable[[str, Mapping[str, Any]], None]
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerOptions:
    interval: float = 5.0
    """Seconds between ticks (a tick that claimed a full batch is followed at once)."""
    catchup_cap: int = 10
    """A `catchup: true` schedule runs at most this many missed times (the latest) per tick."""
    batch: int = 1000
    """At most this many due schedules are claimed per tick."""
    who: str = "scheduler"
    adopt_after: float = 60.0
    """On start, pending scheduled runs older than this many seconds are dispatched here."""


def run_scheduler(
    engine: Engine,
    dispatch: Dispatch,
    options: SchedulerOptions,
    *,
    stop: threading.Event,
    log: Log,
    clock: Clock = utcnow,
    once: bool = False,
) -> int:
    """Tick until `stop` is set (or once); returns the number of runs fired.

    The caller closes the dispatch (and logs `stopped`) when this returns."""
    fired_total = 0
    with engine.connect() as conn:
        with conn.begin():
            entered = schedules.enter_missing(conn, clock())
        if entered:
            log("clock_entered", {"schedules": entered})
        with conn.begin():
            orphans = schedules.pending_scheduled_runs(
                conn, clock() - timedelta(seconds=options.adopt_after)
            )
    if orphans:
        log("adopted", {"runs": len(orphans)})
        dispatch(orphans)
    log("started", {"interval": options.interval, "who": options.who})
    while not stop.is_set():
        now = clock()
        try:
            # A connection per tick from the pool (pre-pinged): a restarted server costs one
            # failed tick, not the scheduler (the pool usually hands back the same session).
            with engine.connect() as conn:
                result = schedules.tick(
                    conn,
                    now,
                    who=options.who,
                    catchup_cap=options.catchup_cap,
                    batch=options.batch,
                )
        except DatabaseError as exc:
            log("tick_failed", {"error": _first_line(exc)})
            if once:
                break
            stop.wait(options.interval)
            continue
        _log_tick(log, result, (clock() - now).total_seconds())
        if result.fired:
            dispatch(result.fired)
        fired_total += len(result.fired)
        if once:
            break
        if result.claimed < options.batch:
            stop.wait(options.interval)
    if stop.is_set():
        log("stopping", {"pending": getattr(dispatch, "pending", lambda: None)()})
    return fired_total


def _first_line(exc: DatabaseError) -> str:
    """The server's message, never the statement (it may be long; it holds no secrets)."""
    orig = exc.orig
    return str(orig).strip().splitlines()[0] if orig is not None else type(exc).__name__


def _log_tick(log: Log, result: schedules.TickResult, seconds: float) -> None:
    for f in result.settled:
        log(
            f.outcome.value,
            {"tenant": f.tenant, "schedule": f.schedule, "fire_at": f.fire_at, "reason": f.reason},
        )
    for run in result.fired:
        log(
            "fired",
            {
                "tenant": run.tenant,
                "schedule": run.schedule,
                "fire_at": run.fire_at,
                "run": run.run_id,
            },
        )
    if result.claimed:
        log(
            "tick",
            {
                "claimed": result.claimed,
                "fired": len(result.fired),
                "settled": len(result.settled),
                "unrecorded_missed": result.unrecorded_missed or None,
                "ms": round(seconds * 1000, 1),
            },
        )


class LocalDispatch:
    """Runs fired runs on this machine, at most `max_runs` at once, through the runner.

    `template` holds what every run shares (workdir, environment, secret box, ...); each run
    gets its schedule's selection and its pending run id.
    """

    def __init__(self, engine: Engine, template: RunOptions, *, max_runs: int, log: Log) -> None:
        self._engine = engine
        self._template = template
        self._log = log
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_runs), thread_name_prefix="run")
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()

    def __call__(self, runs: Sequence[FiredRun]) -> None:
        for run in runs:
            future = self._pool.submit(self._execute, run)
            with self._lock:
                self._futures.add(future)
            future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def pending(self) -> int:
        """Runs handed over and not finished (running or waiting for a slot)."""
        with self._lock:
            return len(self._futures)

    def _execute(self, run: FiredRun) -> None:
        options = replace(
            self._template,
            selectors=run.selection,
            trigger="schedule",
            run_ids={run.tenant: run.run_id},
        )
        fields: dict[str, Any] = {"tenant": run.tenant, "schedule": run.schedule, "run": run.run_id}
        try:
            result = run_tenants(self._engine, [run.tenant], options)
        except ValueError as exc:  # the selection matches nothing in what is applied now
            self._fail(run, f"cannot start: {exc}")
            self._log("run_failed", {**fields, "error": f"cannot start: {exc}"})
            return
        except Exception as exc:  # one run's failure must not stop the scheduler
            self._fail(run, f"cannot start: {type(exc).__name__}: {exc}")
            self._log("run_failed", {**fields, "error": f"{type(exc).__name__}: {exc}"})
            return
        if run.tenant not in result.runs:
            self._log("run_taken", fields)  # started by another scheduler
            return
        status = result.status.get(run.tenant)
        self._log("run_finished", {**fields, "status": status.value if status else None})

    def _fail(self, run: FiredRun, error: str) -> None:
        from fabric.state.runs import fail_pending_run

        with self._engine.connect() as conn:
            fail_pending_run(conn, TenantRow(0, run.tenant, run.schema_name), run.run_id, error)

    def close(self, *, wait: bool = True) -> None:
        """Stop taking runs: those running finish (wait=True); those waiting stay pending."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
