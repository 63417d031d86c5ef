"""`fabric freshness` on a real warehouse whose roles fabric manages: dlt's load time and a
loaded_at_field judged against an injected clock, exit codes, the stale source in `fabric
status`, and tenant acme never seeing globex's tables (its own login is used).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest

from fabric import api
from tests.cli.conftest import base_env, run_fabric
from tests.runner.managed_repo import ManagedRepo, managed_repo, run
from tests.runner.test_managed_runs import tamper, wh_sql

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
    source: src
    dataset: acme_raw
    mode: single_table
    table: orders
    freshness:
      warn_after: {count: 1, period: hour}
      error_after: {count: 1, period: day}
  events:
    source: src
    dataset: acme_raw
    mode: single_table
    table: events
    freshness:
      error_after: {count: 2, period: day}
      loaded_at_field: happened_at
"""
GLOBEX = """
tenant:
  display_name: Globex
  warehouse: dwh
connections:
  dwh: {type: postgres, direction: destination, warehouse: dwh}
transformations:
  totals:
    sql: select 42 as secret
    schema: globex_raw
    materialized: table
"""
HAPPENED = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def repo(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedRepo]:
    yield from managed_repo(
        pg_server_url,
        tmp_path_factory.mktemp("freshness"),
        {"acme": ACME, "globex": GLOBEX},
        {},
        (
            "create table orders (id int primary key)",
            "insert into orders values (1), (2)",
            "create table events (id int primary key, happened_at timestamptz)",
            f"insert into events values (1, '{HAPPENED.isoformat()}')",
        ),
    )


def statuses(results) -> dict[str, str]:
    return {r.relation: r.status for r in results}


def test_freshness_judges_load_times_against_an_injected_clock(repo):
    assert run(repo, "acme").ok and run(repo, "globex").ok
    ((loaded,),) = wh_sql(repo.warehouse, "SELECT max(inserted_at) FROM acme_raw._dlt_loads")

    results = api.freshness(
        repo.root, "acme", now=loaded + dt.timedelta(minutes=10), environ=repo.env
    )
    # only acme's own tables (globex_raw.totals is globex's)
    assert statuses(results) == {"acme_raw.events": "error", "acme_raw.orders": "pass"}, [
        (r.relation, r.error) for r in results
    ]
    by_relation = {r.relation: r for r in results}
    assert by_relation["acme_raw.orders"].loaded_at == loaded  # dlt's load time
    assert by_relation["acme_raw.events"].loaded_at == HAPPENED  # the declared column

    later = api.freshness(repo.root, "acme", now=loaded + dt.timedelta(hours=2), environ=repo.env)
    assert statuses(later)["acme_raw.orders"] == "warn"
    days = api.freshness(repo.root, "acme", now=loaded + dt.timedelta(days=2), environ=repo.env)
    assert statuses(days)["acme_raw.orders"] == "error"
    events = HAPPENED + dt.timedelta(days=1)
    fresh = api.freshness(repo.root, "acme", now=events, environ=repo.env)
    assert statuses(fresh)["acme_raw.events"] == "pass"


def test_the_cli_exits_1_on_an_error_and_status_shows_the_stale_source(repo):
    env = base_env(**repo.env)
    done = run_fabric("freshness", "--tenant", "acme", "--format", "json", cwd=repo.root, env=env)
    assert done.returncode == 1, done.stderr  # events is years old
    doc = json.loads(done.stdout)
    assert doc["kind"] == "fabric-freshness" and doc["status"] == "error"
    assert {s["relation"]: s["status"] for s in doc["sources"]} == {
        "acme_raw.events": "error",
        "acme_raw.orders": "pass",
    }
    status = run_fabric("status", "--tenant", "acme", cwd=repo.root, env=env)
    assert status.returncode == 0, status.stderr
    assert "STALE SOURCE" in status.stdout and "events.events" in status.stdout
    assert "orders.orders" not in status.stdout.split("STALE SOURCE")[1]
    assert "globex" not in status.stdout


def test_a_dataset_forced_to_another_tenants_schema_shows_nothing_of_it(repo):
    tamper(repo.env, "acme", "pipelines", "orders", "dataset", "globex_raw")
    tamper(repo.env, "acme", "pipelines", "orders", "table", "totals")
    results = {r.pipeline: r for r in api.freshness(repo.root, "acme", environ=repo.env)}
    forced = results["orders"]
    assert forced.relation == "globex_raw.totals"
    assert forced.status == "error" and forced.loaded_at is None
    assert "permission denied" in (forced.error or ""), forced.error
    assert repo.env["DWH_ADMIN_PASSWORD"] not in (forced.error or "")
