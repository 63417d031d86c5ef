"""The local executor with real worker processes running scripted nodes (no database)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from scripted_nodes import scripted, scripted_batch

from fabric.addresses import Address
from fabric.domain.runs import FailureKind, NodeSpec, NodeStatus
from fabric.graph.dag import Dag
from fabric.runner.local import LocalExecutor, RetryPolicy


def addr(name: str) -> Address:
    return Address.parse(f"acme.pipeline.{name}")


def specs_for(**scripts):
    return {
        addr(name): NodeSpec(address=addr(name), kind="pipeline", spec={"script": params})
        for name, params in scripts.items()
    }


def executor(workers: int) -> LocalExecutor:
    return LocalExecutor(workers, execute=scripted, execute_batch=scripted_batch)


def run(dag, specs, policies=None, workers=2):
    events = []
    with executor(workers) as executor_:
        outcome = executor_.run(dag, specs, policies or {}, events.append)
    return outcome, events


def test_failed_node_skips_its_downstream_while_independent_branches_go_on():
    a, b, c, d = (addr(n) for n in "abcd")
    dag = Dag.build([a, b, c, d], [(a, b), (b, c)])
    outcome, _ = run(dag, specs_for(a={"fail": True}, b={}, c={}, d={}))
    assert outcome.status == {
        a: NodeStatus.FAILED,
        b: NodeStatus.SKIPPED,
        c: NodeStatus.SKIPPED,
        d: NodeStatus.SUCCESS,
    }


def test_independent_nodes_run_in_parallel(tmp_path):
    """Each node waits at a barrier until all four are running: run one after another, the
    first would wait for ever (and fail after a minute)."""
    names = [addr(f"n{i}") for i in range(4)]
    dag = Dag.build(names, [])
    barrier = {"dir": str(tmp_path), "parties": len(names)}
    specs = specs_for(**{a.name: {"barrier": barrier} for a in names})
    with executor(4) as ex:
        outcome = ex.run(dag, specs, {}, lambda e: None)
    assert set(outcome.status.values()) == {NodeStatus.SUCCESS}, outcome.results


def test_retries_recover_from_a_transient_failure():
    a = addr("flaky")
    dag = Dag.build([a], [])
    outcome, events = run(
        dag,
        specs_for(flaky={"fail_attempts": 2}),
        {a: RetryPolicy(retries=2, backoff_seconds=0.05)},
    )
    assert outcome.status[a] is NodeStatus.SUCCESS
    assert outcome.attempts[a] == 3
    assert [e.kind for e in events].count("retrying") == 2


def test_retries_give_up_after_the_limit():
    a = addr("broken")
    outcome, _ = run(
        Dag.build([a], []),
        specs_for(broken={"fail_attempts": 5}),
        {a: RetryPolicy(retries=1, backoff_seconds=0.01)},
    )
    assert outcome.status[a] is NodeStatus.FAILED and outcome.attempts[a] == 2
    assert outcome.results[a].failure is FailureKind.TRANSIENT


def test_a_terminal_failure_is_never_retried():
    """Regression: the executor retried every failure, a wrong password included."""
    a = addr("wrong_password")
    outcome, events = run(
        Dag.build([a], []),
        specs_for(wrong_password={"fail": True}),
        {a: RetryPolicy(retries=3, backoff_seconds=0.01)},
    )
    assert outcome.status[a] is NodeStatus.FAILED and outcome.attempts[a] == 1
    assert outcome.results[a].failure is FailureKind.TERMINAL
    assert "retrying" not in [e.kind for e in events]


def test_a_crash_is_retried_when_the_policy_allows():
    a = addr("crashy")
    outcome, events = run(
        Dag.build([a], []),
        specs_for(crashy={"crash": True}),
        {a: RetryPolicy(retries=1, backoff_seconds=0.01)},
    )
    assert outcome.attempts[a] == 2 and [e.kind for e in events].count("retrying") == 1
    assert outcome.results[a].failure is FailureKind.CRASHED


def test_node_times_are_the_workers_and_agree_with_the_duration():
    a = addr("timed")
    outcome, events = run(Dag.build([a], []), specs_for(timed={"sleep": 0.2}))
    result = outcome.results[a]
    queued = next(e.at for e in events if e.kind == "started")
    assert queued <= result.started_at < result.finished_at
    assert result.seconds == (result.finished_at - result.started_at).total_seconds() >= 0.2


def test_timeout_kills_the_node_and_the_pool_goes_on():
    slow, fast = addr("slow"), addr("fast")
    dag = Dag.build([slow, fast], [])
    outcome, _ = run(
        dag,
        specs_for(slow={"sleep": 30}, fast={}),
        {slow: RetryPolicy(timeout_seconds=0.5)},
    )
    assert outcome.status == {slow: NodeStatus.FAILED, fast: NodeStatus.SUCCESS}
    assert outcome.results[slow].error.startswith("timeout:")
    assert outcome.results[slow].failure is FailureKind.TIMEOUT


def test_a_crashing_worker_is_recorded_as_failed_and_the_run_goes_on():
    boom, after, other = addr("boom"), addr("after"), addr("other")
    dag = Dag.build([boom, after, other], [(boom, after)])
    outcome, _ = run(dag, specs_for(boom={"crash": True}, after={}, other={}))
    assert outcome.status[boom] is NodeStatus.FAILED
    assert "crashed" in outcome.results[boom].error and "signal 9" in outcome.results[boom].error
    assert outcome.status[after] is NodeStatus.SKIPPED
    assert outcome.status[other] is NodeStatus.SUCCESS


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, HERE)
    from fabric.addresses import Address
    from fabric.graph.dag import Dag
    from fabric.runner.local import LocalExecutor
    from fabric.domain.runs import NodeSpec
    from scripted_nodes import scripted, scripted_batch

    nodes = [Address.parse(f"acme.pipeline.n{i}") for i in range(3)]
    script = {"script": {"sleep": 60}}
    specs = {a: NodeSpec(address=a, kind="pipeline", spec=script) for a in nodes}
    def show(event):
        print(event.kind, event.address, flush=True)
    with LocalExecutor(3, execute=scripted, execute_batch=scripted_batch) as ex:
        outcome = ex.run(Dag.build(nodes, []), specs, {}, show)
    states = sorted(s.value for s in outcome.status.values())
    print("cancelled" if outcome.cancelled else "done", states, flush=True)
    """
).replace("HERE", repr(str(Path(__file__).parent)))


