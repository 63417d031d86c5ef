"""The schedule clock and the scheduler tick's writes.  [shell]

`fabric.schedule_clock` holds every live schedule of every tenant with its `next_fire_at`
(computed in the schedule's timezone). Apply keeps it in step with the tenant schedules
tables, in the apply's own transaction (`sync_clock`, `drop_tenants`).

A tick (`tick`) is one transaction of three round trips, however many tenants are due:
1. claim: due clock rows of all tenants, `FOR UPDATE SKIP LOCKED`, oldest first, in bulk;
2. count the active runs of the claimed schedules (one UNION ALL over their tenant schemas);
3. one statement of data-modifying CTEs: insert the fired runs (unique per schedule and fire
   time), record every settled fire time in the tenant's `schedule_fires`, advance the clock.
The decision between 2 and 3 is pure (fabric.schedule.tick.decide).

Exactly once: a clock row is locked by one tick at a time and its `next_fire_at` moves past
the fired times in the same commit; the unique (schedule, fire time) keys of runs and fires
are the second guard. An apply that changes or deletes a schedule locks its clock row, so a
tick skips it until the apply commits, and an apply waits for a tick that holds it: the two
never both win.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from fabric.schedule.fire_times import next_fire
from fabric.schedule.tick import Decision, Outcome, Policy, decide
from fabric.state import tables
from fabric.state.snapshot import TenantRow

CLOCK = f"{tables.SHARED_SCHEMA}.schedule_clock"
ACTIVE_RUN_STATUSES = ("pending", "queued", "running")
"""A run of a schedule in one of these counts against its max_instances."""


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """A clock row claimed by a tick."""

    tenant_id: int
    tenant: str
    schema_name: str
    name: str
    spec: Mapping[str, Any]
    next_fire_at: datetime
    last_fire_at: datetime | None


@dataclass(frozen=True, slots=True)
class FiredRun:
    """A run a tick created: what a dispatch needs to start it."""

    tenant: str
    schema_name: str
    schedule: str
    fire_at: datetime
    run_id: int
    selection: tuple[str, ...]


Start = Callable[[Connection, Sequence[FiredRun]], None]
"""Starts fired runs inside the tick's transaction (the queue executor defers their roots),
so a tick's claim, its run rows and their queued jobs commit together."""


@dataclass(frozen=True, slots=True)
class SettledFire:
    """A fire time a tick recorded as missed or skipped, for the log."""

    tenant: str
    schedule: str
    fire_at: datetime
    outcome: Outcome
    reason: str


@dataclass(frozen=True, slots=True)
class TickResult:
    claimed: int
    fired: tuple[FiredRun, ...]
    settled: tuple[SettledFire, ...]
    unrecorded_missed: int = 0


@dataclass(frozen=True, slots=True)
class ClockEntry:
    """A schedule as the clock holds it, for `fabric status`."""

    name: str
    spec: Mapping[str, Any]
    active: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None


# ---------------------------------------------------------------------------------------------
# apply's side


def sync_clock(
    conn: Connection,
    tenants: Mapping[str, TenantRow],
    upserts: Iterable[tuple[str, str, Mapping[str, Any]]],
    deletes: Iterable[tuple[str, str]],
    now: datetime,
) -> None:
    """Enter created and changed schedules, remove deleted ones, in the caller's transaction.

    `upserts` are (tenant slug, schedule name, stored spec). A changed schedule keeps its
    `next_fire_at` unless its cron, timezone or `active` changed: then it is computed again
    from `now`, so a change or a pause takes effect at the next tick (a resumed schedule does
    not catch up the time it was paused).
    """
    rows = [
        {
            "tenant_id": tenants[slug].id,
            "name": name,
            "spec": dict(spec),
            "active": bool(spec.get("active", True)),
            "next": next_fire(
                str(spec["cron"]), str(spec.get("timezone") or "UTC"), now
            ).isoformat(),
        }
        for slug, name, spec in upserts
    ]
    if rows:
        conn.execute(
            text(
                f"INSERT INTO {CLOCK} AS c (tenant_id, name, spec, active, next_fire_at) "
                "SELECT x.tenant_id, x.name, x.spec, x.active, x.next FROM jsonb_to_recordset("
                "CAST(:rows AS jsonb)) AS x(tenant_id bigint, name text, spec jsonb, "
                "active boolean, next timestamptz) "
                "ON CONFLICT (tenant_id, name) DO UPDATE SET spec = EXCLUDED.spec, "
                "active = EXCLUDED.active, updated_at = now(), next_fire_at = CASE "
                "WHEN c.active = EXCLUDED.active AND c.spec->>'cron' = EXCLUDED.spec->>'cron' "
                "AND c.spec->>'timezone' IS NOT DISTINCT FROM EXCLUDED.spec->>'timezone' "
                "THEN c.next_fire_at ELSE EXCLUDED.next_fire_at END"
            ),
            {"rows": json.dumps(rows)},
        )
    gone = [
        {"tenant_id": tenants[slug].id, "name": name} for slug, name in deletes if slug in tenants
    ]
    if gone:
        conn.execute(
            text(
                f"DELETE FROM {CLOCK} c USING jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS x(tenant_id bigint, name text) "
                "WHERE c.tenant_id = x.tenant_id AND c.name = x.name"
            ),
            {"rows": json.dumps(gone)},
        )


