"""Cross-resource rules, through the loader: what they accept, what they reject, and where.

The corpus (test_corpus.py) holds one repository per fault; these tests vary one rule over
many inputs, check what a valid repository resolves to, and that one fault is not reported
again as the errors it causes elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from fabric.addresses import Address, Kind
from fabric.config.discovery import read_tenant_text
from fabric.config.loader import LoadResult, load_repository

MakeRepo = Callable[[Mapping[str, str]], Path]  # the `make_repo` fixture (conftest.py)
P = "tenants/acme/pipelines.yaml"
ORDERS = """\
pipelines:
  orders:
    source: shop_db
    dataset: acme_raw
    mode: single_table
    table: orders
    tags: [nightly]
"""


def load(make_repo: MakeRepo, files: Mapping[str, str]) -> LoadResult:
    return load_repository(make_repo(files))


def codes(result: LoadResult) -> list[str]:
    return [d.code for d in result.diagnostics]


def where(result: LoadResult) -> list[tuple[str, str, int]]:
    return [(d.code, d.span.path, d.span.line) for d in result.diagnostics if d.span]


def load_pipelines(make_repo: MakeRepo, text: str) -> LoadResult:
    return load_repository(make_repo({P: text}))


# --------------------------------------------------------------------------------------------
# a valid repository


def test_a_valid_repository_resolves_defaults_and_dependencies(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            "fabric.yaml": "format_version: 1\ndefaults: {timezone: Europe/Berlin}\n",
            P: ORDERS
            + """\
transformations:
  customers:
    sql: select 1 as id
    schema: acme_marts
  totals:
    sql_file: models/totals.sql
    schema: acme_marts
    depends_on: [customers]
schedules:
  nightly:
    cron: "0 2 * * *"
    targets: ["tag:nightly+"]
""",
            "tenants/acme/models/totals.sql": "select *\nfrom {{ source('orders', 'orders') }}\n"
            "join {{ ref('customers') }} using (id)\n",
        }
    )
    result = load_repository(repo)

    assert result.diagnostics == ()
    tenant = result.desired.tenants["acme"]
    assert tenant.pipelines["orders"].spec.destination == "dwh"
    assert tenant.transformations["totals"].spec.warehouse == "dwh"
    assert tenant.schedules["nightly"].spec.timezone == "Europe/Berlin"
    assert tenant.sql["totals"].startswith("select *")
    edges = {(str(d.upstream), str(d.downstream), d.origin) for d in tenant.dependencies}
    assert edges == {
        ("acme.pipeline.orders", "acme.transformation.totals", "source"),
        ("acme.transformation.customers", "acme.transformation.totals", "depends_on"),
    }  # the ref() to customers is the same edge as depends_on: kept once


# --------------------------------------------------------------------------------------------
# schedules


def schedule(cron: str, timezone: str = "UTC", targets: str = "[orders]") -> str:
    return ORDERS + (
        f'schedules:\n  s:\n    cron: "{cron}"\n    timezone: "{timezone}"\n'
        f"    targets: {targets}\n"
    )


@pytest.mark.parametrize("cron", ["0 2 * * *", "*/15 8-18 * * 1-5", "0 0 1 1 *", "30 4 * * sun"])
def test_valid_cron(make_repo: MakeRepo, cron: str) -> None:
    assert codes(load_pipelines(make_repo, schedule(cron))) == []


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 2 * * *",
        "61 2 * * *",
        "0 24 * * *",
        "0 2 32 * *",
        "0 2 * 13 *",
        "0 2 * * 9",
        "* * *",
        "@daily",
        "*/0 * * * *",
        "not a cron",
    ],
)
def test_invalid_cron(make_repo: MakeRepo, cron: str) -> None:
    result = load_pipelines(make_repo, schedule(cron))
    assert where(result) == [("bad-cron", P, 10)]


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"])
def test_valid_timezone(make_repo: MakeRepo, timezone: str) -> None:
    assert codes(load_pipelines(make_repo, schedule("0 2 * * *", timezone))) == []


@pytest.mark.parametrize(
    "timezone", ["Europe", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "UTC\\0"]
)
def test_invalid_timezone(make_repo: MakeRepo, timezone: str) -> None:
    result = load_pipelines(make_repo, schedule("0 2 * * *", timezone))
    assert where(result) == [("bad-timezone", P, 11)]


@pytest.mark.parametrize(
    ("targets", "code"),
    [
        ("['*', orders, +orders+, 'pipeline:orders', 'tag:nightly']", None),
        ("[order]", "unknown-reference"),
        ("['transformation:orders']", "unknown-reference"),
        ("['tag:weekly']", "unknown-reference"),
        ("['pipeline:*']", "bad-selector"),
        ("['Orders']", "bad-selector"),
    ],
)
def test_schedule_targets(make_repo: MakeRepo, targets: str, code: str | None) -> None:
    result = load_pipelines(make_repo, schedule("0 2 * * *", targets=targets))
    assert codes(result) == ([code] if code else [])


# --------------------------------------------------------------------------------------------
# secrets


REST = """\
connections:
  api:
    type: rest_api
    base_url: https://api.example.com
    headers:
      {header}
    resources:
      - name: customers
        path: /customers
        params: {{{param}}}
