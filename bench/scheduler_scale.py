"""One scheduler tick over 10,000 active schedules, 100 of them due (target: under 200 ms).

Applies TENANTS tenants with SCHEDULES schedules each (10,000 in all by default) into a fresh
control plane, then makes 100 schedules due, spread over 100 tenants, and times a whole tick
(fabric.state.schedules.tick: claim FOR UPDATE SKIP LOCKED, count active runs, create the 100
runs and their fire records, advance the clock, commit), median of REPEATS.

The same tick with the queue executor's dispatch (`fabric scheduler --executor queue`): each
fired run is started in the tick's transaction (admission, node runs, its root node deferred
to procrastinate), alternating with the plain tick so both see the same machine.

Baseline: a bare `SELECT ... FOR UPDATE SKIP LOCKED` of the same due rows plus an UPDATE of
their next_fire_at, in one transaction: the least any claim-and-advance can cost. The ratio
says what creating the runs and recording the fires adds to it.

Then the delay from a schedule's due time to its node starting on an idle `fabric worker`
(no-op nodes), through `fabric scheduler --executor queue` (target under 2 s): the scheduler
sleeps until the schedule is due, the tick defers the node, the worker is woken by
procrastinate's LISTEN/NOTIFY. Median of `--repeats` fires, from the database's timestamps.

    uv run python bench/scheduler_scale.py [--tenants 200] [--schedules 50] [--due 100]

Uses FABRIC_DATABASE_URL's server when set, else an embedded PostgreSQL under bench/.out/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_server import server_url  # noqa: E402

from fabric import api  # noqa: E402
from fabric.apply import ApplyOptions  # noqa: E402
from fabric.state.engine import create_database, drop_database, make_engine  # noqa: E402
from fabric.state.schedules import tick  # noqa: E402

CRONS = ("0 3 * * *", "*/15 * * * *", "30 2 * * *", "5 * * * 1-5", "0 6 * * 1")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "America/Chicago")


def write_repo(root: Path, tenants: int, schedules: int) -> None:
    (root / "fabric.yaml").write_text("format_version: 1\n")
    for n in range(tenants):
        folder = root / "tenants" / f"t{n:04d}"
        folder.mkdir(parents=True)
        lines = [
            "tenant: {display_name: T, warehouse: dwh}",
            "connections:",
            f"  dwh: {{type: postgres, direction: destination, host: h, database: d{n}}}",
            "  src: {type: postgres, direction: source, host: h, database: s}",
            "pipelines:",
            "  orders: {source: src, dataset: raw, mode: single_table, table: o}",
            "schedules:",
        ]
        for i in range(schedules):
            cron, zone = CRONS[i % len(CRONS)], ZONES[(n + i) % len(ZONES)]
            lines.append(f"  s{i:03d}: {{cron: '{cron}', timezone: {zone}, targets: [orders]}}")
        (folder / "tenant.yaml").write_text("\n".join(lines) + "\n")


def make_due(engine, count: int, at: datetime) -> None:
    """`count` schedules due at `at`, one per tenant first; the others far in the future."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE fabric.schedule_clock SET next_fire_at = '2100-01-01'"))
        # The first `count` rows in (k, tenant) order: the k-th schedule of every tenant.
        conn.execute(
            text(
                "UPDATE fabric.schedule_clock c SET next_fire_at = :at FROM ("
                "SELECT tenant_id, name FROM (SELECT tenant_id, name, row_number() OVER "
                "(PARTITION BY tenant_id ORDER BY name) AS k FROM fabric.schedule_clock) r "
                "ORDER BY k, tenant_id LIMIT :n) d "
                "WHERE c.tenant_id = d.tenant_id AND c.name = d.name"
            ),
            {"at": at, "n": count},
        )


def bare_claim(engine, now: datetime, batch: int) -> float:
    start = time.perf_counter()
    with engine.connect() as conn, conn.begin():
        rows = conn.execute(
            text(
                "SELECT tenant_id, name FROM fabric.schedule_clock WHERE active AND "
                "next_fire_at <= :now ORDER BY next_fire_at LIMIT :n FOR UPDATE SKIP LOCKED"
            ),
            {"now": now, "n": batch},
        ).all()
        conn.execute(
            text(
                "UPDATE fabric.schedule_clock SET next_fire_at = next_fire_at + interval '1 day' "
                "WHERE (tenant_id, name) IN (SELECT * FROM unnest(CAST(:t AS bigint[]), "
                "CAST(:n AS text[])))"
            ),
            {"t": [r.tenant_id for r in rows], "n": [r.name for r in rows]},
        )
    return time.perf_counter() - start


def finish(engine, fired) -> None:
    """The runs "finished": max_instances and the one-active-run rule have room again."""
    with engine.begin() as conn:
        for f in fired:
            conn.execute(
                text(f"UPDATE \"{f.schema_name}\".runs SET status = 'success' WHERE id = :i"),
                {"i": f.run_id},
            )