def drop_tenants(conn: Connection, slugs: Sequence[str]) -> None:
    """Remove the schedules of tenants being deleted (before their rows are soft-deleted)."""
    if slugs:
        conn.execute(
            text(
                f"DELETE FROM {CLOCK} c USING {tables.SHARED_SCHEMA}.tenants t "
                "WHERE c.tenant_id = t.id AND t.slug = ANY(:slugs) AND t.deleted_at IS NULL"
            ),
            {"slugs": list(slugs)},
        )


def enter_missing(conn: Connection, now: datetime) -> int:
    """Enter live schedules the clock lacks (applied before the clock existed); returns how many.

    One UNION ALL over the tenant schemas; run by `fabric scheduler` when it starts.
    """
    tenants = {
        r.id: TenantRow(r.id, r.slug, r.schema_name)
        for r in conn.execute(
            text(
                f"SELECT id, slug, schema_name FROM {tables.SHARED_SCHEMA}.tenants "
                "WHERE deleted_at IS NULL AND schema_name IS NOT NULL"
            )
        )
    }
    if not tenants:
        return 0
    parts = [
        f'SELECT {t.id}::bigint AS tenant_id, s.name, s.spec FROM "{t.schema_name}".schedules s '
        f"WHERE s.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM {CLOCK} c "
        f"WHERE c.tenant_id = {t.id} AND c.name = s.name)"
        for t in tenants.values()
    ]
    missing = list(conn.execute(text("\nUNION ALL\n".join(parts))))
    by_id = {t.id: t for t in tenants.values()}
    sync_clock(
        conn,
        {by_id[r.tenant_id].slug: by_id[r.tenant_id] for r in missing},
        [(by_id[r.tenant_id].slug, r.name, r.spec) for r in missing],
        (),
        now,
    )
    return len(missing)


# ---------------------------------------------------------------------------------------------
# the tick


def claim_due_schedules(conn: Connection, now: datetime, limit: int) -> list[DueSchedule]:
    """Lock up to `limit` due schedules of any tenant that no other tick holds."""
    rows = conn.execute(
        text(
            "SELECT c.tenant_id, t.slug, t.schema_name, c.name, c.spec, c.next_fire_at, "
            f"c.last_fire_at FROM {CLOCK} c JOIN {tables.SHARED_SCHEMA}.tenants t "
            "ON t.id = c.tenant_id AND t.deleted_at IS NULL "
            "WHERE c.active AND c.next_fire_at <= :now ORDER BY c.next_fire_at LIMIT :limit "
            "FOR UPDATE OF c SKIP LOCKED"
        ),
        {"now": now, "limit": limit},
    )
    return [DueSchedule(*r) for r in rows]


def count_active_runs(conn: Connection, due: Sequence[DueSchedule]) -> dict[tuple[str, str], int]:
    """Active runs per (tenant, schedule) of the claimed schedules, in one query."""
    by_schema: dict[str, list[DueSchedule]] = {}
    for d in due:
        by_schema.setdefault(d.schema_name, []).append(d)
    if not by_schema:
        return {}
    statuses = ", ".join(f"'{s}'" for s in ACTIVE_RUN_STATUSES)
    parts = []
    params: dict[str, Any] = {}
    for i, (schema, items) in enumerate(sorted(by_schema.items())):
        params[f"n{i}"] = sorted({d.name for d in items})
        params[f"t{i}"] = items[0].tenant
        parts.append(
            f"SELECT CAST(:t{i} AS text) AS tenant, schedule_name, count(*) AS n "
            f'FROM "{schema}".runs WHERE schedule_name = ANY(:n{i}) '
            f"AND status IN ({statuses}) GROUP BY schedule_name"
        )
    rows = conn.execute(text("\nUNION ALL\n".join(parts)), params)
    return {(r.tenant, r.schedule_name): int(r.n) for r in rows}


