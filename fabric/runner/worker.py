"""What runs inside a worker process: one node in, one NodeResult out.  [shell]

dlt and dbt keep process-global state, so nodes run in worker processes apart from the runner;
a crash of one node kills only its worker. Imports of dlt/dbt happen here, lazily.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Iterator, Mapping
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


@contextlib.contextmanager
def node_environment(env: Mapping[str, str]) -> Iterator[None]:
    """The runner's current values for what the node reads from the environment.

    A worker process outlives the environment it was started with (a second run in the same
    program may point `${env:...}` somewhere else); it exists only to run nodes, so setting
    its own environment for the length of one node is safe. Restored afterwards.
    """
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(node: NodeSpec) -> NodeResult:
    """Run one node; never raises (a bug becomes a failed result with its traceback's tail)."""
    with node_environment(node.env):
        return _execute(node)


def _execute(node: NodeSpec) -> NodeResult:
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
    with node_environment(nodes[0].env):
        return _execute_batch(nodes)


def _execute_batch(nodes: list[NodeSpec]) -> list[NodeResult]:
    if any(n.kind != "transformation" for n in nodes):
        return [_execute(n) for n in nodes]
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
