"""Set-up the queue benches share: a repository of no-op pipelines applied to a fresh
control plane, and `fabric worker` processes whose nodes are no-ops (bench/noop_worker.py).

    with applied_noop_repo(server_url(), [("n0", None), ("n1", "n0")]) as (root, env, engine):
        with noop_workers(root, env, concurrency=4):
            api.run(root, tenants=["bench"], environ=env, engine=engine, executor="queue",
                    wait=True)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from fabric import api
from fabric.apply import ApplyOptions
from fabric.state.engine import create_database, drop_database, make_engine

BENCH = Path(__file__).resolve().parent
TENANT = "bench"


def tenant_yaml(pipelines: Sequence[tuple[str, str | None]], schedules: str = "") -> str:
    """One tenant of no-op pipelines: (name, upstream name or None); `schedules`: YAML lines
    of its `schedules:` block."""
    lines = [
        "tenant: {display_name: Bench, warehouse: dwh}",
        "connections:",
        "  dwh: {type: postgres, direction: destination, host: h, database: d}",
        "  src: {type: postgres, direction: source, host: h, database: s}",
        "pipelines:",
    ]
    for name, up in pipelines:
        dep = f", depends_on: [{up}]" if up else ""
        lines.append(f"  {name}: {{source: src, dataset: raw, mode: single_table, table: t{dep}}}")
    if schedules:
        lines += ["schedules:", schedules.rstrip("\n")]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def applied_noop_repo(
    base_url: str,
    pipelines: Sequence[tuple[str, str | None]],
    *,
    label: str = "queue",
    schedules: str = "",
) -> Iterator[tuple[Path, dict[str, str], Any]]:
    """A fresh database with the repository applied: yields (repo root, environment, engine);
    drops the database afterwards."""
    name = f"fabric_bench_{label}_{os.getpid()}"
    url = create_database(base_url, name)
    engine = make_engine(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "repo"
            (root / "tenants" / TENANT).mkdir(parents=True)
            (root / "fabric.yaml").write_text("format_version: 1\nownership: {enforce: false}\n")
            (root / "tenants" / TENANT / "tenant.yaml").write_text(
                tenant_yaml(pipelines, schedules)
            )
            env = {
                "FABRIC_DATABASE_URL": url,
                "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
                "FABRIC_HOME": str(Path(tmp) / "home"),
            }
            plan = api.plan(root, environ=env).plan
            api.apply(plan, repo=root, environ=env, options=ApplyOptions())
            yield root, env, engine
    finally:
        engine.dispose()
        drop_database(base_url, name)


@contextlib.contextmanager
def noop_workers(
    root: Path, env: dict[str, str], *, concurrency: int, count: int = 2
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` no-op `fabric worker` processes, stopped (SIGTERM) on exit."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(BENCH / "noop_worker.py"), str(root), f"w{i}", str(concurrency)],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(1, count + 1)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