"""


@pytest.mark.parametrize(
    ("header", "param", "line"),
    [
        ("Authorization: Bearer sk_live_abc", "page_size: 100", 6),
        ("X-Api-Key: sk_live_abc", "page_size: 100", 6),
        ("X-Source: fabric", "api_key: sk_live_abc", 10),
        ("X-Source: fabric", "access_token: 12345", 10),
    ],
)
def test_credentials_in_headers_and_params_must_be_references(
    make_repo: MakeRepo, header: str, param: str, line: int
) -> None:
    result = load(make_repo, {"tenants/acme/api.yaml": REST.format(header=header, param=param)})
    assert where(result) == [("literal-secret", "tenants/acme/api.yaml", line)]
    assert "sk_live_abc" not in repr(result.diagnostics)


def test_references_in_headers_and_params_are_fine(make_repo: MakeRepo) -> None:
    text = REST.format(
        header="Authorization: Bearer ${secret:api_token}", param='api_key: "${env:ACME_API_KEY}"'
    )
    assert codes(load(make_repo, {"tenants/acme/api.yaml": text})) == []


def test_credentials_in_driver_options_must_be_references(make_repo: MakeRepo) -> None:
    text = """\
connections:
  crm:
    type: mysql
    direction: source
    host: crm.internal
    database: crm
    options: {ssl_mode: required, ssl_password: hunter2}
"""
    result = load(make_repo, {"tenants/acme/crm.yaml": text})
    assert where(result) == [("literal-secret", "tenants/acme/crm.yaml", 7)]


# --------------------------------------------------------------------------------------------
# pipelines


def test_merge_is_fine_when_the_rest_resources_declare_primary_keys(make_repo: MakeRepo) -> None:
    text = """\
connections:
  api:
    type: rest_api
    base_url: https://api.example.com
    resources:
      - {name: customers, path: /customers, primary_key: [id]}
pipelines:
  customers:
    source: api
    dataset: acme_raw
    mode: rest_api
    write_disposition: merge
