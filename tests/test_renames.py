"""Renames end to end against a real control plane: a move is an update of the same row.

The row keeps its id, so run history (node_runs are renamed with it), secrets and the
pipeline's dlt state (the runner keeps its first name, fabric.moves) stay; no --allow-delete.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from fabric import api
from fabric.addresses import Address
from fabric.apply import ApplyOptions
from fabric.errors import UnsafePlanError
from fabric.plan.diff import Action
from fabric.plan.plan import to_document
from fabric.plan.safety import SafetyOptions
from fabric.render.plan_text import render_plan_text
from fabric.state.applied import read_applied, state_names
from fabric.state.engine import make_engine

KEY = Fernet.generate_key().decode()
TENANT = """\
tenant:
  display_name: Acme
  warehouse: dwh
connections:
  dwh:
    type: postgres
    direction: destination
    host: 127.0.0.1
    database: dwh
    password: ${env:ACME_DWH_PASSWORD}
  shop: {type: postgres, direction: source, host: 127.0.0.1, database: shop}
"""
PIPELINES = """\
pipelines:
  {name}:
    source: shop
    dataset: acme_raw
    mode: single_table
    table: orders
    incremental: {{cursor: updated_at}}
{extra}transformations:
  totals:
    schema: acme_marts
    materialized: table
    sql: select count(*) as n from {{{{ source('{name}', 'orders') }}}}
