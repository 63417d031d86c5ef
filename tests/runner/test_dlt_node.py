"""run_pipeline_node against real databases: every mode, dispositions, incremental state that
lives in the destination, kill-and-rerun, the per-pipeline run lock, and no secret anywhere."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scripted_nodes import with_resolved
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from fabric.addresses import Address
from fabric.config.specs import Filter, PipelineSpec
from fabric.domain.runs import (
    NodeResult,
    NodeSpec,
    NodeStatus,
    SessionLimits,
    StoredConnection,
)
from fabric.runner import dlt_node
from fabric.runner.credentials import resolve_connection
from fabric.runner.dlt_node import pipeline_lock
from fabric.runner.dlt_sources import (
    build_resources,
    row_predicate,
    sql_source_config,
)
from fabric.state.secrets import SecretBox

TENANT = "acme"


# -- helpers --------------------------------------------------------------------------------------


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def connection(
    box: SecretBox, name: str, spec: dict[str, Any], secrets: dict[str, str] | None = None
) -> StoredConnection:
    """A connection as apply stores it: secret fields hold references, values are encrypted."""
    address = Address.parse(f"{TENANT}.connection.{name}")
    stored_secrets = {}
    spec = json.loads(json.dumps(spec))
    for path, value in (secrets or {}).items():
        ref = f"${{secret:{name}_{path.replace('.', '_')}}}"
        stored_secrets[path] = {
            "ref": ref,
            "ct": box.encrypt(f"{address}#{path}", value),
            "fp": None,
        }
        target = spec
        *parents, leaf = path.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = ref
    return StoredConnection(address=address, spec=spec, secrets=stored_secrets)


def pg_connection(box: SecretBox, name: str, url: str, direction: str) -> StoredConnection:
    u = make_url(url)
    spec = {
        "type": "postgres",
        "direction": direction,
        "host": u.host,
        "port": u.port,
        "database": u.database,
        "username": u.username,
        "password": None,
    }
    return connection(box, name, spec, {"password": u.password} if u.password else {})


def run_pipeline_node(node: NodeSpec, box: Any, **kw: Any) -> NodeResult:
    """Resolve the node's connections as the runner does, then run it."""
    return dlt_node.run_pipeline_node(with_resolved(node, box), **kw)


def node_for(
    spec: dict[str, Any],
    connections: dict[str, StoredConnection],
    workdir: Path,
    *,
    name: str = "orders",
    repo_root: Path | None = None,
    control_plane_url: str = "",
    run_id: int = 1,
) -> NodeSpec:
    spec = {"destination": "dwh", "dataset": "raw", **spec}
    return NodeSpec(
        address=Address.parse(f"{TENANT}.pipeline.{name}"),
        kind="pipeline",
        spec=PipelineSpec.model_validate(spec).model_dump(mode="json", by_alias=True),
        connections=connections,
        workdir=str(workdir),
        repo_root=str(repo_root or workdir),
        control_plane_url=control_plane_url,
        run_id=run_id,
    )


def succeeded(result: NodeResult) -> NodeResult:
    assert result.status is NodeStatus.SUCCESS, f"{result.error}\n{result.log_tail}"
    return result


def seed_orders(url: str, rows: int, *, start: int = 1) -> None:
    sql(
        url,
        """
        CREATE TABLE IF NOT EXISTS orders (
            id bigint PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL,
            amount numeric(12, 2), qty smallint, updated_at timestamptz NOT NULL, note text)
        """,
    )
    sql(
        url,
        """
        INSERT INTO orders
        SELECT g, mod(g, 7), (ARRAY['new', 'paid', 'test'])[1 + mod(g, 3)], g * 1.25, mod(g, 5),
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour',
               CASE WHEN mod(g, 4) = 0 THEN NULL ELSE 'note ' || g END
        FROM generate_series(CAST(:a AS int), CAST(:b AS int)) g
        """,
        a=start,
        b=start + rows - 1,
    )


@pytest.fixture
def pg_pair(box: SecretBox, source_url: str, warehouse_url: str) -> dict[str, StoredConnection]:
    return {
        "shop": pg_connection(box, "shop", source_url, "source"),
        "dwh": pg_connection(box, "dwh", warehouse_url, "destination"),
    }


def loads_completed(warehouse_url: str, dataset: str = "raw") -> int:
    exists = sql(warehouse_url, "SELECT to_regclass(:t) IS NOT NULL", t=f"{dataset}._dlt_loads")
    if not exists[0][0]:
        return 0
    return sql(warehouse_url, f"SELECT count(*) FROM {dataset}._dlt_loads WHERE status = 0")[0][0]


# -- SQL sources ----------------------------------------------------------------------------------


