"""Issue 12's acceptance test: the same dbt project built by plain dbt and, after
`fabric import dbt` -> apply -> deps -> run, by fabric gives the same rows in every table.

The shop project (tests/dbt_import/projects/shop) has models in two folders with folder-level
configs, config blocks, a var, a macro, a local package's macro, a seed with column types, a
snapshot, a singular and a custom generic test, sources with freshness and descriptions. Its
raw tables live in a real PostgreSQL database: plain dbt (in-process dbtRunner: `deps`, then
`build`) reads them there; fabric's imported pipeline loads them from there into the tenant's
warehouse (another database), and its models run on that copy. Every final table (models,
seed, snapshot) is then compared by a checksum of its rows, without dlt's `_dlt_*` columns
(and, for the snapshot, without dbt's `dbt_*` bookkeeping columns, which hold load times).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url

from fabric import api
from fabric.dbt_import.report import report_text
from fabric.render.diagnostics import render_diagnostics_text
from fabric.state.engine import make_engine

SHOP = Path(__file__).parent / "projects" / "shop"
RAW = """
create schema raw;
create table raw.customers (id int primary key, name text, tier text, updated_at timestamptz);
create table raw.orders (
    id int primary key, customer_id int, status text, amount_cents int, ordered_on date,
    updated_at timestamptz
);
create table raw.payments (
    id int primary key, order_id int, method text, amount_cents int, updated_at timestamptz
);
insert into raw.customers values
    (1, 'Ana', ' Gold ', '2024-01-01 10:00+00'),
    (2, 'Bo', 'silver', '2024-01-02 11:00+00'),
    (3, 'Cy', 'BRONZE', '2024-01-03 12:00+00');
insert into raw.orders values
    (1, 1, 'new', 1000, '2024-01-02', '2024-01-02 09:00+00'),
    (2, 1, 'PAID', 2500, '2024-01-03', '2024-01-03 09:00+00'),
    (3, 2, 'shipped ', 4000, '2024-01-04', '2024-01-04 09:00+00'),
    (4, 3, 'cancelled', 0, '2024-01-05', '2024-01-05 09:00+00'),
    (5, 3, 'unknown', 700, '2024-01-06', '2024-01-06 09:00+00');
insert into raw.payments values
    (1, 2, 'card', 2500, '2024-01-03 10:00+00'), (2, 3, 'card', 1000, '2024-01-04 10:00+00'),
    (3, 3, 'cash', 3000, '2024-01-04 11:00+00'), (4, 5, 'card', 700, '2024-01-06 10:00+00');
"""
FINAL = {
    "stg_customers": "model",
    "stg_orders": "model",
    "stg_payments": "model",
    "orders_enriched": "model",
    "customer_totals": "model",
    "status_labels": "seed",
    "customers_snapshot": "snapshot",
}


def checksum(engine: Engine, schema: str, table: str, *, snapshot: bool) -> tuple:
    """(columns, rows, md5 of the sorted rows) of a relation, without bookkeeping columns."""
    with engine.connect() as conn:
        columns = [
            c
            for (c,) in conn.execute(
                text(
                    "select column_name from information_schema.columns "
                    "where table_schema = :s and table_name = :t order by column_name"
                ),
                {"s": schema, "t": table},
            )
            if not c.startswith("_dlt_") and not (snapshot and c.startswith("dbt_"))
        ]
        assert columns, f"{schema}.{table} does not exist"
        listed = ", ".join(f'"{c}"' for c in columns)
        rows, digest = conn.execute(
            text(
                f"select count(*), md5(coalesce(string_agg(r, E'\\n' order by r), '')) "
                f'from (select row({listed})::text as r from "{schema}"."{table}") as t'
            )
        ).one()
    return tuple(columns), rows, digest


def dbt(*args: str, project: Path) -> None:
    """Plain dbt, in this process, as a dbt user runs it."""
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(
        [*args, "--project-dir", str(project), "--profiles-dir", str(project)]
    )
    assert result.success, f"dbt {' '.join(args)} failed: {result.exception}"


@pytest.fixture(scope="module")
def databases(pg_server_url: str):
    """(raw database URL, fabric's warehouse URL, control plane URL), dropped afterwards."""
    from fabric.state.engine import create_database, drop_database

    suffix = secrets.token_hex(4)
    names = [f"fabric_test_import_{k}_{suffix}" for k in ("raw", "dwh", "cp")]
    urls = [create_database(pg_server_url, n) for n in names]
    yield urls
    for name in names:
        drop_database(pg_server_url, name)


@pytest.fixture(scope="module")
def built_by_dbt(databases, tmp_path_factory) -> dict[str, tuple]:
    """The shop project built by plain dbt against the raw database: name -> checksum."""
    raw_url = make_url(databases[0])
    engine = make_engine(raw_url)
    with engine.begin() as conn:
        conn.execute(text(RAW))
    project = tmp_path_factory.mktemp("dbt") / "shop"
    shutil.copytree(SHOP, project)
    (project / "profiles.yml").write_text(
        yaml.safe_dump(
            {
                "shop": {
                    "target": "ref",
                    "outputs": {
                        "ref": {
                            "type": "postgres",
                            "host": raw_url.host,
                            "port": raw_url.port,
                            "user": raw_url.username,
                            "password": raw_url.password or "",
                            "dbname": raw_url.database,
                            "schema": "dbt_shop",
                            "threads": 1,
                        }
                    },
                }
            }
        )
    )
    dbt("deps", project=project)
    dbt("build", project=project)
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    sums = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] in ("model", "seed", "snapshot"):
            assert FINAL[node["name"]] == node["resource_type"]
            sums[node["name"]] = checksum(
                engine,
                node["schema"],
                node["alias"],
                snapshot=node["resource_type"] == "snapshot",
            )
    engine.dispose()
    assert set(sums) == set(FINAL)
    return sums