def test_ctrl_c_cancels_cleanly_without_orphan_processes():
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    started = 0
    while started < 3:
        line = proc.stdout.readline()
        assert line, "the runner exited early"
        started += line.startswith("started")
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, _ = proc.communicate(timeout=30)
    assert "cancelled ['cancelled', 'cancelled', 'cancelled']" in out
    _, alive = psutil.wait_procs(children, timeout=10)
    alive = [c for c in alive if c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"orphans: {alive}"


@pytest.mark.parametrize("workers", [1])
def test_one_worker_runs_a_chain_in_order(workers):
    a, b = addr("a"), addr("b")
    _, events = run(Dag.build([a, b], [(a, b)]), specs_for(a={}, b={}), workers=workers)
    started = [e.address for e in events if e.kind == "started"]
    assert started == [a, b]


def test_nodes_ready_together_with_one_batch_key_run_in_one_worker():
    a, b, c, d = (addr(n) for n in "abcd")
    dag = Dag.build([a, b, c, d], [(a, d)])
    with executor(4) as ex:
        outcome = ex.run(
            dag,
            specs_for(a={}, b={}, c={}, d={}),
            {},
            lambda e: None,
            batch_key=lambda spec: "together" if spec.address.name in "abc" else None,
        )
    pids = {n: outcome.results[n].log_tail for n in (a, b, c)}
    assert len(set(pids.values())) == 1  # one dispatch, one worker
    assert outcome.status[d] is NodeStatus.SUCCESS


def test_workers_die_with_a_runner_killed_by_sigkill():
    """Regression (issue 8): a runner killed with kill -9 left its workers running its nodes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    started = 0
    while started < 3:
        line = proc.stdout.readline()
        assert line, "the runner exited early"
        started += line.startswith("started")
    workers = [
        c for c in psutil.Process(proc.pid).children(recursive=True) if "forkserver" not in c.name()
    ]
    assert workers
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive


def test_workers_of_different_tenants_never_share_a_process():
    """Regression (issue 8): a warm worker that ran acme's node went on to run globex's, so
    whatever acme's code left in the process (modules, globals, files in HOME) reached globex.
    With one worker, each change of tenant stops the idle worker and starts a new one."""
    names = [f"{t}.pipeline.n{i}" for i in range(3) for t in ("acme", "globex")]
    nodes = [Address.parse(n) for n in names]
    specs = {a: NodeSpec(address=a, kind="pipeline", spec={"script": {}}) for a in nodes}
    for workers in (1, 2, 3):
        with executor(workers) as ex:
            outcome = ex.run(Dag.build(nodes, []), specs, {}, lambda e: None)
            alive = len(psutil.Process().children()) - 1  # the forkserver is a child too
        pids: dict[str, set[str]] = {"acme": set(), "globex": set()}
        for node, result in outcome.results.items():
            assert result.status is NodeStatus.SUCCESS
            pids[node.tenant].add(result.log_tail)
        assert pids["acme"] and pids["globex"]
        assert not pids["acme"] & pids["globex"], (workers, pids)
        assert alive <= workers


RUNNER_ENV = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, HERE)
    from pathlib import Path
    from fabric.addresses import Address
    from fabric.graph.dag import Dag
    from fabric.runner.local import LocalExecutor
    from fabric.domain.runs import NodeSpec
    from scripted_nodes import scripted, scripted_batch

    node = Address.parse("acme.pipeline.probe")
    script = {"script": {"report_environment": 1}}
    specs = {node: NodeSpec(address=node, kind="pipeline", spec=script)}
    with LocalExecutor(1, execute=scripted, execute_batch=scripted_batch, workdir=Path(WORK)) as ex:
        outcome = ex.run(Dag.build([node], []), specs, {}, lambda e: None)
    print(outcome.results[node].log_tail)
    """
)


