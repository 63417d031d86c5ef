"""`fabric demo` end to end, twice, on a copy of example-repo and its own embedded PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fabric.demo.flow import EXAMPLE_REPO, run_demo


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "example-repo"
    shutil.copytree(
        EXAMPLE_REPO, copy, ignore=shutil.ignore_patterns(".fabric", "data", "__pycache__")
    )
    for name in ("FABRIC_DATABASE_URL", "FABRIC_SECRET_KEYS", "FABRIC_HOME"):
        monkeypatch.delenv(name, raising=False)
    yield copy
    from fabric.state.embedded import stop_server

    stop_server(copy / ".fabric")


def test_demo_runs_twice_second_apply_has_no_changes_and_loads_only_new_rows(repo):
    first: list[str] = []
    assert run_demo(first.append, repo=repo) == 0
    text1 = "\n".join(first)
    assert "Plan: 85 to add, 0 to change, 0 to destroy." in text1
    assert "acme: acme_marts.customer_totals" in text1
    assert "failed" not in text1.split("4. A few rows")[0].split("3. fabric run")[1]
    # globex's erp_archive writes parquet files into its own data folder, and says so.
    archive = next(line for line in first if "globex archive in" in line)
    assert "data/globex/lake/globex_archive/ (parquet): invoice_lines " in archive
    assert "; invoices " in archive and " 0 rows" not in archive
    assert (repo / "data" / "globex" / "lake" / "globex_archive" / "invoices").is_dir()
    statuses = {ln.split()[0]: ln.split()[1] for ln in text1.splitlines() if ".pipeline." in ln}
    assert statuses["globex.pipeline.erp_archive"] == "success"

    second: list[str] = []
    assert run_demo(second.append, repo=repo) == 0
    text2 = "\n".join(second)
    assert "No changes. The control plane matches the repository." in text2
    rows = {
        line.split()[0]: int(line.split()[3].replace(",", ""))
        for line in text2.splitlines()
        if line.strip().startswith("acme.pipeline.")
    }
    # Incremental merges load only what the demo added since the first run.
    assert 0 < rows["acme.pipeline.orders"] < 100
    assert 0 < rows["acme.pipeline.customers"] < 100
