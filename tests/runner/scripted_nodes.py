"""Node functions tests hand to the executor in place of fabric's dlt/dbt ones.

A node's stored spec carries a `script` block saying what to do: `sleep` seconds, `crash`
(SIGKILL its own worker), `barrier: {dir, parties}` (wait until `parties` nodes have reached
the barrier; fails if they never do, i.e. if they did not run at the same time), `record`
(append "address attempt pid" to a file), `block_until` (wait for a file to exist, on the first
`block_attempts` attempts; `then_succeed_as` gives the log tail it then succeeds with), `fail`
(a terminal failure), `fail_attempts: n` (a transient failure on the first n attempts),
`report_environment` (the log tail is the worker's environment, as Python and as
/proc/self/environ show it, in JSON). Module-level functions, so worker processes import them
by name.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from fabric.domain.runs import FailureKind, NodeResult, NodeSpec


def scripted(node: NodeSpec) -> NodeResult:
    script = node.spec.get("script") or {}
    if script.get("record"):  # one line per execution, for "ran exactly once" checks
        with open(script["record"], "a") as handle:
            handle.write(f"{node.address} {node.attempt} {os.getpid()}\n")
    if script.get("block_until") and node.attempt <= int(script.get("block_attempts", 1)):
        # a node that is busy until the test releases it (a file appears)
        while not os.path.exists(script["block_until"]):
            time.sleep(0.02)
        if script.get("then_succeed_as"):
            return NodeResult.succeeded(node.address, log_tail=script["then_succeed_as"])
    if script.get("sleep"):
        time.sleep(float(script["sleep"]))
    if barrier := script.get("barrier"):
        folder = Path(barrier["dir"])
        (folder / str(node.address)).touch()
        deadline = time.monotonic() + 60
        while len(list(folder.iterdir())) < int(barrier["parties"]):
            if time.monotonic() > deadline:
                return NodeResult.failed(node.address, "the other nodes never reached the barrier")
            time.sleep(0.01)
    if script.get("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    if script.get("fail"):
        return NodeResult.failed(node.address, f"scripted failure on attempt {node.attempt}")
    if node.attempt <= int(script.get("fail_attempts", 0)):
        return NodeResult.failed(
            node.address, f"scripted hiccup on attempt {node.attempt}", FailureKind.TRANSIENT
        )
    if script.get("report_environment"):
        with open("/proc/self/environ", "rb") as handle:
            proc = handle.read().decode(errors="replace").split("\0")
        report = {"environ": dict(os.environ), "proc": proc, "pid": os.getpid()}
        return NodeResult.succeeded(node.address, log_tail=json.dumps(report))
    return NodeResult.succeeded(
        node.address, rows_loaded={"rows": 1}, log_tail=f"pid {os.getpid()}"
    )


def scripted_batch(nodes: list[NodeSpec]) -> list[NodeResult]:
    return [scripted(n) for n in nodes]


def with_resolved(node: NodeSpec, box, environ=None) -> NodeSpec:
    """`node` with its StoredConnections resolved, as the runner does before a worker gets it
    (tests of the node functions build specs from stored connections)."""
    from dataclasses import replace

    from fabric.domain.runs import StoredConnection
    from fabric.runner.credentials import resolve_connection

    connections = {
        name: resolve_connection(c, box, environ or {}) if isinstance(c, StoredConnection) else c
        for name, c in node.connections.items()
    }
    return replace(node, connections=connections)