"""
    assert codes(load(make_repo, {"tenants/acme/api.yaml": text})) == []


@pytest.mark.parametrize(
    ("filters", "ok"),
    [
        ("[{column: status, op: in, value: [a, b]}]", True),
        ("[{column: status, op: ne, value: test}]", True),
        ("[{column: status, op: in, value: a}]", False),
        ("[{column: status, op: eq, value: [a, b]}]", False),
    ],
)
def test_filter_values_match_their_op(make_repo: MakeRepo, filters: str, ok: bool) -> None:
    result = load_pipelines(make_repo, ORDERS + f"    filters: {filters}\n")
    assert codes(result) == ([] if ok else ["invalid-value"])


# --------------------------------------------------------------------------------------------
# transformations


def transformation(body: str) -> str:
    return ORDERS + "transformations:\n  totals:\n    schema: acme_marts\n" + body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("    sql: select 1\n    sql_file: models/totals.sql\n", "sql-xor-sql-file"),
        ("    materialized: table\n", "sql-xor-sql-file"),
        ("    sql: select 1 as id\n    unique_key: id\n", "field-not-for-mode"),
        (
            "    sql: select 1 as id\n    tests: {id: [{relationships: {to: x, field: id}}]}\n",
            "unknown-reference",
        ),
        ("    sql: select 1 as id\n    tests: {id: [{accepted_values: []}]}\n", "invalid-value"),
        ("    sql: select 1 as id\n    tests: {id: [not_nul]}\n", "unknown-test"),
    ],
)
def test_transformation_rules(make_repo: MakeRepo, body: str, code: str) -> None:
    assert codes(load_pipelines(make_repo, transformation(body))) == [code]


def test_a_relationships_test_may_name_a_model_with_ref(make_repo: MakeRepo) -> None:
    body = (
        "    sql: select 1 as id\n"
        "    tests: {id: [not_null, {relationships: {to: \"ref('totals')\", field: id}}]}\n"
    )
    assert codes(load_pipelines(make_repo, transformation(body))) == []


def test_source_of_a_full_database_pipeline_without_table_names_is_not_checked(
    make_repo: MakeRepo,
) -> None:
    text = ORDERS.replace("single_table\n    table: orders", "full_database") + (
        "transformations:\n  totals:\n    schema: acme_marts\n"
        "    sql: select * from {{ source('orders', 'anything') }}\n"
    )
    assert codes(load_pipelines(make_repo, text)) == []


def test_tests_take_dbts_per_test_config(make_repo: MakeRepo) -> None:
    body = (
        "    sql: select 1 as id\n"
        "    tests:\n"
        "      id:\n"
        "        - not_null: {config: {where: id > 0, store_failures: true}}\n"
        "        - unique: {config: {error_if: '>10', warn_if: '>0'}}\n"
        "        - accepted_values: {values: [1, 2], config: {severity: warn}}\n"
        "        - relationships: {to: totals, field: id, config: {severity: error}}\n"
    )
    result = load_pipelines(make_repo, transformation(body))
    assert result.desired is not None, result.diagnostics
    spec = result.desired.tenants["acme"].transformations["totals"].spec
    stored = spec.model_dump(mode="json", by_alias=True)["tests"]["id"]
    assert stored == [  # what reaches the control plane and dbt: config kept, as written
        {"not_null": {"config": {"where": "id > 0", "store_failures": True}}},
        {"unique": {"config": {"error_if": ">10", "warn_if": ">0"}}},
        {"accepted_values": {"values": [1, 2], "config": {"severity": "warn"}}},
        {"relationships": {"to": "totals", "field": "id", "config": {"severity": "error"}}},
    ]


@pytest.mark.parametrize(
    ("test", "line_hint"),
    [
        ("{not_null: {config: {sevrity: warn}}}", "Did you mean 'severity'?"),
        ("{accepted_values: {values: [1], config: {severity: warning}}}", "Did you mean 'warn'?"),
        ("{unique: {confg: {severity: warn}}}", "Did you mean 'config'?"),
        ("{unique: {values: [1]}}", None),
    ],
)
def test_a_wrong_test_config_is_reported_at_its_key(
    make_repo: MakeRepo, test: str, line_hint: str | None
) -> None:
    body = f"    sql: select 1 as id\n    tests:\n      id:\n        - {test}\n"
    result = load_pipelines(make_repo, transformation(body))
    (diag,) = result.diagnostics
    assert (diag.span.path, diag.span.line) == (P, 14)
    assert diag.hint == line_hint


def test_config_in_sql_may_not_override_what_the_yaml_owns(make_repo: MakeRepo) -> None:
    result = load(
        make_repo,
        {
            P: transformation(
                "    materialized: view\n"
                "    sql: |\n"
                "      {{ config(materialized='table',\n"
                "                on_schema_change='fail') }}\n"
                "      select 1 as id\n"
            ).replace("  totals:", "  inline:")
            + "  from_file:\n    schema: acme_marts\n    sql_file: models/from_file.sql\n",
            "tenants/acme/models/from_file.sql": (
                "-- settings\n"
                "{{ config(unique_key='id', alias='orders', post_hook='grant all on x to y') }}\n"
                "{{ config(**more) }}\n"
                "select 1 as id\n"
            ),
        },
    )
    models_file = "tenants/acme/models/from_file.sql"
    assert where(result) == [
        ("sql-config-override", models_file, 2),  # alias
        ("sql-config-override", models_file, 2),  # post_hook
        ("sql-config-override", models_file, 2),  # unique_key
        ("dynamic-config", models_file, 3),
        ("sql-config-override", P, 13),  # the SQL line, in the YAML's block scalar
    ]
    by_detail = {d.detail: d for d in result.diagnostics}
    inline = next(d for d in by_detail.values() if "inline" in d.detail)
    assert "materialized" in inline.detail and f"{P}:11" in inline.detail  # the YAML field
    assert inline.hint == (
        "Remove materialized from config() and set `materialized:` in the YAML instead."
    )
    unique_key = next(d for d in by_detail.values() if "unique_key" in d.detail)
    assert f"{P}:16" in unique_key.detail  # not set in the YAML: where the model is declared
    assert any("hooks run SQL" in (d.hint or "") for d in result.diagnostics)


def test_config_in_sql_may_set_what_the_yaml_does_not_own(make_repo: MakeRepo) -> None:
    body = (
        "    materialized: incremental\n"
        "    sql: \"{{ config(incremental_strategy='append', on_schema_change='fail') }} "
        "select 1 as id {# {{ config(materialized='table') }} #}\"\n"
    )
    assert codes(load_pipelines(make_repo, transformation(body))) == []


# --------------------------------------------------------------------------------------------
# sql_file


@pytest.fixture
def tenant_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tenants" / "acme"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "ok.sql").write_text("select 1\n")
    (tmp_path / "outside.sql").write_text("select 2\n")
    return folder


@pytest.mark.parametrize(
    ("relative", "problem"),
    [
        ("models/ok.sql", None),
        ("./models/../models/ok.sql", None),
        ("models/missing.sql", "does not exist"),
        ("models", "does not exist"),
        ("../../outside.sql", "points outside the tenant's folder"),
        ("/etc/passwd", "is an absolute path; give a path relative to the tenant's folder"),
        ("models/ok\0.sql", "is not a valid path"),
        ("x" * 300 + ".sql", "cannot be read (File name too long)"),
    ],
)
def test_read_tenant_text(tenant_folder: Path, relative: str, problem: str | None) -> None:
    text, got = read_tenant_text(tenant_folder.parents[1], "acme", relative)
    assert got == problem
    assert (text == "select 1\n") is (problem is None)


def test_read_tenant_text_resolves_symlinks_before_the_check(tenant_folder: Path) -> None:
    root = tenant_folder.parents[1]
    try:
        os.symlink(tenant_folder / "models" / "ok.sql", tenant_folder / "inside.sql")
        os.symlink(root / "outside.sql", tenant_folder / "models" / "out.sql")
        os.symlink(tenant_folder / "b.sql", tenant_folder / "a.sql")
        os.symlink(tenant_folder / "a.sql", tenant_folder / "b.sql")
    except (OSError, NotImplementedError) as exc:
        pytest.skip(f"cannot create a symlink here: {exc}")
    assert read_tenant_text(root, "acme", "inside.sql") == ("select 1\n", None)
    assert read_tenant_text(root, "acme", "models/out.sql")[1] == (
        "points outside the tenant's folder"
    )
    assert read_tenant_text(root, "acme", "a.sql")[0] is None


# --------------------------------------------------------------------------------------------
# schema ownership


BETA = """\
tenant:
  display_name: Beta
  warehouse: dwh