def test_single_table_loads_rows_records_counts_and_removes_load_packages(
    box, source_url, warehouse_url, pg_pair, tmp_path
):
    seed_orders(source_url, 50)
    node = node_for(
        {"source": "shop", "mode": "single_table", "table": "orders"}, pg_pair, tmp_path
    )
    import connectorx  # noqa: F401  # its import sets two constant paths (setdefault): not ours

    environ, cwd = dict(os.environ), os.getcwd()

    result = succeeded(run_pipeline_node(node, box))

    assert result.rows_loaded == {"orders": 50}
    assert dict(os.environ) == environ and os.getcwd() == cwd
    assert sql(warehouse_url, "SELECT count(*), sum(amount), count(note) FROM raw.orders")[0] == (
        50,
        sum(g * 1.25 for g in range(1, 51)),
        50 - 12,
    )
    assert "backend connectorx" in result.log_tail
    pipeline_dir = tmp_path / "dlt" / "acme__orders"
    assert pipeline_dir.is_dir()
    assert not any((pipeline_dir / "load" / "loaded").iterdir())
    assert not list((pipeline_dir / "load" / "normalized").iterdir())


def test_merge_rerun_updates_rows_without_duplicating_them(
    box, source_url, warehouse_url, pg_pair, tmp_path
):
    seed_orders(source_url, 30)
    spec = {
        "source": "shop",
        "mode": "single_table",
        "table": "orders",
        "write_disposition": "merge",
        "primary_key": ["id"],
    }
    node = node_for(spec, pg_pair, tmp_path)
    succeeded(run_pipeline_node(node, box))
    sql(source_url, "UPDATE orders SET status = 'changed' WHERE id <= 3")

    succeeded(run_pipeline_node(node, box))

    rows = sql(warehouse_url, "SELECT count(*), count(DISTINCT id) FROM raw.orders")[0]
    assert rows == (30, 30)
    changed = sql(warehouse_url, "SELECT id FROM raw.orders WHERE status = 'changed' ORDER BY id")
    assert [r.id for r in changed] == [1, 2, 3]


def test_incremental_loads_only_new_rows_even_after_the_local_state_is_wiped(
    box, source_url, warehouse_url, pg_pair, tmp_path
):
    seed_orders(source_url, 40)
    spec = {
        "source": "shop",
        "mode": "single_table",
        "table": "orders",
        "incremental": {"cursor": "updated_at", "initial_value": "2024-01-01T10:00:00"},
    }
    node = node_for(spec, pg_pair, tmp_path)
    assert succeeded(run_pipeline_node(node, box)).rows_loaded == {"orders": 31}  # ids 10..40

    seed_orders(source_url, 5, start=41)
    assert succeeded(run_pipeline_node(node, box)).rows_loaded == {"orders": 5}

    # Another machine: no local pipeline state at all; the state comes from the warehouse.
    shutil.rmtree(tmp_path / "dlt")
    seed_orders(source_url, 3, start=46)
    assert succeeded(run_pipeline_node(node, box)).rows_loaded == {"orders": 3}
    assert sql(warehouse_url, "SELECT count(*), count(DISTINCT id) FROM raw.orders")[0] == (39, 39)

    # Renamed to orders_v2 (a move): the runner passes its first name, so the cursor stays.
    renamed = replace(node_for(spec, pg_pair, tmp_path, name="orders_v2"), state_name="orders")
    seed_orders(source_url, 2, start=49)
    assert succeeded(run_pipeline_node(renamed, box)).rows_loaded == {"orders": 2}
    assert sql(warehouse_url, "SELECT count(*), count(DISTINCT id) FROM raw.orders")[0] == (41, 41)


def test_filters_are_pushed_into_the_source_query(
    box, source_url, warehouse_url, pg_pair, tmp_path
):
    seed_orders(source_url, 60)
    spec = {
        "source": "shop",
        "mode": "single_table",
        "table": "orders",
        "filters": [
            {"column": "status", "op": "ne", "value": "test"},
            {"column": "customer_id", "op": "in", "value": [1, 2, 3]},
            {"column": "updated_at", "op": "lt", "value": "2024-01-02T12:00:00+00:00"},
        ],
    }
    result = succeeded(run_pipeline_node(node_for(spec, pg_pair, tmp_path), box))

    expected = sql(
        source_url,
        "SELECT id FROM orders WHERE status <> 'test' AND customer_id IN (1, 2, 3) "
        "AND updated_at < '2024-01-02T12:00:00+00:00' ORDER BY id",
    )
    got = sql(warehouse_url, "SELECT id FROM raw.orders ORDER BY id")
    assert got == expected and result.rows_loaded == {"orders": len(expected)}
    assert "WHERE" in result.log_tail  # the filter went into connectorx's query


