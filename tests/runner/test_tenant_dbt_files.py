"""A tenant's own dbt files (macros, shared macros, defaults) through validate, plan, apply and
a real dbt run on a managed warehouse, where each tenant logs in as its own role.

One repository is applied once for the module (two tenants, a project-wide macro folder);
each test runs a few nodes and asserts several things per run, to keep dbt starts few.
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
from sqlalchemy.engine import make_url

from fabric import api
from fabric.addresses import Address
from fabric.apply import ApplyOptions
from fabric.domain.runs import NodeStatus
from fabric.state.engine import create_database, drop_database
from tests.runner.test_managed_runs import _conninfo, run, tamper, wh_sql

FABRIC_YAML = """
format_version: 1
dbt: {{macros: shared_macros, packages: [{{local: packages/fabric_utils}}]}}
defaults:
  transformations: {{materialized: table}}
warehouses:
  dwh:
    host: {wh.host}
    port: {wh.port}
    database: {wh.database}
    admin: {{username: {wh.username}, password: "${{env:DWH_ADMIN_PASSWORD}}"}}
    manage_roles: true
    role_prefix: {prefix}
"""
PACKAGE_MACROS = """\
{% macro triple(x) %}({{ x }} * 3){% endmacro %}
{% test non_negative(model, column_name) %}
select * from {{ model }} where {{ column_name }} < 0
{% endtest %}
"""
SHARED_MACRO = """\
{% macro cents_to_dollars(column) -%}
    ({{ column }} / 100.0)::numeric(16, 2)
{%- endmacro %}
"""
ACME = """
tenant:
  display_name: Acme
  warehouse: dwh
  defaults: {transformations: {schema: acme_marts}}
connections:
  dwh: {type: postgres, direction: destination, warehouse: dwh}
transformations:
  priced:
    sql: "select {{ cents_to_dollars('250') }} as dollars, {{ double_it('21') }} as n,
      {{ fabric_utils.triple(3) }} as t"
    tests: {t: [fabric_utils.non_negative]}
  thief:
    sql: "select {{ steal() }} as n"
    materialized: view
  by_country:
    sql: "select code, population, population * 2 as p from {{ ref('country_codes') }}"
    description: Doubled populations
    columns: {p: {description: twice the population}}
    tests:
      population: [positive]
      p:
        - {positive: {config: {severity: warn, where: "code = 'de'"}}}
        - {above: {value: 1000, config: {severity: warn}}}
seeds:
  country_codes:
    column_types: {code: varchar(2), population: bigint}
    description: ISO country codes
    columns: {code: {description: two-letter code}}
    tests: {code: [not_null, unique]}
"""
COUNTRIES = "code,population\nde,83\nfr,68\n"
SINGULAR = """\
select c.code
from {{ ref('country_codes') }} c
left join {{ ref('by_country') }} b on b.code = c.code
where b.p is distinct from c.population * 2
"""
ACME_MACROS = """\
{% test positive(model, column_name) %}
select * from {{ model }} where {{ column_name }} <= 0
{% endtest %}
{% test above(model, column_name, value) %}
select * from {{ model }} where {{ column_name }} <= {{ value }}
{% endtest %}
{% macro double_it(x) %}({{ x }} * 2){% endmacro %}
{% macro steal() %}(select max(n) from globex_marts.totals){% endmacro %}
"""
GLOBEX = """
tenant:
  display_name: Globex
  warehouse: dwh
connections:
  dwh: {type: postgres, direction: destination, warehouse: dwh}
transformations:
  totals:
    sql: select {{ cents_to_dollars('700') }} as n
    schema: globex_marts
