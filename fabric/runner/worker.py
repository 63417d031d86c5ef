"""What runs inside a worker process: one node in, one NodeResult out.  [shell]

dlt and dbt keep process-global state, so nodes run in worker processes apart from the runner;
a crash of one node kills only its worker. Imports of dlt/dbt happen here, lazily. A node
arrives with its connections resolved: a worker holds no secret key and reads nothing from its
own environment.
"""

from __future__ import annotations

import traceback

from fabric.addresses import DBT_KINDS
from fabric.domain.runs import NodeResult, NodeSpec
from fabric.errors import FabricError

DBT_NODE_KINDS = frozenset(kind.value for kind in DBT_KINDS)


def execute(node: NodeSpec) -> NodeResult:
    """Run one node; never raises (a bug becomes a failed result with its traceback's tail)."""
    try:
        result = _dispatch(node)
    except FabricError as exc:
        result = NodeResult.failed(node.address, str(exc))
    except Exception as exc:  # a bug: keep enough to find it, but never secrets
        result = NodeResult.failed(node.address, _internal(exc, node))
    return result


def execute_batch(nodes: list[NodeSpec]) -> list[NodeResult]:
    """Several transformation (snapshot, seed) nodes of one tenant in one dbt invocation; never
    raises."""
    if any(n.kind not in DBT_NODE_KINDS for n in nodes):
        return [execute(n) for n in nodes]
    try:
        from fabric.runner.dbt_node import run_transformation_nodes

        results = run_transformation_nodes(nodes)
    except FabricError as exc:
        results = [NodeResult.failed(n.address, str(exc)) for n in nodes]
    except Exception as exc:  # a bug: keep enough to find it, but never secrets
        results = [NodeResult.failed(n.address, _internal(exc, n)) for n in nodes]
    return results


def _dispatch(node: NodeSpec) -> NodeResult:
    match node.kind:
        case "pipeline":
            from fabric.runner.dlt_node import run_pipeline_node

            return run_pipeline_node(node)
        case "transformation" | "snapshot" | "seed":
            return execute_batch([node])[0]
        case _:
            return NodeResult.failed(node.address, f"unknown node kind {node.kind!r}")


def _internal(exc: Exception, node: NodeSpec) -> str:
    from fabric.runner.failures import redact

    tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return redact(f"internal error: {tail}", node.secret_values)
