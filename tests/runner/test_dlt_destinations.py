"""Pipelines into filesystem destinations (real dlt loads into a temporary repository's data
area), what a hostile tenant cannot write, cloud URLs as configuration only, and a PostgreSQL
warehouse without a password (real dlt and dbt on a trust-authentication server)."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cryptography.fernet import Fernet
from scripted_nodes import with_resolved
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from fabric.addresses import Address, Kind
from fabric.config.specs import PipelineSpec
from fabric.domain.runs import (
    NodeResult,
    NodeSpec,
    NodeStatus,
    ResolvedConnection,
    StoredConnection,
)
from fabric.runner import dlt_node
from fabric.runner.dbt_node import run_transformation_nodes
from fabric.runner.dlt_destinations import DestinationError, build_destination
from fabric.state.engine import create_database, drop_database
from fabric.state.secrets import SecretBox

TENANT = "acme"
SOURCE = "data/acme/shop.sqlite"  # a tenant reads local files only under data/<slug>/
"""The SQLite source, relative to the repository root."""


def run_pipeline_node(node: NodeSpec, box: SecretBox | None) -> NodeResult:
    """Resolve the node's connections as the runner does, then run it."""
    return dlt_node.run_pipeline_node(with_resolved(node, box))


def stored(name: str, spec: dict[str, Any], tenant: str = TENANT) -> StoredConnection:
    return StoredConnection(address=Address(tenant, Kind.CONNECTION, name), spec=spec, secrets={})


def sqlite_source(repo: Path, rows: int, *, start: int = 1) -> StoredConnection:
    (repo / SOURCE).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(repo / SOURCE) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, status TEXT, amount REAL)"
        )
        db.executemany(
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?)",
            [(i, "paid" if i % 2 else "new", i * 1.5) for i in range(start, start + rows)],
        )
    return stored("shop", {"type": "sqlite", "direction": "source", "path": SOURCE})


def lake(bucket_url: str, fmt: str = "parquet", tenant: str = TENANT) -> StoredConnection:
    spec = {"type": "filesystem", "direction": "destination", "bucket_url": bucket_url}
    return stored("lake", {**spec, "format": fmt}, tenant)


def node(
    repo: Path,
    destination: StoredConnection,
    *,
    tenant: str = TENANT,
    disposition: str = "append",
    workdir: Path | None = None,
) -> NodeSpec:
    spec = {
        "source": "shop",
        "destination": destination.address.name,
        "dataset": "raw",
        "mode": "single_table",
        "table": "orders",
        "write_disposition": disposition,
    }
    return NodeSpec(
        address=Address(tenant, Kind.PIPELINE, "orders"),
        kind="pipeline",
        spec=PipelineSpec.model_validate(spec).model_dump(mode="json", by_alias=True),
        connections={
            "shop": stored("shop", {"type": "sqlite", "direction": "source", "path": SOURCE}),
            destination.address.name: destination,
        },
        workdir=str(workdir or repo / ".fabric" / "work" / tenant),
        repo_root=str(repo),
        run_id=1,
    )


def succeeded(result: NodeResult) -> NodeResult:
    assert result.status is NodeStatus.SUCCESS, f"{result.error}\n{result.log_tail}"
    return result


def failed(result: NodeResult) -> str:
    assert result.status is NodeStatus.FAILED, result.log_tail
    assert result.error and "Traceback" not in result.error
    return result.error


def table_rows(folder: Path, fmt: str) -> list[dict[str, Any]]:
    """Every row of every data file of a table folder (dlt writes one or more per load)."""
    rows: list[dict[str, Any]] = []
    files = sorted(p for p in folder.iterdir() if p.is_file())
    assert files, f"no files in {folder}"
    for path in files:
        assert path.name.endswith(f".{fmt}"), path.name  # uncompressed, in the asked format
        match fmt:
            case "parquet":
                rows += pq.read_table(path).to_pylist()
            case "jsonl":
                rows += [json.loads(line) for line in path.read_text().splitlines() if line]
            case "csv":
                rows += list(csv.DictReader(io.StringIO(path.read_text())))
    return rows


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


# -- filesystem destinations ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_rows_land_as_files_in_the_format_under_the_repository_and_are_counted(repo, fmt):
    sqlite_source(repo, 7)

    result = succeeded(run_pipeline_node(node(repo, lake("data/acme/lake", fmt)), None))

    assert result.rows_loaded == {"orders": 7}
    table = repo / "data" / "acme" / "lake" / "raw" / "orders"
    rows = table_rows(table, fmt)
    assert sorted(int(r["id"]) for r in rows) == list(range(1, 8))
    assert {r["status"] for r in rows} == {"new", "paid"}
    assert f"filesystem at {(repo / 'data' / 'acme' / 'lake').as_uri()}" in result.log_tail