def test_row_filters_for_api_and_file_rows_follow_sql_null_rules():
    keep = row_predicate(
        (
            Filter(column="kind", op="not_in", value=("odd", "x")),
            Filter(column="id", op="gte", value="4"),
            Filter(column="seen", op="gt", value="2024-01-01"),
        )
    )
    from datetime import datetime

    rows = [
        {"id": 4, "kind": "even", "seen": datetime(2024, 2, 1)},
        {"id": 3, "kind": "even", "seen": datetime(2024, 2, 1)},
        {"id": 6, "kind": "odd", "seen": datetime(2024, 2, 1)},
        {"id": 8, "kind": None, "seen": datetime(2024, 2, 1)},
        {"id": 10, "kind": "even", "seen": datetime(2023, 2, 1)},
    ]
    assert [r["id"] for r in rows if keep(r)] == [4]


def test_batch_size_sets_the_size_of_extracted_batches(box, source_url, pg_pair, tmp_path):
    seed_orders(source_url, 25)
    for backend in ("connectorx", "pyarrow"):
        spec = PipelineSpec.model_validate(
            {
                "source": "shop",
                "destination": "dwh",
                "dataset": "raw",
                "mode": "single_table",
                "table": "orders",
                "batch_size": 10,
                "backend": backend,
            }
        )
        build = build_resources(
            spec,
            resolve_connection(pg_pair["shop"], box, {}),
            repo_root=tmp_path,
            name="orders",
            tenant=TENANT,
        )
        (resource,) = build.resources
        sizes = [item.num_rows for item in resource]
        assert sizes == [10, 10, 5], backend


def test_full_database_loads_the_listed_tables_or_all(
    box, source_url, warehouse_url, pg_pair, tmp_path
):
    seed_orders(source_url, 12)
    sql(source_url, "CREATE TABLE customers (id int PRIMARY KEY, name text, tags text[])")
    sql(source_url, "INSERT INTO customers VALUES (1, 'ana', '{a,b}'), (2, 'bo', NULL)")
    sql(source_url, "CREATE TABLE ignored (id int)")
    spec = {"source": "shop", "mode": "full_database", "table_names": ["orders", "customers"]}

    result = succeeded(run_pipeline_node(node_for(spec, pg_pair, tmp_path), box))

    assert result.rows_loaded == {"customers": 2, "orders": 12}
    # text[] is not exact through connectorx, so that table falls back to pyarrow
    assert "table customers: backend pyarrow" in result.log_tail
    assert "table orders: backend connectorx" in result.log_tail
    tags = sql(warehouse_url, "SELECT tags::text FROM raw.customers ORDER BY id")
    assert [t[0] for t in tags] == ['["a","b"]', None]

    everything = node_for(
        {"source": "shop", "mode": "full_database", "dataset": "all_raw"},
        pg_pair,
        tmp_path,
        name="everything",
    )
    assert set(succeeded(run_pipeline_node(everything, box)).rows_loaded) == {
        "customers",
        "ignored",
        "orders",
    }


def test_mysql_source_loads_rows(box, warehouse_url, mysql_database, tmp_path):
    import pymysql

    conn = pymysql.connect(**mysql_database, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, amount decimal(10,2), note text, "
            "created_at datetime(6), paid tinyint(1), size smallint, kind enum('a','b'), "
            "attrs json)"
        )
        cur.executemany(
            "INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    i,
                    i * 2.5,
                    None if i % 2 else f"n{i}",
                    f"2024-01-0{i} 10:00:00.25",
                    i % 2,
                    -i,
                    "ab"[i % 2],
                    None if i % 3 else '{"k": 1}',
                )
                for i in range(1, 8)
            ],
        )
        cur.execute("CREATE TABLE shifts (id int PRIMARY KEY, length time, flags bit(3))")
        cur.execute("INSERT INTO shifts VALUES (1, '838:59:59', b'101'), (2, NULL, NULL)")
    conn.close()
    connections = {
        "shop": connection(
            box,
            "shop",
            {
                "type": "mysql",
                "direction": "source",
                "host": "127.0.0.1",
                "port": 3306,
                "database": mysql_database["database"],
                "username": "root",
            },
        ),
        "dwh": pg_connection(box, "dwh", warehouse_url, "destination"),
    }
    spec = {"source": "shop", "mode": "full_database", "backend": "auto"}

    result = succeeded(run_pipeline_node(node_for(spec, connections, tmp_path), box))

    assert result.rows_loaded == {"orders": 7, "shifts": 2}
    assert "table orders: backend connectorx" in result.log_tail
    assert "table shifts: backend pyarrow" in result.log_tail  # MySQL TIME is a duration
    got = sql(
        warehouse_url,
        "SELECT sum(amount), count(note), min(created_at)::text, sum(paid), sum(size), "
        "count(attrs), string_agg(kind, '' ORDER BY id) FROM raw.orders",
    )[0]
    assert tuple(got) == (70, 3, "2024-01-01 10:00:00.25", 4, -28, 2, "babab" + "ab")


