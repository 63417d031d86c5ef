"""The plan document round-trips and detects tampering."""

import pytest

from fabric.addresses import Address
from fabric.plan.diff import Observed, diff
from fabric.plan.plan import Plan, from_document, to_document
from fabric.plan.records import Record


def make_plan():
    a = Address.parse("acme.pipeline.orders")
    rec = Record(address=a, spec={"dataset": "raw"}, secret_refs={}, protect=False)
    return Plan(
        source_hash="abc",
        repo="/r",
        tenants=("acme",),
        read_set={a: None},
        changes=diff({a: rec}, {}, {}, tenants=["acme"]),
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_round_trip_keeps_the_hash():
    plan = make_plan()
    again = from_document(to_document(plan))
    assert again.plan_hash == plan.plan_hash
    assert again.changes == plan.changes


def test_a_modified_plan_file_is_refused():
    doc = to_document(make_plan())
    doc["changes"][0]["target"]["spec"]["dataset"] = "evil"
    with pytest.raises(ValueError, match="modified"):
        from_document(doc)


def moved_plan():
    old, new = Address.parse("acme.pipeline.orders"), Address.parse("acme.pipeline.orders_v2")
    rec = Record(address=new, spec={"dataset": "raw"}, secret_refs={}, protect=False)
    stored = Observed(address=old, fingerprint="x", intact=True, spec={"dataset": "raw"})
    changes = diff({new: rec}, {}, {old: stored}, tenants=["acme"], moves={new: old})
    return Plan(
        source_hash="abc",
        repo="/r",
        tenants=("acme",),
        read_set={old: "t"},
        changes=changes,
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_a_move_round_trips_and_enters_the_hash():
    plan = moved_plan()
    (change,) = plan.changes
    assert str(change.moved_from) == "acme.pipeline.orders"
    doc = to_document(plan)
    assert doc["changes"][0]["moved_from"] == "acme.pipeline.orders"
    assert from_document(doc).changes == plan.changes
    doc["changes"][0]["moved_from"] = "acme.pipeline.other"
    with pytest.raises(ValueError, match="modified"):
        from_document(doc)


def test_a_plan_file_cannot_move_another_tenants_object():
    doc = to_document(moved_plan())
    doc["changes"][0]["moved_from"] = "globex.pipeline.orders"
    with pytest.raises(ValueError, match="a move stays in its tenant and kind"):
        from_document(doc)
