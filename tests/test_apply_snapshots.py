"""Snapshots through plan and apply: created, updated field by field, deleted, on a real
control plane."""

from __future__ import annotations

from fabric import api
from fabric.plan.diff import Action
from tests.test_apply import (  # noqa: F401 - fixtures
    ACME,
    actions,
    cp_url,
    do_apply,
    env,
    repo,
    sql,
)

SNAPSHOTS = """
    snapshots:
      orders_history:
        sql_file: snapshots/orders.sql
        schema: acme_snapshots
        unique_key: id
        strategy: timestamp
        updated_at: updated_at
"""
SQL = "select * from {{ source('orders', 'orders') }}\n"


def test_a_snapshot_is_planned_applied_updated_and_deleted(repo, env, cp_url):  # noqa: F811
    root = repo(
        {**ACME, "tenants/acme/snapshots.yaml": SNAPSHOTS, "tenants/acme/snapshots/orders.sql": SQL}
    )
    planned = actions(root, env)
    assert planned["acme.snapshot.orders_history"] == "create"
    assert planned["acme.dependency.pipeline.orders->snapshot.orders_history"] == "create"
    do_apply(root, env)
    assert actions(root, env) == {}
    (schema,) = sql(cp_url, "SELECT schema_name FROM fabric.tenants WHERE slug = 'acme'")[0]
    ((spec,),) = sql(cp_url, f"SELECT spec FROM {schema}.snapshots WHERE deleted_at IS NULL")
    assert spec["sql"] == SQL and spec["warehouse"] == "dwh" and spec["hard_deletes"] == "ignore"

    # a changed field and a changed SQL file: one update with both fields
    repo(
        {
            "tenants/acme/snapshots.yaml": SNAPSHOTS + "        hard_deletes: invalidate\n",
            "tenants/acme/snapshots/orders.sql": SQL.replace("*", "id, updated_at"),
        }
    )
    changes = api.plan(root, environ=env).plan.changes
    (change,) = [c for c in changes if str(c.address) == "acme.snapshot.orders_history"]
    assert change.action is Action.UPDATE
    assert sorted((f.name, f.before, f.after) for f in change.fields) == [
        ("hard_deletes", "ignore", "invalidate"),
        ("sql", SQL, SQL.replace("*", "id, updated_at")),
    ]
    do_apply(root, env)

    repo({"tenants/acme/snapshots.yaml": None})
    planned = actions(root, env)
    assert planned["acme.snapshot.orders_history"] == "delete"
    do_apply(root, env, allow_delete=True)
    assert sql(cp_url, f"SELECT name FROM {schema}.snapshots WHERE deleted_at IS NULL") == []