def test_sqlite_path_is_relative_to_the_repository(box, warehouse_url, tmp_path):
    import sqlite3

    (tmp_path / "repo" / "data" / TENANT).mkdir(parents=True)
    db = sqlite3.connect(tmp_path / "repo" / "data" / TENANT / "shop.db")
    db.execute("CREATE TABLE events (id integer primary key, name text, score real)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?)", [(i, f"e{i}", i / 2) for i in range(9)])
    db.commit()
    db.close()
    connections = {
        "shop": connection(
            box, "shop", {"type": "sqlite", "direction": "source", "path": f"data/{TENANT}/shop.db"}
        ),
        "dwh": pg_connection(box, "dwh", warehouse_url, "destination"),
    }
    spec = {"source": "shop", "mode": "single_table", "table": "events"}
    node = node_for(
        spec, connections, tmp_path / "work", name="events", repo_root=tmp_path / "repo"
    )

    assert succeeded(run_pipeline_node(node, box)).rows_loaded == {"events": 9}


def test_mssql_source_config_is_built_without_a_server(box):
    """No SQL Server runs here: only the URL and the reading settings are checked."""
    stored = connection(
        box,
        "erp",
        {
            "type": "mssql",
            "direction": "source",
            "host": "erp.internal",
            "database": "erp",
            "username": "etl",
            "password": None,
            "options": {"Encrypt": "yes"},
        },
        {"password": "p@ss word"},
    )
    spec = PipelineSpec.model_validate(
        {
            "source": "erp",
            "destination": "dwh",
            "dataset": "raw",
            "mode": "single_table",
            "table": "Orders",
            "source_schema": "dbo",
            "batch_size": 5000,
        }
    )

    config = sql_source_config(spec, resolve_connection(stored, box, {}), ".", TENANT)

    url = config.url
    assert (url.drivername, url.host, url.port, url.database) == (
        "mssql+pyodbc",
        "erp.internal",
        1433,
        "erp",
    )
    assert (url.username, url.password) == ("etl", "p@ss word")
    assert dict(url.query) == {"Encrypt": "yes", "driver": "ODBC Driver 18 for SQL Server"}
    assert (config.dialect, config.schema, config.tables, config.chunk_size) == (
        "mssql",
        "dbo",
        ("Orders",),
        5000,
    )
    assert config.backend_for(None)[0] == "pyarrow"


# -- REST API and files ---------------------------------------------------------------------------