connections:
  dwh:
    type: postgres
    direction: destination
    host: {host}
    database: analytics
    password: ${{secret:beta_dwh}}
transformations:
  totals:
    sql: select 1 as id
    schema: {schema}
"""


@pytest.mark.parametrize(
    ("host", "schema", "conflict"),
    [
        ("dwh.internal", "acme_raw", True),  # beta's model writes acme's pipeline's dataset
        ("DWH.internal", "acme_raw", True),  # host names are case-insensitive
        ("other.internal", "acme_raw", False),  # another server
        ("dwh.internal", "beta_marts", False),
    ],
)
def test_two_tenants_may_not_write_one_schema_of_one_warehouse(
    make_repo: MakeRepo, host: str, schema: str, conflict: bool
) -> None:
    result = load(
        make_repo,
        {
            "tenants/acme/pipelines.yaml": ORDERS,
            "tenants/beta/tenant.yaml": BETA.format(host=host, schema=schema),
        },
    )
    expected = [
        ("schema-conflict", P, 2),
        ("schema-conflict", "tenants/beta/tenant.yaml", 12),
    ]
    assert where(result) == (expected if conflict else [])


# --------------------------------------------------------------------------------------------
# one fault, one diagnostic


def test_a_broken_resource_is_not_reported_again_by_what_refers_to_it(
    make_repo: MakeRepo,
) -> None:
    text = ORDERS.replace("acme_raw", "Acme-Raw") + (
        "transformations:\n"
        "  totals:\n"
        "    schema: acme_marts\n"
        "    sql: select * from {{ source('orders', 'orders') }}\n"
        "    depends_on: [orders]\n"
        "schedules:\n"
        "  nightly:\n"
        '    cron: "0 2 * * *"\n'
        "    targets: [orders, 'pipeline:orders', 'tag:nightly', +totals]\n"
    )
    result = load_pipelines(make_repo, text)
    assert where(result) == [("unsafe-identifier", P, 4)]


def test_a_broken_connection_is_not_reported_again_by_pipelines(make_repo: MakeRepo) -> None:
    text = """\
connections:
  crm:
    type: postgress
    direction: source
pipelines:
  contacts:
    source: crm
    dataset: acme_raw
    mode: single_table
    table: contacts
