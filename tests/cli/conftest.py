"""Fixtures for CLI tests: a small repository on disk and `fabric` run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

SMALL_REPO = {
    "fabric.yaml": "format_version: 1\nname: small\nownership: {enforce: false}\n",
    "tenants/acme/tenant.yaml": """\
        tenant: {display_name: Acme, warehouse: dwh}
        connections:
          dwh: {type: postgres, direction: destination, host: 127.0.0.1, port: 1, database: d}
          erp: {type: sqlite, direction: source, path: data/acme/missing.db}
        pipelines:
          orders: {source: erp, dataset: raw, mode: single_table, table: orders, tags: [nightly]}
        schedules:
          nightly: {cron: "0 2 * * *", timezone: Europe/Berlin, targets: ["tag:nightly"]}
        """,
}

Fabric = Callable[..., subprocess.CompletedProcess[str]]


def write_repo(root: Path, files: Mapping[str, str] = SMALL_REPO) -> Path:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    return root


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment: no FABRIC_* variable from the caller leaks into the command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env.update(extra)
    return env


def run_fabric(
    *args: str, cwd: Path, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "repo")
