"""Runs against a managed warehouse connect as the tenant's own role: a real dlt load and a real
dbt run, and the first cross-tenant denials (the groundwork of issue 8's matrix).

Two tenants, acme and globex, each with a fabric-managed role; acme shares acme_marts with
globex. A tenant cannot declare another's schema (validate refuses it), so the attempts below
are forced past validation by editing the stored record in the control plane (`tamper`), the
way a compromised control plane or a bug would hand it to the runner: the warehouse itself
must still say no.
"""

from __future__ import annotations

import json
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
from fabric.state.engine import make_engine
from fabric.state.snapshot import read_tenant_rows

FABRIC_YAML = """
format_version: 1
warehouses:
  dwh:
    host: {wh.host}
    port: {wh.port}
    database: {wh.database}
    admin: {{username: {wh.username}, password: "${{env:DWH_ADMIN_PASSWORD}}"}}
    manage_roles: true
    role_prefix: {prefix}
"""
ACME = """
tenant:
  display_name: Acme
  warehouse: dwh
  share: [{{with: [globex], schemas: [acme_marts]}}]
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
  orders: {{source: src, dataset: acme_raw, mode: single_table, table: orders}}
transformations:
  who:
    sql: "select current_user::text as u, count(*) as n from {{{{ source('orders', 'orders') }}}}"
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
  totals:
    sql: select current_user::text as u, 7 as n
    schema: globex_marts
    materialized: table
  from_acme:
    sql: select u, n from acme_marts.who
    schema: globex_marts
    materialized: table
"""


@pytest.fixture
def repo(tmp_path: Path, make_database) -> Iterator[tuple[Path, dict[str, str], str]]:
    warehouse, source = make_url(make_database()), make_url(make_database())
    prefix = f"r{secrets.token_hex(3)}_"
    root = tmp_path / "repo"
    for slug, body in (("acme", ACME.format(src=source)), ("globex", GLOBEX)):
        (root / "tenants" / slug).mkdir(parents=True)
        (root / "tenants" / slug / "tenant.yaml").write_text(textwrap.dedent(body))
    (root / "fabric.yaml").write_text(FABRIC_YAML.format(wh=warehouse, prefix=prefix))
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp_path / "home"),
        "DWH_ADMIN_PASSWORD": warehouse.password or "",
        "ACME_SRC_PASSWORD": source.password or "",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }
    src = make_engine(source)
    with src.begin() as conn:
        conn.execute(text("create table orders (id int primary key, status text)"))
        conn.execute(text("insert into orders values (1, 'new'), (2, 'paid')"))
    src.dispose()
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    yield root, env, warehouse.render_as_string(hide_password=False)
    with psycopg.connect(_conninfo(warehouse), autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
        ).fetchall():
            conn.execute(f'DROP OWNED BY "{name}"')
            conn.execute(f'DROP ROLE "{name}"')


def _conninfo(url) -> str:
    return psycopg.conninfo.make_conninfo(
        host=url.host, port=url.port, dbname=url.database, user=url.username, password=url.password
    )


def wh_sql(url: str, statement: str) -> list[tuple]:
    with psycopg.connect(_conninfo(make_url(url)), autocommit=True) as conn:
        return conn.execute(statement).fetchall()


def tamper(env: dict[str, str], tenant: str, table: str, name: str, field: str, value: str):
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    with engine.begin() as conn:
        schema = read_tenant_rows(conn, [tenant])[tenant].schema_name
        conn.execute(
            text(
                f"UPDATE {schema}.{table} SET spec = jsonb_set(spec, ARRAY[:f], CAST(:v AS jsonb))"
                + (" - 'sql_file'" if field == "sql" else "")
                + " WHERE name = :n"
            ),
            {"f": field, "v": json.dumps(value), "n": name},
        )
    engine.dispose()


def run(root: Path, env: dict[str, str], tenant: str, *selectors: str):
    return api.run(root, tenants=[tenant], selectors=selectors, environ=env, workers=1)


def test_loads_and_models_run_as_the_tenants_role(repo):
    root, env, url = repo
    result = run(root, env, "acme")
    assert result.ok, result.errors
    role = wh_sql(url, "SELECT rolname FROM pg_roles WHERE rolname LIKE '%acme_loader'")[0][0]
    assert wh_sql(url, "SELECT u, n FROM acme_marts.who") == [(role, 2)]
    owners = wh_sql(url, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'acme_raw'")
    assert owners == [(role,)]  # dlt created its tables as acme's role
    for error in result.errors.values():
        assert env["DWH_ADMIN_PASSWORD"] not in error


def test_cross_tenant_attempts_are_denied_and_a_share_is_read_only(repo):
    root, env, url = repo
    assert run(root, env, "acme").ok
    result = run(root, env, "globex")
    assert result.ok, result.errors  # reads acme_marts, which acme shares with it
    assert wh_sql(url, "SELECT n FROM globex_marts.from_acme") == [(2,)]

    outcomes: dict[str, str] = {}

    def attempt(label: str, tenant: str, node: str) -> None:
        res = run(root, env, tenant, node)
        address = Address.parse(f"{tenant}.{node.replace(':', '.')}")
        assert res.nodes[address] is NodeStatus.FAILED, label
        assert "permission denied" in res.errors[address], res.errors[address]
        outcomes[label] = "denied"

    # acme's model selects from globex's schema
    tamper(env, "acme", "transformations", "who", "sql", "select n from globex_marts.totals")
    attempt("acme model reads globex_marts", "acme", "transformation:who")
    # acme's load writes into globex's schema
    tamper(env, "acme", "pipelines", "orders", "dataset", "globex_marts")
    attempt("acme load writes globex_marts", "acme", "pipeline:orders")
    # globex writes into the schema acme shares with it (read-only)
    tamper(env, "globex", "transformations", "totals", "schema", "acme_marts")
    attempt("globex model writes shared acme_marts", "globex", "transformation:totals")
    assert outcomes == {
        "acme model reads globex_marts": "denied",
        "acme load writes globex_marts": "denied",
        "globex model writes shared acme_marts": "denied",
    }
    assert wh_sql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'acme_marts'") == [(1,)]