def write_decisions(
    conn: Connection,
    decided: Sequence[tuple[DueSchedule, Decision]],
    *,
    who: str,
) -> tuple[FiredRun, ...]:
    """Create the fired runs, record every settled fire, advance the clock: one statement."""
    fires = []
    clock = []
    schemas: dict[str, str] = {}
    for due, decision in decided:
        schemas[due.schema_name] = due.tenant
        fired = decision.fired
        clock.append(
            {
                "tenant_id": due.tenant_id,
                "name": due.name,
                "next": decision.next_fire_at.isoformat(),
                "last": fired[-1].isoformat() if fired else None,
            }
        )
        for f in decision.fires:
            fires.append(
                {
                    "schema": due.schema_name,
                    "name": due.name,
                    "fire_at": f.at.isoformat(),
                    "outcome": f.outcome.value,
                    "reason": f.reason,
                    "selection": list(due.spec.get("targets") or ()),
                }
            )
    ctes = [
        "x AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(CAST(:fires AS jsonb)) AS x("
        "schema text, name text, fire_at timestamptz, outcome text, reason text, "
        "selection jsonb))",
        f"clock AS (UPDATE {CLOCK} c SET next_fire_at = y.next, "
        "last_fire_at = coalesce(y.last, c.last_fire_at), updated_at = now() "
        "FROM jsonb_to_recordset(CAST(:clock AS jsonb)) AS y(tenant_id bigint, name text, "
        "next timestamptz, last timestamptz) "
        "WHERE c.tenant_id = y.tenant_id AND c.name = y.name RETURNING 1)",
    ]
    selects = []
    for i, schema in enumerate(sorted(schemas)):
        # Schema names are tenant_<id>, read from fabric.tenants; values travel as JSON.
        ctes.append(
            f'r{i} AS (INSERT INTO "{schema}".runs (trigger, selection, status, who, '
            "schedule_name, fire_at) SELECT 'schedule', x.selection, 'pending', :who, x.name, "
            f"x.fire_at FROM x WHERE x.schema = '{schema}' AND x.outcome = 'fired' "
            "ON CONFLICT ON CONSTRAINT runs_schedule_fire_at DO NOTHING "
            "RETURNING id, schedule_name, fire_at, selection)"
        )
        ctes.append(
            f'f{i} AS (INSERT INTO "{schema}".schedule_fires (schedule_name, fire_at, outcome, '
            f"run_id, reason) SELECT x.name, x.fire_at, x.outcome, r{i}.id, x.reason FROM x "
            f"LEFT JOIN r{i} ON r{i}.schedule_name = x.name AND r{i}.fire_at = x.fire_at "
            f"WHERE x.schema = '{schema}' AND (x.outcome <> 'fired' OR r{i}.id IS NOT NULL) "
            "ON CONFLICT ON CONSTRAINT schedule_fires_schedule_fire_at DO NOTHING)"
        )
        selects.append(
            f"SELECT '{schema}' AS schema, id, schedule_name, fire_at, selection FROM r{i}"
        )
    if not selects:
        selects.append(
            "SELECT NULL::text AS schema, NULL::bigint AS id, NULL::text AS schedule_name, "
            "NULL::timestamptz AS fire_at, NULL::jsonb AS selection WHERE false"
        )
    sql = "WITH " + ",\n".join(ctes) + "\n" + "\nUNION ALL\n".join(selects)
    rows = conn.execute(
        text(sql), {"fires": json.dumps(fires), "clock": json.dumps(clock), "who": who}
    )
    return tuple(
        sorted(
            (
                FiredRun(
                    schemas[r.schema],
                    r.schema,
                    r.schedule_name,
                    r.fire_at,
                    r.id,
                    tuple(r.selection or ()),
                )
                for r in rows
            ),
            key=lambda f: (f.fire_at, f.tenant, f.schedule),
        )
    )


