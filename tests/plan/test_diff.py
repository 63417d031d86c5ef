"""diff(): pure, no database: desired records vs observed records."""

from types import MappingProxyType

from fabric.addresses import Address
from fabric.plan.diff import DRIFT, Action, Observed, desired_fingerprints, diff
from fabric.plan.records import Record

ORDERS = Address.parse("acme.pipeline.orders")
DWH = Address.parse("acme.connection.dwh")
ACME = Address.of_tenant("acme")


def record(address, protect=False, secret_refs=None, **spec):
    return Record(
        address=address,
        spec=MappingProxyType(spec),
        secret_refs=MappingProxyType(secret_refs or {}),
        protect=protect,
    )


def stored(rec, fps=None, *, intact=True, spec=None, protect=None):
    fp = desired_fingerprints({rec.address: rec}, {rec.address: fps or {}})[rec.address]
    return Observed(
        address=rec.address,
        fingerprint=fp,
        intact=intact,
        protect=rec.protect if protect is None else protect,
        spec=dict(rec.spec) if spec is None else spec,
        secret_fps=dict(fps or {}),
    )


def test_new_resource_is_a_create_with_every_set_field():
    rec = record(ORDERS, dataset="raw", mode="single_table", incremental={"cursor": "u"})
    (change,) = diff({ORDERS: rec}, {}, {}, tenants=["acme"])
    assert change.action is Action.CREATE
    assert {f.name: f.after for f in change.fields} == {
        "dataset": "raw",
        "mode": "single_table",
        "incremental.cursor": "u",
    }
    assert change.target is not None and change.target.spec["dataset"] == "raw"


def test_identical_fingerprint_is_no_change():
    rec = record(ORDERS, dataset="raw")
    assert diff({ORDERS: rec}, {}, {ORDERS: stored(rec)}, tenants=["acme"]) == ()


def test_changed_field_is_an_update_with_before_and_after():
    old = record(ORDERS, dataset="raw")
    new = record(ORDERS, dataset="raw_v2")
    (change,) = diff({ORDERS: new}, {}, {ORDERS: stored(old)}, tenants=["acme"])
    assert change.action is Action.UPDATE
    assert [(f.name, f.before, f.after) for f in change.fields] == [("dataset", "raw", "raw_v2")]
    assert change.reason is None


def test_hand_edited_row_is_drift_to_revert():
    rec = record(ORDERS, dataset="raw")
    edited = stored(rec, intact=False, spec={"dataset": "hand_edit"})
    (change,) = diff({ORDERS: rec}, {}, {ORDERS: edited}, tenants=["acme"])
    assert change.reason == DRIFT
    assert [(f.name, f.before, f.after) for f in change.fields] == [("dataset", "hand_edit", "raw")]


def test_changed_secret_is_sensitive_and_carries_no_value():
    rec = record(DWH, secret_refs={"password": "${env:PW}"}, password="${env:PW}")
    (change,) = diff(
        {DWH: rec},
        {DWH: {"password": "k:new"}},
        {DWH: stored(rec, {"password": "k:old"})},
        tenants=["acme"],
    )
    (field,) = change.fields
    assert field.sensitive and field.before is None and field.after is None


def test_missing_resource_in_scope_is_a_delete_and_out_of_scope_is_ignored():
    rec = record(ORDERS, dataset="raw")
    other = Address.parse("globex.pipeline.x")
    observed = {ORDERS: stored(rec), other: stored(record(other, dataset="g"))}
    (change,) = diff({}, {}, observed, tenants=["acme"])
    assert change.action is Action.DELETE and change.address == ORDERS


def test_creates_go_parents_first_and_deletes_children_first():
    conn = record(DWH, type="postgres")
    tenant = record(ACME, display_name="Acme")
    pipe = record(ORDERS, dataset="raw")
    changes = diff({ORDERS: pipe, DWH: conn, ACME: tenant}, {}, {}, tenants=["acme"])
    assert [c.address for c in changes] == [ACME, DWH, ORDERS]
    observed = {a: stored(r) for a, r in ((ORDERS, pipe), (DWH, conn), (ACME, tenant))}
    deletes = diff({}, {}, observed, tenants=["acme"])
    assert [c.address for c in deletes] == [ORDERS, DWH, ACME]
    assert all(c.reason.startswith("tenant folder removed") for c in deletes)


def test_protect_is_kept_from_state_on_delete():
    rec = record(ORDERS, protect=True, dataset="raw")
    (change,) = diff({}, {}, {ORDERS: stored(rec)}, tenants=["acme"])
    assert change.protected


def test_a_stored_spec_lacking_only_empty_new_fields_is_no_change():
    # Stored by an older fabric, before `columns` and `freshness` existed: the fingerprints
    # differ, the meaning does not, so an upgrade shows no change of every resource.
    old = record(ORDERS, dataset="raw")
    new = record(ORDERS, dataset="raw", columns={}, freshness=None, tags=[])
    assert diff({ORDERS: new}, {}, {ORDERS: stored(old)}, tenants=["acme"]) == ()
    changed = record(ORDERS, dataset="raw", columns={}, tags=["nightly"])
    (change,) = diff({ORDERS: changed}, {}, {ORDERS: stored(old)}, tenants=["acme"])
    assert [(f.name, f.before, f.after) for f in change.fields] == [("tags", None, ["nightly"])]
