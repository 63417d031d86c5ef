"""What runs inside a worker process: one node in, one NodeResult out.  [shell]

dlt and dbt keep process-global state, so nodes run in worker processes apart from the runner;
a crash of one node kills only its worker. Imports of dlt/dbt happen here, lazily.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from fabric.errors import FabricError
from fabric.runner.nodes import NodeResult, NodeSpec


def load_box(node: NodeSpec):  # -> SecretBox | None
    """The secret box from FABRIC_SECRET_KEYS or the embedded default's key file."""
    from fabric.settings import load_settings
    from fabric.state.secrets import load_secret_box

    needs = any(c.secrets for c in node.connections.values())
    if not needs:
        return None
    home = Path(node.secret_home) if node.secret_home else None
    return load_secret_box(load_settings(), home)


def execute(node: NodeSpec) -> NodeResult:
    """Run one node; never raises (a bug becomes a failed result with its traceback's tail)."""
    start = time.monotonic()
    try:
        result = _dispatch(node)
    except FabricError as exc:
        result = NodeResult.failed(node.address, str(exc))
    except Exception as exc:  # a bug: keep enough to find it, but never secrets
        tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result = NodeResult.failed(node.address, f"internal error: {tail}")
    if not result.duration_seconds:
        from dataclasses import replace

        result = replace(result, duration_seconds=time.monotonic() - start)
    return result


def execute_batch(nodes: list[NodeSpec]) -> list[NodeResult]:
    """Several transformation nodes of one tenant in one dbt invocation; never raises."""
    if any(n.kind != "transformation" for n in nodes):
        return [execute(n) for n in nodes]
    start = time.monotonic()
    try:
        try:
            from fabric.runner.dbt_node import run_transformation_nodes
        except ImportError:
            return [
                NodeResult.failed(
                    n.address, "transformations cannot run: dbt execution is not built"
                )
                for n in nodes
            ]
        results = run_transformation_nodes(nodes, load_box(nodes[0]))
    except FabricError as exc:
        results = [NodeResult.failed(n.address, str(exc)) for n in nodes]
    except Exception as exc:  # a bug: keep enough to find it, but never secrets
        tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        results = [NodeResult.failed(n.address, f"internal error: {tail}") for n in nodes]
    if len(nodes) == 1 and not results[0].duration_seconds:
        from dataclasses import replace

        results = [replace(results[0], duration_seconds=time.monotonic() - start)]
    return results


def _dispatch(node: NodeSpec) -> NodeResult:
    match node.kind:
        case "noop":
            return _noop(node)
        case "pipeline":
            from fabric.runner.dlt_node import run_pipeline_node

            return run_pipeline_node(node, load_box(node))
        case "transformation":
            return execute_batch([node])[0]
        case _:
            return NodeResult.failed(node.address, f"unknown node kind {node.kind!r}")


def _noop(node: NodeSpec) -> NodeResult:
    """A test-only node: sleeps `sleep` seconds, then fails if `fail` (or crashes if `crash`)."""
    import os
    import signal

    spec = node.spec.get("noop") or {}
    if spec.get("sleep"):
        time.sleep(float(spec["sleep"]))
    if spec.get("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    fail_until = int(spec.get("fail_attempts", 0))
    if spec.get("fail") or node.attempt <= fail_until:
        return NodeResult.failed(
            node.address, f"noop failed on attempt {node.attempt}", retryable=True
        )
    return NodeResult.succeeded(
        node.address, rows_loaded={"noop": 1}, log_tail=f"pid {os.getpid()}"
    )