def tick(
    conn: Connection,
    now: datetime,
    *,
    who: str,
    catchup_cap: int = 10,
    batch: int = 1000,
    start: Start | None = None,
) -> TickResult:
    """Claim, decide and write one batch of due schedules; commits on `conn`.

    `start`, when given, starts the fired runs before the commit (the queue executor)."""
    with conn.begin():
        due = claim_due_schedules(conn, now, batch)
        if not due:
            return TickResult(0, (), ())
        active = count_active_runs(conn, due)
        decided = [
            (
                d,
                decide(
                    Policy.of(d.spec),
                    now=now,
                    next_fire_at=d.next_fire_at,
                    active_runs=active.get((d.tenant, d.name), 0),
                    catchup_cap=catchup_cap,
                ),
            )
            for d in due
        ]
        fired = write_decisions(conn, decided, who=who)
        if start is not None and fired:
            start(conn, fired)
    settled = tuple(
        SettledFire(d.tenant, d.name, f.at, f.outcome, f.reason or "")
        for d, decision in decided
        for f in decision.fires
        if f.outcome is not Outcome.FIRED
    )
    unrecorded = sum(decision.unrecorded_missed for _, decision in decided)
    return TickResult(len(due), fired, settled, unrecorded)


def next_due(conn: Connection) -> datetime | None:
    """The earliest `next_fire_at` of any active schedule (None: none): a scheduler sleeps
    until then (at most its interval), so a fire starts when due, not up to a tick later."""
    return conn.execute(
        text(
            f"SELECT min(c.next_fire_at) FROM {CLOCK} c JOIN {tables.SHARED_SCHEMA}.tenants t "
            "ON t.id = c.tenant_id AND t.deleted_at IS NULL WHERE c.active"
        )
    ).scalar_one_or_none()


# ---------------------------------------------------------------------------------------------
# status


def read_clock(conn: Connection, tenant: TenantRow) -> list[ClockEntry]:
    """The tenant's schedules as the clock holds them, by name."""
    rows = conn.execute(
        text(
            f"SELECT name, spec, active, next_fire_at, last_fire_at FROM {CLOCK} "
            "WHERE tenant_id = :id ORDER BY name"
        ),
        {"id": tenant.id},
    )
    return [ClockEntry(*r) for r in rows]


def read_fires(
    conn: Connection, tenant: TenantRow, schedule: str | None = None, *, limit: int = 1000
) -> list[tuple[str, datetime, str, int | None, str | None]]:
    """Recorded fires of the tenant (schedule, fire_at, outcome, run id, reason), oldest first."""
    sql = (
        "SELECT schedule_name, fire_at, outcome, run_id, reason "
        f'FROM "{tenant.schema_name}".schedule_fires'
    )
    params: dict[str, Any] = {"limit": limit}
    if schedule is not None:
        sql += " WHERE schedule_name = :s"
        params["s"] = schedule
    sql += " ORDER BY fire_at, schedule_name LIMIT :limit"
    return [tuple(r) for r in conn.execute(text(sql), params)]


def adopt_pending(
    conn: Connection, created_before: datetime, start: Start | None = None
) -> list[FiredRun]:
    """Scheduled runs left `pending` (created before `created_before`), of every tenant: a
    scheduler stopped or killed between creating runs and starting them leaves them so.

    The rows are locked `SKIP LOCKED` while `start` (when given) starts them in this
    transaction, so concurrent adopters share them out; a local dispatch starts them after
    the commit, through a conditional update (fabric.state.runs.open_run): either way a
    pending run starts once, whoever tries. One statement over every tenant schema; commits.
    """
    with conn.begin():
        tenants = [
            TenantRow(r.id, r.slug, r.schema_name)
            for r in conn.execute(
                text(
                    f"SELECT id, slug, schema_name FROM {tables.SHARED_SCHEMA}.tenants "
                    "WHERE deleted_at IS NULL AND schema_name IS NOT NULL"
                )
            )
        ]
        if not tenants:
            return []
        # FOR UPDATE is not allowed beside UNION: one locking CTE per tenant schema.
        ctes = [
            f"p{i} AS (SELECT CAST('{t.slug}' AS text) AS tenant, "
            f"CAST('{t.schema_name}' AS text) AS schema, id, schedule_name, fire_at, selection "
            f"FROM \"{t.schema_name}\".runs WHERE status = 'pending' AND trigger = 'schedule' "
            "AND created_at < :before FOR UPDATE SKIP LOCKED)"
            for i, t in enumerate(tenants)
        ]
        sql = (
            "WITH "
            + ",\n".join(ctes)
            + "\n"
            + "\nUNION ALL\n".join(f"SELECT * FROM p{i}" for i in range(len(tenants)))
        )
        runs = sorted(
            (
                FiredRun(r.tenant, r.schema, r.schedule_name, r.fire_at, r.id, tuple(r.selection))
                for r in conn.execute(text(sql), {"before": created_before})
            ),
            key=lambda f: (f.fire_at, f.tenant, f.schedule),
        )
        if start is not None and runs:
            start(conn, runs)
    return runs
