"""DAG building, ordering and dbt-style selection (pure)."""

import graphlib

import pytest

from fabric.addresses import Address
from fabric.domain.runs import NodeStatus, RunStatus
from fabric.graph.dag import Dag
from fabric.graph.ready import ready_nodes, run_status, to_skip

P = {n: Address.parse(f"acme.pipeline.{n}") for n in ("orders", "customers", "items")}
T = {n: Address.parse(f"acme.transformation.{n}") for n in ("stg", "totals", "report", "orders")}
EDGES = [
    (P["orders"], T["stg"]),
    (P["customers"], T["totals"]),
    (T["stg"], T["totals"]),
    (T["totals"], T["report"]),
    (P["orders"], P["items"]),
]
TAGS = {P["orders"]: ["nightly"], T["totals"]: ["finance"]}


@pytest.fixture
def dag():
    return Dag.build([*P.values(), *T.values()], EDGES, TAGS)


def test_order_puts_every_upstream_first(dag):
    order = dag.order()
    for up, down in EDGES:
        assert order.index(up) < order.index(down)


def test_cycle_is_rejected():
    a, b = P["orders"], T["stg"]
    with pytest.raises(graphlib.CycleError):
        Dag.build([a, b], [(a, b), (b, a)])


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["stg"], {T["stg"]}),
        (["orders"], {P["orders"], T["orders"]}),  # a bare name matches either kind
        (["pipeline:orders"], {P["orders"]}),
        (["+totals"], {T["totals"], T["stg"], P["orders"], P["customers"]}),
        (["stg+"], {T["stg"], T["totals"], T["report"]}),
        (["tag:nightly"], {P["orders"]}),
        (["tag:nightly+"], {P["orders"], P["items"], T["stg"], T["totals"], T["report"]}),
        (["tag:finance", "pipeline:items"], {T["totals"], P["items"]}),
        (["*"], {*P.values(), *T.values()}),
    ],
)
def test_selection_picks_exactly_the_expected_nodes(dag, selectors, expected):
    assert dag.select(selectors) == expected


def test_selector_that_matches_nothing_is_an_error(dag):
    with pytest.raises(ValueError, match="matches no node"):
        dag.select(["tag:nope"])


def test_ready_nodes_and_skips_follow_the_statuses(dag):
    status = {n: NodeStatus.PENDING for n in dag.nodes}
    assert set(ready_nodes(dag, status)) == {P["orders"], P["customers"], T["orders"]}
    status[P["orders"]] = NodeStatus.FAILED
    assert set(to_skip(dag, status)) == {P["items"], T["stg"], T["totals"], T["report"]}
    assert run_status(status) is RunStatus.RUNNING


def test_subgraph_drops_edges_to_unselected_nodes(dag):
    sub = dag.subgraph(dag.select(["totals"]))
    assert sub.upstream == {T["totals"]: frozenset()}


def test_non_strict_selection_tolerates_selectors_that_match_nothing(dag):
    assert dag.select(["tag:nope", "stg"], strict=False) == {T["stg"]}
