"""The queue executor end to end: real `fabric worker` processes on a real control plane.

Nodes are the tests' scripted ones (scripted_nodes.py): the applied pipelines get a `script`
block that says what the node does (record its execution in a file, block until a file
appears, fail). Workers are started as processes of their own and always stopped by the
fixture. Nothing waits with a fixed sleep: tests poll the database or a worker's log.
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
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from fabric import api
from fabric.apply import ApplyOptions
from fabric.domain.runs import RunStatus
from fabric.errors import FabricError
from fabric.state.engine import make_engine
from fabric.state.queue import RunConflictError
from fabric.state.snapshot import read_tenant_rows

HERE = Path(__file__).parent
TIMEOUT = 90.0

REPO = {
    "fabric.yaml": "format_version: 1\n",
    "tenants/acme/tenant.yaml": """
        tenant: {display_name: Acme, warehouse: dwh}
        connections:
          dwh: {type: postgres, direction: destination, host: h, database: d}
          src: {type: postgres, direction: source, host: h, database: s}
        pipelines:
          a: {source: src, dataset: raw, mode: single_table, table: a}
          b: {source: src, dataset: raw, mode: single_table, table: b, depends_on: [a]}
          c: {source: src, dataset: raw, mode: single_table, table: c, depends_on: [a]}
          d: {source: src, dataset: raw, mode: single_table, table: d, depends_on: [b, c]}
          e: {source: src, dataset: raw, mode: single_table, table: e}
          f: {source: src, dataset: raw, mode: single_table, table: f, retries: 1}
        """,
    "tenants/globex/tenant.yaml": """
        tenant: {display_name: Globex, warehouse: dwh}
        connections:
          dwh: {type: postgres, direction: destination, host: h, database: d, username: g,
                password: "${secret:dwh_password}"}
          src: {type: postgres, direction: source, host: h, database: s}
        pipelines:
          g: {source: src, dataset: graw, mode: single_table, table: g}
        """,
}


class Control:
    def __init__(self, root: Path, env: dict[str, str], tmp: Path) -> None:
        self.root, self.env, self.tmp = root, env, tmp
        self.engine = make_engine(env["FABRIC_DATABASE_URL"])
        with self.engine.connect() as conn:
            self.tenants = read_tenant_rows(conn, ["acme", "globex"])
        self.tenant = self.tenants["acme"]
        self.record = tmp / "executions.txt"

    def script(self, name: str, tenant: str = "acme", **params) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE {self.tenants[tenant].schema_name}.pipelines SET spec = "
                    "spec - 'script' || "
                    "CAST(:p AS jsonb) WHERE name = :n"
                ),
                {"p": json.dumps({"script": params}), "n": name},
            )

    def executions(self) -> list[str]:
        if not self.record.exists():
            return []
        return [line.split()[0] for line in self.record.read_text().splitlines()]

    def node(self, run_id: int, name: str):
        with self.engine.connect() as conn:
            return conn.execute(
                text(
                    f"SELECT * FROM {self.tenant.schema_name}.node_runs WHERE run_id = :r "
                    "AND node = :n"
                ),
                {"r": run_id, "n": f"acme.pipeline.{name}"},
            ).one()

    def run_status(self, run_id: int) -> str:
        with self.engine.connect() as conn:
            return conn.execute(
                text(f"SELECT status FROM {self.tenant.schema_name}.runs WHERE id = :id"),
                {"id": run_id},
            ).scalar_one()

    def until(self, what, condition, timeout: float = TIMEOUT):
        """Poll `condition` until it returns something truthy; fail naming `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def control(tmp_path, make_database):
    root = tmp_path / "repo"
    for rel, body in REPO.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(body))
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp_path / "home"),
        "PATH": os.environ.get("PATH", ""),
    }
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())
    api.set_secret(root, "globex", "dwh_password", "globex-warehouse-password", environ=env)
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())
    c = Control(root, env, tmp_path)
    for name in "abcdef":
        c.script(name, record=str(c.record))
    yield c
    c.engine.dispose()


class Worker:
    def __init__(self, control: Control, name: str, concurrency: int = 2) -> None:
        self.name = name
        self.log_path = control.tmp / f"{name}.log"
        env = {**control.env, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent.parent}"}
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "queue_worker_process.py"),
                str(control.root),
                name,
                str(concurrency),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def has(self, event: str, **fields) -> bool:
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            for e in self.events()
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@pytest.fixture
def workers(control):
    started: list[Worker] = []

    def start(name: str, concurrency: int = 2) -> Worker:
        worker = Worker(control, name, concurrency)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def queued(control: Control, *selectors: str, wait: bool = False, if_active="refuse"):
    return api.run(
        control.root,
        tenants=["acme"],
        selectors=selectors,
        environ=control.env,
        executor="queue",
        wait=wait,
        if_active=if_active,
    )


def test_a_dag_on_two_workers_runs_every_node_exactly_once(control, workers):
    workers("w1")
    workers("w2")
    result = queued(control, wait=True)
    assert result.status == {"acme": RunStatus.SUCCESS}, result.errors
    assert sorted(control.executions()) == [f"acme.pipeline.{n}" for n in "abcdef"]
    assert set(result.attempts.values()) == {1}

    def jobs():
        with control.engine.connect() as conn:
            return conn.execute(
                text("SELECT args->>'nodes', status FROM procrastinate_jobs ORDER BY id")
            ).all()

    # the run ends when the last node's result is recorded; its job is marked a moment later
    control.until("every job finished", lambda: all(s != "doing" for _, s in jobs()))
    done = jobs()
    assert len(done) == 6 and {s for _, s in done} == {"succeeded"}


def test_without_wait_the_run_id_comes_back_and_workers_finish_it(control, workers):
    result = queued(control, "e")
    run_id = result.runs["acme"]
    assert result.status == {"acme": RunStatus.RUNNING}
    workers("w1")
    control.until("the run to succeed", lambda: control.run_status(run_id) == "success")


def test_a_killed_worker_is_lost_and_its_node_retried_on_the_other(control, workers):
    release = control.tmp / "never"
    control.script("f", record=str(control.record), block_until=str(release))
    w1 = workers("w1", concurrency=1)
    run_id = queued(control, "f").runs["acme"]
    control.until("w1 to run f", lambda: control.node(run_id, "f").worker == "w1")
    control.until("f to start", lambda: control.executions() == ["acme.pipeline.f"])
    os.killpg(w1.process.pid, signal.SIGKILL)
    w1.process.wait()
    w2 = workers("w2", concurrency=1)
    control.until("the run to end", lambda: control.run_status(run_id) != "running")
    node = control.node(run_id, "f")
    assert control.run_status(run_id) == "success"
    assert (node.status, node.attempts, node.worker) == ("success", 2, "w2")
    assert w2.has("worker_lost", node="acme.pipeline.f")


def test_a_lost_node_without_retries_fails_worker_lost(control, workers):
    control.script("e", record=str(control.record), block_until=str(control.tmp / "never"))
    w1 = workers("w1", concurrency=1)
    run_id = queued(control, "e").runs["acme"]
    control.until("e to start", lambda: control.executions() == ["acme.pipeline.e"])
    os.killpg(w1.process.pid, signal.SIGKILL)
    w1.process.wait()
    workers("w2", concurrency=1)
    control.until("the run to end", lambda: control.run_status(run_id) != "running")
    node = control.node(run_id, "e")
    assert control.run_status(run_id) == "failed"
    assert (node.status, node.failure, node.attempts) == ("failed", "worker_lost", 1)


def test_a_paused_worker_that_comes_back_cannot_overwrite_the_result(control, workers):
    release = control.tmp / "release"
    control.script(
        "f",
        record=str(control.record),
        block_until=str(release),
        then_succeed_as="late write of attempt 1",
    )
    w1 = workers("w1", concurrency=1)
    run_id = queued(control, "f").runs["acme"]
    control.until("f to start on w1", lambda: control.executions() == ["acme.pipeline.f"])
    w1.process.send_signal(signal.SIGSTOP)  # the worker only: its node process goes on
    try:
        w2 = workers("w2", concurrency=1)
        control.until("the retry to succeed", lambda: control.run_status(run_id) == "success")
        assert w2.has("worker_lost", node="acme.pipeline.f")
        release.touch()  # attempt 1 now finishes, and its worker wakes up
    finally:
        w1.process.send_signal(signal.SIGCONT)
    control.until("w1's late write", lambda: w1.has("late_write_ignored", node="acme.pipeline.f"))
    node = control.node(run_id, "f")
    assert (node.status, node.attempts, node.worker) == ("success", 2, "w2")
    assert node.log_tail != "late write of attempt 1"
    assert control.run_status(run_id) == "success"


def test_one_active_run_per_pipeline_under_twenty_concurrent_local_and_queue_requests(control):
    """Ten `fabric run` requests on the local executor and ten on the queue, at once: one run
    is admitted, whichever executor; the 19 others are refused naming it."""
    from scripted_nodes import scripted

    from fabric.runner.driver import RunOptions, run_tenants
    from fabric.runner.warmup import start_worker_server

    release = control.tmp / "release"
    control.script("a", record=str(control.record), block_until=str(release))
    start_worker_server(control.env)  # once, here: it swaps the process environment
    local = RunOptions(
        selectors=("a",),
        workers=1,
        control_plane_url=control.env["FABRIC_DATABASE_URL"],
        workdir=control.tmp / "work",
        repo_root=control.root,
        environ=control.env,
        execute=scripted,
    )
    outcomes: list[object] = []
    gate = threading.Barrier(20)

    def request(executor: str) -> None:
        gate.wait()
        try:
            if executor == "local":  # returns when the run ends (after the release)
                outcomes.append(run_tenants(control.engine, ["acme"], local).runs["acme"])
            else:
                outcomes.append(queued(control, "a").runs["acme"])
        except RunConflictError as exc:
            outcomes.append(exc)

    threads = [
        threading.Thread(target=request, args=(["local", "queue"][i % 2],)) for i in range(20)
    ]
    for t in threads:
        t.start()
    control.until(
        "19 refusals", lambda: sum(isinstance(o, RunConflictError) for o in outcomes) >= 19
    )
    release.touch()
    for t in threads:
        t.join()
    created = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, RunConflictError)]
    assert len(created) == 1 and len(refused) == 19
    assert all(e.run_id == created[0] and f"Run {created[0]} of acme" in str(e) for e in refused)
    with control.engine.connect() as conn:
        count = conn.execute(text(f"SELECT count(*) FROM {control.tenant.schema_name}.runs"))
        assert count.scalar_one() == 1
    if control.run_status(created[0]) == "running":  # the queue's run won: nobody works it
        api.cancel_run(control.root, "acme", created[0], environ=control.env)

    # `--if-active wait` on both sides: a queue run waits `queued` behind a local run and
    # starts when it ends; a local runner waits behind a queue run and runs when it ends.
    release.unlink()
    ran = control.executions().count("acme.pipeline.a") + 1  # with the next local run
    behind_local: list[object] = []
    first = threading.Thread(
        target=lambda: behind_local.append(run_tenants(control.engine, ["acme"], local))
    )
    first.start()
    control.until("the local run", lambda: control.executions().count("acme.pipeline.a") == ran)
    waiting = queued(control, "a", if_active="wait")
    assert waiting.status == {"acme": RunStatus.QUEUED}
    release.touch()
    first.join()
    queue_run = waiting.runs["acme"]
    control.until("its promotion", lambda: control.run_status(queue_run) == "running")
    patient = replace(local, if_active="wait", wait_poll=0.05)
    second: list[object] = []
    local_waiter = threading.Thread(
        target=lambda: second.append(run_tenants(control.engine, ["acme"], patient))
    )
    local_waiter.start()
    local_waiter.join(0.5)
    assert local_waiter.is_alive() and control.executions().count("acme.pipeline.a") == ran
    api.cancel_run(control.root, "acme", queue_run, environ=control.env)
    local_waiter.join(TIMEOUT)
    (result,) = second
    assert result.runs["acme"] > queue_run and result.status == {"acme": RunStatus.SUCCESS}


def test_a_second_request_may_wait_in_the_queue_and_starts_when_the_first_ends(control, workers):
    release = control.tmp / "release"
    control.script("a", record=str(control.record), block_until=str(release))
    first = queued(control, "a").runs["acme"]
    second = queued(control, "a", if_active="wait")
    assert second.status == {"acme": RunStatus.QUEUED}
    workers("w1")
    control.until("a to start", lambda: control.executions() == ["acme.pipeline.a"])
    assert control.run_status(second.runs["acme"]) == "queued"
    release.touch()
    control.until("both runs", lambda: control.run_status(second.runs["acme"]) == "success")
    assert control.run_status(first) == "success"
    assert control.executions() == ["acme.pipeline.a", "acme.pipeline.a"]


def test_cancel_stops_running_nodes_and_drops_queued_ones(control, workers):
    control.script("a", record=str(control.record), block_until=str(control.tmp / "never"))
    w1 = workers("w1")
    run_id = queued(control, "a+").runs["acme"]
    control.until("a to start", lambda: control.executions() == ["acme.pipeline.a"])
    cancelled = api.cancel_run(control.root, "acme", run_id, environ=control.env)
    assert cancelled == [f"acme.pipeline.{n}" for n in "abcd"]
    assert control.run_status(run_id) == "cancelled"
    control.until("the node's process stopped", lambda: w1.has("late_write_ignored"))
    assert {control.node(run_id, n).status for n in "abcd"} == {"cancelled"}
    assert control.executions() == ["acme.pipeline.a"]
    with pytest.raises(FabricError, match="nothing to cancel"):
        api.cancel_run(control.root, "acme", run_id, environ=control.env)


def test_retry_runs_the_failed_and_skipped_nodes_only(control, workers):
    control.script("b", record=str(control.record), fail=True)
    workers("w1")
    result = queued(control, "a+", wait=True)
    run_id = result.runs["acme"]
    assert result.status == {"acme": RunStatus.FAILED}
    assert {str(n): s.value for n, s in result.nodes.items()} == {
        "acme.pipeline.a": "success",
        "acme.pipeline.b": "failed",
        "acme.pipeline.c": "success",
        "acme.pipeline.d": "skipped",
    }
    control.script("b", record=str(control.record))
    again = api.retry_run(control.root, "acme", run_id, environ=control.env)
    assert again == ["acme.pipeline.b", "acme.pipeline.d"]
    control.until("the retried run", lambda: control.run_status(run_id) == "success")
    assert sorted(control.executions()) == sorted(
        [
            "acme.pipeline.a",
            "acme.pipeline.b",
            "acme.pipeline.c",
            "acme.pipeline.b",
            "acme.pipeline.d",
        ]
    )
    with pytest.raises(FabricError, match="no failed or skipped node"):
        api.retry_run(control.root, "acme", run_id, environ=control.env)


def test_workers_lists_each_worker_and_what_it_runs(control, workers):
    control.script("e", record=str(control.record), block_until=str(control.tmp / "go"))
    workers("w1")
    run_id = queued(control, "e").runs["acme"]
    control.until("e to start", lambda: control.executions() == ["acme.pipeline.e"])
    listed = api.list_workers(control.root, environ=control.env)
    busy = [w for w in listed if w.jobs]
    assert len(busy) == 1 and busy[0].last_heartbeat is not None
    assert busy[0].jobs[0]["run_id"] == run_id and busy[0].jobs[0]["nodes"] == ["acme.pipeline.e"]
    (control.tmp / "go").touch()
    control.until("the run", lambda: control.run_status(run_id) == "success")


def test_sigterm_finishes_the_running_node_then_stops(control, workers):
    release = control.tmp / "release"
    control.script("e", record=str(control.record), block_until=str(release))
    w1 = workers("w1", concurrency=1)
    run_id = queued(control, "e").runs["acme"]
    control.until("e to start", lambda: control.executions() == ["acme.pipeline.e"])
    w1.process.send_signal(signal.SIGTERM)
    assert w1.process.poll() is None  # still finishing its node
    release.touch()
    assert w1.process.wait(timeout=TIMEOUT) == 0
    assert control.run_status(run_id) == "success"
    events = [e["event"] for e in w1.events()]
    assert events.index("node_finished") < events.index("worker_stopped")


def test_jobs_carry_ids_only_and_tenants_never_share_a_node_process(control, workers):
    control.script("e", report_environment=True)
    control.script("g", tenant="globex", report_environment=True)
    workers("w1", concurrency=1)
    acme = queued(control, "e", wait=True)
    globex = api.run(
        control.root, tenants=["globex"], environ=control.env, executor="queue", wait=True
    )
    assert acme.ok and globex.ok
    with control.engine.connect() as conn:
        args = conn.execute(text("SELECT args FROM procrastinate_jobs ORDER BY id")).scalars()
        payloads = [json.dumps(a) for a in args]
        tails = {
            slug: conn.execute(
                text(f"SELECT log_tail FROM {row.schema_name}.node_runs ORDER BY id DESC")
            ).scalar()
            for slug, row in control.tenants.items()
        }
    assert all(set(json.loads(p)) == {"tenant", "run_id", "nodes"} for p in payloads)
    assert not any("password" in p or "postgresql" in p for p in payloads)
    reports = {slug: json.loads(tail) for slug, tail in tails.items()}
    assert reports["acme"]["pid"] != reports["globex"]["pid"]
    for report in reports.values():
        seen = json.dumps(report)
        assert "FABRIC_" not in seen and control.env["FABRIC_SECRET_KEYS"] not in seen
        assert control.env["FABRIC_DATABASE_URL"] not in seen
        assert "globex-warehouse-password" not in seen


def test_the_cli_defers_follows_cancels_retries_and_lists_workers(control, workers):
    from click.testing import CliRunner

    from fabric.cli.main import cli

    runner = CliRunner()

    def fabric(*args):
        return runner.invoke(cli, [*args, "--repo", str(control.root)], env=control.env)

    out = fabric("run", "e", "--tenant", "acme", "--executor", "queue")
    assert out.exit_code == 0, out.output
    assert "Run 1 of acme: running" in out.output
    out = fabric("workers")
    assert "No worker is running" in out.output
    workers("w1")
    control.script("b", record=str(control.record), fail=True)
    out = fabric("run", "a+", "--tenant", "acme", "--executor", "queue", "--wait")
    assert out.exit_code == 1, out.output
    assert "failed   acme.pipeline.b" in out.output and "Run 2 of acme: failed" in out.output
    control.script("b", record=str(control.record))
    out = fabric("runs", "retry", "2", "--tenant", "acme")
    assert out.exit_code == 0 and "acme.pipeline.b, acme.pipeline.d" in out.output
    control.until("the retried run", lambda: control.run_status(2) == "success")
    out = fabric("runs", "cancel", "2", "--tenant", "acme")
    assert out.exit_code == 1 and "Run 2 of acme is success: nothing to cancel" in out.output
    assert "Traceback" not in out.output
    out = fabric("workers")
    assert out.exit_code == 0 and "(idle)" in out.output


def test_max_parallel_nodes_caps_a_tenant_and_anothers_node_goes_past_its_backlog(control, workers):
    release = control.tmp / "release"
    for name in "aef":
        control.script(name, record=str(control.record), block_until=str(release))
    control.script("g", tenant="globex", record=str(control.record))
    with control.engine.begin() as conn:  # as `max_parallel_nodes: 1` in its tenant.yaml
        conn.execute(
            text(
                "UPDATE fabric.tenants SET spec = spec || '{\"max_parallel_nodes\": 1}' "
                "WHERE slug = 'acme'"
            )
        )
    backlog = queued(control, "a", "e", "f").runs["acme"]  # three roots, each busy until released
    workers("w1", concurrency=3)
    control.until("acme's first node", lambda: control.executions())
    other = api.run(
        control.root, tenants=["globex"], selectors=["g"], environ=control.env, executor="queue"
    )
    globex = control.tenants["globex"].schema_name
    with control.engine.connect() as conn:
        status = text(f"SELECT status FROM {globex}.runs WHERE id = :id")
        control.until(
            "globex's node, past acme's backlog",
            lambda: conn.execute(status, {"id": other.runs["globex"]}).scalar_one() == "success",
        )
    acme = [e for e in control.executions() if e.startswith("acme.")]
    assert len(acme) == 1  # two free slots on the worker, and acme's cap kept them from it
    release.touch()
    control.until("acme's backlog", lambda: control.run_status(backlog) == "success")
    assert sorted(e for e in control.executions() if e.startswith("acme.")) == [
        "acme.pipeline.a",
        "acme.pipeline.e",
        "acme.pipeline.f",
    ]
