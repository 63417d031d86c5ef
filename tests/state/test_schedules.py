"""The schedule clock and the tick on a real control plane, with an injected clock.

Schedules are applied from YAML as usual; a test then moves a schedule's `next_fire_at` (as
time passing would) and ticks at a `now` it chooses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from fabric import api
from fabric.apply import ApplyOptions
from fabric.plan.safety import SafetyOptions
from fabric.state import schedules
from fabric.state.engine import make_engine
from fabric.state.snapshot import read_tenant_rows

TENANT = """
    tenant: {{display_name: {slug}, warehouse: dwh}}
    connections:
      dwh: {{type: postgres, direction: destination, host: h, database: {slug}}}
      src: {{type: postgres, direction: source, host: h, database: s}}
    pipelines:
      orders: {{source: src, dataset: raw, mode: single_table, table: o, tags: [nightly]}}
      items: {{source: src, dataset: raw, mode: single_table, table: i, depends_on: [orders]}}
    """


def utc(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


class ControlPlane:
    """A repository of tenants with schedules, applied to a fresh control-plane database."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.engine = make_engine(env["FABRIC_DATABASE_URL"])

    def write(self, slug: str, schedules_yaml: str = "") -> None:
        path = self.root / "tenants" / slug
        path.mkdir(parents=True, exist_ok=True)
        (path / "tenant.yaml").write_text(textwrap.dedent(TENANT.format(slug=slug)))
        (path / "schedules.yaml").write_text(textwrap.dedent(schedules_yaml))

    def apply(self) -> None:
        plan = api.plan(self.root, environ=self.env).plan
        options = ApplyOptions(safety=SafetyOptions(allow_delete=True, max_deletes=10_000))
        api.apply(plan, repo=self.root, environ=self.env, options=options)

    def clock(self) -> dict[tuple[str, str], schedules.ClockEntry]:
        with self.engine.connect() as conn:
            rows = read_tenant_rows(conn)
            return {
                (slug, e.name): e
                for slug, row in rows.items()
                for e in schedules.read_clock(conn, row)
            }

    def set_next(self, name: str, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE fabric.schedule_clock SET next_fire_at = :at WHERE name = :n"),
                {"at": at, "n": name},
            )

    def tick(self, now: datetime, **kw) -> schedules.TickResult:
        with self.engine.connect() as conn:
            return schedules.tick(conn, now, who="test", **kw)

    def fires(self, slug: str = "acme", schedule: str | None = None):
        with self.engine.connect() as conn:
            row = read_tenant_rows(conn, [slug])[slug]
            return [(f[1], f[2], f[4]) for f in schedules.read_fires(conn, row, schedule)]

    def runs(self, slug: str = "acme"):
        with self.engine.connect() as conn:
            schema = read_tenant_rows(conn, [slug])[slug].schema_name
            return list(
                conn.execute(
                    text(
                        f"SELECT id, trigger, status, schedule_name, fire_at, selection "
                        f'FROM "{schema}".runs ORDER BY fire_at, schedule_name'
                    )
                )
            )


@pytest.fixture
def plane(tmp_path, make_database):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "fabric.yaml").write_text("format_version: 1\n")
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp_path / "home"),
        "PATH": os.environ.get("PATH", ""),
    }
    cp = ControlPlane(root, env)
    yield cp
    cp.engine.dispose()


def test_apply_enters_schedules_with_next_fire_in_their_timezone(plane):
    plane.write(
        "acme",
        """
        schedules:
          nightly: {cron: "30 2 * * *", timezone: Europe/Berlin, targets: [orders]}
          paused: {cron: "0 * * * *", targets: [orders], active: false}
        """,
    )
    before = datetime.now(UTC)
    plane.apply()
    clock = plane.clock()
    nightly = clock[("acme", "nightly")]
    assert nightly.active and nightly.last_fire_at is None
    assert nightly.next_fire_at > before
    local = nightly.next_fire_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) in {(2, 30), (3, 0)}  # 03:00 only on a spring-forward day
    assert clock[("acme", "paused")].active is False