def due_to_start(server: str, repeats: int) -> list[float]:
    """Seconds from due time to node start, per fire, with one idle no-op worker."""
    import threading

    from queue_setup import applied_noop_repo, noop_workers

    every = "  every: {cron: '* * * * *', timezone: UTC, targets: [n0]}"
    with applied_noop_repo(server, [("n0", None)], label="latency", schedules=every) as (
        root,
        env,
        engine,
    ):
        delays: list[float] = []
        with noop_workers(root, env, concurrency=1, count=1):
            _until(engine, "SELECT count(*) FROM procrastinate_workers")  # the worker is up
            stop = threading.Event()
            scheduler = threading.Thread(
                target=api.scheduler,
                args=(root,),
                kwargs={
                    "stop": stop,
                    "log": lambda e, f: None,
                    "environ": env,
                    "executor": "queue",
                    "interval": 5.0,
                },
            )
            scheduler.start()
            try:
                for _ in range(repeats + 1):  # the first warms the worker (dlt/dbt imports)
                    # Due in 6 s: as a schedule is, known to the scheduler before it is due
                    # (longer than the 5 s interval the scheduler may be sleeping through).
                    with engine.begin() as conn:
                        schema = conn.execute(
                            text("SELECT schema_name FROM fabric.tenants WHERE slug = 'bench'")
                        ).scalar_one()
                        due = conn.execute(
                            text(
                                "UPDATE fabric.schedule_clock SET next_fire_at = "
                                "date_trunc('milliseconds', now()) + interval '6 s' "
                                "RETURNING next_fire_at"
                            )
                        ).scalar_one()
                    started = _until(
                        engine,
                        f'SELECT min(n.started_at) FROM "{schema}".node_runs n JOIN '
                        f'"{schema}".runs r ON r.id = n.run_id WHERE r.fire_at = :at '
                        "AND n.status = 'success'",
                        at=due,
                    )
                    delays.append((started - due).total_seconds())
            finally:
                stop.set()
                scheduler.join()
        return delays


def _until(engine, sql: str, **params):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            value = conn.execute(text(sql), params).scalar_one()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(sql)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    server = server_url()
    cold, *delays = due_to_start(server, args.repeats)
    print(
        f"due to node start on an idle warm worker (--executor queue): "
        f"{statistics.median(delays):.2f} s median, {max(delays):.2f} s worst of "
        f"{len(delays)} (target < 2 s); first fire on the just-started worker {cold:.2f} s"
    )
    if args.latency_only:
        return
    name = f"bench_sched_{int(time.time())}"
    url = create_database(server, name)
    engine = make_engine(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_repo(root, args.tenants, args.schedules)
            env = {"FABRIC_DATABASE_URL": url, "FABRIC_SECRET_KEYS": Fernet.generate_key().decode()}
            started = time.perf_counter()
            plan = api.plan(root, environ=env).plan
            api.apply(plan, repo=root, environ=env, options=ApplyOptions())
            setup = time.perf_counter() - started
        with engine.connect() as conn:
            active = conn.execute(
                text("SELECT count(*) FROM fabric.schedule_clock WHERE active")
            ).scalar_one()
        print(
            f"control plane: {args.tenants} tenants, {active:,} active schedules "
            f"(plan + apply {setup:.1f} s)"
        )
        from fabric.runner.scheduler import QueueDispatch

        queue = QueueDispatch(who="bench", if_active="refuse", queue=None, log=lambda e, f: None)
        ticks, bares, queued = [], [], []
        base = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
        for r in range(args.repeats):
            at = base + timedelta(hours=r)
            make_due(engine, args.due, at)
            now = at + timedelta(seconds=1)
            bares.append(bare_claim(engine, now, 1000))
            make_due(engine, args.due, at)
            with engine.connect() as conn:
                start = time.perf_counter()
                result = tick(conn, now, who="bench")
                ticks.append(time.perf_counter() - start)
            assert result.claimed == args.due and len(result.fired) == args.due, (
                result.claimed,
                len(result.fired),
                result.settled[:3],
            )
            finish(engine, result.fired)
            make_due(engine, args.due, at + timedelta(minutes=30))
            with engine.connect() as conn:
                start = time.perf_counter()
                deferred = tick(conn, now + timedelta(minutes=30), who="bench", start=queue.in_tick)
                queued.append(time.perf_counter() - start)
            queue(deferred.fired)
            assert len(deferred.fired) == args.due
            finish(engine, deferred.fired)
        tenants_hit = len({f.tenant for f in result.fired})
        t, b = statistics.median(ticks), statistics.median(bares)
        print(
            f"tick, {args.due} due over {tenants_hit} tenants: {t * 1000:.1f} ms "
            f"(median of {args.repeats}; target < 200 ms)"
        )
        print(
            f"bare SELECT ... FOR UPDATE SKIP LOCKED + UPDATE of the same rows: {b * 1000:.1f} ms"
        )
        print(f"ratio tick / bare claim: {t / b:.2f}x")
        q = statistics.median(queued)
        print(
            f"tick with --executor queue (each run started, its root deferred): {q * 1000:.1f} ms "
            f"({q / t:.2f}x the plain tick; target < 200 ms)"
        )
    finally:
        engine.dispose()
        drop_database(server, name)


if __name__ == "__main__":
    main()
