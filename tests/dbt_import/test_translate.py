"""The pure translation of a dbt project into a fabric tenant: small projects as dicts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from fabric.dbt_import.reader import read_project_dir
from fabric.dbt_import.translate import is_safe_relative, translate

SHOP = Path(__file__).parent / "projects" / "shop"


def project(**files: str) -> dict[str, str]:
    """{path: text}; keys spell / as __ and the last . as _ (models__a_sql -> models/a.sql)."""
    out = {"dbt_project.yml": "name: demo\nconfig-version: 2\nprofile: demo\n"}
    for key, text in files.items():
        stem, _, ext = key.rpartition("_")
        path = f"{stem}.{ext}" if ext in ("sql", "yml", "py", "csv", "md") else key
        out[path.replace("__", "/")] = textwrap.dedent(text)
    return out


def loaded(translation, file: str = "transformations.yaml") -> dict:
    return yaml.safe_load(translation.files[file])


def problems(translation) -> list[str]:
    return [str(u) for u in translation.untranslated]


@pytest.fixture(scope="module")
def shop():
    files, refused = read_project_dir(SHOP)
    return translate(files, "shop", refused=refused)


def test_the_shop_project_is_translated_whole(shop):
    assert problems(shop) == []
    doc = loaded(shop)
    models = doc["transformations"]
    assert set(models) == {
        "stg_customers",
        "stg_orders",
        "stg_payments",
        "orders_enriched",
        "customer_totals",
    }
    # folder configs of dbt_project.yml, resolved per model; tags add up along the way
    assert models["stg_orders"]["schema"] == "shop_staging"
    assert models["stg_orders"]["materialized"] == "view"
    assert models["stg_orders"]["tags"] == ["staging"]
    assert models["orders_enriched"]["materialized"] == "table"
    # the config() block wins over the folder, and its YAML-owned keys move to the YAML
    totals = models["customer_totals"]
    assert totals["materialized"] == "incremental"
    assert totals["unique_key"] == "customer_id"
    assert totals["tags"] == ["marts", "finance"]
    assert totals["sql_file"] == "models/marts/customer_totals.sql"
    assert totals["description"] == "Orders and payments per customer."
    assert totals["columns"]["paid"] == {"description": "Dollars paid in total."}
    assert totals["tests"] == {
        "customer_id": ["unique", "not_null"],
        "paid": [{"is_positive": {"config": {"severity": "warn"}}}],
    }
    # dbt 1.10's `arguments:` and a plain list both become fabric's shorthand
    assert models["stg_customers"]["tests"]["tier"] == [
        {
            "accepted_values": {
                "values": ["gold", "silver", "bronze"],
                "config": {"severity": "warn"},
            }
        }
    ]
    assert models["stg_payments"]["tests"]["order_id"] == [
        {"relationships": {"to": "stg_orders", "field": "order_id"}}
    ]
    assert doc["seeds"]["status_labels"]["schema"] == "shop_ref"
    assert doc["seeds"]["status_labels"]["column_types"]["status"] == "varchar(20)"
    assert doc["seeds"]["status_labels"]["tests"] == {"status": ["unique", "not_null"]}
    assert doc["snapshots"]["customers_snapshot"] == {
        "sql_file": "snapshots/customers_snapshot.sql",
        "schema": "shop_snapshots",
        "unique_key": "id",
        "strategy": "timestamp",
        "updated_at": "updated_at",
    }
    snapshot_sql = shop.files["snapshots/customers_snapshot.sql"]
    assert snapshot_sql == "select * from {{ source('raw_shop', 'customers') }}\n"
    assert shop.files["seeds/status_labels.csv"].startswith("status,label,sort_order\n")
    assert "macros/generic/is_positive.sql" in shop.files  # a generic test is a macro
    assert "{% test is_positive" in shop.files["macros/generic/is_positive.sql"]
    assert "tests/assert_paid_not_negative.sql" in shop.files


def test_model_sql_loses_the_yaml_keys_and_keeps_its_line_numbers(shop):
    original = (SHOP / "models/marts/customer_totals.sql").read_text()
    sql = shop.files["models/marts/customer_totals.sql"]
    assert "materialized" not in sql and "unique_key" not in sql and "tags" not in sql
    # the keys fabric does not own stay in a config() call, added after the last line
    assert sql.rstrip().endswith("{{ config(on_schema_change='append_new_columns') }}")
    before, after = original.splitlines(), sql.splitlines()
    assert after[: len(before)][9:] == before[9:]  # select ... is on the same lines as in dbt
    orders = shop.files["models/staging/stg_orders.sql"]
    assert "config(" not in orders
    assert "where amount_cents >= {{ 0 }}" in orders  # vars from dbt_project.yml
    assert orders.splitlines()[9] == "where amount_cents >= {{ 0 }}"


def test_sources_become_pipelines_and_connections_with_env_placeholders(shop):
    pipelines = loaded(shop, "pipelines.yaml")["pipelines"]
    assert pipelines == {
        "raw_shop": {
            "source": "source",
            "description": "The shop's operational database.",
            "dataset": "shop_raw_shop",
            "mode": "full_database",
            "table_names": ["customers", "orders", "payments"],
            "source_schema": "raw",
            "write_disposition": "replace",
            "freshness": {
                "warn_after": {"count": 12, "period": "hour"},
                "error_after": {"count": 1, "period": "day"},
                "loaded_at_field": "updated_at",
            },
        }
    }
    connections = loaded(shop, "connections.yaml")["connections"]
    assert connections["source"]["password"] == "${env:SHOP_SOURCE_PASSWORD}"
    assert connections["warehouse"]["direction"] == "destination"
    assert connections["warehouse"]["host"] == "${env:SHOP_WAREHOUSE_HOST}"
    assert {e.name for e in shop.env} == {
        f"SHOP_{c}_{k}"
        for c in ("SOURCE", "WAREHOUSE")
        for k in ("HOST", "PORT", "DATABASE", "USER", "PASSWORD")
    }
    tenant = loaded(shop, "tenant.yaml")["tenant"]
    assert tenant["warehouse"] == "warehouse"
    assert tenant["packages"] == [{"local": "packages/shop/shop_utils"}]
    assert set(shop.repo_files) == {
        "packages/shop/shop_utils/dbt_project.yml",
        "packages/shop/shop_utils/macros/money.sql",
    }


def test_source_names_fabric_cannot_use_are_renamed_in_every_file():
    t = translate(
        project(
            models__src_yml="""\
                sources:
                  - name: Raw-Shop
                    tables:
                      - name: Orders
                        identifier: OrderRows
                """,
            models__a_sql="select * from {{ source('Raw-Shop', 'Orders') }}\n",
            snapshots__s_sql="""\
                {% snapshot s %}
                {{ config(target_schema='hist', unique_key='id',
                          strategy='check', check_cols='all') }}
                select * from {{ source("Raw-Shop", "Orders") }}
                {% endsnapshot %}
                """,
        ),
        "acme",
    )
    pipelines = loaded(t, "pipelines.yaml")["pipelines"]
    assert pipelines["raw_shop"]["table"] == "OrderRows"
    assert pipelines["raw_shop"]["mode"] == "single_table"
    assert t.files["models/a.sql"] == "select * from {{ source('raw_shop', 'order_rows') }}\n"
    assert "source('raw_shop', 'order_rows')" in t.files["snapshots/s.sql"]
    assert "source('Raw-Shop', 'Orders') -> source('raw_shop', 'order_rows')" in t.rewrites
    snapshot = loaded(t)["snapshots"]["s"]
    assert snapshot["schema"] == "acme_hist"
    assert snapshot["check_cols"] == "all"


def test_what_fabric_cannot_run_is_listed_with_its_reason():
    t = translate(
        project(
            dbt_project_yml="""\
                name: demo
                config-version: 2
                on-run-start: ["grant usage on schema x to y"]
                models:
                  demo:
                    +pre-hook: "select 1"
                """,
            models__py_model_py="def model(dbt, session): ...\n",
            models__eph_sql="{{ config(materialized='ephemeral') }}\nselect 1 as x\n",
            models__aliased_sql="{{ config(alias='other') }}\nselect {{ var('nope') }} as x\n",
            models__off_sql="{{ config(enabled=false) }}\nselect 1 as x\n",
            models__props_yml="""\
                exposures:
                  - name: dashboard
                metrics:
                  - name: revenue
                semantic_models:
                  - name: orders_sm
                models:
                  - name: eph
                    data_tests:
                      - dbt_utils.expression_is_true: {expression: "x > 0"}
                    columns:
                      - name: x
                        data_tests:
                          - unique: {config: {limit: 10}}
                """,
            macros__naming_sql="""\
                {% macro generate_schema_name(custom, node) %}{{ custom }}{% endmacro %}
                {% macro keep_me() %}1{% endmacro %}
                {% materialization fancy, default %}{% endmaterialization %}
                """,
            analyses__a_sql="select 1\n",
        ),
        "acme",
    )
    listed = problems(t)
    expected = [
        "dbt_project.yml:3: `on-run-start:`: fabric runs no SQL around a run",
        "models/py_model.py: python model py_model: fabric runs SQL models only",
        "models/eph.sql: model eph materialized=ephemeral: fabric builds views, tables and "
        "incremental models; written as a view",
        "models/aliased.sql:2: var('nope'): no value in dbt_project.yml `vars:`",
        "models/aliased.sql: model aliased config alias: fabric names the relation",
        "models/eph.sql: model eph config pre_hook: fabric runs no hooks",
        "models/off.sql: model off: it is disabled (enabled: false)",
        "models/props.yml:2: exposure dashboard: fabric has no exposures",
        "models/props.yml:4: metric revenue: fabric has no metrics",
        "models/props.yml:6: semantic model orders_sm: fabric has no semantic models",
        "models/props.yml:8: model-level test dbt_utils.expression_is_true of eph: fabric's "
        "tests are per column",
        "models/props.yml:12: model eph column x test unique config limit: fabric carries only",
        "macros/naming.sql:1: macro generate_schema_name: fabric names schemas itself",
        "macros/naming.sql:3: materialization fancy: fabric builds views, tables and",
        "analyses/a.sql: analysis: fabric does not compile analyses",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in listed), (line, listed)
    assert "off" not in loaded(t)["transformations"]
    assert loaded(t)["transformations"]["eph"]["materialized"] == "view"
    macros = t.files["macros/naming.sql"]
    assert "keep_me" in macros and "generate_schema_name" not in macros and "fancy" not in macros


def test_yaml_snapshots_and_properties_configs_are_read():
    t = translate(
        project(
            models__m_sql="select 1 as id\n",
            snapshots__props_yml="""\
                snapshots:
                  - name: m_history
                    relation: ref('m')
                    config:
                      schema: history
                      unique_key: id
                      strategy: check
                      check_cols: [id]
                      hard_deletes: new_record
                """,
            models__props_yml="""\
                models:
                  - name: m
                    config: {materialized: table, schema: core, tags: nightly}
                """,
        ),
        "acme",
    )
    doc = loaded(t)
    assert doc["snapshots"]["m_history"] == {
        "sql": "select * from {{ ref('m') }}",
        "schema": "acme_history",
        "unique_key": "id",
        "strategy": "check",
        "check_cols": ["id"],
        "hard_deletes": "new_record",
    }
    assert doc["transformations"]["m"]["materialized"] == "table"
    assert doc["transformations"]["m"]["schema"] == "acme_core"
    assert doc["transformations"]["m"]["tags"] == ["nightly"]


def test_schemas_are_named_like_dbt_with_the_tenant_as_target_schema():
    t = translate(
        project(
            models__a_sql="{{ config(schema='Marts') }}\nselect 1 as x\n",
            models__b_sql="{{ config(schema='acme_core') }}\nselect 1 as x\n",
            models__c_sql="{{ config(schema='acmefoo') }}\nselect 1 as x\n",
            models__d_sql="select 1 as x\n",
            models__e_sql="{{ config(schema='bad-name') }}\nselect 1 as x\n",
        ),
        "acme",
    )
    schemas = {n: s["schema"] for n, s in loaded(t)["transformations"].items()}
    assert schemas == {
        "a": "acme_marts",
        "b": "acme_core",
        "c": "acme_acmefoo",
        "d": "acme",
        "e": "acme",
    }
    assert any("model e schema 'bad-name'" in p for p in problems(t))


def test_sources_in_other_databases_get_their_own_connection():
    t = translate(
        project(
            models__src_yml="""\
                sources:
                  - name: crm
                    database: crm_prod
                    tables: [{name: accounts}]
                  - name: shop
                    tables: [{name: orders}]
                models:
                  - name: ghost
                """,
        ),
        "acme",
    )
    connections = loaded(t, "connections.yaml")["connections"]
    assert connections["source_crm_prod"]["database"] == "crm_prod"
    assert connections["source_crm_prod"]["host"] == "${env:ACME_SOURCE_CRM_PROD_HOST}"
    assert connections["source"]["database"] == "${env:ACME_SOURCE_DATABASE}"
    pipelines = loaded(t, "pipelines.yaml")["pipelines"]
    assert pipelines["crm"]["source"] == "source_crm_prod"
    assert pipelines["shop"]["source"] == "source"
    assert problems(t) == [
        "models/src.yml:8: properties of model ghost: no SQL model of that name in the "
        "project's model folders"
    ]


def test_git_and_hub_packages_are_kept_as_written():
    t = translate(
        project(
            packages_yml="""\
                packages:
                  - package: dbt-labs/dbt_utils
                    version: 1.0
                  - package: dbt-labs/codegen
                    version: [">=0.9.0", "<1.0.0"]
                  - git: https://example.com/x.git
                    revision: 2
                  - tarball: https://example.com/x.tgz
                """
        ),
        "acme",
    )
    assert loaded(t, "tenant.yaml")["tenant"]["packages"] == [
        {"package": "dbt-labs/dbt_utils", "version": "1.0"},
        {"package": "dbt-labs/codegen", "version": [">=0.9.0", "<1.0.0"]},
        {"git": "https://example.com/x.git", "revision": "2"},
    ]
    assert any("fabric installs local, git and hub packages only" in p for p in problems(t))


def test_doc_blocks_fill_descriptions_and_relationships_follow_renamed_sources():
    t = translate(
        project(
            models__docs_md="{% docs order_id %}\nThe order's **id**.\n{% enddocs %}\n",
            models__src_yml="""\
                sources:
                  - name: ERP
                    tables: [{name: orders}]
                models:
                  - name: m
                    description: '{{ doc("order_id") }}'
                    columns:
                      - name: id
                        description: "{{ doc('order_id') }} (copied)"
                        data_tests:
                          - relationships: {to: "source('ERP', 'orders')", field: id}
                """,
            models__m_sql="select 1 as id\n",
        ),
        "acme",
    )
    model = loaded(t)["transformations"]["m"]
    assert model["description"] == "The order's **id**."
    assert model["columns"]["id"]["description"] == "The order's **id**. (copied)"
    assert model["tests"]["id"] == [
        {"relationships": {"to": "source('erp', 'orders')", "field": "id"}}
    ]


def test_a_project_cannot_smuggle_paths_out_of_the_tenant_folder():
    t = translate(
        project(
            dbt_project_yml="""\
                name: demo
                model-paths: ["models", "../other_tenant", "/etc"]
                """,
            packages_yml="packages:\n  - local: ../../tenants/globex\n  - local: /etc\n",
            **{"models/../../../tenants/globex/evil.sql": "select 1\n"},
            **{"seeds/../../x.csv": "a\n1\n"},
        ),
        "acme",
    )
    assert all(is_safe_relative(path) for path in t.files)
    assert all(path.startswith("packages/acme/") for path in t.repo_files)
    listed = problems(t)
    assert any("model-paths entry '../other_tenant'" in p for p in listed)
    assert any("model-paths entry '/etc'" in p for p in listed)
    assert any("local package '../../tenants/globex'" in p for p in listed)
    assert any("local package '/etc'" in p for p in listed)
    assert any("would leave the tenant folder" in p for p in listed)
    assert "packages" not in loaded(t, "tenant.yaml")["tenant"]


def test_env_var_reads_are_declared_only_when_they_are_the_tenants_own():
    t = translate(
        project(
            models__a_sql=(
                "select '{{ env_var('ACME_REGION') }}' as r, '{{ env_var('GLOBEX_TOKEN') }}' as t,"
                " '{{ env_var('FABRIC_SECRET_KEYS') }}' as k, '{{ env_var('SHARED_URL') }}' as u\n"
            )
        ),
        "acme",
        shared_env=["SHARED_URL"],
    )
    assert loaded(t, "tenant.yaml")["tenant"]["env"] == ["ACME_REGION", "SHARED_URL"]
    listed = problems(t)
    assert any(p.startswith("models/a.sql:1: env_var('GLOBEX_TOKEN')") for p in listed)
    assert any(p.startswith("models/a.sql:1: env_var('FABRIC_SECRET_KEYS')") for p in listed)


def test_a_bad_tenant_slug_or_a_missing_project_file_is_refused():
    with pytest.raises(ValueError):
        translate(project(), "../globex")
    t = translate({"models/a.sql": "select 1"}, "acme")
    assert t.files == {} and problems(t) == [
        "dbt_project.yml: dbt_project.yml: not found: not a dbt project"
    ]