"""
ORDERS = Address.parse("acme.pipeline.orders")
ORDERS_V2 = Address.parse("acme.pipeline.orders_v2")


@pytest.fixture
def env(make_database) -> dict[str, str]:
    return {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": KEY,
        "ACME_DWH_PASSWORD": "pw-never-shown",
        "PATH": os.environ.get("PATH", ""),
    }


def write(root: Path, files: dict[str, str | None]) -> Path:
    for rel, body in files.items():
        path = root / rel
        if body is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    return root


def pipelines(name: str, extra: str = "") -> dict[str, str]:
    return {"tenants/acme/pipelines.yaml": PIPELINES.format(name=name, extra=extra)}


def apply(root: Path, env: dict[str, str], **safety) -> api.ApplyResult:
    plan = api.plan(root, environ=env).plan
    options = ApplyOptions(safety=SafetyOptions(**safety))
    return api.apply(plan, repo=root, environ=env, options=options)


def sql(url: str, statement: str, **params):
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


@pytest.fixture
def applied_repo(tmp_path: Path, env: dict[str, str]) -> Path:
    """acme applied with pipeline `orders`, and one recorded run of it."""
    root = write(
        tmp_path / "repo",
        {
            "fabric.yaml": "format_version: 1\nname: t\nownership: {enforce: false}\n",
            "tenants/acme/tenant.yaml": TENANT,
            **pipelines("orders"),
        },
    )
    apply(root, env)
    url = env["FABRIC_DATABASE_URL"]
    (schema,) = sql(url, "SELECT schema_name FROM fabric.tenants WHERE slug = 'acme'")[0]
    sql(url, f"INSERT INTO {schema}.runs (id, trigger, status) VALUES (1, 'manual', 'success')")
    sql(
        url,
        f"INSERT INTO {schema}.node_runs (run_id, node, status) "
        "VALUES (1, 'acme.pipeline.orders', 'success')",
    )
    return root


@pytest.mark.parametrize(
    "how",
    [
        {"extra": "    renamed_from: orders\n"},
        {"moved": "moved:\n  - {from: acme.pipeline.orders, to: acme.pipeline.orders_v2}\n"},
    ],
    ids=["renamed_from", "moved"],
)
def test_a_rename_updates_the_same_row_and_keeps_history_and_dlt_state(
    applied_repo: Path, env: dict[str, str], how: dict[str, str]
) -> None:
    url = env["FABRIC_DATABASE_URL"]
    (schema,) = sql(url, "SELECT schema_name FROM fabric.tenants WHERE slug = 'acme'")[0]
    (row_id,) = sql(url, f"SELECT id FROM {schema}.pipelines WHERE name = 'orders'")[0]
    write(applied_repo, pipelines("orders_v2", how.get("extra", "")))
    if "moved" in how:
        write(applied_repo, {"tenants/acme/moves.yaml": how["moved"]})

    plan = api.plan(applied_repo, environ=env).plan
    by_address = {c.address: c for c in plan.changes}
    assert ORDERS not in by_address  # no delete of the old name
    move = by_address[ORDERS_V2]
    assert (move.action, move.moved_from) == (Action.UPDATE, ORDERS)
    assert [(f.name, f.before, f.after) for f in move.fields] == [("name", "orders", "orders_v2")]
    assert not plan.warnings  # nothing deleted that needs --allow-delete
    text_plan = render_plan_text(to_document(plan))
    assert "  ~ acme.pipeline.orders_v2 (moved from acme.pipeline.orders)\n" in text_plan
    # the edges are re-derived: the old one goes (no permission needed), the new one comes
    assert {str(c.address): c.action.value for c in plan.changes if c is not move} == {
        "acme.transformation.totals": "update",
        "acme.dependency.pipeline.orders->transformation.totals": "delete",
        "acme.dependency.pipeline.orders_v2->transformation.totals": "create",
    }

    apply(applied_repo, env)  # default safety: no --allow-delete
    assert sql(url, f"SELECT id, name FROM {schema}.pipelines WHERE deleted_at IS NULL") == [
        (row_id, "orders_v2")
    ]
    assert sql(url, f"SELECT node FROM {schema}.node_runs") == [("acme.pipeline.orders_v2",)]
    assert sql(url, "SELECT kind, resource_id, from_name, to_name FROM fabric.moves") == [
        ("pipeline", row_id, "orders", "orders_v2")
    ]
    engine = make_engine(url)
    with engine.connect() as conn:
        applied = read_applied(conn, "acme")
    engine.dispose()
    assert applied.state_names == {ORDERS_V2: "orders"}  # dlt pipeline acme__orders
    history = api.apply_history(applied_repo, limit=1, resource=str(ORDERS_V2), environ=env)
    (entry,) = history
    (audit,) = [c for c in entry.changes if c.address == str(ORDERS_V2)]
    assert {"name": "name", "before": "orders", "after": "orders_v2"}.items() <= audit.fields[
        0
    ].items()

    # the move stays satisfied, and removing it afterwards changes nothing
    assert not api.plan(applied_repo, environ=env).plan.has_changes
    write(applied_repo, {**pipelines("orders_v2"), "tenants/acme/moves.yaml": None})
    assert not api.plan(applied_repo, environ=env).plan.has_changes


def test_a_move_from_nothing_stored_is_a_create_with_a_note(
    applied_repo: Path, env: dict[str, str]
) -> None:
    write(
        applied_repo,
        {
            "tenants/acme/more.yaml": """\
                pipelines:
                  fresh:
                    source: shop
                    dataset: acme_fresh
                    mode: single_table
                    table: x
                    renamed_from: never_was
                """
        },
    )
    plan = api.plan(applied_repo, environ=env).plan
    (change,) = [c for c in plan.changes if c.address.name == "fresh"]
    assert (change.action, change.moved_from) == (Action.CREATE, None)
    assert (
        "move acme.pipeline.never_was -> acme.pipeline.fresh ignored: the control plane holds "
        "no acme.pipeline.never_was (acme.pipeline.fresh is created)"
    ) in plan.notes


def test_deletes_say_what_happens_to_the_data_and_the_refusal_counts_match_the_plan(
    applied_repo: Path, env: dict[str, str]
) -> None:
    write(applied_repo, {"tenants/acme/pipelines.yaml": "pipelines: {}\n"})
    plan = api.plan(applied_repo, environ=env).plan
    deletes = [c for c in plan.changes if c.action is Action.DELETE]
    by_address = {str(c.address): c.reason for c in deletes}
    assert by_address["acme.pipeline.orders"] == (
        "removed from git; its tables stay in the warehouse (dataset acme_raw); drop them by hand"
    )
    assert by_address["acme.transformation.totals"] == (
        "removed from git; its relation acme_marts.totals stays in the warehouse; drop it by hand"
    )
    doc = to_document(plan)
    assert doc["summary"]["delete"] == len(deletes) == 3  # with the dependency edge
    managed = [c for c in deletes if c.address.kind.value != "dependency"]
    (refusal,) = [w for w in plan.warnings if "--allow-delete" in w]
    assert refusal.startswith(f"the plan deletes {len(managed)} resource(s) (")
    assert f"(of the plan's {doc['summary']['delete']} to destroy; the other 1 are" in refusal
    with pytest.raises(UnsafePlanError) as caught:
        apply(applied_repo, env, max_deletes=1)
    message = str(caught.value)
    assert f"the plan deletes {len(managed)} resource(s)" in message
    assert f"the plan deletes {len(managed)} resources (of the plan's 3 to destroy" in message
    assert "more than --max-deletes 1" in message


def test_state_names_keep_a_renamed_pipelines_first_name_and_never_share_it() -> None:
    moves = [(5, "orders"), (5, "orders_v2")]  # orders -> orders_v2 -> orders_v3
    assert state_names({"orders_v3": 5, "orders": 9, "other": 7}, moves) == {
        "orders_v3": "orders",
        "orders": "orders__9",  # a new pipeline named like the old one gets its own state
    }
    assert state_names({"orders": 5}, [(5, "orders"), (5, "orders_v2")]) == {"orders": "orders"}
