"""`fabric scheduler`: the tick loop, and the local dispatch of the runs it fires.  [shell]

Any number of replicas may run against one control plane: a tick claims due schedules with
`FOR UPDATE SKIP LOCKED` (fabric.state.schedules.tick), so each (schedule, fire time) is
fired by exactly one of them. A tick creates the runs (`pending`); every run then starts through
fabric.state.runs.open_run, the one way runs begin, by one of two dispatches:

- `LocalDispatch` (`--executor local`) starts each run on this machine through the ordinary
  runner (fabric.runner.driver.run_tenants) after the tick committed, at most `max_runs` at
  once; the rest wait, still `pending`, in this process.
- `QueueDispatch` (`--executor queue`) starts each run inside the tick's transaction: it
  defers the run's root nodes to procrastinate, so the claim of the fire time, the run rows
  and the queued jobs commit together; `fabric worker` processes do the rest.

A run left `pending` (its scheduler stopped or died before starting it) is adopted by the
next tick of any replica once it is `adopt_after` seconds old (checked every `adopt_every`
seconds): started once, whoever tries (fabric.state.schedules.adopt_pending).

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
from fabric.state.queue import RunConflictError
from fabric.state.schedules import FiredRun
from fabric.state.snapshot import TenantRow

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

Dispatch = Callable[[Sequence[FiredRun]], None]
"""Starts the runs a tick created (or logs those it started). Called after the tick committed;
a dispatch with an `in_tick` method (a fabric.state.schedules.Start) starts them before."""
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
    """Pending scheduled runs older than this many seconds are adopted (started here)."""
    adopt_every: float = 30.0
    """Seconds between looks for such runs (the first look is at the first tick)."""


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
    start = getattr(dispatch, "in_tick", None)
    with engine.connect() as conn:
        with conn.begin():
            entered = schedules.enter_missing(conn, clock())
        if entered:
            log("clock_entered", {"schedules": entered})
    log("started", {"interval": options.interval, "who": options.who})
    next_adopt: datetime | None = None
    while not stop.is_set():
        now = clock()
        if next_adopt is None or now >= next_adopt:
            next_adopt = now + timedelta(seconds=options.adopt_every)
            _adopt(engine, dispatch, start, now - timedelta(seconds=options.adopt_after), log)
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
                    start=start,
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
            stop.wait(_until_next(engine, clock, options.interval))
    if stop.is_set():
        log("stopping", {"pending": getattr(dispatch, "pending", lambda: None)()})
    return fired_total


def _until_next(engine: Engine, clock: Clock, interval: float) -> float:
    """Seconds to sleep: until the earliest schedule is due, at most `interval` (an apply that
    adds an earlier schedule is seen within one interval)."""
    try:
        with engine.connect() as conn:
            due = schedules.next_due(conn)
    except DatabaseError:
        return interval
    if due is None:
        return interval
    return max(min(0.25, interval), min(interval, (due - clock()).total_seconds() + 0.01))


def _adopt(
    engine: Engine,
    dispatch: Dispatch,
    start: schedules.Start | None,
    before: datetime,
    log: Log,
) -> None:
    try:
        with engine.connect() as conn:
            orphans = schedules.adopt_pending(conn, before, start)
    except DatabaseError as exc:
        log("adopt_failed", {"error": _first_line(exc)})
        return
    if orphans:
        log("adopted", {"runs": len(orphans)})
        dispatch(orphans)


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
        self._futures: dict[Future[None], tuple[str, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, runs: Sequence[FiredRun]) -> None:
        for run in runs:
            key = (run.schema_name, run.run_id)
            with self._lock:
                if key in self._futures.values():  # still waiting here (adopted again)
                    continue
                future = self._pool.submit(self._execute, run)
                self._futures[future] = key
            future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.pop(future, None)

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
        except RunConflictError as exc:  # an active run shares a node (if_active refuse)
            self._fail(run, str(exc))
            self._log("run_refused", {**fields, "error": str(exc)})
            return
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


class QueueDispatch:
    """Defers fired runs' root nodes to the queue inside the tick's transaction (`in_tick`);
    after the commit (`__call__`) it only logs what it deferred.

    A run that cannot start is failed with the reason in the same transaction: its selection
    matches nothing applied now, or an active run shares a node and `if_active` is refuse.
    With "wait" it is created `queued` and starts when that run ends.
    """

    def __init__(self, *, who: str, if_active: str, queue: str | None, log: Log) -> None:
        self._who = who
        self._if_active = if_active
        self._queue = queue
        self._log = log
        self._outcomes: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}

    def in_tick(self, conn: Connection, runs: Sequence[FiredRun]) -> None:
        from fabric.runner.driver import RunOptions, dispatch_on
        from fabric.state.applied import read_applied
        from fabric.state.runs import fail_pending_run

        applied: dict[str, Any] = {}
        # By tenant: each start takes its tenant's ADMIT lock, always in the same order.
        for run in sorted(runs, key=lambda r: (r.tenant, r.fire_at, r.run_id)):
            fields: dict[str, Any] = {
                "tenant": run.tenant,
                "schedule": run.schedule,
                "run": run.run_id,
            }
            options = RunOptions(selectors=run.selection, trigger="schedule", who=self._who)
            savepoint = conn.begin_nested()
            try:
                if run.tenant not in applied:
                    row = TenantRow(0, run.tenant, run.schema_name)
                    applied[run.tenant] = read_applied(conn, run.tenant, row=row)
                opened = dispatch_on(
                    conn,
                    run.tenant,
                    options,
                    if_active=self._if_active,
                    queue=self._queue,
                    run_id=run.run_id,
                    applied=applied[run.tenant],
                )
            except DatabaseError:
                raise
            except Exception as exc:  # this run cannot start; the others still may
                savepoint.rollback()
                error = str(exc) if isinstance(exc, RunConflictError) else f"cannot start: {exc}"
                fail_pending_run(
                    conn,
                    TenantRow(0, run.tenant, run.schema_name),
                    run.run_id,
                    error,
                    commit=False,
                )
                event = "run_refused" if isinstance(exc, RunConflictError) else "run_failed"
                self._outcomes[(run.schema_name, run.run_id)] = (event, {**fields, "error": error})
                continue
            savepoint.commit()
            if opened is None:
                self._outcomes[(run.schema_name, run.run_id)] = ("run_taken", fields)
            else:
                self._outcomes[(run.schema_name, run.run_id)] = (
                    "deferred",
                    {**fields, "status": opened.status},
                )

    def __call__(self, runs: Sequence[FiredRun]) -> None:
        for run in runs:
            outcome = self._outcomes.pop((run.schema_name, run.run_id), None)
            if outcome is not None:
                self._log(*outcome)
        self._outcomes.clear()  # a tick that failed after in_tick committed nothing

    def pending(self) -> int:
        return 0
