"""`fabric run` end to end on a real control plane, with scripted nodes.

The pipelines are applied from YAML as usual; then their stored specs get a `script` block that
the tests' own node function (scripted_nodes.py, handed to the executor) follows instead of
loading data, so these tests exercise selection, records, skipping and abandoned-run detection
without dlt. Production code knows nothing of scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from cryptography.fernet import Fernet
from scripted_nodes import scripted
from sqlalchemy import text

from fabric import api
from fabric.addresses import Address
from fabric.apply import ApplyOptions
from fabric.domain.runs import NodeStatus, RunStatus
from fabric.state import runs as records
from fabric.state.engine import make_engine
from fabric.state.snapshot import read_tenant_rows

REPO = {
    "fabric.yaml": "format_version: 1\nownership: {enforce: false}\n",
    "tenants/acme/tenant.yaml": """
        tenant: {display_name: Acme, warehouse: dwh}
        connections:
          dwh: {type: postgres, direction: destination, host: h, database: d}
          src: {type: postgres, direction: source, host: h, database: s}
        pipelines:
          orders: {source: src, dataset: raw, mode: single_table, table: o, tags: [nightly]}
          customers: {source: src, dataset: raw, mode: single_table, table: c}
          items: {source: src, dataset: raw, mode: single_table, table: i, depends_on: [orders]}
        """,
}


@pytest.fixture
def applied(tmp_path, make_database):
    root = tmp_path / "repo"
    for rel, body in REPO.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(body))
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp_path / "home"),
        "PATH": os.environ.get("PATH", ""),
    }
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    return root, env


def script(env, name: str, **params) -> None:
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    with engine.begin() as conn:
        schema = read_tenant_rows(conn, ["acme"])["acme"].schema_name
        conn.execute(
            text(f"UPDATE {schema}.pipelines SET spec = spec || CAST(:p AS jsonb) WHERE name = :n"),
            {"p": json.dumps({"script": params}), "n": name},
        )
    engine.dispose()


def test_run_records_every_node_and_skips_downstream_of_a_failure(applied):
    root, env = applied
    script(env, "orders", fail=True)
    script(env, "customers")
    script(env, "items")
    result = api.run(root, tenants=["acme"], environ=env, workers=2, execute=scripted)
    assert result.status == {"acme": RunStatus.FAILED}, result.errors
    statuses = {str(a): s for a, s in result.nodes.items()}
    assert statuses == {
        "acme.pipeline.orders": NodeStatus.FAILED,
        "acme.pipeline.customers": NodeStatus.SUCCESS,
        "acme.pipeline.items": NodeStatus.SKIPPED,
    }
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    with engine.connect() as conn:
        tenant = read_tenant_rows(conn, ["acme"])["acme"]
        run = records.read_run(conn, tenant, result.runs["acme"])
    engine.dispose()
    assert run.status == "failed" and run.trigger == "manual" and run.who
    by_node = {n.node: n for n in run.nodes}
    assert by_node["acme.pipeline.orders"].error == "scripted failure on attempt 1"
    assert by_node["acme.pipeline.orders"].failure == "terminal"
    assert by_node["acme.pipeline.items"].failure == "upstream_failed"
    assert by_node["acme.pipeline.customers"].rows_loaded == {"rows": 1}
    customers = by_node["acme.pipeline.customers"]
    shown = result.seconds(Address.parse("acme.pipeline.customers"))
    assert customers.queued_at <= customers.started_at < customers.finished_at
    assert customers.seconds == pytest.approx(shown, abs=1e-3)  # one figure everywhere
    assert by_node["acme.pipeline.items"].status == "skipped"
    assert all(n.finished_at is not None for n in run.nodes)


def test_selection_runs_exactly_the_selected_nodes(applied):
    root, env = applied
    for name in ("orders", "customers", "items"):
        script(env, name)
    result = api.run(
        root, tenants=["acme"], selectors=["tag:nightly+"], environ=env, execute=scripted
    )
    assert {str(a) for a in result.nodes} == {"acme.pipeline.orders", "acme.pipeline.items"}
    assert result.ok


def test_a_run_left_running_by_a_dead_runner_is_marked_abandoned(applied):
    root, env = applied
    for name in ("orders", "customers", "items"):
        script(env, name)
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    conn = engine.connect()
    tenant = read_tenant_rows(conn, ["acme"])["acme"]
    dead = records.create_run(
        conn,
        tenant,
        trigger="manual",
        selection=["*"],
        who="ghost",
        nodes=[Address.parse("acme.pipeline.orders")],
    )
    conn.invalidate()  # the runner "dies": its session (and the run's lock) is gone
    result = api.run(root, tenants=["acme"], environ=env, execute=scripted)
    assert ("acme", dead) in result.abandoned
    with engine.connect() as c:
        run = records.read_run(c, tenant, dead)
    engine.dispose()
    assert run.status == "failed" and run.error.startswith("abandoned")
    assert {n.status for n in run.nodes} == {"cancelled"}


def test_cli_run_prints_a_summary_and_exits_1_on_failure(applied):
    """A real `fabric run` whose loads fail (the source host `h` does not resolve)."""
    root, env = applied
    done = subprocess.run(
        [
            *(sys.executable, "-m", "fabric", "run", "customers"),
            *("--tenant", "acme", "--repo", str(root)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "acme.pipeline.customers" in done.stdout and "failed" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    runs = subprocess.run(
        [sys.executable, "-m", "fabric", "runs", "--repo", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert runs.returncode == 0 and "acme" in runs.stdout and "failed" in runs.stdout
    show = subprocess.run(
        [
            sys.executable,
            "-m",
            "fabric",
            "runs",
            "show",
            "1",
            "--tenant",
            "acme",
            "--repo",
            str(root),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert show.returncode == 0 and "acme.pipeline.customers" in show.stdout
    status = subprocess.run(
        [sys.executable, "-m", "fabric", "status", "--tenant", "acme", "--repo", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert status.returncode == 0 and "acme.pipeline.items" in status.stdout


def test_unknown_selector_is_a_clear_error(applied):
    root, env = applied
    done = subprocess.run(
        [sys.executable, "-m", "fabric", "run", "nope", "--tenant", "acme", "--repo", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1 and "matches no node" in done.stderr
    assert "Traceback" not in done.stderr


def test_exclude_leaves_out_matching_nodes(applied):
    root, env = applied
    for name in ("orders", "customers", "items"):
        script(env, name)
    result = api.run(
        root, tenants=["acme"], exclude=["tag:nightly+"], environ=env, execute=scripted
    )
    assert {str(a) for a in result.nodes} == {"acme.pipeline.customers"}
