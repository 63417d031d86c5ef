"""Desired and observed warehouse records, and their diff: pure, no database."""

from __future__ import annotations

import textwrap
from pathlib import Path

from fabric.addresses import Address, Kind
from fabric.config.loader import load_repository
from fabric.plan.diff import Action
from fabric.plan.warehouse import (
    PASSWORD_SECRET,
    STRAY_GRANT,
    RoleFacts,
    SchemaFacts,
    WarehouseFacts,
    desired_warehouse_records,
    login_role,
    managed_warehouses,
    observed_warehouse_records,
    warehouse_changes,
)
from fabric.runner import driver

FABRIC_YAML = """
format_version: 1
warehouses:
  dwh:
    host: h
    database: analytics
    admin: {username: admin, password: "${env:DWH_ADMIN}"}
    manage_roles: true
    role_prefix: x_
"""
ACME = """
tenant:
  display_name: Acme
  warehouse: dwh
  share: [{with: [globex], schemas: [acme_marts]}]
connections:
  dwh: {type: postgres, direction: destination, warehouse: dwh}
  src: {type: postgres, direction: source, host: s, database: s}
pipelines:
  orders: {source: src, dataset: acme_raw, mode: single_table, table: orders}
transformations:
  totals: {sql: select 1 as n, schema: acme_marts}
"""
GLOBEX = """
tenant: {display_name: Globex, warehouse: dwh}
connections:
  dwh: {type: postgres, direction: destination, warehouse: dwh}
transformations:
  totals: {sql: select 1 as n, schema: globex_marts}
"""


def load(tmp_path: Path, files: dict[str, str]):
    for rel, body in {"fabric.yaml": FABRIC_YAML, **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    return load_repository(tmp_path)


def test_desired_records_per_tenant(tmp_path):
    desired = load(tmp_path, {"tenants/acme/t.yaml": ACME, "tenants/globex/t.yaml": GLOBEX}).desired
    assert desired is not None
    records = desired_warehouse_records(desired, ["acme", "globex"])
    assert sorted(map(str, records)) == [
        "acme.grant.acme_marts",
        "acme.role.loader",
        "acme.schema.acme_marts",
        "acme.schema.acme_raw",
        "acme.schema.acme_raw_staging",
        "globex.role.loader",
        "globex.schema.globex_marts",
    ]
    acme_role = records[Address("acme", Kind.ROLE, "loader")].spec
    globex_role = records[Address("globex", Kind.ROLE, "loader")].spec
    assert acme_role["role"] == "x_acme_loader" and acme_role["reads"] == []
    assert globex_role["reads"] == ["acme_marts"]
    assert records[Address("acme", Kind.GRANT, "acme_marts")].spec["usage"] == ["x_globex_loader"]
    assert set(managed_warehouses(desired)) == {"dwh"}


def test_a_grant_made_by_hand_is_a_stray_grant_to_revoke(tmp_path):
    desired = load(tmp_path, {"tenants/acme/t.yaml": ACME, "tenants/globex/t.yaml": GLOBEX}).desired
    assert desired is not None
    spec = desired.project.warehouses["dwh"]
    records = desired_warehouse_records(desired, ["globex"])
    role = RoleFacts(
        name="x_globex_loader",
        comment="fabric:analytics:globex",
        login=True,
        superuser=False,
        createdb=False,
        createrole=False,
        replication=False,
        bypassrls=False,
    )
    facts = WarehouseFacts(
        roles={"x_globex_loader": role},
        schemas={
            "globex_marts": SchemaFacts(
                name="globex_marts", owner="x_globex_loader", acl=(("x_acme_loader", "USAGE"),)
            ),
            "acme_marts": SchemaFacts(
                name="acme_marts", owner="x_acme_loader", acl=(("x_globex_loader", "USAGE"),)
            ),
        },
        database_acl=(("x_globex_loader", "CONNECT"), ("x_globex_loader", "TEMPORARY")),
    )
    observed = observed_warehouse_records(
        "dwh", spec, facts, records, has_password=frozenset({"globex"})
    )
    changes = warehouse_changes(
        records, observed, tenants=["globex"], declared=frozenset({"acme", "globex"})
    )
    assert [(str(c.address), c.action, c.reason) for c in changes] == [
        ("globex.grant.globex_marts", Action.DELETE, STRAY_GRANT)
    ]


def test_the_runner_names_the_same_secret_and_role():
    assert driver.PASSWORD_SECRET == PASSWORD_SECRET
    assert login_role("x_", "acme") == "x_acme_loader"


def test_shares_are_checked(tmp_path):
    bad = ACME.replace("with: [globex], schemas: [acme_marts]", "with: [nobody], schemas: [x]")
    result = load(tmp_path, {"tenants/acme/t.yaml": bad, "tenants/globex/t.yaml": GLOBEX})
    codes = sorted(d.code for d in result.diagnostics)
    assert codes == ["share-not-owned", "unknown-tenant"]


def test_a_managed_connection_names_a_managed_warehouse_and_no_credentials(tmp_path):
    bad = ACME.replace(
        "dwh: {type: postgres, direction: destination, warehouse: dwh}",
        "dwh: {type: postgres, direction: destination, warehouse: other, username: u}",
    )
    result = load(tmp_path, {"tenants/acme/t.yaml": bad, "tenants/globex/t.yaml": GLOBEX})
    codes = sorted(d.code for d in result.diagnostics)
    assert "unknown-warehouse" in codes and "conflicting-fields" in codes


def test_roles_of_another_installation_on_the_server_are_not_ours(tmp_path):
    desired = load(tmp_path, {"tenants/globex/t.yaml": GLOBEX}).desired
    assert desired is not None
    spec = desired.project.warehouses["dwh"]
    theirs = RoleFacts(
        name="y_acme_loader",  # same database, same tenant name, another role_prefix
        comment="fabric:analytics:acme",
        login=True,
        superuser=False,
        createdb=False,
        createrole=False,
        replication=False,
        bypassrls=False,
    )
    facts = WarehouseFacts(roles={"y_acme_loader": theirs})
    observed = observed_warehouse_records("dwh", spec, facts, {}, frozenset())
    assert observed == {}


def test_a_share_needs_a_reader_with_a_role_in_that_warehouse(tmp_path):
    unmanaged = GLOBEX.replace(
        "dwh: {type: postgres, direction: destination, warehouse: dwh}",
        "dwh: {type: postgres, direction: destination, host: h, database: other}",
    )
    result = load(tmp_path, {"tenants/acme/t.yaml": ACME, "tenants/globex/t.yaml": unmanaged})
    assert [d.code for d in result.diagnostics] == ["share-without-role"]
