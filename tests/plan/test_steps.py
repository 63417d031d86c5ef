"""apply_steps(): the order of an apply, as data (pure: no database)."""

from types import MappingProxyType

from fabric.addresses import Address
from fabric.plan import steps
from fabric.plan.diff import Action, Change, Target

ACME, GLOBEX = Address.of_tenant("acme"), Address.of_tenant("globex")
DWH = Address.parse("acme.connection.dwh")
ORDERS = Address.parse("acme.pipeline.orders")
OLD = Address.parse("globex.pipeline.old")


def change(address, action, *, secrets=False):
    target = None
    if action is not Action.DELETE:
        target = Target(
            spec=MappingProxyType({}),
            secret_refs=MappingProxyType({"password": "${secret:pw}"} if secrets else {}),
            secret_fps=MappingProxyType({}),
            protect=False,
            fingerprint="fp",
        )
    return Change(address=address, action=action, target=target)


def test_no_changes_means_no_steps():
    assert steps.apply_steps(()) == ()


def test_locks_and_the_stale_check_come_before_any_write_and_history_last():
    plan = (
        change(ACME, Action.CREATE),
        change(DWH, Action.CREATE, secrets=True),
        change(ORDERS, Action.CREATE),
        change(OLD, Action.DELETE),
        change(GLOBEX, Action.DELETE),
    )
    assert steps.apply_steps(plan) == (
        steps.MigrateSharedSchema(),
        steps.LockTenants(("acme", "globex")),
        steps.RefuseIfStale(("acme", "globex")),
        steps.Authorize(("acme", "globex")),
        steps.PrepareRows((ACME, DWH, ORDERS), with_secrets=(DWH,)),
        steps.DropOrphanSchemas(),
        steps.ProvisionTenants(("acme",), upserts=(DWH, ORDERS)),
        steps.RegisterTenants(("acme",)),
        steps.WriteResources(upserts=(), deletes=(OLD,)),
        steps.DeleteTenants(("globex",)),
        steps.RecordApply(("acme", "globex")),
    )


def test_every_step_has_a_line_for_explain():
    plan = (change(ACME, Action.UPDATE), change(ORDERS, Action.UPDATE, secrets=True))
    lines = [steps.describe_step(s) for s in steps.apply_steps(plan)]
    assert lines[0].startswith("migrate the shared schema")
    assert lines[3].startswith("check that the author may make every change")
    assert "encrypting the secrets of acme.pipeline.orders" in lines[4]
    assert lines[5].startswith("drop the provisional schemas")
    assert lines[6] == "update 1 tenant(s): acme"
    assert lines[-1].startswith("record the apply")


def test_new_tenants_are_provisioned_before_the_switch_and_existing_ones_change_in_it():
    plan = (
        change(ACME, Action.CREATE),
        change(ORDERS, Action.CREATE),
        change(Address.parse("globex.pipeline.new"), Action.CREATE),
    )
    got = steps.apply_steps(plan)
    first_switch = next(i for i, s in enumerate(got) if isinstance(s, steps.SWITCH_STEPS))
    assert all(isinstance(s, steps.SWITCH_STEPS) for s in got[first_switch:])
    assert got[first_switch - 1] == steps.ProvisionTenants(("acme",), upserts=(ORDERS,))
    assert got[first_switch:] == (
        steps.RegisterTenants(("acme",)),
        steps.WriteResources(upserts=(Address.parse("globex.pipeline.new"),), deletes=()),
        steps.RecordApply(("acme", "globex")),
    )
