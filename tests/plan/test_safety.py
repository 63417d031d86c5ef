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
