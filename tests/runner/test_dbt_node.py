"""Transformation nodes through real dbt against a real PostgreSQL warehouse.

One warehouse database and one login role (with a distinctive password, created here and
dropped after) serve the whole module, and the main project's dbt state stays warm across the
tests (the first invocation parses; later ones reuse dbt's partial parsing), so the module
costs a few dbt starts, not one per test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from cryptography.fernet import Fernet
from scripted_nodes import with_resolved
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from fabric.addresses import Address, Kind
from fabric.domain.runs import (
    NodeResult,
    NodeSpec,
    NodeStatus,
    SessionLimits,
    StoredConnection,
)
from fabric.graph.dag import Dag
from fabric.runner import dbt_project as dp
from fabric.runner.dbt_node import compile_node, run_transformation_nodes, write_project
from fabric.state.engine import create_database, drop_database, make_engine
from fabric.state.secrets import SecretBox

PASSWORD = f"dbt-Pw/{secrets.token_hex(6)}@x%y"  # distinctive; '/', '@' and '%' get URL-encoded
WRONG_PASSWORD = f"wrong-Pw-{secrets.token_hex(6)}"

TRANSFORMATIONS: dict[str, dict[str, Any]] = {
    "stg_orders": {
        "sql": "select id, status, amount\nfrom {{ source('orders', 'orders') }}\n",
        "schema": "acme_staging",
        "materialized": "view",
        "tests": {
            "id": ["not_null", "unique"],
            "status": [{"accepted_values": ["new", "paid", "shipped"]}],
        },
    },
    "order_totals": {
        "sql": (
            "select status, count(*) as orders, sum(amount) as amount\n"
            "from {{ ref('stg_orders') }}\ngroup by status\n"
        ),
        "schema": "acme_marts",
        "materialized": "table",
        "tests": {"status": ["unique", {"relationships": {"to": "stg_orders", "field": "status"}}]},
    },
    "events_inc": {
        "sql": (
            "select id, kind, amount from {{ source('events', 'events') }}\n"
            "{% if is_incremental() %}\n"
            "where id > (select coalesce(max(id), 0) from {{ this }})\n"
            "{% endif %}\n"
        ),
        "schema": "acme_marts",
        "materialized": "incremental",
        "unique_key": "id",
        "tests": {},
    },
    "dup_error": {
        "sql": "select 1 as k union all select 1 as k",
        "schema": "acme_checks",
        "materialized": "view",
        "tests": {"k": ["unique", "not_null"]},
    },
    "dup_warn": {
        "sql": "select 1 as k union all select 1 as k",
        "schema": "acme_checks",
        "materialized": "view",
        "tests": {"k": ["unique"]},
        "tests_severity": "warn",
    },
    "bad_sql": {
        "sql": "selec 1 as broken",
        "schema": "acme_checks",
        "materialized": "view",
        "tests": {},
    },
}
PIPELINES = {
    "orders": {"mode": "single_table", "table": "orders", "dataset": "shop_raw"},
    "events": {"mode": "single_table", "table": "Events", "dataset": "shop_raw"},
}


@dataclass
class Warehouse:
    url: str
    engine: Engine
    role: str
    box: SecretBox
    workdir: Path
    results: list[NodeResult] = field(default_factory=list)
    """Every result any test got, for the final check that no credential leaked."""

    def connection(self, name: str, tenant: str = "acme", password: str = PASSWORD):
        address = Address(tenant, Kind.CONNECTION, name)
        parsed = make_url(self.url)
        spec = {
            "type": "postgres",
            "direction": "destination",
            "host": parsed.host,
            "port": parsed.port,
            "database": parsed.database,
            "username": self.role,
            "password": "${secret:dwh_password}",
        }
        ct = self.box.encrypt(f"{address}#password", password)
        secret = {"ref": "${secret:dwh_password}", "ct": ct, "fp": None}
        return StoredConnection(address=address, spec=spec, secrets={"password": secret})

    def project(
        self, tenant: str = "acme", transformations: dict | None = None, **connections
    ) -> dict[str, Any]:
        connections = connections or {"dwh": self.connection("dwh", tenant)}
        specs = transformations or TRANSFORMATIONS
        return {
            "tenant": tenant,
            "transformations": {n: {"warehouse": "dwh", **s} for n, s in specs.items()},
            "pipelines": PIPELINES,
            "connections": connections,
        }

    def nodes(self, *names: str, project: dict | None = None, **flags: Any) -> list[NodeSpec]:
        project = project or self.project()
        tenant = project["tenant"]
        out = []
        for name in names:
            spec = project["transformations"][name]
            out.append(
                NodeSpec(
                    address=Address(tenant, Kind.TRANSFORMATION, name),
                    kind="transformation",
                    spec=spec,
                    connections={spec["warehouse"]: project["connections"][spec["warehouse"]]},
                    workdir=str(self.workdir / tenant),
                    project=project,
                    **flags,
                )
            )
        return out

    def run(self, *names: str, **kw: Any) -> dict[str, NodeResult]:
        nodes = [with_resolved(n, self.box) for n in self.nodes(*names, **kw)]
        results = run_transformation_nodes(nodes)
        self.results.extend(results)
        assert [r.address.name for r in results] == list(names)
        return {r.address.name: r for r in results}

    def sql(self, query: str) -> list[tuple]:
        with self.engine.begin() as conn:
            result = conn.execute(text(query))
            return [tuple(r) for r in result] if result.returns_rows else []


@pytest.fixture(scope="module")
def wh(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    token = secrets.token_hex(4)
    name, role = f"fabric_test_dbt_{token}", f"fabric_dbt_{token}"
    url = create_database(pg_server_url, name)
    admin = make_engine(pg_server_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        conn.execute(text(f'GRANT ALL ON DATABASE "{name}" TO {role}'))
    engine = make_engine(make_url(url).set(username=role, password=PASSWORD))
    warehouse = Warehouse(
        url=url,
        engine=engine,
        role=role,
        box=SecretBox([Fernet.generate_key()]),
        workdir=tmp_path_factory.mktemp("dbt-work"),
    )
    warehouse.sql(
        "create schema shop_raw;"
        "create table shop_raw.orders (id int primary key, status text, amount numeric);"
        "insert into shop_raw.orders values (1, 'new', 10), (2, 'paid', 20), (3, 'paid', 5);"
        "create table shop_raw.events (id int primary key, kind text, amount int);"
        "insert into shop_raw.events values (1, 'a', 1), (2, 'b', 2), (3, 'a', 3);"
    )
    try:
        yield warehouse
    finally:
        engine.dispose()
        drop_database(pg_server_url, name)
        with admin.begin() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def test_view_table_and_incremental_models_build_through_refs_and_sources(wh: Warehouse):
    first = wh.run("stg_orders")
    assert first["stg_orders"].status is NodeStatus.SUCCESS, first["stg_orders"].error
    results = wh.run("order_totals", "events_inc")
    assert all(r.status is NodeStatus.SUCCESS for r in results.values()), results
    assert results["order_totals"].rows_loaded == {"acme_marts.order_totals": 2}
    assert results["events_inc"].rows_loaded == {"acme_marts.events_inc": 3}
    kinds = dict(
        wh.sql(
            "select n.nspname || '.' || c.relname, c.relkind from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace where n.nspname like 'acme_%'"
        )
    )
    assert kinds == {
        "acme_staging.stg_orders": "v",  # the schema exactly as written: no target prefix
        "acme_marts.order_totals": "r",
        "acme_marts.events_inc": "r",
    }
    assert sorted(wh.sql("select status, orders from acme_marts.order_totals")) == [
        ("new", 1),
        ("paid", 2),
    ]
    assert "PASS" in results["order_totals"].log_tail  # its tests ran after it


def test_incremental_model_adds_new_rows_and_full_refresh_rebuilds_it(wh: Warehouse):
    assert wh.run("events_inc")["events_inc"].status is NodeStatus.SUCCESS
    wh.sql("insert into shop_raw.events values (4, 'c', 4)")
    wh.sql("update acme_marts.events_inc set amount = -1 where id = 1")  # drift in old rows
    again = wh.run("events_inc")["events_inc"]
    assert again.status is NodeStatus.SUCCESS and again.rows_loaded == {"acme_marts.events_inc": 1}
    assert wh.sql("select count(*), min(amount) from acme_marts.events_inc") == [(4, -1)]
    rebuilt = wh.run("events_inc", full_refresh=True)["events_inc"]
    assert rebuilt.status is NodeStatus.SUCCESS, rebuilt.error
    assert rebuilt.rows_loaded == {"acme_marts.events_inc": 4}
    assert wh.sql("select count(*), min(amount) from acme_marts.events_inc") == [(4, 1)]


def test_a_failing_test_fails_its_node_and_severity_warn_keeps_it_green(wh: Warehouse):
    results = wh.run("dup_error", "dup_warn")
    failed, warned = results["dup_error"], results["dup_warn"]
    assert failed.status is NodeStatus.FAILED and not failed.retryable
    assert failed.error.startswith("1 of 2 test(s) failed: unique_dup_error_k failed: Got 1 result")
    assert warned.status is NodeStatus.SUCCESS, warned.error
    assert "warning: test unique_dup_warn_k" in warned.log_tail
    # the models themselves were built: only their tests judged them
    assert wh.sql("select count(*) from acme_checks.dup_error") == [(2,)]


def test_per_test_config_reaches_dbt_and_each_test_reports_its_failures(wh: Warehouse):
    rows = "select 1 as k, 'a' as c union all select 1, 'b' union all select null, 'c'"
    specs = {
        "checked": {
            "sql": rows,
            "schema": "gamma_checks",
            "materialized": "table",
            "tests": {
                "k": [
                    {"not_null": {"config": {"where": "c <> 'c'"}}},  # the null row is left out
                    {"unique": {"config": {"store_failures": True}}},
                ],
                "c": [
                    {"accepted_values": {"values": ["a"], "config": {"severity": "warn"}}},
                    {"unique": {"config": {"error_if": ">5", "warn_if": ">5"}}},
                ],
            },
        },
    }
    result = wh.run("checked", project=wh.project("gamma", specs))["checked"]
    assert result.status is NodeStatus.FAILED
    by_name = {t.name: (t.status, t.failures) for t in result.tests}
    assert by_name == {
        "not_null_checked_k": ("pass", 0),
        "unique_checked_k": ("fail", 1),
        "accepted_values_checked_c__a": ("warn", 2),
        "unique_checked_c": ("pass", 0),
    }
    assert result.error.startswith("1 of 4 test(s) failed: unique_checked_k failed")
    # store_failures keeps the failing rows next to the model, in the tenant's own schema
    assert wh.sql("select * from gamma_checks.unique_checked_k") == [(1, 2)]


def test_a_batch_with_one_bad_model_records_each_nodes_own_result(wh: Warehouse):
    results = wh.run("stg_orders", "bad_sql", "events_inc")
    assert results["stg_orders"].status is NodeStatus.SUCCESS
    assert results["events_inc"].status is NodeStatus.SUCCESS
    bad = results["bad_sql"]
    assert bad.status is NodeStatus.FAILED and not bad.retryable
    assert 'syntax error at or near "selec"' in bad.error and "models/bad_sql.sql" in bad.error
    assert "ERROR creating sql view model acme_checks.bad_sql" in bad.log_tail
    assert results["stg_orders"].error is None and "bad_sql" not in results["stg_orders"].log_tail


def test_a_database_error_leads_with_its_message_at_the_line_of_the_users_sql(wh: Warehouse):
    wh.sql("create schema if not exists shop_raw")
    events = (
        "-- staging of the shop's orders\n"
        "select id,\n"
        "       amout as amount\n"
        "from {{ source('orders', 'orders') }}\n"
    )
    specs = {
        "stg_events": {"sql": events, "sql_file": "models/stg_events.sql", "schema": "eps_s"},
        "inline": {"sql": "select 1 as one,\n  2 as two,\n  nope\n", "schema": "eps_s"},
    }
    results = wh.run("stg_events", "inline", project=wh.project("eps", specs))
    from_file, inline = results["stg_events"], results["inline"]
    assert from_file.status is NodeStatus.FAILED and inline.status is NodeStatus.FAILED
    first, _, rest = from_file.error.partition("\n")
    assert first == 'tenants/eps/models/stg_events.sql:3: column "amout" does not exist'
    assert "Database Error in model stg_events" in rest  # dbt's whole message follows
    assert inline.error.splitlines()[0] == 'SQL line 3: column "nope" does not exist'


def test_sql_dbt_cannot_parse_fails_only_its_own_node(wh: Warehouse):
    specs = {
        "fine": {"sql": "select 1 as x", "schema": "beta_marts", "materialized": "view"},
        "broken": {"sql": "select {{ 1 + }} as x", "schema": "beta_marts"},
        "uses_broken": {"sql": "select * from {{ ref('broken') }}", "schema": "beta_marts"},
    }
    project = wh.project("beta", specs)
    for _ in range(2):  # the second time the warm worker already knows `broken`
        results = wh.run("fine", "broken", project=project)
        assert results["fine"].status is NodeStatus.SUCCESS, results["fine"].error
        assert results["broken"].status is NodeStatus.FAILED
        first, _, rest = results["broken"].error.partition("\n")
        assert first.startswith("SQL line 1: ") and "Compilation Error in model broken" in rest
    fixed = wh.project("beta", {**specs, "broken": {**specs["broken"], "sql": "select 2 as x"}})
    again = wh.run("broken", "uses_broken", project=fixed)
    assert {n: r.status for n, r in again.items()} == {
        "broken": NodeStatus.SUCCESS,
        "uses_broken": NodeStatus.SUCCESS,
    }


def test_tests_only_runs_the_models_tests_without_rebuilding_it(wh: Warehouse):
    assert wh.run("order_totals")["order_totals"].status is NodeStatus.SUCCESS
    oid = wh.sql("select 'acme_marts.order_totals'::regclass::oid")
    results = wh.run("order_totals", "dup_error", "events_inc", tests_only=True)
    totals = results["order_totals"]
    assert totals.status is NodeStatus.SUCCESS and totals.rows_loaded == {}
    assert "PASS" in totals.log_tail and "created" not in totals.log_tail
    assert wh.sql("select 'acme_marts.order_totals'::regclass::oid") == oid  # not rebuilt
    assert results["dup_error"].status is NodeStatus.FAILED
    assert "unique_dup_error_k failed" in results["dup_error"].error
    assert results["events_inc"].status is NodeStatus.SUCCESS  # no tests: nothing to fail
    assert results["events_inc"].log_tail == "no tests declared"


def test_compile_prints_sql_with_refs_and_sources_resolved(wh: Warehouse):
    (node,) = wh.nodes("order_totals")
    sql = compile_node(with_resolved(node, wh.box))
    database = make_url(wh.url).database
    assert f'from "{database}"."acme_staging"."stg_orders"' in sql
    assert "{{" not in sql and "group by status" in sql
    (inc,) = wh.nodes("events_inc")
    assert f'"{database}"."shop_raw"."events"' in compile_node(with_resolved(inc, wh.box))


def test_each_warehouse_is_a_target_of_its_own_and_a_batch_runs_on_both(wh: Warehouse):
    specs = {
        "on_first": {"sql": "select 1 as x", "schema": "gamma_one", "materialized": "table"},
        "on_second": {
            "sql": "select 2 as x",
            "schema": "gamma_two",
            "materialized": "table",
            "warehouse": "dwh2",
        },
    }
    project = wh.project(
        "gamma",
        specs,
        dwh=wh.connection("dwh", "gamma"),
        dwh2=wh.connection("dwh2", "gamma"),
    )
    project["transformations"]["on_second"]["warehouse"] = "dwh2"
    results = wh.run("on_first", "on_second", project=project)
    assert all(r.status is NodeStatus.SUCCESS for r in results.values()), results
    assert results["on_second"].rows_loaded == {"gamma_two.on_second": 1}
    root = wh.workdir / "gamma" / dp.PROJECT_FOLDER
    assert sorted(p.name for p in (root / "target").iterdir()) == ["dwh", "dwh2"]
    assert "dwh2:" in (root / "profiles.yml").read_text()


def test_the_environment_is_restored_after_dbt_ran(wh: Warehouse, monkeypatch):
    monkeypatch.setenv("FABRIC_DBT__DWH__SSLMODE", "before")
    assert wh.run("stg_orders")["stg_orders"].status is NodeStatus.SUCCESS
    assert os.environ["FABRIC_DBT__DWH__SSLMODE"] == "before"
    leftovers = [k for k in os.environ if "FABRIC_DBT__" in k and k != "FABRIC_DBT__DWH__SSLMODE"]
    assert leftovers == []


def test_a_wrong_password_fails_every_node_without_showing_it(wh: Warehouse):
    project = wh.project("delta", dwh=wh.connection("dwh", "delta", password=WRONG_PASSWORD))
    results = wh.run("stg_orders", "dup_warn", project=project)
    for result in results.values():
        assert result.status is NodeStatus.FAILED
        assert "password authentication failed" in result.error, result.error
        assert not result.retryable


def test_an_unchanged_project_is_not_rewritten_and_stale_models_are_removed(wh: Warehouse):
    root = wh.workdir / "acme" / dp.PROJECT_FOLDER
    files = dp.project_files(wh.project())
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.sql")}
    assert write_project(root, files) == ()
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.sql")} == before
    copy = wh.workdir / "copy"
    write_project(copy, files)
    smaller = dp.project_files(
        wh.project(transformations={k: v for k, v in TRANSFORMATIONS.items() if k != "bad_sql"})
    )
    assert write_project(copy, smaller) == ("models/schema.yml", "models/bad_sql.sql")
    assert not (copy / "models" / "bad_sql.sql").exists()


def test_nodes_run_through_the_local_executor_in_warm_worker_processes(wh: Warehouse):
    from fabric.runner.driver import dbt_batch
    from fabric.runner.local import LocalExecutor

    # Workers get the connections resolved by the runner (they hold no secret key).
    project = wh.project("epsilon", dwh=wh.connection("dwh", "epsilon"))
    nodes = {
        n.address: with_resolved(n, wh.box)
        for n in wh.nodes("stg_orders", "order_totals", "events_inc", project=project)
    }
    stg, totals, events = nodes
    dag = Dag.build(nodes, [(stg, totals)])
    events_seen = []
    with LocalExecutor(2) as executor:
        outcome = executor.run(dag, nodes, {}, events_seen.append, batch_key=dbt_batch)
    assert set(outcome.status.values()) == {NodeStatus.SUCCESS}, outcome.results
    wh.results.extend(outcome.results.values())
    started = [e.address for e in events_seen if e.kind == "started"]
    assert started[:2] and set(started[:2]) == {stg, events}  # ready together: one batch
    assert outcome.results[totals].rows_loaded == {"acme_marts.order_totals": 2}


def test_no_credential_is_written_under_the_work_folder_or_shown_in_any_result(wh: Warehouse):
    forms = {p.encode() for p in (PASSWORD, WRONG_PASSWORD)}
    forms |= {f(p, safe="").encode() for p in (PASSWORD, WRONG_PASSWORD) for f in (quote,)}
    forms |= {quote_plus(p).encode() for p in (PASSWORD, WRONG_PASSWORD)}
    scanned = 0
    for path in wh.workdir.rglob("*"):
        if path.is_file():
            scanned += 1
            data = path.read_bytes()
            assert not any(f in data for f in forms), f"a credential is in {path}"
    assert scanned > 20  # models, profiles, dbt's artifacts and logs, for several tenants
    assert any(p.name == "dbt.log" for p in wh.workdir.rglob("*"))
    assert len(wh.results) > 15
    for result in wh.results:
        shown = f"{result.error} {result.log_tail} {result.rows_loaded}".encode()
        assert not any(f in shown for f in forms), result
    assert not any(k.startswith("DBT_ENV_SECRET_") for k in os.environ)


def test_concurrent_invocations_of_one_tenant_get_slots_of_their_own(tmp_path):
    from fabric.runner.dbt_node import _slot

    with _slot(tmp_path, "dwh") as first, _slot(tmp_path, "dwh") as second:
        assert first.target != second.target and first.logs != second.logs
    with _slot(tmp_path, "dwh") as again:
        assert again == first  # free again: the warm slot is reused


@pytest.mark.parametrize(
    "name", ["orders", "OrderItems", "HTTPServer", "order__items", "trailing_", "camelCaseID"]
)
def test_source_tables_are_named_as_dlt_names_them(name):
    from dlt.common.normalizers.naming.snake_case import NamingConvention

    assert dp.dlt_table_name(name) == NamingConvention().normalize_table_identifier(name)


def test_dbt_sessions_are_pinned_so_a_planted_function_never_shadows_a_built_in(wh: Warehouse):
    """A tenant owns schema acme_evil, plants lower(text) and the operator +(int, int) there,
    and has its login put acme_evil first (ALTER ROLE ... SET search_path: any login may set
    its own defaults). fabric starts every dbt session with search_path `pg_catalog,<schema>`
    and the settings' timeouts, which override the login's defaults: a model calling lower()
    and + gets PostgreSQL's own. The model reads the settings from inside its real session."""
    wh.sql(
        "create schema acme_evil;"
        "create function acme_evil.lower(text) returns text language sql as $$select 'pwned'$$;"
        "create function acme_evil.add(int, int) returns int language sql as $$select 666$$;"
        "create operator acme_evil.+ (leftarg = int, rightarg = int, function = acme_evil.add);"
        f"alter role {wh.role} set search_path = acme_evil, pg_catalog;"
    )
    sql = (
        "select lower('ABC') as l, 1 + 1 as two, current_setting('search_path') as sp,\n"
        "       current_setting('statement_timeout') as st, current_setting('lock_timeout') as lt"
    )
    probe = {"probe": {"sql": sql, "schema": "acme_evil", "materialized": "table", "tests": {}}}
    project = wh.project("zeta", transformations=probe, dwh=wh.connection("dwh", "zeta"))
    limits = SessionLimits(statement_timeout=42, lock_timeout=7)
    try:
        unpinned = make_engine(make_url(wh.url).set(username=wh.role, password=PASSWORD))
        with unpinned.connect() as conn:  # the attack works where nothing is pinned
            assert tuple(conn.execute(text("select lower('ABC'), 1 + 1")).one()) == ("pwned", 666)
        unpinned.dispose()
        nodes = [replace(n, session=limits) for n in wh.nodes("probe", project=project)]
        (result,) = run_transformation_nodes([with_resolved(n, wh.box) for n in nodes])
        assert result.status is NodeStatus.SUCCESS, result.error
        assert wh.sql("select l, two, sp, st, lt from acme_evil.probe") == [
            ("abc", 2, "pg_catalog,acme_evil", "42s", "7s")
        ]
    finally:
        wh.sql(f"alter role {wh.role} reset search_path; drop schema acme_evil cascade")


def test_a_connections_search_path_option_cannot_unpin_dbt_sessions(wh: Warehouse):
    """`options: {search_path: ...}` used to reach the profile (dbt-postgres then sets libpq's
    `options` itself, and PGOPTIONS is ignored): it is no longer passed on."""
    assert "search_path" not in dp.STR_OPTIONS
    spec = {"host": "h", "username": "u", "database": "d", "options": {"search_path": "evil"}}
    assert "search_path" not in dp.connection_fields(spec)
