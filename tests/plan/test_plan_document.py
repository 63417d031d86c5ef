"""The plan document round-trips and detects tampering."""

import pytest

from fabric.addresses import Address
from fabric.plan.diff import diff
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
