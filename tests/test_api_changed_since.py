"""`fabric plan --changed-since REF` on a real git repository and a real control plane."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from fabric import api
from fabric.apply import ApplyOptions
from fabric.config.loader import load_repository
from fabric.errors import ConfigError


def tenant(slug: str, schema: str) -> dict[str, str]:
    return {
        f"tenants/{slug}/tenant.yaml": (
            f"tenant:\n  display_name: {slug.title()}\n  warehouse: dwh\n"
            "connections:\n  dwh:\n    type: postgres\n    direction: destination\n"
            "    host: 127.0.0.1\n    database: dwh\n"
        ),
        f"tenants/{slug}/transformations.yaml": (
            f"transformations:\n  totals:\n    schema: {schema}\n    sql: select 1 as one\n"
        ),
    }


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def write(root: Path, files: dict[str, str]) -> None:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)


@pytest.fixture
def env(make_database) -> dict[str, str]:
    return {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }


@pytest.fixture
def root(tmp_path: Path, env: dict[str, str]) -> Path:
    """Three tenants applied from main; the checkout is on a branch `pr`."""
    root = tmp_path / "repo"
    write(root, {"fabric.yaml": "format_version: 1\nname: t\nownership: {enforce: false}\n"})
    for slug in ("acme", "globex", "initech"):
        write(root, tenant(slug, f"{slug}_marts"))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-qm", "start")
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    git(root, "checkout", "-qb", "pr")
    return root


def changed(root: Path, env: dict[str, str]) -> dict[str, str]:
    plan = api.plan(root, environ=env, changed_since="main").plan
    return {str(c.address): c.action.value for c in plan.changes}


def test_only_the_changed_tenant_is_loaded_and_planned(root: Path, env: dict[str, str]) -> None:
    write(
        root,
        {
            "tenants/acme/transformations.yaml": tenant("acme", "acme_v2")[
                "tenants/acme/transformations.yaml"
            ]
        },
    )
    git(root, "commit", "-qam", "acme v2")
    # another tenant's files are broken in the working tree: they are not read at all
    write(root, {"tenants/initech/tenant.yaml": "tenant: [\n"})
    git(root, "stash", "-q")  # ... but a stashed edit is not a change either
    write(root, {"tenants/globex/transformations.yaml": "transformations: {}\n"})

    result = api.plan(root, environ=env, changed_since="main")

    assert result.load.only == {"acme", "globex"}
    assert result.plan.tenants == ("acme", "globex")
    assert {str(c.address): c.action.value for c in result.plan.changes} == {
        "acme.transformation.totals": "update",
        "globex.transformation.totals": "delete",
    }
    assert any("tenants changed since main: acme, globex" in n for n in result.plan.notes)


def test_a_shared_file_plans_every_tenant(root: Path, env: dict[str, str]) -> None:
    write(root, {"fabric.yaml": "format_version: 1\nname: renamed\n"})
    result = api.plan(root, environ=env, changed_since="main")
    assert result.load.only is None
    assert result.plan.tenants == ("acme", "globex", "initech")
    assert any("shared files changed since main (fabric.yaml)" in n for n in result.plan.notes)


def test_a_deleted_tenant_folder_is_planned_as_a_delete(root: Path, env: dict[str, str]) -> None:
    git(root, "rm", "-rq", "tenants/globex")
    git(root, "commit", "-qm", "drop globex")
    plan = api.plan(root, environ=env, changed_since="main").plan
    assert plan.tenants == ("globex",)
    assert {c.action.value for c in plan.changes} == {"delete"}
    assert "tenant globex" in " ".join(plan.warnings)


def test_nothing_changed_plans_nothing_without_reading_the_control_plane(
    root: Path, env: dict[str, str]
) -> None:
    plan = api.plan(
        root, environ={**env, "FABRIC_DATABASE_URL": "postgresql://nobody@/x"}, changed_since="main"
    ).plan
    assert plan.tenants == () and plan.changes == ()


def test_the_saved_plan_of_changed_tenants_applies_after_a_full_check(
    root: Path, env: dict[str, str]
) -> None:
    write(root, tenant("acme", "acme_v2"))
    plan = api.plan(root, environ=env, changed_since="main").plan
    # another tenant's file changes after the plan was made: not the plan's files
    write(root, {"tenants/initech/transformations.yaml": "transformations: {}\n"})
    api.check_plan_source(plan, root)
    # the full load at apply time catches what the limited plan could not see
    write(root, tenant("initech", "acme_v2"))
    with pytest.raises(ConfigError) as caught:
        api.check_plan_source(plan, root)
    assert "schema-conflict" in {d.code for d in caught.value.diagnostics}


def test_the_source_hash_of_some_tenants_is_the_same_from_a_full_load(root: Path) -> None:
    full = load_repository(root)
    some = load_repository(root, tenants={"acme", "initech"})
    assert some.tenants == ("acme", "initech")
    assert some.source_hash_for() == full.source_hash_for({"acme", "initech"})
    assert full.desired is not None and full.desired.source_hash == full.source_hash_for()


def test_the_cli_names_an_unknown_ref(root: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fabric", "plan", str(root), "--changed-since", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Unknown git ref 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