def test_a_changed_cron_takes_effect_at_the_next_tick_and_a_targets_change_keeps_the_due_time(
    plane,
):
    plane.write("acme", "schedules:\n  s: {cron: '0 3 * * *', timezone: UTC, targets: [orders]}\n")
    plane.apply()
    due = utc("2026-01-01 03:00")
    plane.set_next("s", due)
    plane.write("acme", "schedules:\n  s: {cron: '0 3 * * *', timezone: UTC, targets: [items]}\n")
    plane.apply()
    assert plane.clock()[("acme", "s")].next_fire_at == due  # same cron: still due
    plane.write("acme", "schedules:\n  s: {cron: '0 4 * * *', timezone: UTC, targets: [items]}\n")
    plane.apply()
    entry = plane.clock()[("acme", "s")]
    assert entry.next_fire_at > datetime.now(UTC) and entry.next_fire_at.hour == 4
    assert entry.spec["targets"] == ["items"]


def test_a_paused_schedule_is_not_fired_and_a_deleted_one_leaves_the_clock(plane):
    plane.write("acme", "schedules:\n  s: {cron: '0 * * * *', targets: [orders]}\n")
    plane.apply()
    plane.set_next("s", utc("2026-01-01 10:00"))
    plane.write("acme", "schedules:\n  s: {cron: '0 * * * *', targets: [orders], active: false}\n")
    plane.apply()
    assert plane.tick(utc("2026-01-01 10:00:01")).claimed == 0
    plane.write("acme", "")
    plane.apply()
    assert plane.clock() == {}


def test_a_tick_fires_once_records_the_fire_and_advances_next_fire(plane):
    plane.write("acme", "schedules:\n  s: {cron: '0 * * * *', timezone: UTC, targets: [orders+]}\n")
    plane.apply()
    plane.set_next("s", utc("2026-01-01 10:00"))
    result = plane.tick(utc("2026-01-01 10:00:02"))
    assert [(r.tenant, r.schedule, r.fire_at) for r in result.fired] == [
        ("acme", "s", utc("2026-01-01 10:00"))
    ]
    (run,) = plane.runs()
    assert (run.trigger, run.status, run.selection) == ("schedule", "pending", ["orders+"])
    assert run.id == result.fired[0].run_id
    assert plane.fires() == [(utc("2026-01-01 10:00"), "fired", None)]
    entry = plane.clock()[("acme", "s")]
    assert entry.next_fire_at == utc("2026-01-01 11:00")
    assert entry.last_fire_at == utc("2026-01-01 10:00")
    assert plane.tick(utc("2026-01-01 10:00:03")).claimed == 0  # nothing is due any more


def test_coalesce_catchup_misfire_and_max_instances_are_recorded_with_reasons(plane):
    plane.write(
        "acme",
        """
        schedules:
          coalesce: {cron: "0 * * * *", timezone: UTC, targets: [orders],
                     misfire_grace_seconds: 21600}
          catchup: {cron: "0 * * * *", timezone: UTC, targets: [orders], catchup: true,
                    max_instances: 10, misfire_grace_seconds: 21600}
          late: {cron: "0 * * * *", timezone: UTC, targets: [orders], misfire_grace_seconds: 60}
          busy: {cron: "0 * * * *", timezone: UTC, targets: [orders], max_instances: 1}
        """,
    )
    plane.apply()
    plane.set_next("busy", utc("2026-01-01 09:00"))
    (first,) = plane.tick(utc("2026-01-01 09:00:01")).fired  # the others are not due yet
    assert first.schedule == "busy"
    # busy's 09:00 run is still pending (nobody runs it) when its 10:00 comes due.
    plane.set_next("coalesce", utc("2026-01-01 07:00"))
    plane.set_next("catchup", utc("2026-01-01 07:00"))
    plane.set_next("late", utc("2026-01-01 10:00"))
    plane.tick(utc("2026-01-01 10:05"), catchup_cap=2)

    def outcomes(name):
        return [(at.hour, outcome) for at, outcome, _ in plane.fires(schedule=name)]

    assert outcomes("coalesce") == [(7, "missed"), (8, "missed"), (9, "missed"), (10, "fired")]
    assert outcomes("catchup") == [(7, "missed"), (8, "missed"), (9, "fired"), (10, "fired")]
    assert outcomes("late") == [(10, "missed")]
    assert outcomes("busy") == [(9, "fired"), (10, "skipped")]
    reasons = {name: plane.fires(schedule=name)[-1][2] for name in ("late", "busy")}
    assert plane.fires(schedule="coalesce")[0][2].startswith("coalesced: catchup is false")
    assert plane.fires(schedule="catchup")[0][2].startswith("catch-up cap")
    assert reasons["late"].startswith("misfire: 300 s late")
    assert reasons["busy"] == "max_instances: 1 run(s) of this schedule active"


