"""dbt files a tenant brings (macros) and transformation defaults, as `validate` sees them.

Every fault is reported before any run, at the file and line, with a did-you-mean where a
close name exists; a tenant's macro cannot read another tenant's or fabric's variables, cannot
override what fabric manages, and cannot reach outside its folder or the repository.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from fabric.addresses import Address, Kind
from fabric.config.dbt_builtins import DBT_MACROS
from fabric.config.loader import load_repository
from fabric.config.macros import macro_calls, macro_definitions
from fabric.plan.records import tenant_records
from tests.config.conftest import TENANT

MACROS = """\
{% macro cents_to_dollars(column) -%}
    ({{ column }} / 100.0)::numeric(16, 2)
{%- endmacro %}

{% test positive(model, column_name) %}
select * from {{ model }} where {{ column_name }} <= 0
{% endtest %}
"""
MODEL = """\
transformations:
  totals:
    schema: acme_marts
    sql: |
      select {{ cents_to_dollars('amount') }} as dollars,
             {{ cents_to_dolars('amount') }} as typo,
             {{ dbt_utils.star('x') }} as pkg,
             {{ "x" | default('y') }}, {{ 'count(*)' }},
             {% if is_incremental() %} 1 {% endif %}
             {{ adapter.dispatch('x')() }}
      from t