def test_append_adds_files_and_replace_rewrites_the_table(repo):
    sqlite_source(repo, 3)
    appended = node(repo, lake("data/acme/lake"), workdir=repo / "w1")
    replaced = node(repo, lake("./data/acme/other/"), disposition="replace", workdir=repo / "w2")
    for n in (appended, replaced):
        succeeded(run_pipeline_node(n, None))
    sqlite_source(repo, 2, start=4)

    assert succeeded(run_pipeline_node(appended, None)).rows_loaded == {"orders": 5}
    assert succeeded(run_pipeline_node(replaced, None)).rows_loaded == {"orders": 5}

    appended_rows = table_rows(repo / "data/acme/lake/raw/orders", "parquet")
    replaced_rows = table_rows(repo / "data/acme/other/raw/orders", "parquet")
    assert sorted(r["id"] for r in appended_rows) == [1, 1, 2, 2, 3, 3, 4, 5]
    assert sorted(r["id"] for r in replaced_rows) == [1, 2, 3, 4, 5]


def test_an_absolute_path_or_file_url_inside_the_tenants_folder_is_accepted(repo):
    sqlite_source(repo, 2)
    folder = (repo / "data" / "acme" / "abs").resolve()

    for url in (str(folder), folder.as_uri()):
        result = run_pipeline_node(node(repo, lake(url), workdir=repo / url[-3:]), None)
        assert succeeded(result).rows_loaded == {"orders": 2}
    assert len(table_rows(folder / "raw" / "orders", "parquet")) == 4


# -- a hostile tenant -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket_url", "why"),
    [
        ("file:///etc", "outside the repository"),
        ("/etc/fabric-evil", "outside the repository"),
        ("data/acme/../globex/lake", "contains `..`"),
        ("data/globex/lake", "outside tenant acme's folder data/acme/"),
        ("data/acme_eu/lake", "outside tenant acme's folder data/acme/"),
        ("data", "outside tenant acme's folder"),
        ("file://etc/passwd", "names host 'etc'"),
        ("~/lake", "`~` is not expanded"),
        ("memory://lake", "scheme memory://"),
        ("simplecache::file:///tmp/x", "chained fsspec URLs"),
    ],
)
def test_a_tenant_cannot_write_outside_its_own_data_folder(repo, bucket_url, why):
    sqlite_source(repo, 2)
    (repo / "data" / "globex" / "lake").mkdir(parents=True)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*") if ".fabric" not in p.parts)

    error = failed(run_pipeline_node(node(repo, lake(bucket_url)), None))

    assert why in error and "lake" in error  # names the connection and what is wrong
    after = sorted(p.relative_to(repo) for p in repo.rglob("*") if ".fabric" not in p.parts)
    assert after == before


def test_a_symlink_out_of_the_tenants_folder_is_refused(repo, tmp_path):
    sqlite_source(repo, 2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "data" / "acme").mkdir(parents=True, exist_ok=True)
    (repo / "data" / "globex").mkdir()
    (repo / "data" / "acme" / "lake").symlink_to(outside, target_is_directory=True)
    (repo / "data" / "acme" / "peek").symlink_to(repo / "data" / "globex")
    (repo / "data" / "acme" / "ds").mkdir()
    (repo / "data" / "acme" / "ds" / "raw").symlink_to(outside, target_is_directory=True)

    for url in ("data/acme/lake", "data/acme/peek/lake", "data/acme/ds"):
        error = failed(run_pipeline_node(node(repo, lake(url), workdir=repo / url[-4:]), None))
        assert "symlink escape" in error

    assert not any(outside.iterdir())
    assert not any((repo / "data" / "globex").iterdir())


def test_a_tenant_folder_that_is_a_symlink_to_another_tenants_folder_is_refused(repo):
    sqlite_source(repo, 2)
    (repo / "data" / "globex").mkdir(parents=True)
    (repo / "data" / "acme").rename(repo / "data" / "acme_real")
    (repo / "data" / "acme").symlink_to(repo / "data" / "globex", target_is_directory=True)

    error = failed(run_pipeline_node(node(repo, lake("data/acme/lake")), None))

    assert "is a symlink" in error and "data/acme" in error  # source or destination: refused
    assert not any((repo / "data" / "globex").iterdir())


