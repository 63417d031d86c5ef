"""The local executor with real worker processes, on test-only noop nodes (no database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from fabric.addresses import Address
from fabric.graph.dag import Dag
from fabric.runner.local import LocalExecutor, RetryPolicy
from fabric.runner.nodes import NodeSpec, NodeStatus


def addr(name: str) -> Address:
    return Address.parse(f"acme.pipeline.{name}")


def specs_for(**noop_params):
    return {
        addr(name): NodeSpec(address=addr(name), kind="noop", spec={"noop": params})
        for name, params in noop_params.items()
    }


def run(dag, specs, policies=None, workers=2):
    events = []
    with LocalExecutor(workers) as executor:
        outcome = executor.run(dag, specs, policies or {}, events.append)
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


def test_independent_nodes_run_in_parallel():
    names = [addr(f"n{i}") for i in range(4)]
    dag = Dag.build(names, [])
    specs = specs_for(**{a.name: {"sleep": 0.6} for a in names})
    with LocalExecutor(4) as executor:  # warm the pool first: process start is not the point
        executor.run(Dag.build([names[0]], []), specs, {}, lambda e: None)
        start = time.monotonic()
        outcome = executor.run(dag, specs, {}, lambda e: None)
        elapsed = time.monotonic() - start
    assert set(outcome.status.values()) == {NodeStatus.SUCCESS}
    assert elapsed < 4 * 0.6  # sequential would take 2.4 s


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
        specs_for(broken={"fail": True}),
        {a: RetryPolicy(retries=1, backoff_seconds=0.01)},
    )
    assert outcome.status[a] is NodeStatus.FAILED and outcome.attempts[a] == 2


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
    from fabric.addresses import Address
    from fabric.graph.dag import Dag
    from fabric.runner.local import LocalExecutor
    from fabric.runner.nodes import NodeSpec

    nodes = [Address.parse(f"acme.pipeline.n{i}") for i in range(3)]
    specs = {a: NodeSpec(address=a, kind="noop", spec={"noop": {"sleep": 60}}) for a in nodes}
    def show(event):
        print(event.kind, event.address, flush=True)
    with LocalExecutor(3) as ex:
        outcome = ex.run(Dag.build(nodes, []), specs, {}, show)
    states = sorted(s.value for s in outcome.status.values())
    print("cancelled" if outcome.cancelled else "done", states, flush=True)
    """
)


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
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
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
    with LocalExecutor(4) as executor:
        outcome = executor.run(
            dag,
            specs_for(a={}, b={}, c={}, d={}),
            {},
            lambda e: None,
            batch_key=lambda spec: "together" if spec.address.name in "abc" else None,
        )
    pids = {n: outcome.results[n].log_tail for n in (a, b, c)}
    assert len(set(pids.values())) == 1  # one dispatch, one worker
    assert outcome.status[d] is NodeStatus.SUCCESS