"""


def _errors(root: Path) -> list:
    return [d for d in load_repository(root).diagnostics if d.severity == "error"]


def test_macro_calls_are_read_conservatively():
    sql = (
        "{# {{ commented_out() }} #}\n"
        "select {{ a_macro('x(1)') }}, {{ obj.method() }}, {{ v | replace('a', 'b') }}\n"
        "{% set local = 1 %}{% macro inline(x) %}{{ x }}{% endmacro %}{{ inline(1) }}\n"
        "{% if x is divisibleby(3) %}{{ other( ) }}{% endif %}\n"
    )
    assert [(c.name, c.line) for c in macro_calls(sql)] == [("a_macro", 2), ("other", 4)]
    defs = macro_definitions(MACROS)
    assert [(d.name, d.line, d.kind) for d in defs] == [
        ("cents_to_dollars", 1, "macro"),
        ("test_positive", 5, "test"),
    ]


def test_builtin_macro_list_matches_the_installed_dbt():
    names = set()
    for module in ("dbt.include.global_project", "dbt.include.postgres"):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.submodule_search_locations
        for folder in spec.submodule_search_locations:
            for path in Path(folder).rglob("*.sql"):
                for m in re.finditer(r"\{%-?\s*(macro|test)\s+(\w+)", path.read_text()):
                    name = m.group(2) if m.group(1) == "macro" else f"test_{m.group(2)}"
                    if not name.startswith(("default__", "postgres__")):
                        names.add(name)
    assert names == set(DBT_MACROS)


def test_a_valid_macro_is_stored_and_an_unknown_call_is_reported_with_a_did_you_mean(make_repo):
    root = make_repo(
        {
            "tenants/acme/macros/money.sql": MACROS,
            "tenants/acme/transformations.yaml": MODEL,
        }
    )
    errors = _errors(root)
    assert [(d.code, d.span.path, d.span.line) for d in errors] == [
        ("unknown-macro", "tenants/acme/transformations.yaml", 6)
    ]
    assert "cents_to_dolars()" in errors[0].detail
    assert "Did you mean 'cents_to_dollars'?" in (errors[0].hint or "")

    fixed = MODEL.replace("cents_to_dolars", "cents_to_dollars")
    (root / "tenants/acme/transformations.yaml").write_text(fixed)
    result = load_repository(root)
    assert result.ok, result.diagnostics
    tenant = result.desired.tenants["acme"]
    assert list(tenant.macros) == ["money"]
    records = {r.address: r for r in tenant_records(tenant)}
    record = records[Address("acme", Kind.MACRO, "money")]
    assert record.spec == {"file": "tenants/acme/macros/money.sql", "sql": MACROS, "shared": False}
    before = result.desired.source_hash
    (root / "tenants/acme/macros/money.sql").write_text(MACROS + "\n-- changed\n")
    assert load_repository(root).desired.source_hash != before


def test_shared_macros_are_in_every_tenant_and_only_read_shared_env(make_repo):
    root = make_repo(
        {
            "fabric.yaml": "format_version: 1\nenv: [SHARED_X]\ndbt: {macros: macros}\n",
            "macros/money.sql": MACROS.replace("cents_to_dollars", "to_dollars"),
            "macros/env.sql": (
                "{% macro ok() %}{{ env_var('SHARED_X') }}{% endmacro %}\n"
                "{% macro bad() %}{{ env_var('ACME_SHOP_PASSWORD') }}{% endmacro %}\n"
            ),
            "tenants/acme/transformations.yaml": MODEL.replace(
                "cents_to_dollars", "to_dollars"
            ).replace("cents_to_dolars", "ok"),
        }
    )
    errors = _errors(root)
    assert [(d.code, d.span.path, d.span.line) for d in errors] == [
        ("undeclared-env-var", "macros/env.sql", 2)
    ]
    (root / "macros/env.sql").write_text("{% macro ok() %}{{ env_var('SHARED_X') }}{% endmacro %}")
    result = load_repository(root)
    assert result.ok, result.diagnostics
    assert set(result.desired.tenants["acme"].macros) == {"project__env", "project__money"}
    assert result.desired.tenants["acme"].macros["project__money"].spec.shared


def test_hostile_macros_are_refused_before_any_run(make_repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "steal.sql").write_text("{% macro steal() %}1{% endmacro %}")
    root = make_repo(
        {
            "fabric.yaml": "format_version: 1\ndbt: {macros: ../outside}\n",
            "tenants/globex/tenant.yaml": "tenant: {display_name: Globex}\n",
            "tenants/acme/macros/env.sql": (
                "{% macro a() %}{{ env_var('GLOBEX_TOKEN') }}{% endmacro %}\n"
                "{% macro b() %}{{ env_var('FABRIC_SECRET_KEYS') }}{% endmacro %}\n"
                "{% macro c(n) %}{{ env_var(n) }}{% endmacro %}\n"
            ),
            "tenants/acme/macros/override.sql": (
                "{% macro ref(name) %}{{ return(builtins.ref(name)) }}{% endmacro %}\n"
                "{% macro generate_schema_name(a, b) %}globex_marts{% endmacro %}\n"
            ),
            "tenants/acme/macros/sub/env.sql": "{% macro d() %}1{% endmacro %}",
            "tenants/acme/macros/Bad-Name.sql": "{% macro e() %}1{% endmacro %}",
        }
    )
    os.symlink(outside, root / "tenants/acme/macros/linked")
    found = {(d.code, d.span.path if d.span else None, d.span.line if d.span else None)
             for d in _errors(root)}  # fmt: skip
    assert found == {
        ("bad-macros-folder", "fabric.yaml", 2),
        ("undeclared-env-var", "tenants/acme/macros/env.sql", 1),  # globex's variable
        ("undeclared-env-var", "tenants/acme/macros/env.sql", 2),  # fabric's keys
        ("dynamic-env-var", "tenants/acme/macros/env.sql", 3),
        ("reserved-macro", "tenants/acme/macros/override.sql", 1),
        ("reserved-macro", "tenants/acme/macros/override.sql", 2),
        ("duplicate-resource", "tenants/acme/macros/sub/env.sql", 1),
        ("bad-name", "tenants/acme/macros/Bad-Name.sql", 1),
        ("refused-tenant-path", "tenants/acme/macros/linked", 1),
    }


def test_transformation_defaults_resolve_resource_then_tenant_then_project(make_repo):
    root = make_repo(
        {
            "fabric.yaml": (
                "format_version: 1\ndefaults:\n  transformations:\n"
                "    materialized: table\n    tags: [daily]\n    tests_severity: warn\n"
            ),
            "tenants/acme/tenant.yaml": (
                TENANT.replace(
                    "  warehouse: dwh\n",
                    "  warehouse: dwh\n  defaults: {transformations: {schema: acme_marts, "
                    "tests_severity: error}}\n",
                )
            ),
            "tenants/acme/transformations.yaml": (
                "transformations:\n"
                "  plain: {sql: select 1 as n}\n"
                "  own: {sql: select 1 as n, schema: acme_own, materialized: view, tags: []}\n"
            ),
        }
    )
    result = load_repository(root)
    assert result.ok, result.diagnostics
    specs = {n: d.spec for n, d in result.desired.tenants["acme"].transformations.items()}
    assert (specs["plain"].schema_, specs["plain"].materialized) == ("acme_marts", "table")
    assert (specs["plain"].tags, specs["plain"].tests_severity) == (("daily",), "error")
    assert (specs["own"].schema_, specs["own"].materialized, specs["own"].tags) == (
        "acme_own",
        "view",
        (),
    )
    record = next(
        r for r in tenant_records(result.desired.tenants["acme"]) if r.address.name == "plain"
    )
    assert record.spec["schema"] == "acme_marts" and record.spec["materialized"] == "table"


def test_a_transformation_without_schema_and_no_default_is_an_error(make_repo):
    root = make_repo({"tenants/acme/transformations.yaml": "transformations:\n  t: {sql: x}\n"})
    errors = _errors(root)
    assert [(d.code, d.span.path, d.span.line) for d in errors] == [
        ("missing-field", "tenants/acme/transformations.yaml", 2)
    ]
    assert "defaults" in (errors[0].hint or "")


def test_seeds_are_discovered_configured_and_refd(make_repo):
    root = make_repo(
        {
            "tenants/acme/seeds/ref/country_codes.csv": "code,population\nde,83\n",
            "tenants/acme/seeds.yaml": (
                "seeds:\n  country_codes:\n    schema: acme_ref\n"
                "    column_types: {code: varchar(2)}\n    tests: {code: [unique]}\n"
            ),
            "tenants/acme/transformations.yaml": (
                "transformations:\n  t:\n    schema: acme_marts\n"
                "    sql: select * from {{ ref('country_codes') }}\n"
            ),
        }
    )
    result = load_repository(root)
    assert result.ok, result.diagnostics
    tenant = result.desired.tenants["acme"]
    seed = tenant.seeds["country_codes"].spec
    assert (seed.schema_, seed.warehouse, seed.csv) == (
        "acme_ref",
        "dwh",
        "code,population\nde,83\n",
    )
    assert [(str(d.upstream), str(d.downstream), d.origin) for d in tenant.dependencies] == [
        ("acme.seed.country_codes", "acme.transformation.t", "ref")
    ]
    edge = next(r for r in tenant_records(tenant) if r.address.kind is Kind.DEPENDENCY)
    assert Address.parse(str(edge.address)) == edge.address


def test_seed_faults_are_reported_at_their_file(make_repo, monkeypatch):
    import fabric.config.discovery as discovery

    monkeypatch.setattr(discovery, "MAX_SEED_BYTES", 40)
    root = make_repo(
        {
            "tenants/globex/tenant.yaml": "tenant: {display_name: Globex, warehouse: dwh}\n"
            "connections:\n  dwh: {type: postgres, direction: destination, "
            "host: dwh.internal, database: analytics, username: globex}\n"
            "transformations:\n  m: {sql: select 1 as n, schema: globex_marts}\n",
            "tenants/acme/seeds/t.csv": "a,b\n1,2\n",
            "tenants/acme/seeds/noschema.csv": "a,b\n1,2\n",
            "tenants/acme/seeds/steal.csv": "a\n1\n",
            "tenants/acme/seeds/big.csv": "a\n" + "1\n" * 40,
            "tenants/acme/seeds.yaml": (
                "seeds:\n  steal: {schema: globex_marts, column_types: {nope: int}}\n"
                "  ghost: {schema: acme_ref}\n"
            ),
            "tenants/acme/transformations.yaml": (
                "transformations:\n  t: {schema: acme_marts, sql: select 1}\n"
                "  u: {schema: acme_marts, sql: \"select * from {{ ref('stel') }}\"}\n"
            ),
        }
    )
    found = {(d.code, d.span.path, d.span.line) for d in _errors(root)}
    assert found == {
        ("seed-too-large", "tenants/acme/seeds/big.csv", 1),
        ("duplicate-resource", "tenants/acme/seeds/t.csv", 1),  # a transformation's name
        ("missing-field", "tenants/acme/seeds/noschema.csv", 1),  # no schema, no default
        ("unknown-column", "tenants/acme/seeds.yaml", 2),
        ("unknown-reference", "tenants/acme/seeds.yaml", 3),  # no ghost.csv
        ("unknown-reference", "tenants/acme/transformations.yaml", 3),  # ref('stel')
        ("schema-conflict", "tenants/acme/seeds/steal.csv", 1),  # globex's schema
        ("schema-conflict", "tenants/globex/tenant.yaml", 5),  # reported at both writers
    }
    hint = next(d.hint for d in _errors(root) if "stel" in d.detail)
    assert "Did you mean 'steal'?" in (hint or "")


def test_tests_as_dbt_users_write_them_are_checked_before_any_run(make_repo):
    root = make_repo(
        {
            "fabric.yaml": "format_version: 1\ndbt:\n  packages: [{local: packages/dbt_utils}]\n",
            "tenants/acme/macros/tests.sql": MACROS,
            "tenants/acme/transformations.yaml": (
                "transformations:\n"
                "  t:\n"
                "    schema: acme_marts\n"
                "    sql: select 1 as amount\n"
                "    tests:\n"
                "      amount:\n"
                "        - positive\n"
                "        - {positiv: {config: {severity: warn}}}\n"
                "        - {dbt_utils.accepted_range: {min_value: 0}}\n"
                "        - {dbt_utls.accepted_range: {min_value: 0}}\n"
                "        - {accepted_values: {values: [1], config: {severty: warn}}}\n"
                "  u: {schema: acme_marts, sql: select 1 as n}\n"
            ),
            "tenants/acme/tests/ok.sql": "select * from {{ ref('u') }} where n < 0\n",
            "tenants/acme/tests/sub/nothing.sql": "select 1\nwhere false\n",
            "tenants/acme/tests/typo.sql": (
                "select *\nfrom {{ ref('uu') }}\nwhere {{ cents_to_dolars('n') }} < 0\n"
                "and '{{ env_var(\"GLOBEX_TOKEN\") }}' = ''\n"
            ),
        }
    )
    found = {(d.code, d.span.path, d.span.line) for d in _errors(root)}
    assert found == {
        ("unknown-field", "tenants/acme/transformations.yaml", 11),  # severty
        ("unattached-test", "tenants/acme/tests/sub/nothing.sql", 1),
        ("unknown-reference", "tenants/acme/tests/typo.sql", 2),
        ("unknown-macro", "tenants/acme/tests/typo.sql", 3),
        ("undeclared-env-var", "tenants/acme/tests/typo.sql", 4),
    }
    # Fixed, the test names are checked (a broken transformation is not checked further).
    text = (root / "tenants/acme/transformations.yaml").read_text()
    (root / "tenants/acme/transformations.yaml").write_text(text.replace("severty", "severity"))
    (root / "tenants/acme/tests/typo.sql").unlink()
    (root / "tenants/acme/tests/sub/nothing.sql").unlink()
    errors = _errors(root)
    assert [(d.code, d.span.line) for d in errors] == [("unknown-test", 8), ("unknown-test", 10)]
    assert "Did you mean 'positive'?" in (errors[0].hint or "")
    assert "Did you mean 'dbt_utils'?" in (errors[1].hint or "")
    (root / "tenants/acme/transformations.yaml").write_text(
        text.replace("severty", "severity")
        .replace("positiv:", "positive:")
        .replace("utls", "utils")
    )
    result = load_repository(root)
    assert result.ok, result.diagnostics
    tenant = result.desired.tenants["acme"]
    assert tenant.tests["ok"].spec.attached == ("u",)
    spec = next(r.spec for r in tenant_records(tenant) if r.address.name == "t")
    assert spec["tests"]["amount"][:3] == [
        "positive",
        {"positive": {"config": {"severity": "warn"}}},
        {"dbt_utils.accepted_range": {"min_value": 0}},
    ]


def test_validate_knows_the_macros_and_tests_of_local_packages(make_repo):
    root = make_repo(
        {
            "fabric.yaml": "format_version: 1\ndbt:\n  packages: [{local: packages/utils}]\n",
            "packages/utils/dbt_project.yml": "name: fabric_utils\nversion: '1.0'\n",
            "packages/utils/macros/m.sql": (
                "{% macro triple(x) %}({{ x }} * 3){% endmacro %}\n"
                "{% test non_negative(model, column_name) %}select 1{% endtest %}\n"
            ),
            "tenants/acme/transformations.yaml": (
                "transformations:\n"
                "  t:\n"
                "    schema: acme_marts\n"
                "    sql: |\n"
                "      select {{ fabric_utils.triple(1) }} as a,\n"
                "             {{ fabric_utils.tripel(1) }} as b, {{ adapter.quote('x') }}\n"
                "    tests: {a: [fabric_utils.non_negative, fabric_utils.non_negativ]}\n"
            ),
        }
    )
    errors = _errors(root)
    assert [(d.code, d.span.line) for d in errors] == [("unknown-macro", 6), ("unknown-test", 7)]
    assert "Did you mean 'triple'?" in (errors[0].hint or "")
    assert "Did you mean 'non_negative'?" in (errors[1].hint or "")