def test_rest_api_follows_pages_and_sends_the_auth_header(box, warehouse_url, api_server, tmp_path):
    token = "tok-Zq81-distinctive"
    api = connection(
        box,
        "api",
        {
            "type": "rest_api",
            "base_url": api_server.base_url,
            "auth": {"type": "bearer", "token": None},
            "headers": {"X-Tenant": "acme"},
            "resources": [
                {
                    "name": "items",
                    "path": "items",
                    "data_selector": "data",
                    "paginator": {"type": "json_link", "next_url_path": "next"},
                    "primary_key": ["id"],
                },
                {"name": "missing", "path": "nothing-here"},
            ],
        },
        {"auth.token": token},
    )
    connections = {"api": api, "dwh": pg_connection(box, "dwh", warehouse_url, "destination")}
    spec = {
        "source": "api",
        "mode": "rest_api",
        "resources": ["items"],
        "write_disposition": "merge",
        "filters": [{"column": "kind", "op": "eq", "value": "odd"}],
    }
    node = node_for(spec, connections, tmp_path, name="items")

    result = succeeded(run_pipeline_node(node, box))
    succeeded(run_pipeline_node(node, box))  # merge on the declared primary key: no duplicates

    assert result.rows_loaded == {"items": 12}
    assert sql(warehouse_url, "SELECT count(*), count(DISTINCT id) FROM raw.items")[0] == (12, 12)
    pages = [path for path, _ in api_server.requests]
    assert pages[:5] == ["/items", *(f"/items?page={n}" for n in range(2, 6))]
    assert all(h.get("Authorization") == f"Bearer {token}" for _, h in api_server.requests)
    assert all(h.get("X-Tenant") == "acme" for _, h in api_server.requests)
    assert token not in result.log_tail

    # an incremental cursor on an API without a cursor parameter filters client-side
    since = node_for(
        {
            "source": "api",
            "mode": "rest_api",
            "resources": ["items"],
            "dataset": "recent",
            "incremental": {"cursor": "id", "initial_value": 20},
        },
        connections,
        tmp_path,
        name="recent_items",
    )
    assert succeeded(run_pipeline_node(since, box)).rows_loaded == {"items": 4}  # 20..23
    assert succeeded(run_pipeline_node(since, box)).rows_loaded == {"items": 0}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_files_are_read_from_a_folder_relative_to_the_repository(box, warehouse_url, tmp_path, fmt):
    folder = tmp_path / "repo" / "data" / TENANT / "landing"
    folder.mkdir(parents=True)
    rows = [{"id": i, "city": f"c{i % 3}", "amount": i * 1.5} for i in range(1, 11)]
    for part in (1, 2):
        chunk = [r for r in rows if (r["id"] % 2) == part - 1]
        path = folder / f"sales_{part}.{fmt}"
        if fmt == "csv":
            path.write_text(
                "id,city,amount\n"
                + "".join(f"{r['id']},{r['city']},{r['amount']}\n" for r in chunk)
            )
        elif fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in chunk))
        else:
            pq.write_table(pa.Table.from_pylist(chunk), path)
    (folder / "readme.txt").write_text("not data")
    files = connection(
        box,
        "landing",
        {
            "type": "filesystem",
            "bucket_url": f"data/{TENANT}/landing",
            "file_glob": "*.none",
            "format": fmt,
        },
    )
    connections = {"landing": files, "dwh": pg_connection(box, "dwh", warehouse_url, "destination")}
    spec = {
        "source": "landing",
        "mode": "files",
        "file_glob": f"sales_*.{fmt}",
        "filters": [{"column": "city", "op": "ne", "value": "c0"}],
        "incremental": {"cursor": "modification_date"},
    }
    node = node_for(spec, connections, tmp_path / "work", name="sales", repo_root=tmp_path / "repo")

    result = succeeded(run_pipeline_node(node, box))
    again = succeeded(run_pipeline_node(node, box))  # no file changed since

    assert result.rows_loaded == {"sales": 7}
    assert again.rows_loaded == {"sales": 0}
    got = sql(warehouse_url, "SELECT id, city, amount FROM raw.sales ORDER BY id")
    assert [tuple(r) for r in got] == [
        (r["id"], r["city"], r["amount"]) for r in rows if r["city"] != "c0"
    ]


# -- a hostile tenant reading files that are not its own ----------------------------------------


def _hostile_repo(tmp_path: Path) -> Path:
    """A repository with fabric's key file, another tenant's files and the tenant's own folder."""
    repo = tmp_path / "repo"
    (repo / ".fabric").mkdir(parents=True)
    (repo / ".fabric" / "secret.key").write_text("key,of,fabric\n")
    (repo / "data" / "globex").mkdir(parents=True)
    (repo / "data" / "globex" / "orders.csv").write_text("id,secret\n1,globex-only\n")
    (repo / "data" / TENANT / "drops").mkdir(parents=True)
    (repo / "data" / TENANT / "drops" / "mine.csv").write_text("id,secret\n1,mine\n")
    return repo


def _files_node(box, warehouse_url, repo, bucket_url, glob):
    files = connection(
        box,
        "loot",
        {"type": "filesystem", "bucket_url": bucket_url, "file_glob": glob, "format": "csv"},
    )
    connections = {"loot": files, "dwh": pg_connection(box, "dwh", warehouse_url, "destination")}
    spec = {"source": "loot", "mode": "files", "dataset": "loot"}
    return node_for(spec, connections, repo.parent / "work", name="loot", repo_root=repo)


def _refused(result: NodeResult, warehouse_url: str) -> str:
    assert result.status is NodeStatus.FAILED, result.log_tail
    found = sql(warehouse_url, "SELECT to_regclass('loot.loot') IS NOT NULL")[0][0]
    assert not found, "a refused load must not have written a table"
    assert "key,of,fabric" not in (result.error or "") + result.log_tail
    return result.error or ""


@pytest.mark.parametrize(
    ("bucket_url", "glob", "why"),
    [
        (".fabric", "secret.key", "outside tenant acme's folder"),
        ("data/globex", "*.csv", "outside tenant acme's folder"),
        ("/etc", "passwd", "outside the repository"),
        ("data/acme/drops", "../../../.fabric/*", "`..`"),
        ("data/acme/../../.fabric", "*", "`..`"),
    ],
)
def test_a_files_source_outside_the_tenants_folder_is_refused(
    box, warehouse_url, tmp_path, bucket_url, glob, why
):
    repo = _hostile_repo(tmp_path)
    node = _files_node(box, warehouse_url, repo, bucket_url, glob)

    assert why in _refused(run_pipeline_node(node, box), warehouse_url)


