"""`fabric compile` and `fabric test` on a real control plane and a real warehouse.

The repository is applied as usual (the warehouse password is a `${env:...}` secret, stored
encrypted); compile reads the applied state, decrypts in this process and runs dbt in it.
`fabric test` goes through the normal runner (worker processes), so it runs as a subprocess
with the keys in its environment, the way a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fabric import api
from fabric.api import compile_transformation
from fabric.apply import ApplyOptions
from fabric.errors import FabricError
from fabric.state.engine import make_engine

TENANT = """
tenant: {{display_name: Acme, warehouse: dwh}}
connections:
  dwh:
    type: postgres
    direction: destination
    host: {host}
    port: {port}
    database: {database}
    username: {username}
    password: ${{env:ACME_DWH_PASSWORD}}
  src: {{type: postgres, direction: source, host: h, database: s}}
pipelines:
  orders: {{source: src, dataset: acme_raw, mode: single_table, table: orders}}
transformations:
  stg_orders:
    sql: "select id, status from {{{{ source('orders', 'orders') }}}}"
    schema: acme_staging
    tests:
      id: [not_null, unique]
  order_counts:
    sql_file: models/order_counts.sql
    schema: acme_marts
    materialized: table
    tests:
      status: [unique]
  untested:
    sql_file: models/untested.sql
    schema: acme_marts
"""
ORDER_COUNTS = "select status, count(*) as n\nfrom {{ ref('stg_orders') }}\ngroup by status\n"
UNTESTED = "-- no tests, and a typo\nselect id,\n  amout\nfrom {{ ref('stg_orders') }}\n"
CLI = "import fabric.cli.commands.dbt; from fabric.cli.main import main; main()"


@pytest.fixture
def applied(tmp_path, make_database):
    warehouse = make_url(make_database())
    root = tmp_path / "repo"
    (root / "tenants" / "acme" / "models").mkdir(parents=True)
    (root / "fabric.yaml").write_text("format_version: 1\nownership: {enforce: false}\n")
    (root / "tenants" / "acme" / "tenant.yaml").write_text(
        textwrap.dedent(TENANT).format(
            host=warehouse.host,
            port=warehouse.port,
            database=warehouse.database,
            username=warehouse.username,
        )
    )
    (root / "tenants" / "acme" / "models" / "order_counts.sql").write_text(ORDER_COUNTS)
    (root / "tenants" / "acme" / "models" / "untested.sql").write_text(UNTESTED)
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp_path / "home"),
        "ACME_DWH_PASSWORD": warehouse.password or "",
        "PATH": os.environ.get("PATH", ""),
    }
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    engine = make_engine(warehouse)
    with engine.begin() as conn:
        conn.execute(text("create schema acme_raw"))
        conn.execute(text("create table acme_raw.orders (id int, status text)"))
        conn.execute(text("insert into acme_raw.orders values (1, 'new'), (2, 'paid')"))
    yield root, env, engine
    engine.dispose()


def test_compile_prints_the_sql_with_refs_and_sources_resolved(applied):
    root, env, engine = applied
    database = engine.url.database
    sql = compile_transformation(root, "acme.transformation.order_counts", environ=env)
    assert sql.rstrip() == (
        f'select status, count(*) as n\nfrom "{database}"."acme_staging"."stg_orders"\n'
        "group by status"
    )
    staged = compile_transformation(root, "acme.transformation.stg_orders", environ=env)
    assert f'from "{database}"."acme_raw"."orders"' in staged
    for path in (root.parent / "home").rglob("*"):  # the work folder holds no credential
        if path.is_file():
            assert env["ACME_DWH_PASSWORD"].encode() not in path.read_bytes(), path

    import fabric.cli.commands.dbt  # noqa: F401  (registers compile and test)
    from fabric.cli.main import cli  # the command, as `fabric compile` runs it

    out = CliRunner().invoke(
        cli, ["compile", "acme.transformation.order_counts", "--repo", str(root)], env=env
    )
    assert out.exit_code == 0, out.output
    assert f'"{database}"."acme_staging"."stg_orders"' in out.output


def test_compile_names_what_is_wrong_with_the_address(applied):
    root, env, _ = applied
    with pytest.raises(FabricError, match="not a transformation's address"):
        compile_transformation(root, "acme.pipeline.orders", environ=env)
    with pytest.raises(FabricError, match="not a transformation's address"):
        compile_transformation(root, "order_counts", environ=env)
    applied = "Applied transformations: order_counts, stg_orders, untested"
    with pytest.raises(FabricError, match=applied):
        compile_transformation(root, "acme.transformation.nope", environ=env)


def test_fabric_test_runs_only_the_tests_and_fails_on_a_failing_one(applied):
    root, env, engine = applied

    def fabric(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLI, *args, "--tenant", "acme", "--repo", str(root)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    built = fabric("run", "stg_orders", "order_counts")
    assert built.returncode == 0, built.stdout + built.stderr
    with engine.begin() as conn:
        oid = conn.execute(text("select 'acme_marts.order_counts'::regclass::oid")).scalar()
    passed = fabric("test")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "✓ acme.transformation.stg_orders: 2 tests passed" in passed.stdout
    assert "    ✓ not_null_stg_orders_id" in passed.stdout.splitlines()
    assert "- acme.transformation.untested: no tests" in passed.stdout
    assert "Tests: 3 passed." in passed.stdout
    assert "acme.pipeline.orders" not in passed.stdout  # tests only: no load ran
    with engine.begin() as conn:
        conn.execute(text("insert into acme_raw.orders values (2, 'shipped')"))  # id 2 twice
        same = conn.execute(text("select 'acme_marts.order_counts'::regclass::oid")).scalar()
    assert same == oid  # `fabric test` rebuilt nothing
    failed = fabric("test")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # the report README shows: each test with dbt's failures count; order_counts' table was
    # not rebuilt, so its tests still pass
    assert (
        "✓ acme.transformation.order_counts: 1 test passed\n"
        "    ✓ unique_order_counts_status\n"
        "✗ acme.transformation.stg_orders: 1 of 2 tests failed\n"
        "    ✓ not_null_stg_orders_id\n"
        "    ✗ unique_stg_orders_id: 1 failure\n"
        "- acme.transformation.untested: no tests\n"
        "Tests: 2 passed, 1 failed.\n"
    ) in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr


def test_a_failed_model_shows_the_database_error_at_its_sql_line(applied):
    root, env, _ = applied

    def fabric(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLI, *args, "--repo", str(root)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    failed = fabric("run", "stg_orders", "untested", "--tenant", "acme")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    headline = 'tenants/acme/models/untested.sql:3: column "amout" does not exist'
    progress = next(x for x in failed.stdout.splitlines() if "✗" in x)
    assert progress.endswith(f": {headline}")
    summary = next(
        x for x in failed.stdout.splitlines() if x.startswith("acme.trans") and "fail" in x
    )
    assert headline[:40] in summary  # the table's cell starts with it too

    show = fabric("runs", "show", "1", "--tenant", "acme")
    assert show.returncode == 0, show.stdout + show.stderr
    table, _, below = show.stdout.partition("acme.transformation.untested error:")
    assert max(len(line) for line in table.splitlines()) < 160  # no padding to the longest error
    assert f"  {headline}" in below.splitlines()
    assert "Database Error in model untested (models/untested.sql)" in below
