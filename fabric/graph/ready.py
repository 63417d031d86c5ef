"""Which nodes may run now, and which must be skipped: the runner's and the queue's shared brain.

Pure functions of the DAG and the node statuses, so any executor (local processes or the
distributed queue) makes the same decisions from the state stored in the database.  [pure]
"""

from __future__ import annotations

from collections.abc import Mapping

from fabric.addresses import Address
from fabric.domain.runs import FINISHED, NodeStatus, RunStatus
from fabric.graph.dag import Dag


def ready_nodes(dag: Dag, status: Mapping[Address, NodeStatus]) -> tuple[Address, ...]:
    """Pending nodes whose upstreams all succeeded, in a stable order."""
    return tuple(
        sorted(
            node
            for node, ups in dag.upstream.items()
            if status[node] is NodeStatus.PENDING
            and all(status[u] is NodeStatus.SUCCESS for u in ups)
        )
    )


def to_skip(dag: Dag, status: Mapping[Address, NodeStatus]) -> tuple[Address, ...]:
    """Pending nodes that can never run: an upstream failed, was skipped or cancelled."""
    blocked = {NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
    doomed: set[Address] = set()
    for node in dag.order():
        if status[node] is not NodeStatus.PENDING:
            continue
        if any(status[u] in blocked or u in doomed for u in dag.upstream[node]):
            doomed.add(node)
    return tuple(sorted(doomed))


def run_status(status: Mapping[Address, NodeStatus]) -> RunStatus:
    values = set(status.values())
    if not values <= FINISHED:
        return RunStatus.RUNNING
    if NodeStatus.CANCELLED in values:
        return RunStatus.CANCELLED
    if values & {NodeStatus.FAILED, NodeStatus.SKIPPED}:
        return RunStatus.FAILED
    return RunStatus.SUCCESS