def test_a_symlink_in_the_tenants_folder_to_fabrics_key_file_is_refused(
    box, warehouse_url, tmp_path
):
    repo = _hostile_repo(tmp_path)
    drops = repo / "data" / TENANT / "drops"
    (drops / "key.csv").symlink_to(repo / ".fabric" / "secret.key")
    (repo / "data" / TENANT / "theirs").symlink_to(repo / "data" / "globex")

    for bucket, glob in ((f"data/{TENANT}/drops", "*.csv"), (f"data/{TENANT}/theirs", "*")):
        node = _files_node(box, warehouse_url, repo, bucket, glob)
        assert "outside the tenant's folder" in _refused(
            run_pipeline_node(node, box), warehouse_url
        )


def test_a_symlinked_tenant_data_folder_is_refused(box, warehouse_url, tmp_path):
    repo = _hostile_repo(tmp_path)
    shutil.rmtree(repo / "data" / TENANT)
    (repo / "data" / TENANT).symlink_to(repo / ".fabric")
    node = _files_node(box, warehouse_url, repo, f"data/{TENANT}", "*")

    assert "is a symlink" in _refused(run_pipeline_node(node, box), warehouse_url)


def test_a_sqlite_source_outside_the_tenants_folder_is_refused(box, warehouse_url, tmp_path):
    import sqlite3

    repo = _hostile_repo(tmp_path)
    db = sqlite3.connect(repo / "data" / "globex" / "erp.sqlite")
    db.execute("CREATE TABLE loot (id integer primary key, secret text)")
    db.execute("INSERT INTO loot VALUES (1, 'globex-only')")
    db.commit()
    db.close()
    (repo / "data" / TENANT / "erp.sqlite").symlink_to(repo / "data" / "globex" / "erp.sqlite")
    for path, why in (
        ("data/globex/erp.sqlite", "outside tenant acme's folder"),
        (f"data/{TENANT}/erp.sqlite", "outside the tenant's folder"),
    ):
        connections = {
            "erp": connection(box, "erp", {"type": "sqlite", "direction": "source", "path": path}),
            "dwh": pg_connection(box, "dwh", warehouse_url, "destination"),
        }
        spec = {"source": "erp", "mode": "single_table", "table": "loot", "dataset": "loot"}
        node = node_for(spec, connections, tmp_path / "work", name="loot", repo_root=repo)
        assert why in _refused(run_pipeline_node(node, box), warehouse_url)


# -- failures -------------------------------------------------------------------------------------


def test_schema_contract_freeze_fails_naming_the_table_and_column(
    box, source_url, warehouse_url, pg_pair, tmp_path
):
    seed_orders(source_url, 5)
    spec = {
        "source": "shop",
        "mode": "single_table",
        "table": "orders",
        "schema_contract": {"columns": "freeze"},
    }
    node = node_for(spec, pg_pair, tmp_path)
    succeeded(run_pipeline_node(node, box))
    sql(source_url, "ALTER TABLE orders ADD COLUMN coupon text")
    seed_orders(source_url, 2, start=6)

    result = run_pipeline_node(node, box)

    assert result.status is NodeStatus.FAILED and not result.retryable
    assert "schema contract" in result.error
    assert "'orders'" in result.error and "'coupon'" in result.error
    assert "Traceback" not in result.error and "\n" not in result.error
    assert sql(warehouse_url, "SELECT count(*) FROM raw.orders")[0][0] == 5
    # the failed run left nothing pending: fixing the contract makes the next run load again
    relaxed = node_for({**spec, "schema_contract": "evolve"}, pg_pair, tmp_path)
    assert succeeded(run_pipeline_node(relaxed, box)).rows_loaded == {"orders": 7}