"""


@pytest.fixture(scope="module")
def repo(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str
) -> Iterator[tuple[Path, dict[str, str], str]]:
    made = [f"fabric_test_dbtf_{secrets.token_hex(4)}" for _ in range(2)]
    warehouse = make_url(create_database(pg_server_url, made[0]))
    control = create_database(pg_server_url, made[1])
    tmp = tmp_path_factory.mktemp("dbt-files")
    prefix = f"r{secrets.token_hex(3)}_"
    root = tmp / "repo"
    files = {
        "fabric.yaml": FABRIC_YAML.format(wh=warehouse, prefix=prefix),
        "shared_macros/money.sql": SHARED_MACRO,
        "packages/fabric_utils/dbt_project.yml": "name: fabric_utils\nversion: '1.0'\n"
        "config-version: 2\n",
        "packages/fabric_utils/macros/utils.sql": PACKAGE_MACROS,
        "tenants/acme/tenant.yaml": ACME,
        "tenants/acme/macros/acme_macros.sql": ACME_MACROS,
        "tenants/acme/seeds/country_codes.csv": COUNTRIES,
        "tenants/acme/tests/every_country_doubled.sql": SINGULAR,
        "tenants/globex/tenant.yaml": GLOBEX,
    }
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(body))
    env = {
        "FABRIC_DATABASE_URL": control,
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp / "home"),
        "DWH_ADMIN_PASSWORD": warehouse.password or "",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    # Packages are not installed yet: a run says so at once, without starting dbt.
    first = run(root, env, "acme", "transformation:priced")
    assert (
        "run `fabric deps --tenant acme`"
        in first.errors[Address.parse("acme.transformation.priced")]
    )
    assert api.deps(root, environ=env) == {
        "acme": ["local packages/fabric_utils"],
        "globex": ["local packages/fabric_utils"],
    }
    yield root, env, warehouse.render_as_string(hide_password=False)
    with psycopg.connect(_conninfo(warehouse), autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
        ).fetchall():
            conn.execute(f'DROP OWNED BY "{name}"')
            conn.execute(f'DROP ROLE "{name}"')
    for name in made:
        drop_database(pg_server_url, name)


def test_macros_run_in_the_tenants_project_and_cannot_read_another_tenant(repo):
    root, env, url = repo
    globex = run(root, env, "globex")
    assert globex.ok, globex.errors
    acme = run(root, env, "acme", "transformation:priced")
    assert acme.ok, acme.errors
    # A tenant macro and a shared one, and the defaults: tenant schema, project materialization.
    assert wh_sql(url, "select dollars, n, t from acme_marts.priced") == [(2.5, 42, 9)]
    priced_tests = acme.results[Address.parse("acme.transformation.priced")].tests
    assert [(t.name.startswith("fabric_utils_non_negative"), t.status) for t in priced_tests] == [
        (True, "pass")
    ]
    kinds = wh_sql(
        url,
        "select table_schema, table_type from information_schema.tables "
        "where table_name in ('priced', 'totals') order by 1",
    )
    assert kinds == [("acme_marts", "BASE TABLE"), ("globex_marts", "BASE TABLE")]
    assert wh_sql(url, "select n from globex_marts.totals") == [(7.0,)]

    # A macro reading globex's schema passes validate (SQL is not parsed) but the tenant's
    # warehouse login is denied.
    thief = Address.parse("acme.transformation.thief")
    result = run(root, env, "acme", "transformation:thief")
    assert result.nodes[thief] is NodeStatus.FAILED
    assert "permission denied" in result.errors[thief].lower()

    # A macro forced into the stored state past validation reads no fabric variable: the run's
    # environment holds none of them.
    tamper(
        env,
        "acme",
        "macros",
        "acme_macros",
        "sql",
        "{% macro double_it(x) %}'{{ env_var('FABRIC_SECRET_KEYS') }}'{% endmacro %}"
        "{% macro steal() %}1{% endmacro %}",
    )
    priced = Address.parse("acme.transformation.priced")
    result = run(root, env, "acme", "transformation:priced")
    assert result.nodes[priced] is NodeStatus.FAILED
    assert "env var required but not provided" in result.errors[priced].lower()
    assert env["FABRIC_SECRET_KEYS"] not in result.errors[priced]
    # Apply again: the tampered record is drift, put back from the repository.
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())
    assert run(root, env, "acme", "transformation:priced").ok


def test_a_seed_is_a_node_batched_with_the_models_that_ref_it(repo):
    root, env, url = repo
    seed = Address.parse("acme.seed.country_codes")
    model = Address.parse("acme.transformation.by_country")
    result = run(root, env, "acme", "+transformation:by_country")
    assert result.ok, result.errors
    assert set(result.nodes) == {seed, model}
    assert result.results[seed].tests and all(
        t.status == "pass" for t in result.results[seed].tests
    )
    tests = {t.name: t for t in result.results[model].tests}
    # custom generic tests (one with a `where` and severity), the singular test, attached to
    # the model it refs (downstream of the seed it refs too: it runs after both)
    assert "every_country_doubled" in tests and tests["every_country_doubled"].status == "pass"
    assert "every_country_doubled" not in {t.name for t in result.results[seed].tests}
    assert sorted(t.status for n, t in tests.items() if n.startswith("positive_")) == [
        "pass",
        "pass",
    ]
    above = next(t for n, t in tests.items() if n.startswith("above_"))
    assert (above.status, above.failures) == ("warn", 2)
    docs = (Path(env["FABRIC_HOME"]) / "work/acme/dbt/models/schema.yml").read_text()
    assert "Doubled populations" in docs and "twice the population" in docs
    assert wh_sql(url, "select code, p from acme_marts.by_country order by code") == [
        ("de", 166),
        ("fr", 136),
    ]
    types = wh_sql(
        url,
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'acme_marts' and table_name = 'country_codes' order by 1",
    )
    assert types == [("code", "character varying"), ("population", "bigint")]
    # Forced past validation into globex's schema: the tenant's login may not create there.
    tamper(env, "acme", "seeds", "country_codes", "schema", "globex_marts")
    result = run(root, env, "acme", "seed:country_codes")
    assert result.nodes[seed] is NodeStatus.FAILED
    assert "permission denied" in result.errors[seed].lower()
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())


def test_a_changed_macro_shows_in_the_plan_like_a_changed_sql_file(repo):
    root, env, _ = repo
    shared = root / "shared_macros" / "money.sql"
    own = root / "tenants" / "acme" / "macros" / "acme_macros.sql"
    seed = root / "tenants" / "acme" / "seeds" / "country_codes.csv"
    before = shared.read_text(), own.read_text(), seed.read_text()
    try:
        shared.write_text(before[0].replace("16, 2", "18, 2"))
        own.write_text(before[1] + "{% macro triple(x) %}({{ x }} * 3){% endmacro %}\n")
        seed.write_text(before[2] + "it,59\n")
        plan = api.plan(root, environ=env).plan
        changed = {str(c.address): c for c in plan.changes}
        for address in (
            "acme.macro.project__money",
            "globex.macro.project__money",
            "acme.macro.acme_macros",
        ):
            assert changed[address].action.value == "update", address
            assert [f.name for f in changed[address].fields] == ["sql"]
        assert [f.name for f in changed["acme.seed.country_codes"].fields] == ["csv"]
    finally:
        shared.write_text(before[0])
        own.write_text(before[1])
        seed.write_text(before[2])
