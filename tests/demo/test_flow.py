"""`fabric demo` end to end, twice, on a copy of example-repo and its own embedded PostgreSQL."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
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
    check_first_minute(text1, repo)
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


def check_first_minute(text: str, repo: Path) -> None:
    """What a newcomer needs, not a wall of text: a per-tenant plan summary (the full plan is
    one flag away), the run table, the final rows, and next commands that really work."""
    lines = text.splitlines()
    assert len(lines) < 120, f"{len(lines)} lines"
    assert not any(line.strip().startswith(("+ ", "# ")) for line in lines), "the full plan"
    plan = text.split("2. fabric plan")[1].split("3. fabric run")[0]
    header = next(line for line in plan.splitlines() if "TENANT" in line).split()
    assert header[:3] == ["TENANT", "ACTION", "TENANTS"] and header[-1] == "TOTAL"
    totals = {}
    for line in plan.splitlines():
        cells = line.split()
        if cells and cells[0] in ("acme", "globex", "initech"):
            assert cells[1] == "create"
            totals[cells[0]] = int(cells[-1])
    assert sorted(totals) == ["acme", "globex", "initech"] and sum(totals.values()) == 85
    assert "every change: fabric demo --full-plan" in plan
    run = text.split("3. fabric run")[1].split("4. A few rows")[0]
    assert "NODE" in run and "acme.pipeline.orders" in run
    assert "acme: acme_marts.customer_totals" in text

    commands = [
        line.split("#")[0].strip()
        for line in text.split("Try next:")[1].splitlines()
        if line.strip().startswith("uv run fabric")
    ]
    assert len(commands) >= 6
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    for command in commands:
        args = shlex.split(command)[3:]
        if args in (["demo"], ["server", "stop", "--repo", str(repo)]):
            continue  # the demo itself runs twice here; stopping comes last (the fixture)
        done = subprocess.run(
            [sys.executable, "-m", "fabric", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