@pytest.fixture
def secret_role(pg_server_url: str, warehouse_url: str) -> Any:
    """A login role with a distinctive password that owns nothing but what it creates in the
    warehouse database; dropped (with what it owns) after the test."""
    role = f"fabric_test_{os.urandom(4).hex()}"
    password = "Zq7-fabric-Secret-9w"
    db = make_url(warehouse_url).database
    sql(pg_server_url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    sql(pg_server_url, f'GRANT CONNECT, CREATE ON DATABASE "{db}" TO {role}')
    sql(warehouse_url, f"GRANT ALL ON SCHEMA public TO {role}")
    url = make_url(warehouse_url).set(username=role, password=password)
    yield url.render_as_string(hide_password=False), password
    sql(warehouse_url, f"DROP OWNED BY {role} CASCADE")
    sql(pg_server_url, f"DROP OWNED BY {role} CASCADE")
    sql(pg_server_url, f"DROP ROLE {role}")


def test_no_secret_appears_in_results_errors_or_logs(box, secret_role, tmp_path):
    url, password = secret_role
    sql(url, "CREATE TABLE public.events (id int PRIMARY KEY, name text)")
    sql(url, "INSERT INTO public.events VALUES (1, 'a'), (2, 'b')")
    connections = {
        "shop": pg_connection(box, "shop", url, "source"),
        "dwh": pg_connection(box, "dwh", url, "destination"),
    }
    bad_password = make_url(url).set(password=password + "-wrong")
    wrong = {
        "shop": pg_connection(
            box, "shop", bad_password.render_as_string(hide_password=False), "source"
        ),
        "dwh": connections["dwh"],
    }
    # A filter value equal to the password puts it into the SQL the log shows, and a missing
    # filter value that is not an integer puts it into an error message: both come out as ***.
    leaky_filter = {"filters": [{"column": "name", "op": "ne", "value": password}]}
    leaky_error = {"filters": [{"column": "id", "op": "eq", "value": password}]}
    base = {"source": "shop", "mode": "single_table", "table": "events"}
    results = [
        run_pipeline_node(node_for({**base, **leaky_filter}, connections, tmp_path), box),
        run_pipeline_node(node_for({**base, "table": "absent"}, connections, tmp_path), box),
        run_pipeline_node(node_for(base, wrong, tmp_path / "w"), box),
        run_pipeline_node(node_for({**base, **leaky_error}, connections, tmp_path), box),
    ]

    ok, missing, refused, invalid = results
    assert succeeded(ok).rows_loaded == {"events": 2}
    assert "WHERE" in ok.log_tail and "***" in ok.log_tail
    assert missing.status is NodeStatus.FAILED and "absent" in missing.error
    assert refused.status is NodeStatus.FAILED and not refused.retryable
    assert "password authentication failed" in refused.error
    assert invalid.status is NodeStatus.FAILED and "'***' is not a valid" in invalid.error
    for result in results:
        blob = repr(result) + (result.error or "") + result.log_tail
        assert password not in blob
    for path in tmp_path.rglob("*"):  # nor in dlt's local state
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_an_unreachable_destination_is_retryable(box, source_url, pg_pair, tmp_path):
    seed_orders(source_url, 3)
    dead = dict(pg_pair)
    spec = dict(pg_pair["dwh"].spec)
    spec["port"] = 1  # nothing listens there
    dead["dwh"] = StoredConnection(
        address=pg_pair["dwh"].address, spec=spec, secrets=pg_pair["dwh"].secrets
    )
    node = node_for({"source": "shop", "mode": "single_table", "table": "orders"}, dead, tmp_path)

    result = run_pipeline_node(node, box)

    assert result.status is NodeStatus.FAILED and result.retryable, result.error


# -- the run lock and kill-and-rerun ---------------------------------------------------------------


def test_a_second_run_of_the_same_pipeline_waits_then_fails_naming_the_holder(
    box, source_url, pg_pair, pg_url, tmp_path
):
    seed_orders(source_url, 3)
    node = node_for(
        {"source": "shop", "mode": "single_table", "table": "orders"},
        pg_pair,
        tmp_path,
        control_plane_url=pg_url,
        run_id=8,
    )
    holder = "fabric run 7 acme.pipeline.orders"
    with pipeline_lock(
        make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False),
        "acme.pipeline.orders",
        application_name=holder,
        wait=1,
    ):
        start = time.monotonic()
        blocked = run_pipeline_node(node, box, lock_wait=0.5)
        waited = time.monotonic() - start

    assert blocked.status is NodeStatus.FAILED and not blocked.retryable
    assert holder in blocked.error and "already running" in blocked.error
    assert 0.5 <= waited < 10
    assert succeeded(run_pipeline_node(node, box, lock_wait=0.5)).rows_loaded == {"orders": 3}


def test_a_waiting_run_starts_when_the_holder_finishes(box, source_url, pg_pair, pg_url, tmp_path):
    seed_orders(source_url, 3)
    node = node_for(
        {"source": "shop", "mode": "single_table", "table": "orders"},
        pg_pair,
        tmp_path,
        control_plane_url=pg_url,
    )
    plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    release = threading.Event()

    def hold() -> None:
        with pipeline_lock(plain, "acme.pipeline.orders", application_name="holder", wait=1):
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.3)
    threading.Timer(0.5, release.set).start()
    result = run_pipeline_node(node, box, lock_wait=10)
    thread.join()
    assert succeeded(result).rows_loaded == {"orders": 3}


