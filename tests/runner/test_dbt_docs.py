"""`fabric docs`: dbt's static docs site of a tenant, on a real warehouse whose roles fabric
manages: model and source descriptions, the pipelines as dbt sources (loader dlt) in the
lineage, catalog columns read through the tenant's own login, and nothing of another tenant's
schema even when a stored record is forced to name it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fabric import api
from tests.cli.conftest import base_env, run_fabric
from tests.runner.managed_repo import ManagedRepo, managed_repo, reapply, run
from tests.runner.test_managed_runs import tamper

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
  orders:
    description: Orders copied nightly from the shop database
    source: src
    dataset: acme_raw
    mode: single_table
    table: orders
transformations:
  order_totals:
    description: Revenue per customer, in cents
    sql: |
      select customer_id, sum(amount_cents) as revenue_cents
      from {{ source('orders', 'orders') }}
      group by 1
    schema: acme_marts
    materialized: table
"""
GLOBEX = """
tenant:
  display_name: Globex
  warehouse: dwh
connections:
  dwh: {type: postgres, direction: destination, warehouse: dwh}
transformations:
  payroll:
    sql: select 1 as globex_salary_column
    schema: globex_marts
    materialized: table
"""


@pytest.fixture(scope="module")
def repo(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedRepo]:
    yield from managed_repo(
        pg_server_url,
        tmp_path_factory.mktemp("docs"),
        {"acme": ACME, "globex": GLOBEX},
        {},
        (
            "create table orders (id int primary key, customer_id int, amount_cents int)",
            "insert into orders values (1, 7, 1200), (2, 7, 300)",
        ),
    )


def test_the_static_site_documents_models_sources_and_columns(repo, tmp_path):
    assert run(repo, "acme").ok and run(repo, "globex").ok
    env = base_env(**repo.env)
    out = tmp_path / "site"
    done = run_fabric("docs", "--tenant", "acme", "--out", str(out), cwd=repo.root, env=env)
    assert done.returncode == 0, done.stderr
    html = (out / "index.html").read_text()
    assert "Revenue per customer, in cents" in html  # the model's description
    assert "Orders copied nightly from the shop database" in html  # the pipeline's
    assert "source.fabric_acme.orders.orders" in html  # the pipeline as a source node
    assert '"loader": "dlt"' in html
    assert "model.fabric_acme.order_totals" in html
    assert '"revenue_cents"' in html  # a column, from the catalog (read as acme's role)
    assert "globex" not in html
    assert repo.env["DWH_ADMIN_PASSWORD"] not in html


def test_docs_never_catalog_another_tenants_schema(repo, tmp_path):
    # validate refuses a model in globex's schema (schema-conflict); forced into the stored
    # record, the catalog still lists nothing of globex_marts: acme's login may not use it
    tamper(repo.env, "acme", "transformations", "order_totals", "schema", "globex_marts")
    try:
        html = api.docs(repo.root, "acme", out=tmp_path / "forced", environ=repo.env).read_text()
    finally:
        reapply(repo)
    assert "globex_salary_column" not in html
    assert "payroll" not in html
