"""`fabric export` writes back exactly what example-repo declares.

example-repo is applied to a fresh control plane with the CLI, exported with the CLI, and the
export is compared with example-repo file by file. The only differences allowed are formatting,
named here:
  - comments (the control plane keeps none), blank lines, indentation, key order, quoting, and
    flow (`{a: 1}`, `[a]`) versus block style: so YAML files are compared as data, parsed the
    way fabric parses them (`2023-01-01` and `'2023-01-01'` are the same string to fabric);
  - a date written bare (`2023-01-01`) comes back quoted: fabric reads both as the same text
    (its specs take dates as strings), so dates are compared as ISO text;
  - the `$schema` comment's target: the export writes its own schemas/ folder next to the
    files it writes (example-repo points at the one in fabric's source tree);
  - files the export adds: schemas/*.json; files it leaves out, which are no part of the
    control plane's state: README.md and the CI templates (`fabric init` writes those).
SQL files must match byte for byte, and SQL inside YAML must be written as `|` literal blocks.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from fabric.config.yaml_source import parse_yaml

EXAMPLE = Path(__file__).parents[2] / "example-repo"
ADMIN = "platform-team@fabric.example"
NOT_STATE = {"README.md", ".github/workflows/fabric.yml", ".gitlab-ci.yml"}
"""example-repo's project admin (fabric.yaml `admins:`): the apply is checked against it."""


def fabric(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def exported(tmp_path: Path, make_database) -> Path:
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "DEMO_PG_PORT": "5432",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }
    source = tmp_path / "example-repo"
    shutil.copytree(EXAMPLE, source)
    fabric(["apply", str(source), "--auto-approve", "--author", ADMIN], env)
    out = tmp_path / "exported"
    fabric(["export", "--repo", str(source), "--out", str(out)], env)
    return out


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _data(path: Path) -> object:
    parsed = parse_yaml(path.read_text(), path.name)
    assert not parsed.diagnostics, parsed.diagnostics
    return _iso(parsed.data)


def _iso(value: object) -> object:
    """Dates as the ISO text fabric reads them as (the one formatting difference of values)."""
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso(v) for v in value]
    return value.isoformat() if isinstance(value, dt.date) else value


def test_fabric_yaml_round_trips_every_field(exported: Path) -> None:
    """name, description, defaults and apply were dropped before; defaults written out stay."""
    assert _data(exported / "fabric.yaml") == _data(EXAMPLE / "fabric.yaml")


def test_sql_files_round_trip_byte_for_byte(exported: Path) -> None:
    sql = sorted(p.relative_to(EXAMPLE) for p in EXAMPLE.rglob("*.sql"))
    assert sql
    for rel in sql:
        assert (exported / rel).read_text() == (EXAMPLE / rel).read_text(), rel


def test_export_of_example_repo_is_example_repo(exported: Path) -> None:
    """Fields written with their default value (materialized: view, role: viewer), with the
    value resolution fills in (timezone: UTC) and long forms of shorthands (accepted_values:
    {values: [...]}) come back as written: apply stores each resource's spelling."""
    expected = {f for f in _files(EXAMPLE) if f not in NOT_STATE}
    written = {f for f in _files(exported) if not f.startswith("schemas/")}
    assert written == expected

    for rel in sorted(expected):
        if rel.endswith(".sql"):
            assert (exported / rel).read_text() == (EXAMPLE / rel).read_text(), rel
        else:
            assert _data(exported / rel) == _data(EXAMPLE / rel), rel


def test_sql_in_yaml_keeps_block_style(exported: Path) -> None:
    for path in exported.rglob("transformations.yaml"):
        data = yaml.safe_load(path.read_text())
        for name, spec in data["transformations"].items():
            sql = spec.get("sql")
            if sql and "\n" in sql:
                assert "sql: |" in path.read_text(), (path, name)


def test_a_stored_spelling_is_used_only_while_it_means_the_stored_spec() -> None:
    """A spelling edited in the database (or stale) never changes what export declares."""
    from fabric.addresses import Address
    from fabric.config.export import export_files

    tenant = Address.of_tenant("acme")
    pipe = Address.parse("acme.pipeline.orders")
    spec = {
        "source": "shop",
        "destination": "dwh",
        "dataset": "acme_raw",
        "mode": "single_table",
        "table": "orders",
    }
    records = {tenant: ({"display_name": "Acme", "warehouse": "dwh"}, False), pipe: (spec, False)}
    spelled = {k: v for k, v in spec.items() if k != "destination"} | {
        "write_disposition": "append"
    }
    files = export_files(records, written={pipe: spelled})
    assert yaml.safe_load(files["tenants/acme/pipelines.yaml"])["pipelines"]["orders"] == spelled
    lying = {**spelled, "dataset": "globex_raw", "sql_file": "../../../etc/passwd"}
    files = export_files(records, written={pipe: lying})
    exported = yaml.safe_load(files["tenants/acme/pipelines.yaml"])["pipelines"]["orders"]
    assert exported["dataset"] == "acme_raw" and "write_disposition" not in exported


def test_dbt_files_are_written_back_only_inside_their_tenant() -> None:
    from fabric.addresses import Address
    from fabric.config.export import export_files

    macro = {"file": "tenants/acme/macros/money.sql", "sql": "{% macro m() %}1{% endmacro %}"}
    seed = {
        "file": "tenants/acme/seeds/codes.csv",
        "csv": "code\nde\n",
        "schema": "acme_ref",
        "warehouse": "dwh",
        "tests_severity": "error",
    }
    records = {
        Address.parse("acme"): ({"display_name": "Acme"}, False),
        Address.parse("acme.macro.money"): (macro, False),
        Address.parse("acme.macro.evil"): ({**macro, "file": "tenants/globex/macros/x.sql"}, False),
        Address.parse("acme.macro.up"): ({**macro, "file": "tenants/acme/../../x.sql"}, False),
        Address.parse("acme.seed.codes"): (seed, False),
    }
    files = export_files(records)
    assert files["tenants/acme/macros/money.sql"] == macro["sql"]
    assert files["tenants/acme/seeds/codes.csv"] == "code\nde\n"
    assert not any("globex" in path or ".." in path for path in files)
    seeds = yaml.safe_load(files["tenants/acme/seeds.yaml"].split("\n", 1)[1])
    assert seeds == {"seeds": {"codes": {"schema": "acme_ref", "tests_severity": "error"}}}