def test_a_relative_path_is_relative_to_the_repository_not_the_working_directory(
    repo, tmp_path, monkeypatch
):
    sqlite_source(repo, 2)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    succeeded(run_pipeline_node(node(repo, lake("data/acme/lake")), None))

    assert (repo / "data/acme/lake/raw/orders").is_dir()
    assert not any(elsewhere.iterdir())


# -- cloud URLs: configuration only ---------------------------------------------------------------


def test_an_s3_destination_is_configured_without_contacting_anything(repo):
    # NOTE: there is no cloud here: this checks what dlt is given, and that building it (the
    # factory included) neither connects nor writes anything.
    creds = {"aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "s3cr3t-value"}
    conn = ResolvedConnection(
        "lake",
        "filesystem",
        {
            "type": "filesystem",
            "bucket_url": "s3://acme-lake/archive",
            "format": "jsonl",
            "credentials": creds,
        },
        secret_values=("s3cr3t-value",),
    )

    build = build_destination(conn, tenant=TENANT, repo_root=repo, dataset="raw")
    destination = build.factory()

    assert build.kind == "filesystem" and build.loader_file_format == "jsonl"
    assert build.config == {"bucket_url": "s3://acme-lake/archive", "credentials": creds}
    assert build.sql_url is None  # no warehouse lock for files
    assert destination.destination_type.endswith("filesystem")
    assert destination.config_params["bucket_url"] == "s3://acme-lake/archive"
    assert "s3cr3t-value" not in repr(build) and "s3cr3t-value" not in build.location
    assert not any(repo.iterdir())


@pytest.mark.parametrize("url", ["gs://acme-lake/x", "az://acme-lake/x"])
def test_a_cloud_url_whose_fsspec_package_is_missing_names_the_package(repo, url):
    import importlib.util

    package = {"gs": "gcsfs", "az": "adlfs"}[url[:2]]
    conn = ResolvedConnection("lake", "filesystem", {"bucket_url": url, "format": "parquet"})
    if importlib.util.find_spec(package) is not None:
        assert build_destination(conn, tenant=TENANT, repo_root=repo, dataset="raw").config
        return
    with pytest.raises(DestinationError, match=f"needs the {package} package"):
        build_destination(conn, tenant=TENANT, repo_root=repo, dataset="raw")


# -- a PostgreSQL warehouse without a password ----------------------------------------------------

TRUST_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
"""The system PostgreSQL with trust authentication (laptops, CI)."""


@pytest.fixture
def trust_warehouse() -> Iterator[str]:
    """A database on a server that lets `postgres` in without a password; dropped after."""
    engine = create_engine(TRUST_URL, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"no PostgreSQL with trust authentication at {TRUST_URL}: {exc}")
    finally:
        engine.dispose()
    name = f"fabric_test_trust_{os.urandom(4).hex()}"
    url = create_database(TRUST_URL, name)
    yield url
    drop_database(TRUST_URL, name)


def test_a_warehouse_without_a_password_loads_with_dlt_and_builds_a_dbt_model(
    repo, trust_warehouse
):
    parsed = make_url(trust_warehouse)
    assert parsed.password is None
    warehouse = stored(
        "dwh",
        {
            "type": "postgres",
            "direction": "destination",
            "host": parsed.host,
            "port": parsed.port,
            "database": parsed.database,
            "username": parsed.username,
        },
    )
    sqlite_source(repo, 4)
    box = SecretBox([Fernet.generate_key()])

    loaded = succeeded(run_pipeline_node(node(repo, warehouse), box))

    assert loaded.rows_loaded == {"orders": 4}
    model = {
        "warehouse": "dwh",
        "sql": "select status, count(*) as n from {{ source('orders', 'orders') }} group by 1",
        "schema": "acme_marts",
        "materialized": "table",
        "tests": {"status": ["unique"]},
    }
    project = {
        "tenant": TENANT,
        "transformations": {"status_counts": model},
        "pipelines": {"orders": {"mode": "single_table", "table": "orders", "dataset": "raw"}},
        "connections": {"dwh": warehouse},
    }
    spec = NodeSpec(
        address=Address(TENANT, Kind.TRANSFORMATION, "status_counts"),
        kind="transformation",
        spec=model,
        connections={"dwh": warehouse},
        workdir=str(repo / ".fabric" / "work" / TENANT),
        project=project,
    )
    (built,) = run_transformation_nodes([with_resolved(spec, box)])
    succeeded(built)
    engine = create_engine(trust_warehouse, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            counts = conn.execute(text("SELECT status, n FROM acme_marts.status_counts"))
            assert dict(counts.all()) == {"new": 2, "paid": 2}
    finally:
        engine.dispose()
