"""The `snapshots:` section through the loader: what it resolves to, what it rejects, where."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from fabric import api
from fabric.config.loader import LoadResult, load_repository

MakeRepo = Callable[[Mapping[str, str]], Path]  # the `make_repo` fixture (conftest.py)
F = "tenants/acme/snapshots.yaml"
BASE = """\
pipelines:
  customers: {source: shop_db, dataset: acme_raw, mode: single_table, table: customers}
transformations:
  current:
    sql: "select * from {{ ref('customers_history') }} where dbt_valid_to is null"
    schema: acme_marts
"""


def load(make_repo: MakeRepo, snapshot: str, extra: Mapping[str, str] = {}) -> LoadResult:
    return load_repository(make_repo({F: BASE + "snapshots:\n" + snapshot, **extra}))


def codes(result: LoadResult) -> list[str]:
    return [d.code for d in result.diagnostics]


GOOD = """\
  customers_history:
    sql_file: snapshots/customers.sql
    schema: acme_snapshots
    unique_key: id
    strategy: timestamp
    updated_at: updated_at
    hard_deletes: invalidate
    tags: [nightly]
"""


def test_a_snapshot_resolves_its_warehouse_sql_and_edges(make_repo: MakeRepo) -> None:
    sql = "select *\nfrom {{ source('customers', 'customers') }}\n"
    result = load(make_repo, GOOD, {"tenants/acme/snapshots/customers.sql": sql})

    assert result.diagnostics == ()
    tenant = result.desired.tenants["acme"]
    snap = tenant.snapshots["customers_history"]
    assert str(snap.address) == "acme.snapshot.customers_history"
    assert snap.spec.warehouse == "dwh"  # the tenant's
    assert snap.spec.hard_deletes == "invalidate"
    assert tenant.snapshot_sql["customers_history"] == sql
    edges = {(str(d.upstream), str(d.downstream), d.origin) for d in tenant.dependencies}
    assert edges == {
        ("acme.pipeline.customers", "acme.snapshot.customers_history", "source"),
        ("acme.snapshot.customers_history", "acme.transformation.current", "ref"),
    }


@pytest.mark.parametrize(
    ("body", "code", "line"),
    [
        # strategy timestamp needs updated_at (lines are those of the snapshot's text)
        ("    unique_key: id\n    strategy: timestamp\n", "missing-field", 5),
        # strategy check needs check_cols
        ("    unique_key: id\n    strategy: check\n", "missing-field", 5),
        # check_cols belongs to strategy check
        (
            "    unique_key: id\n    strategy: timestamp\n    updated_at: u\n    check_cols: [a]\n",
            "field-not-for-mode",
            7,
        ),
        ("    strategy: check\n    check_cols: all\n", "missing-field", 1),  # unique_key
        ("    unique_key: id\n    strategy: newest\n", "invalid-value", 5),
        (
            "    unique_key: id\n    strategy: check\n    check_cols: all\n"
            "    hard_deletes: purge\n",
            "invalid-value",
            7,
        ),
    ],
)
def test_strategy_rules(make_repo: MakeRepo, body: str, code: str, line: int) -> None:
    snapshot = "  customers_history:\n    sql: select 1 as id\n    schema: acme_snapshots\n"
    result = load(make_repo, snapshot + body)
    assert [(d.code, d.span.path, d.span.line) for d in result.diagnostics] == [
        (code, F, line + 7)  # BASE and `snapshots:` come first
    ]


CONFIGURED = "tenants/acme/snapshots/configured.sql"


def test_sql_rules(make_repo: MakeRepo) -> None:
    head = "    schema: acme_snapshots\n    unique_key: id\n    strategy: check\n"
    head += "    check_cols: all\n"
    snapshot = (
        "  both:\n    sql: select 1 as id\n    sql_file: snapshots/x.sql\n"
        + head
        + "  neither:\n"
        + head
        + "  escape:\n    sql_file: ../globex/snapshots/x.sql\n"
        + head
        + "  configured:\n    sql_file: snapshots/configured.sql\n"
        + head
        + "  blocks:\n    sql_file: snapshots/blocks.sql\n"
        + head
        + "  unknown_ref:\n    sql: select * from {{ ref('nothing') }}\n"
        + head
        + "  current:\n    sql: select 1 as id\n"
        + head  # a transformation's name
    )
    files = {
        "tenants/acme/snapshots/configured.sql": "select 1 as id\n"
        "{{ config(target_schema='globex_marts') }}\n",
        "tenants/acme/snapshots/blocks.sql": "select 1 as id\n{% endsnapshot %}\n"
        "{% snapshot other %}\nselect 2 as id\n",
    }
    result = load(make_repo, snapshot, files)
    found = sorted((str(d.address), d.code, d.span.path, d.span.line) for d in result.diagnostics)
    assert found == [
        ("acme.snapshot.blocks", "snapshot-block", "tenants/acme/snapshots/blocks.sql", 2),
        ("acme.snapshot.blocks", "snapshot-block", "tenants/acme/snapshots/blocks.sql", 3),
        ("acme.snapshot.both", "sql-xor-sql-file", F, 8),
        ("acme.snapshot.configured", "sql-config-override", CONFIGURED, 2),
        ("acme.snapshot.current", "duplicate-resource", F, 44),
        ("acme.snapshot.escape", "bad-sql-file", F, 21),
        ("acme.snapshot.neither", "sql-xor-sql-file", F, 15),
        ("acme.snapshot.unknown_ref", "unknown-reference", F, 39),
        # no snapshot customers_history here
        ("acme.transformation.current", "unknown-reference", F, 5),
    ]


def test_a_snapshot_schema_is_owned_like_a_models(make_repo: MakeRepo) -> None:
    globex = (
        "tenant: {display_name: Globex, warehouse: dwh}\n"
        "connections:\n  dwh: {type: postgres, direction: destination, host: dwh.internal,"
        " database: analytics, username: g, password: '${secret:p}'}\n"
        "transformations:\n  t: {sql: select 1 as n, schema: acme_snapshots}\n"
    )
    result = load(
        make_repo,
        GOOD,
        {
            "tenants/acme/snapshots/customers.sql": "select 1 as id",
            "tenants/globex/tenant.yaml": globex,
        },
    )
    assert sorted((str(d.address), d.code) for d in result.diagnostics) == [
        ("acme.snapshot.customers_history", "schema-conflict"),
        ("globex.transformation.t", "schema-conflict"),
    ]


def test_depends_on_and_selectors_know_snapshots(make_repo: MakeRepo) -> None:
    extra = (
        "  later:\n    sql: select 1 as n\n    schema: acme_marts\n"
        "    depends_on: [snapshot:customers_history]\n"
    )
    schedules = "schedules:\n  s: {cron: '0 2 * * *', targets: ['snapshot:customers_history+']}\n"
    text = BASE + extra + "snapshots:\n" + GOOD + schedules
    repo = make_repo({F: text, "tenants/acme/snapshots/customers.sql": "select 1 as id"})
    result = load_repository(repo)
    assert result.diagnostics == ()
    edges = {
        (str(d.upstream), str(d.downstream)) for d in result.desired.tenants["acme"].dependencies
    }
    assert ("acme.snapshot.customers_history", "acme.transformation.later") in edges


def test_a_snapshot_reads_no_env_var_its_tenant_did_not_declare(make_repo: MakeRepo) -> None:
    snapshot = GOOD.replace(
        "sql_file: snapshots/customers.sql",
        "sql: select '{{ env_var(\"FABRIC_SECRET_KEYS\") }}' as k, 1 as id",
    )
    result = load(make_repo, snapshot)
    assert [(str(d.address), d.code) for d in result.diagnostics] == [
        ("acme.snapshot.customers_history", "undeclared-env-var")
    ]


def test_validate_counts_snapshots(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            F: BASE
            + "snapshots:\n"
            + GOOD.replace("sql_file: snapshots/customers.sql", "sql: select 1 as id")
        }
    )
    assert api.validate(repo).counts()["snapshots"] == 1