"""
    assert where(load_pipelines(make_repo, text)) == [("unknown-type", P, 3)]


def test_a_file_that_cannot_be_parsed_stops_the_tenants_cross_checks(make_repo: MakeRepo) -> None:
    result = load(
        make_repo,
        {
            "tenants/acme/tenant.yaml": "tenant: {display_name: Acme, warehouse: dwh\n",
            "tenants/acme/pipelines.yaml": ORDERS,
            "tenants/beta/tenant.yaml": "tenant: {display_name: Beta}\n",
            "tenants/beta/pipelines.yaml": ORDERS,  # still checked: beta has no shop_db
        },
    )
    assert where(result) == [
        ("yaml-syntax", "tenants/acme/tenant.yaml", 1),
        ("missing-field", "tenants/beta/pipelines.yaml", 2),  # no destination, no warehouse
        ("unknown-reference", "tenants/beta/pipelines.yaml", 3),
    ]


def test_a_file_that_is_not_utf8_stops_the_tenants_cross_checks(make_repo: MakeRepo) -> None:
    repo = make_repo({P: ORDERS})
    (repo / "tenants" / "acme" / "tenant.yaml").write_bytes(
        b"tenant:\n  display_name: M\xfcnchen\n"
    )
    result = load_repository(repo)
    assert where(result) == [("unreadable-file", "tenants/acme/tenant.yaml", 2)]


def test_a_misspelt_field_is_reported_once(make_repo: MakeRepo) -> None:
    result = load_pipelines(make_repo, ORDERS.replace("    dataset:", "    datset:"))
    assert [(d.code, d.hint) for d in result.diagnostics] == [
        ("unknown-field", "Did you mean 'dataset'?")  # and not also "needs field 'dataset'"
    ]


def test_the_second_declaration_names_where_the_first_is(make_repo: MakeRepo) -> None:
    result = load(
        make_repo,
        {
            "tenants/acme/a.yaml": ORDERS,
            "tenants/acme/b.yaml": ORDERS,
        },
    )
    (diag,) = result.diagnostics
    assert diag.code == "duplicate-resource"
    assert diag.address == Address("acme", Kind.PIPELINE, "orders")
    assert (diag.span.path, diag.span.line) == ("tenants/acme/b.yaml", 2)
    assert "first at tenants/acme/a.yaml:2:3" in diag.detail


def test_a_resource_that_fails_validation_still_has_its_references_checked(
    make_repo: MakeRepo,
) -> None:
    text = (
        ORDERS.replace("shop_db", "shop_dbb")
        + "    retries_max: 3\n"
        + "    depends_on: [totalz]\n"
        + "transformations:\n"
        + "  totals:\n"
        + "    schema: acme_marts\n"
        + "    warehouse: dwhh\n"
        + "    materialised: table\n"
        + "    sql: select 1\n"
    )
    result = load_pipelines(make_repo, text)
    assert where(result) == [
        ("unknown-reference", P, 3),  # source shop_dbb
        ("unknown-field", P, 8),
        ("unknown-reference", P, 9),  # depends_on totalz
        ("unknown-reference", P, 13),  # warehouse dwhh
        ("unknown-field", P, 14),
    ]


def test_a_malformed_reference_in_a_broken_resource_is_reported_once(make_repo: MakeRepo) -> None:
    result = load_pipelines(make_repo, ORDERS.replace("shop_db", "Shop-DB"))
    assert where(result) == [("bad-name", P, 3)]


# --------------------------------------------------------------------------------------------
# env_var() in tenant SQL reads only what the tenant declares in `env:`

ENV_TENANT = """\
tenant:
  display_name: Acme
  warehouse: dwh
  env: [ACME_REGION, DBT_TARGET_SUFFIX]
connections:
  dwh: {type: postgres, direction: destination, host: h, database: d}