def _env(url: URL, prefix: str) -> dict[str, str]:
    return {
        f"{prefix}_HOST": str(url.host),
        f"{prefix}_PORT": str(url.port),
        f"{prefix}_DATABASE": str(url.database),
        f"{prefix}_USER": str(url.username),
        f"{prefix}_PASSWORD": url.password or "",
    }


def test_plain_dbt_builds_the_shop_project(built_by_dbt):
    assert set(built_by_dbt) == set(FINAL)
    rows = {name: count for name, (_, count, _) in built_by_dbt.items()}
    assert rows == {
        "stg_customers": 3,
        "stg_orders": 5,
        "stg_payments": 4,
        "orders_enriched": 5,
        "customer_totals": 3,
        "status_labels": 4,
        "customers_snapshot": 3,
    }


def test_plain_dbt_and_imported_fabric_build_the_same_rows(databases, built_by_dbt, tmp_path: Path):
    raw, dwh, control_plane = (make_url(u) for u in databases)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "fabric.yaml").write_text("format_version: 1\nownership: {enforce: false}\n")
    result = api.import_dbt(SHOP, "shop", into=root)
    assert [str(u) for u in result.translation.untranslated] == []
    assert "  fabric deps --tenant shop" in report_text(
        result.translation, result.written, dry_run=False
    )
    validated = api.validate(root)
    assert validated.ok, render_diagnostics_text(validated.load.diagnostics, color=False)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "SHOP_"))}
    env.update(
        FABRIC_DATABASE_URL=control_plane.render_as_string(hide_password=False),
        FABRIC_SECRET_KEYS=Fernet.generate_key().decode(),
        FABRIC_HOME=str(tmp_path / "home"),
        **_env(raw, "SHOP_SOURCE"),
        **_env(dwh, "SHOP_WAREHOUSE"),
    )

    def fabric(*args: str, code: int = 0) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "fabric", *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        shown = f"fabric {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        assert done.returncode == code, shown
        return done.stdout

    fabric("apply", "--auto-approve")
    fabric("deps", "--tenant", "shop")
    fabric("run", "--tenant", "shop")
    # the sources' freshness came along: the raw rows were last updated in 2024
    stale = fabric("freshness", "--tenant", "shop", code=1)
    for table in ("customers", "orders", "payments"):
        assert f"raw_shop.{table}" in stale, stale
    assert "Freshness of shop: error" in stale, stale
    # the descriptions came along into dbt's docs, and the source is the pipeline
    fabric("docs", "--tenant", "shop", "--out", str(tmp_path / "docs"))
    site = (tmp_path / "docs" / "index.html").read_text()
    for wanted in ("Orders and payments per customer.", "Dollars paid in total.", "raw_shop"):
        assert wanted in site, wanted

    spec = yaml.safe_load((root / "tenants/shop/transformations.yaml").read_text())
    schemas = {
        **{n: s["schema"] for n, s in spec["transformations"].items()},
        **{n: s["schema"] for n, s in spec["seeds"].items()},
        **{n: s["schema"] for n, s in spec["snapshots"].items()},
    }
    engine = make_engine(dwh)
    try:
        built_by_fabric = {
            name: checksum(engine, schemas[name], name, snapshot=kind == "snapshot")
            for name, kind in FINAL.items()
        }
    finally:
        engine.dispose()
    assert built_by_fabric == built_by_dbt
