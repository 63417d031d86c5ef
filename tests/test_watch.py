"""`fabric watch`'s loop, driven with injected change batches (no sleeps, no file events),
against a real control plane."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from fabric import api
from fabric.apply import ApplyOptions
from fabric.config.loader import LoadCache
from fabric.watch import relevant_paths, watch_repository


@pytest.fixture
def repo(tmp_path: Path, make_database):
    root = tmp_path / "repo"
    api.init_repository(root, tenant="acme")
    api.new_tenant(root, "beta")
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
    }
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())
    return root, env


def edit(root: Path, rel: str, old: str, new: str) -> str:
    path = root / rel
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    return str(path)


def test_each_batch_revalidates_then_plans_only_the_changed_tenant(repo):
    root, env = repo
    reports, cache = [], LoadCache()
    plans: list[tuple[str, ...] | None] = []

    def plan(load, tenants):
        plans.append(tenants)
        return api.plan(root, tenants=tenants or (), load=load, environ=env).plan

    def batches():
        yield [edit(root, "tenants/acme/schedules.yaml", '"0 3 * * *"', '"0 4 * * *"')]
        yield [str(root / ".fabric" / "work" / "acme" / "x.yaml"), str(root / "README.md")]
        # a half-written file: invalid YAML, reported; the loop goes on
        yield [edit(root, "tenants/acme/pipelines.yaml", "pipelines:", "pipelines: [")]
        yield [edit(root, "tenants/acme/pipelines.yaml", "pipelines: [", "pipelines:")]

    count = watch_repository(root, batches(), on_report=reports.append, plan=plan, cache=cache)

    assert count == len(reports) == 4  # the start, and one per batch touching YAML (not .fabric/)
    start, cron, broken, fixed = reports
    assert start.changed == () and start.load.ok and not start.plan.has_changes
    assert cron.changed == ("tenants/acme/schedules.yaml",)
    (change,) = cron.plan.changes
    assert str(change.address) == "acme.schedule.nightly"
    assert plans == [None, ("acme",), ("acme",)]  # beta was not planned again
    assert not broken.load.ok and broken.plan is None
    assert any(d.code == "yaml-syntax" for d in broken.load.diagnostics)
    assert fixed.load.ok and fixed.plan.has_changes  # the cron edit is still unapplied
    assert cache.hits > 0


def test_an_unreachable_control_plane_is_a_report_not_the_end(repo):
    root, env = repo
    bad = {**env, "FABRIC_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    reports = []

    def plan(load, tenants):
        return api.plan(root, tenants=tenants or (), load=load, environ=bad).plan

    batches = [[edit(root, "fabric.yaml", "retries: 1", "retries: 2")]]
    assert watch_repository(root, batches, on_report=reports.append, plan=plan) == 2
    assert all(r.load.ok and r.plan is None and r.problem.startswith("no plan:") for r in reports)


def test_ctrl_c_ends_the_loop_cleanly(repo):
    root, _ = repo
    reports = []

    def batches():
        yield [edit(root, "fabric.yaml", "retries: 1", "retries: 2")]
        raise KeyboardInterrupt

    assert watch_repository(root, batches(), on_report=reports.append, plan=None) == 2
    assert [r.changed for r in reports] == [(), ("fabric.yaml",)]


def test_relevant_paths_are_fabric_yaml_and_tenant_yaml_and_sql(tmp_path):
    paths = [
        tmp_path / "fabric.yaml",
        tmp_path / "tenants/acme/a.yaml",
        tmp_path / "tenants/acme/models/m.sql",
        tmp_path / "tenants/acme/notes.txt",
        tmp_path / ".fabric/work/acme/dbt/models/m.sql",
        tmp_path / ".git/index",
        tmp_path / "README.md",
        tmp_path / "tenants/new_one",
        "/elsewhere/fabric.yaml",
    ]
    assert relevant_paths(tmp_path, paths) == (
        "fabric.yaml",
        "tenants/acme/a.yaml",
        "tenants/acme/models/m.sql",
        "tenants/new_one/",
    )