"""
ATTACK = (
    'select \'{{ env_var("FABRIC_SECRET_KEYS", "") }}\' as k,\n'
    '       \'{{ env_var("FABRIC_DATABASE_URL", "") }}\' as u\n'
)


SHARED = "format_version: 1\nenv: [DBT_TARGET_SUFFIX]\n"


def test_env_var_of_fabric_settings_in_a_model_is_refused_at_its_line(
    make_repo: MakeRepo,
) -> None:
    """Regression (issue 8): this model passed validate and apply, and its run wrote the master
    keys and the control plane's URL into the tenant's table."""
    result = load(
        make_repo,
        {
            "fabric.yaml": SHARED,
            "tenants/acme/tenant.yaml": ENV_TENANT,
            "tenants/acme/models/steal.sql": "-- a harmless model\n" + ATTACK,
            "tenants/acme/t.yaml": "transformations:\n"
            "  steal: {sql_file: models/steal.sql, schema: acme_marts}\n",
        },
    )
    assert where(result) == [
        ("undeclared-env-var", "tenants/acme/models/steal.sql", 2),
        ("undeclared-env-var", "tenants/acme/models/steal.sql", 3),
    ]
    messages = " ".join(d.detail for d in result.diagnostics)
    assert "'FABRIC_SECRET_KEYS'" in messages and "fabric's own" in messages


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("select '{{ env_var(\"ACME_REGION\") }}' as r", None),
        ("select '{{ env_var('ACME_REGION', 'eu') }}' as r", None),
        ("select '{{ env_var('DBT_TARGET_SUFFIX') }}' as r", None),
        ("select '{{ env_var('GLOBEX_API_TOKEN', '') }}' as r", "undeclared-env-var"),
        ("select '{{ env_var('DBT_ENV_SECRET_FABRIC_DBT__DWH__PW') }}'", "undeclared-env-var"),
        ("select '{{ env_var('FABRIC_DBT__DWH__HOST') }}' as r", "undeclared-env-var"),
        ("select '{{ env_var('DBT_PROFILES_DIR') }}' as r", "undeclared-env-var"),
        ("select '{{ env_var('FABRIC_' ~ 'SECRET_KEYS') }}' as r", "dynamic-env-var"),
        ("{% set e = env_var %}select '{{ e('FABRIC_SECRET_KEYS') }}'", "dynamic-env-var"),
        ("select '{{ env_var('FABRIC_\\x53ECRET_KEYS') }}' as r", "dynamic-env-var"),
    ],
)
def test_env_var_reads_only_declared_names(make_repo: MakeRepo, sql: str, code: str | None):
    body = "transformations:\n  m:\n    schema: acme_marts\n    sql: |\n      " + sql + "\n"
    files = {
        "fabric.yaml": SHARED,
        "tenants/acme/tenant.yaml": ENV_TENANT,
        "tenants/acme/t.yaml": body,
    }
    result = load(make_repo, files)
    assert codes(result) == ([code] if code else [])
    if code:
        assert where(result) == [(code, "tenants/acme/t.yaml", 5)]


def test_env_list_cannot_declare_fabrics_own_variables(make_repo: MakeRepo) -> None:
    """A tenant cannot move the attack into tenant.yaml by declaring the keys."""
    tenant = ENV_TENANT.replace(
        "env: [ACME_REGION, DBT_TARGET_SUFFIX]",
        "env: [ACME_REGION, FABRIC_SECRET_KEYS, fabric_database_url, "
        "DBT_ENV_SECRET_FABRIC_DBT__DWH__PASSWORD, ACME_REGION]",
    )
    sql = (
        "transformations:\n  m: {schema: acme_marts, "
        "sql: \"select '{{ env_var('FABRIC_SECRET_KEYS') }}'\"}\n"
    )
    files = {"fabric.yaml": SHARED, "tenants/acme/tenant.yaml": tenant, "tenants/acme/t.yaml": sql}
    result = load(make_repo, files)
    assert sorted(codes(result)) == [
        "duplicate-env",
        "reserved-env",
        "reserved-env",
        "reserved-env",
        "undeclared-env-var",
    ]
    assert {(c, line) for c, _, line in where(result) if c == "reserved-env"} == {
        ("reserved-env", 4)
    }


def test_env_names_must_be_variable_names(make_repo: MakeRepo) -> None:
    tenant = ENV_TENANT.replace("DBT_TARGET_SUFFIX", "'A-B'")
    result = load(make_repo, {"tenants/acme/tenant.yaml": tenant})
    assert codes(result) and "environment variable name" in result.diagnostics[0].detail


# --------------------------------------------------------------------------------------------
# a tenant names only its own variables (<SLUG>_*) and those fabric.yaml shares

GLOBEX = """\
tenant:
  display_name: Globex
"""


def acme_tenant(env: str = "[]", password: str = "${env:ACME_SHOP_PASSWORD}") -> str:
    return TENANT_YAML.replace("env: []", f"env: {env}").replace(
        "${env:ACME_SHOP_PASSWORD}", password
    )


TENANT_YAML = """\
tenant:
  display_name: Acme
  warehouse: dwh
  env: []
connections:
  shop_db:
    type: postgres
    direction: source
    host: shop.internal
    database: shop
    username: etl
    password: ${env:ACME_SHOP_PASSWORD}
  dwh: {type: postgres, direction: destination, host: h, database: d}
"""
T = "tenants/acme/tenant.yaml"


def test_another_tenants_variable_in_env_list_is_refused_at_its_line(make_repo: MakeRepo):
    """acme declaring GLOBEX_TOKEN would hand globex's token to acme's SQL."""
    repo = {T: acme_tenant("[ACME_REGION, GLOBEX_TOKEN]"), "tenants/globex/tenant.yaml": GLOBEX}
    result = load(make_repo, repo)
    assert where(result) == [("foreign-env", T, 4)]
    (diag,) = result.diagnostics
    assert diag.address == Address.parse("acme")
    assert "'GLOBEX_TOKEN'" in diag.detail and "tenant globex" in diag.detail
    assert "ACME_TOKEN" in diag.hint and "fabric.yaml" in diag.hint


def test_another_tenants_variable_in_a_reference_is_refused_at_its_line(make_repo: MakeRepo):
    """acme pointing a connection at its own host with globex's password would receive it."""
    repo = {
        T: acme_tenant(password="${env:GLOBEX_PG_PASSWORD}"),
        "tenants/globex/tenant.yaml": GLOBEX,
    }
    result = load(make_repo, repo)
    assert where(result) == [("foreign-env", T, 12)]
    (diag,) = result.diagnostics
    assert diag.address == Address.parse("acme.connection.shop_db")
    assert "${env:GLOBEX_PG_PASSWORD}" in diag.detail and "tenant globex" in diag.detail
    assert "ACME_PG_PASSWORD" in diag.hint


