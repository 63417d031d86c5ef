"""Snapshots run as DAG nodes in the tenant's dbt invocation, on a real warehouse whose roles
fabric manages: two versions of a changed row, hard deletes as configured, a model reading the
history through ref(), and a snapshot whose SQL reads another tenant's table denied by the
warehouse login.

One repository for the module (a dlt load and a few dbt invocations are the cost); the test
functions run in order and each builds on the last.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from fabric.addresses import Address
from fabric.domain.runs import NodeStatus
from tests.runner.managed_repo import ManagedRepo, managed_repo, run
from tests.runner.test_managed_runs import _conninfo, tamper, wh_sql

ACME = """
tenant:
  display_name: Acme
  warehouse: dwh
connections:
  dwh: {type: postgres, direction: destination, warehouse: dwh}
  src:
    type: postgres
    direction: source
    host: {src.host}
    port: {src.port}
    database: {src.database}
    username: {src.username}
    password: ${env:ACME_SRC_PASSWORD}
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
      from {{ ref('customers_history') }}
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
def repo(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedRepo]:
    yield from managed_repo(
        pg_server_url,
        tmp_path_factory.mktemp("snapshots"),
        {"acme": ACME, "globex": GLOBEX},
        {"tenants/acme/snapshots/customers.sql": SNAPSHOT_SQL},
        (
            "create table customers (id int primary key, tier text, updated_at timestamptz)",
            "insert into customers values (1, 'silver', '2026-01-01T00:00Z'), "
            "(2, 'gold', '2026-01-01T00:00Z')",
        ),
    )


def history(url: str) -> list[tuple]:
    return wh_sql(
        url,
        "SELECT id, tier, dbt_valid_to IS NULL FROM acme_snapshots.customers_history "
        "ORDER BY id, dbt_valid_from",
    )


def test_two_snapshots_record_two_versions_and_a_hard_delete(repo):
    url = repo.warehouse
    first = run(repo, "acme")
    assert first.ok, first.errors
    assert first.nodes[HISTORY] is NodeStatus.SUCCESS
    assert history(url) == [(1, "silver", True), (2, "gold", True)]
    # the history table is the tenant's, written as its own role
    role = wh_sql(url, "SELECT rolname FROM pg_roles WHERE rolname LIKE '%acme_loader'")[0][0]
    owner = "SELECT tableowner FROM pg_tables WHERE schemaname = 'acme_snapshots'"
    assert wh_sql(url, owner) == [(role,)]

    with psycopg.connect(_conninfo(make_url(repo.source)), autocommit=True) as conn:
        conn.execute(
            "update customers set tier = 'gold', updated_at = '2026-02-01T00:00Z' where id = 1"
        )
        conn.execute("delete from customers where id = 2")
    second = run(repo, "acme")
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
    env = repo.env
    assert run(repo, "globex").ok
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
    result = run(repo, "acme", "snapshot:customers_history")
    assert result.nodes[HISTORY] is NodeStatus.FAILED
    assert "permission denied" in result.errors[HISTORY], result.errors[HISTORY]
    assert env["DWH_ADMIN_PASSWORD"] not in result.errors[HISTORY]
