"""`fabric validate` as a user runs it: a real process, both output formats, the exit code.

The broken repositories are in tests/corpus (tests/config/test_corpus.py runs the CLI on each);
this file covers the valid path and the shape of the output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FILES = {
    "fabric.yaml": """\
        format_version: 1
        name: demo
        defaults: {timezone: Europe/Berlin}
        """,
    "tenants/acme/tenant.yaml": """\
        tenant:
          display_name: Acme Retail
          warehouse: dwh
          members:
            - {who: ana@acme.example, role: owner}
        connections:
          shop_db:
            type: postgres
            direction: source
            host: shop.acme.internal
            database: shop
            username: etl_reader
            password: ${env:ACME_SHOP_PASSWORD}
          dwh:
            type: postgres
            direction: destination
            host: dwh.internal
            database: analytics
            username: acme_loader
            password: ${secret:dwh_password}
        """,
    "tenants/acme/pipelines.yaml": """\
        pipelines:
          orders:
            source: shop_db
            dataset: acme_raw
            mode: single_table
            table: orders
            incremental: {cursor: updated_at, initial_value: 2024-01-01}
            write_disposition: merge
            primary_key: [id]
            tags: [nightly]
        transformations:
          customer_totals:
            sql_file: models/customer_totals.sql
            schema: acme_marts
            materialized: table
            tests:
              customer_id: [not_null, unique]
        schedules:
          nightly:
            cron: "0 2 * * *"
            targets: ["tag:nightly+"]
        """,
    "tenants/acme/models/customer_totals.sql": """\
        select customer_id, count(*) as orders
        from {{ source('orders', 'orders') }}
        group by 1
        """,
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def fabric(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def test_a_valid_repository_exits_0_with_a_summary(repo: Path) -> None:
    run = fabric("validate", str(repo))

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == ""
    lines = run.stdout.splitlines()
    assert lines == [
        "Loaded 1 tenant (acme): 2 connections, 1 pipeline, 1 transformation, "
        "1 schedule, 1 dependency.",
        f"{repo}: valid (3 files).",
    ]


def test_a_valid_repository_as_json(repo: Path) -> None:
    run = fabric("validate", str(repo), "--format", "json")

    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(run.stdout)
    assert doc == {
        "format_version": 1,
        "valid": True,
        "errors": 0,
        "warnings": 0,
        "summary": {
            "tenants": ["acme"],
            "files": 3,  # YAML files: fabric.yaml and two tenant files
            "connections": 2,
            "pipelines": 1,
            "transformations": 1,
            "schedules": 1,
            "dependencies": 1,
        },
        "diagnostics": [],
    }


def test_the_repository_defaults_to_the_current_folder(repo: Path) -> None:
    run = fabric("validate", cwd=repo)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.rstrip().endswith("valid (3 files).")


def test_an_invalid_repository_prints_every_problem_with_its_location(repo: Path) -> None:
    pipelines = repo / "tenants" / "acme" / "pipelines.yaml"
    pipelines.write_text(
        pipelines.read_text().replace("dataset:", "datset:").replace("0 2 * * *", "0 2 * *")
    )

    text = fabric("validate", str(repo))
    doc = json.loads(fabric("validate", str(repo), "--format", "json").stdout)

    assert text.returncode == 1
    assert "Traceback" not in text.stdout + text.stderr
    assert (
        "tenants/acme/pipelines.yaml:4:5: error: Unknown field\n"
        "  acme.pipeline.orders has no field 'datset'.\n"
        "  hint: Did you mean 'dataset'?\n"
    ) in text.stdout
    assert "tenants/acme/pipelines.yaml:20:11: error: Invalid cron expression" in text.stdout
    assert text.stdout.rstrip().endswith(f"{repo}: 2 error(s).")
    assert doc["valid"] is False
    assert doc["errors"] == 2
    assert [(d["code"], d["file"], d["line"], d["column"]) for d in doc["diagnostics"]] == [
        ("unknown-field", "tenants/acme/pipelines.yaml", 4, 5),
        ("bad-cron", "tenants/acme/pipelines.yaml", 20, 11),
    ]
    assert doc["diagnostics"][0]["address"] == "acme.pipeline.orders"
    assert doc["diagnostics"][0]["hint"] == "Did you mean 'dataset'?"


def test_a_folder_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    run = fabric("validate", str(tmp_path / "nope"))
    assert run.returncode == 2
    assert "does not exist" in run.stderr
    assert "Traceback" not in run.stderr


def test_an_invalid_repository_as_github_annotations_and_sarif(repo: Path) -> None:
    pipelines = repo / "tenants" / "acme" / "pipelines.yaml"
    pipelines.write_text(pipelines.read_text().replace("dataset:", "datset:"))

    github = fabric("validate", str(repo), "--format", "github")
    sarif = fabric("validate", str(repo), "--format", "sarif")

    assert github.returncode == sarif.returncode == 1
    assert github.stdout.splitlines() == [
        "::error file=tenants/acme/pipelines.yaml,line=4,col=5,title=Unknown field::"
        "acme.pipeline.orders has no field 'datset'.%0Ahint: Did you mean 'dataset'?",
        f"{repo}: 1 error(s) (3 files).",
    ]
    doc = json.loads(sarif.stdout)
    assert doc["version"] == "2.1.0"
    (result,) = doc["runs"][0]["results"]
    assert result["ruleId"] == "unknown-field"
    region = result["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"]) == (4, 5)


def test_a_valid_repository_as_github_annotations_and_sarif(repo: Path) -> None:
    github = fabric("validate", str(repo), "--format", "github")
    sarif = fabric("validate", str(repo), "--format", "sarif")

    assert github.returncode == sarif.returncode == 0
    assert github.stdout.splitlines() == [f"{repo}: valid (3 files)."]
    assert json.loads(sarif.stdout)["runs"][0]["results"] == []