@pytest.mark.parametrize(
    "value",
    [
        "host: ${env:GLOBEX_HOST}.internal",  # interpolated inside a plain string
        "port: ${env:PG_PORT}",  # nobody's: neither acme's nor shared
        "options: {sslrootcert: '${env:FABRIC_SECRET_KEYS}'}",
    ],
)
def test_every_reference_in_a_tenant_file_is_checked(make_repo: MakeRepo, value: str):
    text = "connections:\n  other:\n    type: postgres\n    direction: source\n    database: x\n"
    text += ("" if value.startswith("host") else "    host: h\n") + "    " + value + "\n"
    result = load(make_repo, {"tenants/acme/c.yaml": text, "tenants/globex/tenant.yaml": GLOBEX})
    assert codes(result) in (["foreign-env"], ["reserved-env"])
    assert where(result)[0][1:] == ("tenants/acme/c.yaml", text.count("\n"))


def test_a_broken_resource_has_its_references_checked_too(make_repo: MakeRepo):
    text = "connections:\n  other:\n    type: postgres\n    direction: sideways\n" + (
        "    password: ${env:GLOBEX_PG_PASSWORD}\n"
    )
    result = load(make_repo, {"tenants/acme/c.yaml": text, "tenants/globex/tenant.yaml": GLOBEX})
    assert ("foreign-env", "tenants/acme/c.yaml", 5) in where(result)


def test_fabric_yaml_env_shares_a_variable_with_every_tenant(make_repo: MakeRepo):
    project = "format_version: 1\nenv: [DEMO_PG_PORT, PG_PASSWORD]\n"
    repo = {
        "fabric.yaml": project,
        T: acme_tenant("[DEMO_PG_PORT]", password="${env:PG_PASSWORD}"),
    }
    assert codes(load(make_repo, repo)) == []
    assert codes(load(make_repo, {**repo, "fabric.yaml": "format_version: 1\n"})) == [
        "foreign-env",
        "foreign-env",
    ]


def test_fabric_yaml_cannot_share_fabrics_own_variables(make_repo: MakeRepo):
    project = "format_version: 1\nenv:\n  - DEMO_PG_PORT\n  - FABRIC_SECRET_KEYS\n"
    repo = {"fabric.yaml": project, T: acme_tenant(password="${env:FABRIC_SECRET_KEYS}")}
    result = load(make_repo, repo)
    assert where(result) == [("reserved-env", "fabric.yaml", 4), ("reserved-env", T, 12)]
    assert "fabric.yaml shares 'FABRIC_SECRET_KEYS'" in result.diagnostics[0].detail


def test_the_longest_tenant_prefix_owns_a_variable(make_repo: MakeRepo):
    """ACME_EU_TOKEN begins with ACME_ and ACME_EU_: it is acme_eu's when that tenant exists."""
    acme_eu = "tenant:\n  display_name: Acme EU\n  env: [ACME_EU_TOKEN]\n"
    acme = {T: acme_tenant("[ACME_EU_TOKEN, ACME_EUROPE]")}
    assert codes(load(make_repo, acme)) == []  # no tenant acme_eu: the name is acme's
    repo = {**acme, "tenants/acme_eu/tenant.yaml": acme_eu}
    result = load(make_repo, repo)
    assert where(result) == [("foreign-env", T, 4)]
    assert "'ACME_EU_TOKEN'" in result.diagnostics[0].detail
    assert "tenant acme_eu" in result.diagnostics[0].detail
    # A limited load (plan --changed-since) reads only acme, yet still sees tenant acme_eu.
    assert codes(load_repository(make_repo(repo), tenants=["acme"])) == ["foreign-env"]


def test_variable_names_are_matched_case_sensitively(make_repo: MakeRepo):
    result = load(make_repo, {T: acme_tenant("[acme_region]")})
    assert codes(result) == ["foreign-env"] and "ACME_ACME_REGION" not in result.diagnostics[0].hint


# --------------------------------------------------------------------------------------------
# local sources stay in the tenant's data folder (a hostile tenant reading fabric's key file)

STEAL = """\
connections:
  loot:
    type: filesystem
    direction: source
    bucket_url: {url}
    file_glob: "{glob}"
    format: csv
pipelines:
  steal:
    source: loot
    dataset: acme_raw
    mode: files
"""


