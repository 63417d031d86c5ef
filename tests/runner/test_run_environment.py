"""What a tenant's code can see while fabric runs it, on a real control plane, warehouse and
source, through `fabric run` in a process that holds the keys (as a person or cron runs it).

The attack (issue 8): a model with `env_var("FABRIC_SECRET_KEYS")` and
`env_var("FABRIC_DATABASE_URL")` passed validate and apply, and its run wrote the master keys and
the control plane's URL into the tenant's table and into dbt's files under `.fabric/work/`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fabric import api
from fabric.state.engine import make_engine
from fabric.state.snapshot import read_tenant_rows
from tests.pg_repo import CONNECTIONS, apply_with_secrets, control_plane_env, server_passwords

ATTACK = (
    'select \'{{ env_var("FABRIC_SECRET_KEYS", "") }}\' as k, '
    '\'{{ env_var("FABRIC_DATABASE_URL", "") }}\' as u'
)
TENANT = """\
tenant:
  display_name: Acme
  warehouse: dwh
  env: [ACME_REGION]
{connections}pipelines:
  orders: {{source: src, dataset: acme_raw, mode: single_table, table: orders}}
transformations:
  regional:
    sql: |
      select id, '{{{{ env_var("ACME_REGION") }}}}' as region
      from {{{{ source('orders', 'orders') }}}}
    schema: acme_marts
    materialized: table
  probe:
    sql_file: models/probe.sql
    schema: acme_marts
    materialized: table
"""


@pytest.fixture
def repo(tmp_path, make_database):
    warehouse, source = make_url(make_database()), make_url(make_database())
    root = tmp_path / "repo"
    (root / "tenants" / "acme" / "models").mkdir(parents=True)
    (root / "fabric.yaml").write_text("format_version: 1\nownership: {enforce: false}\n")
    tenant = TENANT.format(connections=CONNECTIONS.format(wh=warehouse, src=source))
    (root / "tenants" / "acme" / "tenant.yaml").write_text(tenant)
    (root / "tenants" / "acme" / "models" / "probe.sql").write_text("select 1 as k\n")
    env = control_plane_env(tmp_path, make_database, keys=2, ACME_REGION="eu-west")
    src = make_engine(source)
    with src.begin() as conn:
        conn.execute(text("create table orders (id int primary key, status text)"))
        conn.execute(text("insert into orders values (1, 'new'), (2, 'paid')"))
    src.dispose()
    return root, env, server_passwords(warehouse, source), warehouse


def tamper(env: dict[str, str], name: str, sql: str) -> None:
    """Write a transformation's stored SQL directly in the control plane, past validation (no
    tenant can; a defence-in-depth test may)."""
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    with engine.begin() as conn:
        schema = read_tenant_rows(conn, ["acme"])["acme"].schema_name
        conn.execute(
            text(
                f"UPDATE {schema}.transformations SET spec = jsonb_set(spec, '{{sql}}', "
                "CAST(:sql AS jsonb)) - 'sql_file' WHERE name = :n"
            ),
            {"sql": json.dumps(sql), "n": name},
        )
    engine.dispose()


def fabric_run(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric", "run", "--tenant", "acme", "--repo", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_env_var_attack_is_refused_by_validate_and_reads_nothing_when_forced(repo, monkeypatch):
    root, env, passwords, warehouse = repo
    probe = root / "tenants" / "acme" / "models" / "probe.sql"
    probe.write_text(ATTACK + "\n")
    found = [
        (d.code, d.span.path, d.span.line) for d in api.validate(root).load.diagnostics if d.span
    ]
    assert found == [("undeclared-env-var", "tenants/acme/models/probe.sql", 1)] * 2

    probe.write_text("select 1 as k\n")
    apply_with_secrets(root, env, passwords)
    tamper(env, "probe", ATTACK)
    out = fabric_run(root, env)
    assert out.returncode == 0, out.stdout + out.stderr

    # `fabric compile` runs dbt in its own process, which holds the keys: no more reach either
    for name in ("FABRIC_SECRET_KEYS", "FABRIC_DATABASE_URL"):
        monkeypatch.setenv(name, env[name])
    compiled = api.compile_transformation(root, "acme.transformation.probe", environ=env)
    assert compiled.strip() == "select '' as k, '' as u"

    engine = make_engine(warehouse)
    with engine.connect() as conn:
        stolen = conn.execute(text("select k, u from acme_marts.probe")).one()
        regions = conn.execute(text("select distinct region from acme_marts.regional")).all()
        loaded = conn.execute(text("select count(*) from acme_raw.orders")).scalar_one()
    engine.dispose()
    assert tuple(stolen) == ("", "")
    assert regions == [("eu-west",)]  # a declared variable is readable
    assert loaded == 2

    # nothing secret under the work folder: compiled SQL, manifests, partial_parse.msgpack,
    # run_results, dbt's and dlt's logs and state, the workers' HOME
    work = Path(env["FABRIC_HOME"]) / "work"
    files = [p for p in work.rglob("*") if p.is_file()]
    assert any(p.name == "partial_parse.msgpack" for p in files)
    assert not any(p.name == "manifest.json" for p in files)  # dbt runs with --no-write-json
    assert any("dlt" in p.parts for p in files)
    needles = [
        *passwords.values(),
        *env["FABRIC_SECRET_KEYS"].split(","),
        env["FABRIC_DATABASE_URL"],
        make_url(env["FABRIC_DATABASE_URL"]).database,
    ]
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, (path, needle[:8])
    assert not [n for n in needles if n in out.stdout + out.stderr]
