"""Snapshots run as DAG nodes in the tenant's dbt invocation, on a real warehouse whose roles
fabric manages: two versions of a changed row, hard deletes as configured, a model reading the
history through ref(), and a snapshot whose SQL reads another tenant's table denied by the
warehouse login.

One repository for the module (a dlt load and a few dbt invocations are the cost); the test
functions run in order and each builds on the last.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fabric import api
from fabric.addresses import Address
from fabric.apply import ApplyOptions
from fabric.domain.runs import NodeStatus
from fabric.state.engine import create_database, drop_database, make_engine
from tests.runner.test_managed_runs import FABRIC_YAML, _conninfo, tamper, wh_sql

ACME = """
tenant:
  display_name: Acme
  warehouse: dwh
connections:
  dwh: {{type: postgres, direction: destination, warehouse: dwh}}
  src:
    type: postgres
    direction: source
    host: {src.host}
    port: {src.port}
    database: {src.database}
    username: {src.username}
    password: ${{env:ACME_SRC_PASSWORD}}
pipelines:
  customers:
    source: src
    dataset: acme_raw
    mode: single_table
    table: customers
    write_disposition: replace
snapshots:
  customers_history:
    sql_file: snapshots/customers.sql
    schema: acme_snapshots
    unique_key: id
    strategy: timestamp
    updated_at: updated_at
    hard_deletes: invalidate
    description: Every version of every customer
transformations:
  current_customers:
    sql: |
      select id, tier
      from {{{{ ref('customers_history') }}}}
      where dbt_valid_to is null
    schema: acme_marts
    materialized: table
"""
SNAPSHOT_SQL = "select id, tier, updated_at\nfrom {{ source('customers', 'customers') }}\n"
GLOBEX = """
tenant:
  display_name: Globex
  warehouse: dwh
connections:
  dwh: {type: postgres, direction: destination, warehouse: dwh}
transformations:
  totals:
    sql: select 42 as secret
    schema: globex_marts
    materialized: table
"""
HISTORY = Address.parse("acme.snapshot.customers_history")


@pytest.fixture(scope="module")
def repo(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str], str, str]]:
    names = [f"fabric_test_snap_{secrets.token_hex(4)}" for _ in range(3)]
    warehouse, source, control = (make_url(create_database(pg_server_url, n)) for n in names)
    prefix = f"s{secrets.token_hex(3)}_"
    tmp = tmp_path_factory.mktemp("snapshots")
    root = tmp / "repo"
    for slug, body in (("acme", ACME.format(src=source)), ("globex", GLOBEX)):
        (root / "tenants" / slug).mkdir(parents=True)
        (root / "tenants" / slug / "tenant.yaml").write_text(textwrap.dedent(body))
    (root / "tenants/acme/snapshots").mkdir()
    (root / "tenants/acme/snapshots/customers.sql").write_text(SNAPSHOT_SQL)
    (root / "fabric.yaml").write_text(FABRIC_YAML.format(wh=warehouse, prefix=prefix))
    env = {
        "FABRIC_DATABASE_URL": control.render_as_string(hide_password=False),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp / "home"),
        "DWH_ADMIN_PASSWORD": warehouse.password or "",
        "ACME_SRC_PASSWORD": source.password or "",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }
    src = make_engine(source)
    with src.begin() as conn:
        conn.execute(
            text("create table customers (id int primary key, tier text, updated_at timestamptz)")
        )
        conn.execute(
            text(
                "insert into customers values (1, 'silver', '2026-01-01T00:00Z'), "
                "(2, 'gold', '2026-01-01T00:00Z')"
            )
        )
    src.dispose()
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    yield (
        root,
        env,
        warehouse.render_as_string(hide_password=False),
        source.render_as_string(hide_password=False),
    )
    with psycopg.connect(_conninfo(warehouse), autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
        ).fetchall():
            conn.execute(f'DROP OWNED BY "{name}"')
            conn.execute(f'DROP ROLE "{name}"')
    for name in names:
        drop_database(pg_server_url, name)


def run(root: Path, env: dict[str, str], tenant: str, *selectors: str):
    return api.run(root, tenants=[tenant], selectors=selectors, environ=env, workers=1)


def history(url: str) -> list[tuple]:
    return wh_sql(
        url,
        "SELECT id, tier, dbt_valid_to IS NULL FROM acme_snapshots.customers_history "
        "ORDER BY id, dbt_valid_from",
    )


def test_two_snapshots_record_two_versions_and_a_hard_delete(repo):
    root, env, url, src = repo
    first = run(root, env, "acme")
    assert first.ok, first.errors
    assert first.nodes[HISTORY] is NodeStatus.SUCCESS
    assert history(url) == [(1, "silver", True), (2, "gold", True)]
    # the history table is the tenant's, written as its own role
    role = wh_sql(url, "SELECT rolname FROM pg_roles WHERE rolname LIKE '%acme_loader'")[0][0]
    owner = "SELECT tableowner FROM pg_tables WHERE schemaname = 'acme_snapshots'"
    assert wh_sql(url, owner) == [(role,)]

    with psycopg.connect(_conninfo(make_url(src)), autocommit=True) as conn:
        conn.execute(
            "update customers set tier = 'gold', updated_at = '2026-02-01T00:00Z' where id = 1"
        )
        conn.execute("delete from customers where id = 2")
    second = run(root, env, "acme")
    assert second.ok, second.errors
    assert history(url) == [
        (1, "silver", False),  # closed by the change
        (1, "gold", True),  # the new version
        (2, "gold", False),  # hard_deletes: invalidate closes the deleted row
    ]
    # the model reads the history through ref(): it ran after the snapshot (an edge)
    assert wh_sql(url, "SELECT id, tier FROM acme_marts.current_customers") == [(1, "gold")]
    assert (
        second.results[HISTORY].finished_at
        <= second.results[Address.parse("acme.transformation.current_customers")].started_at
    )


def test_a_snapshot_reading_another_tenants_table_is_denied(repo):
    root, env, _, _ = repo
    assert run(root, env, "globex").ok
    # validation refuses no raw schema name in SQL; forced into the stored record, the
    # warehouse login must still say no
    tamper(
        env,
        "acme",
        "snapshots",
        "customers_history",
        "sql",
        "select 1 as id, secret, now() as updated_at from globex_marts.totals",
    )
    result = run(root, env, "acme", "snapshot:customers_history")
    assert result.nodes[HISTORY] is NodeStatus.FAILED
    assert "permission denied" in result.errors[HISTORY], result.errors[HISTORY]
    assert env["DWH_ADMIN_PASSWORD"] not in result.errors[HISTORY]