@pytest.mark.parametrize(
    ("url", "glob", "line"),
    [
        (".fabric", "secret.key", 5),
        ("data/globex", "*.csv", 5),
        ("/etc", "passwd", 5),
        ("data/acme", "../../.fabric/secret.key", 6),
    ],
)
def test_a_files_source_outside_the_tenants_folder_is_an_error(
    make_repo: MakeRepo, url: str, glob: str, line: int
) -> None:
    result = load(make_repo, {"tenants/acme/loot.yaml": STEAL.format(url=url, glob=glob)})
    assert not result.ok
    found = [d for d in result.diagnostics if d.code == "unsafe-local-path"]
    assert [(d.span.path, d.span.line) for d in found if d.span] == [
        ("tenants/acme/loot.yaml", line)
    ]
    assert str(found[0].address) == "acme.connection.loot"
    assert found[0].hint and ("data/acme/" in found[0].hint or "bucket_url" in found[0].hint)


def test_a_pipelines_file_glob_cannot_leave_the_folder(make_repo: MakeRepo) -> None:
    text = STEAL.format(url="data/acme/drops", glob="*.csv") + '    file_glob: "../../*"\n'
    result = load(make_repo, {"tenants/acme/loot.yaml": text})
    assert where(result) == [("unsafe-local-path", "tenants/acme/loot.yaml", 13)]


def test_a_sqlite_source_outside_the_tenants_folder_is_an_error(make_repo: MakeRepo) -> None:
    text = """\
    connections:
      erp:
        type: sqlite
        direction: source
        path: data/globex/erp.sqlite
    """
    result = load(make_repo, {"tenants/acme/erp.yaml": text})
    assert where(result) == [("unsafe-local-path", "tenants/acme/erp.yaml", 5)]
    ok = load(make_repo, {"tenants/acme/erp.yaml": text.replace("globex", "acme")})
    assert ok.ok, ok.diagnostics


# --------------------------------------------------------------------------------------------
# tenant folders fabric will not read are errors, never silently skipped


def refused(result: LoadResult) -> list[tuple[str, str]]:
    return [(d.span.path, d.detail) for d in result.diagnostics if d.code == "refused-tenant-path"]


def test_a_hidden_tenant_folder_with_yaml_is_an_error(make_repo: MakeRepo) -> None:
    root = make_repo({"tenants/..acme/tenant.yaml": "tenant:\n  display_name: Hidden\n"})
    (root / "tenants/.empty_hidden").mkdir()  # declares nothing: nothing to report

    result = load_repository(root)

    assert not result.ok
    ((path, message),) = refused(result)
    assert path == "tenants/..acme"
    assert "starts with '.'" in message


def test_a_symlinked_tenant_folder_pointing_outside_the_repository_is_an_error(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "evil"
    outside.mkdir(parents=True)
    (outside / "tenant.yaml").write_text("tenant:\n  display_name: Evil\n")
    root = make_repo({})
    (root / "tenants/evil").symlink_to(outside, target_is_directory=True)

    result = load_repository(root)

    assert not result.ok
    ((path, message),) = refused(result)
    assert path == "tenants/evil"
    assert f"symlink to {outside}, outside the repository" in message
    assert result.diagnostics[0].hint


def test_a_symlinked_yaml_file_leading_out_of_the_tenant_folder_is_an_error(
    make_repo: MakeRepo,
) -> None:
    root = make_repo(
        {"tenants/globex/tenant.yaml": "tenant:\n  display_name: Globex\n  warehouse: dwh\n"}
    )
    (root / "tenants/acme/stolen.yaml").symlink_to(root / "tenants/globex/tenant.yaml")

    result = load_repository(root)

    assert not result.ok
    ((path, message),) = refused(result)
    assert path == "tenants/acme/stolen.yaml"
    assert "outside its tenant's folder" in message


def test_max_parallel_nodes_falls_back_to_the_project_default(make_repo: MakeRepo) -> None:
    from conftest import TENANT

    project = "format_version: 1\ndefaults: {max_parallel_nodes: 3}\n"
    inherited = load(make_repo, {"fabric.yaml": project, P: ORDERS})
    assert inherited.diagnostics == ()
    assert inherited.desired.tenants["acme"].spec.max_parallel_nodes == 3
    own = TENANT.replace("  warehouse: dwh\n", "  warehouse: dwh\n  max_parallel_nodes: 1\n")
    overridden = load(make_repo, {"fabric.yaml": project, "tenants/acme/tenant.yaml": own})
    assert overridden.desired.tenants["acme"].spec.max_parallel_nodes == 1
    assert load(make_repo, {P: ORDERS}).desired.tenants["acme"].spec.max_parallel_nodes is None
    zero = TENANT.replace("  warehouse: dwh\n", "  warehouse: dwh\n  max_parallel_nodes: 0\n")
    assert codes(load(make_repo, {"tenants/acme/tenant.yaml": zero})) != []
