"""No-op node functions for the overhead benches: every node succeeds at once.

Module-level, so worker processes (forked from the forkserver) import them by name.
"""

from __future__ import annotations

from fabric.domain.runs import NodeResult, NodeSpec


def noop(node: NodeSpec) -> NodeResult:
    return NodeResult.succeeded(node.address)


def noop_batch(nodes: list[NodeSpec]) -> list[NodeResult]:
    return [noop(n) for n in nodes]
