"""Deletion safety rules decided from the changes alone."""

from fabric.addresses import Address
from fabric.plan.diff import Action, Change
from fabric.plan.safety import SafetyOptions, unsafe_reasons


def delete(text, protected=False):
    return Change(address=Address.parse(text), action=Action.DELETE, protected=protected)


def test_deletes_need_permission():
    changes = [delete("acme.pipeline.orders")]
    assert "--allow-delete" in unsafe_reasons(changes, SafetyOptions())[0]
    assert unsafe_reasons(changes, SafetyOptions(allow_delete=True)) == ()


def test_more_deletes_than_the_limit_are_refused():
    changes = [delete(f"acme.pipeline.p{i}") for i in range(3)]
    reasons = unsafe_reasons(changes, SafetyOptions(allow_delete=True, max_deletes=2))
    assert any("--max-deletes 2" in r for r in reasons)


def test_a_vanished_tenant_must_be_named():
    changes = [delete("acme"), delete("acme.pipeline.orders")]
    options = SafetyOptions(allow_delete=True)
    assert any("--allow-delete-tenant" in r for r in unsafe_reasons(changes, options))
    named = SafetyOptions(allow_delete=True, allow_delete_tenants=frozenset({"acme"}))
    assert unsafe_reasons(changes, named) == ()


def test_protected_resources_are_never_deleted():
    changes = [delete("acme.pipeline.orders", protected=True)]
    reasons = unsafe_reasons(changes, SafetyOptions(allow_delete=True))
    assert reasons and "protected" in reasons[0]


def test_removing_a_dependency_needs_no_permission():
    changes = [delete("acme.dependency.pipeline.a->transformation.b")]
    assert unsafe_reasons(changes, SafetyOptions()) == ()


def test_the_refusal_counts_meet_the_plans_count_of_deletes():
    changes = [
        delete("acme.pipeline.orders"),
        delete("acme.transformation.totals"),
        delete("acme.dependency.pipeline.orders->transformation.totals"),
    ]
    reasons = unsafe_reasons(changes, SafetyOptions(max_deletes=1))
    assert reasons == (
        "the plan deletes 2 resource(s) (acme.pipeline.orders, acme.transformation.totals) "
        "(of the plan's 3 to destroy; the other 1 are dependency edges or grants, which hold no "
        "data and need no permission): pass --allow-delete (or set apply.allow_delete in "
        "fabric.yaml).",
        "the plan deletes 2 resources (of the plan's 3 to destroy; the other 1 are dependency "
        "edges or grants, which hold no data and need no permission), more than --max-deletes "
        "1: raise the limit if this is intended.",
    )
    alone = unsafe_reasons(changes[:1], SafetyOptions())
    assert alone == (
        "the plan deletes 1 resource(s) (acme.pipeline.orders): pass --allow-delete (or set "
        "apply.allow_delete in fabric.yaml).",
    )
