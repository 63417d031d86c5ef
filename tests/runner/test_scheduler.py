"""The scheduler loop and its local dispatch, end to end on a real control plane.

Nodes follow scripts (scripted_nodes.py) instead of loading data; the clock is injected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from scripted_nodes import scripted
from sqlalchemy import text

from fabric import api
from fabric.apply import ApplyOptions
from fabric.state import runs as records
from fabric.state.engine import make_engine
from fabric.state.snapshot import read_tenant_rows

TENANT = """
    tenant: {{display_name: {slug}, warehouse: dwh}}
    connections:
      dwh: {{type: postgres, direction: destination, host: h, database: {slug}}}
      src: {{type: postgres, direction: source, host: h, database: s}}
    pipelines:
      orders: {{source: src, dataset: raw, mode: single_table, table: o}}
      items: {{source: src, dataset: raw, mode: single_table, table: i, depends_on: [orders]}}
      other: {{source: src, dataset: raw, mode: single_table, table: x}}
    schedules:
      hourly: {{cron: "0 * * * *", timezone: UTC, targets: [orders+]}}
    """


def utc(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


@pytest.fixture
def applied(tmp_path, make_database):
    root = tmp_path / "repo"
    for slug in ("acme", "globex"):
        (root / "tenants" / slug).mkdir(parents=True)
        (root / "tenants" / slug / "tenant.yaml").write_text(
            textwrap.dedent(TENANT.format(slug=slug))
        )
    (root / "fabric.yaml").write_text("format_version: 1\n")
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp_path / "home"),
        "PATH": os.environ.get("PATH", ""),
    }
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    with engine.begin() as conn:
        for row in read_tenant_rows(conn).values():
            script = json.dumps({"script": {}})
            conn.execute(
                text(f'UPDATE "{row.schema_name}".pipelines SET spec = spec || CAST(:s AS jsonb)'),
                {"s": script},
            )
    yield root, env, engine
    engine.dispose()


def due(engine, slug: str, at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE fabric.schedule_clock c SET next_fire_at = :at FROM fabric.tenants t "
                "WHERE t.id = c.tenant_id AND t.slug = :slug"
            ),
            {"at": at, "slug": slug},
        )


def test_once_fires_the_due_schedule_and_runs_its_selection_locally(applied):
    root, env, engine = applied
    due(engine, "acme", utc("2026-01-01 10:00"))
    events: list[tuple[str, dict]] = []
    fired = api.scheduler(
        root,
        stop=threading.Event(),
        log=lambda e, f: events.append((e, dict(f))),
        once=True,
        environ=env,
        execute=scripted,
        clock=lambda: utc("2026-01-01 10:00:01"),
    )
    assert fired == 1
    with engine.connect() as conn:
        rows = read_tenant_rows(conn)
        (run,) = records.list_runs(conn, rows["acme"])
        full = records.read_run(conn, rows["acme"], run.id)
        assert records.list_runs(conn, rows["globex"]) == []
    assert (run.trigger, run.status, run.selection) == ("schedule", "success", ("orders+",))
    assert {n.node for n in full.nodes} == {"acme.pipeline.orders", "acme.pipeline.items"}
    names = [e for e, _ in events]
    assert names[0] == "started" and names[-1] == "stopped"
    assert (
        "fired",
        {"tenant": "acme", "schedule": "hourly", "fire_at": utc("2026-01-01 10:00"), "run": run.id},
    ) in events
    assert (
        "run_finished",
        {"tenant": "acme", "schedule": "hourly", "run": run.id, "status": "success"},
    ) in events


def test_a_pending_run_starts_once_whoever_tries(applied):
    _, _, engine = applied
    due(engine, "acme", utc("2026-01-01 10:00"))
    with engine.connect() as conn:
        from fabric.state.schedules import tick

        (fired,) = tick(conn, utc("2026-01-01 10:00:01"), who="t").fired
    with engine.connect() as a, engine.connect() as b:
        tenant = read_tenant_rows(a, ["acme"])["acme"]
        start = records.LocalStart(frozenset())
        kw = {"trigger": "schedule", "selection": (), "run_id": fired.run_id}
        first = records.open_run(a, tenant, start, who="a", **kw)
        a.commit()
        second = records.open_run(b, tenant, start, who="b", **kw)
        records.release_run(a, tenant, fired.run_id)
    assert (first, second) == (records.OpenedRun(fired.run_id, "running"), None)


def test_a_selection_matching_nothing_now_fails_the_run_with_the_reason(applied):
    root, env, engine = applied
    due(engine, "acme", utc("2026-01-01 10:00"))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE fabric.schedule_clock SET spec = jsonb_set(spec, '{targets}', :t)"),
            {"t": json.dumps(["globex.pipeline.orders"])},
        )
    events: list[tuple[str, dict]] = []
    api.scheduler(
        root,
        stop=threading.Event(),
        log=lambda e, f: events.append((e, dict(f))),
        once=True,
        environ=env,
        execute=scripted,
        clock=lambda: utc("2026-01-01 10:00:01"),
    )
    with engine.connect() as conn:
        rows = read_tenant_rows(conn)
        (run,) = records.list_runs(conn, rows["acme"])
        assert records.list_runs(conn, rows["globex"]) == []
    assert run.status == "failed" and run.error.startswith("cannot start:")
    assert any(e == "run_failed" for e, _ in events)


def test_the_scheduler_command_defers_to_the_queue_logs_json_lines_and_stops_on_sigterm(applied):
    root, env, engine = applied
    due(engine, "acme", datetime.now(UTC))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fabric",
            "scheduler",
            "--executor",
            "queue",
            "--interval",
            "60",
            "--log-format",
            "json",
            "--repo",
            str(root),
        ],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(proc.stdout.readline())  # blocks until the loop has started
        assert first["event"] == "started" and first["interval"] == 60
        seen = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert [e["event"] for e in seen] == ["fired", "tick", "deferred"]
        assert seen[2]["tenant"] == "acme" and seen[2]["status"] == "running"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events == ["stopping", "stopped"]


def test_runs_left_pending_by_a_stopped_scheduler_are_adopted_by_the_next(applied):
    root, env, engine = applied
    due(engine, "acme", utc("2026-01-01 10:00"))
    with engine.connect() as conn:
        from fabric.state.schedules import tick

        (fired,) = tick(conn, utc("2026-01-01 10:00:01"), who="gone").fired
    with engine.begin() as conn:
        schema = read_tenant_rows(conn, ["acme"])["acme"].schema_name
        conn.execute(text(f"UPDATE \"{schema}\".runs SET created_at = now() - interval '1 hour'"))
    events: list[tuple[str, dict]] = []
    api.scheduler(
        root,
        stop=threading.Event(),
        log=lambda e, f: events.append((e, dict(f))),
        once=True,
        environ=env,
        execute=scripted,
    )
    with engine.connect() as conn:
        run = records.read_run(conn, read_tenant_rows(conn, ["acme"])["acme"], fired.run_id)
    assert run.status == "success"
    assert ("adopted", {"runs": 1}) in events


def test_a_failed_tick_is_logged_and_does_not_stop_the_scheduler(applied):
    from fabric.runner.scheduler import SchedulerOptions, run_scheduler

    _, _, engine = applied
    events: list[tuple[str, dict]] = []
    stop = threading.Event()

    def log(event: str, fields) -> None:
        events.append((event, dict(fields)))
        if event == "started":  # the database goes wrong under the running scheduler
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE fabric.schedule_clock RENAME TO clock_away"))
        if event == "tick_failed" and sum(e == "tick_failed" for e, _ in events) == 2:
            stop.set()

    try:
        fired = run_scheduler(
            engine, lambda runs: None, SchedulerOptions(interval=0.1), stop=stop, log=log
        )
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE fabric.clock_away RENAME TO schedule_clock"))
    failed = [f for e, f in events if e == "tick_failed"]
    assert fired == 0 and len(failed) == 2
    assert 'relation "fabric.schedule_clock" does not exist' in failed[0]["error"]
    assert [e for e, _ in events][-1] == "stopping"


def queue_jobs(engine) -> list[tuple[str, int, list[str]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT args FROM procrastinate_jobs WHERE task_name = 'fabric.nodes' ORDER BY id")
        ).scalars()
        return [(a["tenant"], a["run_id"], a["nodes"]) for a in rows]


def test_the_queue_executor_defers_a_fired_runs_roots_in_the_tick(applied):
    root, env, engine = applied
    due(engine, "acme", utc("2026-01-01 10:00"))
    events: list[tuple[str, dict]] = []
    fired = api.scheduler(
        root,
        stop=threading.Event(),
        log=lambda e, f: events.append((e, dict(f))),
        once=True,
        environ=env,
        executor="queue",
        clock=lambda: utc("2026-01-01 10:00:01"),
    )
    with engine.connect() as conn:
        (run,) = records.list_runs(conn, read_tenant_rows(conn, ["acme"])["acme"])
    assert fired == 1 and (run.trigger, run.status) == ("schedule", "running")
    assert queue_jobs(engine) == [("acme", run.id, ["acme.pipeline.orders"])]
    assert (
        "deferred",
        {"tenant": "acme", "schedule": "hourly", "run": run.id, "status": "running"},
    ) in events


def test_a_run_left_pending_is_adopted_once_by_the_next_tick_of_three_replicas(applied):
    root, env, engine = applied
    due(engine, "acme", utc("2026-01-01 10:00"))
    with engine.connect() as conn:
        from fabric.state.schedules import tick

        # The scheduler that fired it died before starting it.
        (fired,) = tick(conn, utc("2026-01-01 10:00:01"), who="gone").fired
    due(engine, "acme", utc("2099-01-01 00:00"))
    due(engine, "globex", utc("2099-01-01 00:00"))
    with engine.connect() as conn:
        tenant = read_tenant_rows(conn, ["acme"])["acme"]
        created = conn.execute(
            text(f'SELECT created_at FROM "{tenant.schema_name}".runs WHERE id = :id'),
            {"id": fired.run_id},
        ).scalar_one()
    events: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def replica(seconds_later: float) -> None:
        def log(event: str, fields) -> None:
            with lock:
                events.append((event, dict(fields)))

        api.scheduler(
            root,
            stop=threading.Event(),
            log=log,
            once=True,
            environ=env,
            executor="queue",
            clock=lambda: created + timedelta(seconds=seconds_later),
        )

    replica(30)  # young: a live scheduler may still be about to start it
    with engine.connect() as conn:
        assert records.read_run(conn, tenant, fired.run_id).status == "pending"
    threads = [threading.Thread(target=replica, args=(61,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with engine.connect() as conn:
        assert records.read_run(conn, tenant, fired.run_id).status == "running"
    assert queue_jobs(engine) == [("acme", fired.run_id, ["acme.pipeline.orders"])]
    assert sum(f["runs"] for e, f in events if e == "adopted") == 1
    assert [f["run"] for e, f in events if e == "deferred"] == [fired.run_id]


def test_the_scheduler_wakes_when_the_next_schedule_is_due_not_a_whole_interval_later(applied):
    from fabric.runner.scheduler import SchedulerOptions, run_scheduler

    _, _, engine = applied
    due(engine, "globex", utc("2099-01-01 00:00"))
    start, began = utc("2026-01-01 09:59:59.5"), time.monotonic()
    due(engine, "acme", utc("2026-01-01 10:00"))  # half a second after the first tick
    stop = threading.Event()
    events: list[str] = []

    def log(event: str, fields) -> None:
        events.append(event)
        if event == "fired":
            stop.set()

    options = SchedulerOptions(interval=3600, adopt_after=3600)
    thread = threading.Thread(
        target=run_scheduler,
        args=(engine, lambda runs: None, options),
        kwargs={
            "stop": stop,
            "log": log,
            "clock": lambda: start + timedelta(seconds=time.monotonic() - began),
        },
    )
    thread.start()
    thread.join(60)  # an hour-long interval: only the wake-up at the due time can fire it
    stop.set()
    thread.join()
    assert "fired" in events
