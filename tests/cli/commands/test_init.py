"""`fabric init` end to end (issue 11, "What it must show"): the new repository validates,
plans, applies and runs with no edits, as real `fabric` processes on a real control plane and
warehouse; `fabric tenant new` adds a tenant that validates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from fabric.state.engine import make_engine


def fabric(*args: str, env: dict[str, str], cwd: Path, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def env(tmp_path: Path, make_database) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
    }


def test_init_output_validates_applies_and_runs_with_no_edits(tmp_path, env, make_database):
    warehouse = make_database()
    done = fabric("init", "shop", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    repo = tmp_path / "shop"
    assert "fabric validate" in done.stdout

    done = fabric("validate", env=env, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 tenant (acme): 2 connections, 1 pipeline, 1 transformation, 1 schedule" in done.stdout

    # the secret before the tenant's first apply: one apply binds it
    url = warehouse.replace("postgresql+psycopg://", "postgresql://")
    done = fabric("secrets", "set", "acme", "WAREHOUSE_URL", env=env, cwd=repo, stdin=url)
    assert done.returncode == 0, done.stderr
    assert url not in done.stdout + done.stderr

    done = fabric("plan", "--detailed-exitcode", env=env, cwd=repo)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not set yet" not in done.stdout
    done = fabric("apply", "--auto-approve", env=env, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    done = fabric("plan", "--detailed-exitcode", env=env, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr

    done = fabric("run", "--tenant", "acme", "--workers", "1", env=env, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert url not in done.stdout + done.stderr
    wh = make_engine(warehouse)
    try:
        with wh.connect() as conn:
            rows = conn.execute(
                text("select status, orders from acme_marts.order_totals order by status")
            ).all()
    finally:
        wh.dispose()
    assert [tuple(r) for r in rows] == [("open", 1), ("paid", 3), ("refunded", 1)]


def test_init_refuses_to_overwrite_and_names_the_files(tmp_path, env):
    (tmp_path / "fabric.yaml").write_text("format_version: 1\n")
    done = fabric("init", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "already holds fabric.yaml; nothing was written" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fabric.yaml", "home"] or sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["fabric.yaml"]


def test_tenant_new_adds_a_tenant_that_validates(tmp_path, env):
    assert fabric("init", env=env, cwd=tmp_path).returncode == 0
    done = fabric("tenant", "new", "beta_co", env=env, cwd=tmp_path / "tenants")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "tenants" / "beta_co" / "tenant.yaml").is_file()
    done = fabric("validate", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert "2 tenants (acme, beta_co)" in done.stdout

    done = fabric("tenant", "new", "beta_co", env=env, cwd=tmp_path)
    assert done.returncode == 1 and "exists already" in done.stderr
    done = fabric("tenant", "new", "Beta-Co", env=env, cwd=tmp_path)
    assert done.returncode == 1 and "'beta_co'" in done.stderr and "Traceback" not in done.stderr