def test_three_queue_schedulers_over_200_due_schedules_create_200_runs_and_200_root_jobs(plane):
    """Each tick claims, creates the runs and defers their roots in one transaction (the
    queue executor's dispatch): 200 runs, each with exactly one job, whoever fired it."""
    for t in range(4):
        path = plane.root / "tenants" / f"t{t}"
        path.mkdir(parents=True)
        (path / "tenant.yaml").write_text(
            textwrap.dedent(TENANT.format(slug=f"t{t}")).split("pipelines:")[0]
            + "pipelines:\n"
            + "".join(
                f"  p{i:03}: {{source: src, dataset: raw, mode: single_table, table: t{i}}}\n"
                for i in range(50)
            )
            + "schedules:\n"
            + "".join(
                f"  s{i:03}: {{cron: '*/5 * * * *', timezone: UTC, targets: [p{i:03}]}}\n"
                for i in range(50)
            )
        )
    plane.apply()
    due = utc("2026-01-01 10:00")
    with plane.engine.begin() as conn:
        conn.execute(text("UPDATE fabric.schedule_clock SET next_fire_at = :at"), {"at": due})
    script = textwrap.dedent(
        """
        import sys
        from datetime import datetime
        from fabric.runner.scheduler import QueueDispatch
        from fabric.state.engine import make_engine
        from fabric.state.schedules import tick
        engine = make_engine(sys.argv[1])
        now = datetime.fromisoformat(sys.argv[2])
        events = []
        queue = QueueDispatch(who=sys.argv[3], if_active="refuse", queue=None,
                              log=lambda e, f: events.append(e))
        start = queue.in_tick
        fired = 0
        with engine.connect() as conn:
            while (result := tick(conn, now, who=sys.argv[3], batch=7, start=start)).claimed:
                queue(result.fired)
                fired += len(result.fired)
        assert set(events) <= {"deferred"}, events
        print(fired)
        """
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                plane.env["FABRIC_DATABASE_URL"],
                "2026-01-01T10:00:30+00:00",
                f"p{i}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    counts = [int(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(counts) == 200
    runs = [r for t in range(4) for r in plane.runs(f"t{t}")]
    assert len(runs) == 200
    assert {r.status for r in runs} == {"running"}
    assert len({(r.schedule_name, r.fire_at) for r in plane.runs("t0")}) == 50
    assert all(r.fire_at == due for r in runs)
    assert all(e.next_fire_at == utc("2026-01-01 10:05") for e in plane.clock().values())
    with plane.engine.connect() as conn:
        jobs = conn.execute(
            text("SELECT args->>'tenant', args->>'run_id', args->'nodes' FROM procrastinate_jobs")
        ).all()
    assert len(jobs) == 200
    assert len({(tenant, run) for tenant, run, _ in jobs}) == 200
    assert {json.dumps(nodes) for tenant, _, nodes in jobs if tenant == "t0"} == {
        json.dumps([f"t0.pipeline.p{i:03}"]) for i in range(50)
    }


def test_no_tick_fires_a_schedule_that_an_apply_in_progress_is_deleting(plane):
    plane.write("acme", "schedules:\n  s: {cron: '0 * * * *', timezone: UTC, targets: [orders]}\n")
    plane.apply()
    plane.set_next("s", utc("2026-01-01 10:00"))
    with plane.engine.connect() as applying, applying.begin():
        tenants = read_tenant_rows(applying, ["acme"])
        schedules.sync_clock(applying, tenants, [], [("acme", "s")], utc("2026-01-01 09:00"))
        # The apply has not committed: the tick must not fire what it is deleting.
        assert plane.tick(utc("2026-01-01 10:00:01")).claimed == 0
    assert plane.runs() == [] and plane.clock() == {}


def test_an_apply_deleting_a_schedule_waits_for_the_tick_holding_it(plane):
    plane.write("acme", "schedules:\n  s: {cron: '0 * * * *', timezone: UTC, targets: [orders]}\n")
    plane.apply()
    plane.set_next("s", utc("2026-01-01 10:00"))
    with plane.engine.connect() as ticking, plane.engine.connect() as applying, ticking.begin():
        (claimed,) = schedules.claim_due_schedules(ticking, utc("2026-01-01 10:00:01"), 10)
        with pytest.raises(OperationalError, match="lock timeout"), applying.begin():
            applying.execute(text("SET LOCAL lock_timeout = '200ms'"))
            tenants = read_tenant_rows(applying, ["acme"])
            schedules.sync_clock(applying, tenants, [], [("acme", "s")], utc("2026-01-01"))
    assert claimed.name == "s"


def test_a_schedule_fires_only_its_own_tenants_selection(plane):
    plane.write("acme", "schedules:\n  s: {cron: '0 * * * *', timezone: UTC, targets: [orders]}\n")
    plane.write("globex", "")
    plane.apply()
    with plane.engine.begin() as conn:
        # A tampered clock row naming another tenant's node: the run stays in acme's schema.
        conn.execute(
            text(
                "UPDATE fabric.schedule_clock SET next_fire_at = :at, "
                "spec = jsonb_set(spec, '{targets}', '[\"globex.pipeline.orders\"]')"
            ),
            {"at": utc("2026-01-01 10:00")},
        )
    (fired,) = plane.tick(utc("2026-01-01 10:00:01")).fired
    assert fired.tenant == "acme" and plane.runs("globex") == []


def test_a_schedule_cannot_name_another_tenants_node_in_yaml(plane):
    plane.write("globex", "")
    plane.write("acme", "schedules:\n  s: {cron: '0 * * * *', targets: [globex.pipeline.orders]}\n")
    result = api.validate(plane.root)
    assert not result.ok
    (diag,) = [d for d in result.load.diagnostics if d.code == "bad-selector"]
    assert "acme.schedule.s" in diag.detail and "'globex.pipeline.orders'" in diag.detail


def test_schedules_applied_before_the_clock_existed_are_entered_by_the_scheduler(plane):
    plane.write("acme", "schedules:\n  s: {cron: '0 4 * * *', timezone: UTC, targets: [orders]}\n")
    plane.apply()
    with plane.engine.begin() as conn:
        conn.execute(text("DELETE FROM fabric.schedule_clock"))
        assert schedules.enter_missing(conn, utc("2026-01-01 10:00")) == 1
        assert schedules.enter_missing(conn, utc("2026-01-01 10:00")) == 0
    assert plane.clock()[("acme", "s")].next_fire_at == utc("2026-01-02 04:00")


def test_deleting_a_tenant_removes_its_schedules_from_the_clock(plane):
    plane.write("acme", "schedules:\n  s: {cron: '0 * * * *', targets: [orders]}\n")
    plane.write("globex", "schedules:\n  s: {cron: '0 * * * *', targets: [orders]}\n")
    plane.apply()
    shutil.rmtree(plane.root / "tenants" / "globex")
    plan = api.plan(plane.root, environ=plane.env).plan
    safety = SafetyOptions(
        allow_delete=True, max_deletes=10_000, allow_delete_tenants=frozenset({"globex"})
    )
    api.apply(plan, repo=plane.root, environ=plane.env, options=ApplyOptions(safety=safety))
    assert set(plane.clock()) == {("acme", "s")}