def test_a_worker_sees_none_of_the_runners_settings(tmp_path):
    """Regression (issue 8): workers inherited the runner's whole environment, so a model's
    `env_var("FABRIC_SECRET_KEYS")` read the master keys. A worker's environment is built from
    scratch, and not even /proc/self/environ (inherited from the forkserver) holds a setting."""
    planted = {
        "FABRIC_SECRET_KEYS": "planted-fernet-key-material",
        "FABRIC_DATABASE_URL": "postgresql://root:planted-url-password@control/plane",
        "GLOBEX_API_TOKEN": "planted-other-tenant-token",
        "PGPASSWORD": "planted-libpq-password",
    }
    script = RUNNER_ENV.replace("HERE", repr(str(Path(__file__).parent)))
    script = script.replace("WORK", repr(str(tmp_path / "work")))
    env = {**os.environ, **planted, "LANG": "C.UTF-8", "TZ": "UTC"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    seen = json.dumps(report)
    for name, value in planted.items():
        assert name not in seen and value not in seen, name
    environ = report["environ"]
    assert not [k for k in environ if k.startswith("FABRIC_")]
    home = tmp_path / "work" / "acme" / "home"
    assert environ["HOME"] == str(home) and environ["TMPDIR"] == str(home / "tmp")
    assert environ["PATH"] == os.environ["PATH"]
    assert (environ["LANG"], environ["TZ"]) == ("C.UTF-8", "UTC")
    assert set(environ) <= {"PATH", "HOME", "TMPDIR", "LANG", "TZ", "LANGUAGE"} | {
        k for k in environ if k.startswith(("LC_", "SSL_CERT_"))
    }, environ


def test_one_batch_of_a_key_at_a_time_and_the_next_goes_to_the_same_warm_worker():
    """What becomes ready while a batch of its key runs waits for it (one dbt invocation per
    tenant at a time), then runs on the worker that ran that batch, although others are idle."""
    x, y, b1, b2 = addr("x"), addr("y"), addr("b1"), addr("b2")
    dag = Dag.build([x, y, b1, b2], [(x, b1), (y, b2)])
    specs = specs_for(x={"sleep": 0.05}, y={"sleep": 0.3}, b1={"sleep": 0.6}, b2={})
    events = []
    with executor(3) as ex:
        outcome = ex.run(
            dag,
            specs,
            {},
            events.append,
            batch_key=lambda spec: "dbt" if spec.address.name.startswith("b") else None,
        )
    assert set(outcome.status.values()) == {NodeStatus.SUCCESS}
    order = [(e.kind, e.address.name) for e in events if e.kind in ("started", "finished")]
    assert order.index(("started", "b2")) > order.index(("finished", "b1"))
    assert outcome.results[b1].log_tail == outcome.results[b2].log_tail  # the same pid