KILLED_CHILD = textwrap.dedent(
    """
    import os, pickle, signal, sys
    from dlt.destinations.impl.postgres import postgres as pg
    from fabric.runner import dlt_node

    node = pickle.loads(open(sys.argv[1], "rb").read())
    copy = pg.PostgresParquetCopyJob.run
    copied = []

    def copy_or_die(self):
        if copied:  # one file is in the warehouse and recorded; die in the middle of the next
            os.kill(os.getpid(), signal.SIGKILL)
        copy(self)
        copied.append(self)

    pg.PostgresParquetCopyJob.run = copy_or_die
    dlt_node.LOAD_WORKERS = 1  # one file at a time, so the kill lands between two files
    dlt_node.run_pipeline_node(node)
    """
)


def summary(url: str, table: str) -> tuple[Any, ...]:
    return tuple(sql(url, f"SELECT count(*), count(DISTINCT id), sum(amount) FROM {table}")[0])


@pytest.mark.parametrize("disposition", ["append", "merge"])
def test_a_run_killed_mid_load_is_finished_by_the_next_run_exactly_once(
    box, fernet_key, source_url, warehouse_url, pg_pair, pg_url, tmp_path, disposition
):
    seed_orders(source_url, 2000)
    spec = {
        "source": "shop",
        "mode": "single_table",
        "table": "orders",
        "batch_size": 400,
        "write_disposition": disposition,
        "primary_key": ["id"] if disposition == "merge" else [],
        "incremental": {"cursor": "updated_at"},
    }
    node = node_for(spec, pg_pair, tmp_path, control_plane_url=pg_url)
    payload = tmp_path / "node.pickle"
    payload.write_bytes(pickle.dumps(with_resolved(node, box)))

    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(payload)], capture_output=True, timeout=120
    )

    assert child.returncode == -9, child.stderr.decode()[-2000:]
    assert loads_completed(warehouse_url) == 0  # no load finished: no cursor was committed
    if disposition == "append":
        assert sql(warehouse_url, "SELECT count(*) FROM raw.orders")[0][0] == 400  # one file in
    # the killed worker's lock died with it, so this run does not wait for it
    rerun = succeeded(run_pipeline_node(node, box, lock_wait=5))
    assert rerun.rows_loaded == {"orders": 2000}
    assert "interrupted run" in rerun.log_tail
    assert summary(warehouse_url, "raw.orders") == summary(source_url, "orders")

    seed_orders(source_url, 7, start=2001)
    assert succeeded(run_pipeline_node(node, box)).rows_loaded == {"orders": 7}
    assert summary(warehouse_url, "raw.orders") == summary(source_url, "orders")


# -- pinned sessions ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["connectorx", "sqlalchemy"])
def test_load_sessions_are_pinned_to_pg_catalog_then_the_dataset_with_the_timeouts(
    box, source_url, warehouse_url, pg_pair, tmp_path, backend
):
    """What the load's own sessions ran with, recorded by the rows they wrote: the table exists
    before the load with columns whose defaults read the session's settings. connectorx rows
    reach PostgreSQL as parquet through ADBC (credentials' libpq options), sqlalchemy rows as
    INSERTs through dlt's sql client (the pinned client)."""
    seed_orders(source_url, 5)
    sql(
        warehouse_url,
        "CREATE SCHEMA raw; CREATE TABLE raw.orders (id bigint,"
        " seen_path text DEFAULT current_setting('search_path'),"
        " seen_statement text DEFAULT current_setting('statement_timeout'),"
        " seen_lock text DEFAULT current_setting('lock_timeout'))",
    )
    spec = {"source": "shop", "mode": "single_table", "table": "orders", "backend": backend}
    node = replace(
        node_for(spec, pg_pair, tmp_path),
        session=SessionLimits(statement_timeout=42, lock_timeout=7),
    )
    succeeded(run_pipeline_node(node, box))
    seen = sql(
        warehouse_url, "SELECT DISTINCT seen_path, seen_statement, seen_lock FROM raw.orders"
    )
    assert [tuple(r) for r in seen] == [("pg_catalog,raw", "42s", "7s")]


def test_a_postgres_sources_sessions_are_pinned_to_its_schema(box, source_url, tmp_path):
    stored = pg_connection(box, "shop", source_url, "source")
    shop = resolve_connection(stored, box, {})
    spec = PipelineSpec.model_validate(
        {
            "source": "shop",
            "dataset": "raw",
            "mode": "single_table",
            "table": "orders",
            "source_schema": "sales",
        }
    )
    config = sql_source_config(spec, shop, tmp_path, TENANT, SessionLimits(lock_timeout=0))
    engine = create_engine(config.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            got = conn.execute(
                text("SELECT current_setting('search_path'), current_setting('lock_timeout')")
            ).one()
    finally:
        engine.dispose()
    assert tuple(got) == ("pg_catalog,sales", "0")
