"""Locks that span pull requests, against a real control plane: claim, conflict, release.

Each test plans a real repository (tenants acme and globex), claims with `api.lock_for` as
`fabric plan --lock-for PR` does, and applies through `api.apply` as CI would.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from fabric import api
from fabric.apply import ApplyOptions
from fabric.errors import LockedByPullRequestError, UnlockRefusedError

KEY = Fernet.generate_key().decode()
FABRIC_YAML = """\
format_version: 1
name: locked
ownership: {enforce: false}
admins: [root@platform.example]
"""


def tenant(slug: str, dataset: str = "raw") -> dict[str, str]:
    return {
        f"tenants/{slug}/tenant.yaml": f"""\
            tenant:
              display_name: {slug.title()}
            connections:
              shop: {{type: postgres, direction: source, host: 127.0.0.1, database: shop}}
              dwh: {{type: postgres, direction: destination, host: 127.0.0.1, database: dwh}}
            pipelines:
              orders:
                source: shop
                destination: dwh
                dataset: {slug}_{dataset}
                mode: single_table
                table: orders
            """
    }


@pytest.fixture
def env(make_database) -> dict[str, str]:
    return {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": KEY,
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }


@pytest.fixture
def repo(tmp_path: Path, env: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    write(root, {"fabric.yaml": FABRIC_YAML, **tenant("acme"), **tenant("globex")})
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    return root


def write(root: Path, files: dict[str, str]) -> None:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))


def pr_plan(root: Path, env: dict[str, str], pr: str):
    plan = api.plan(root, environ=env).plan
    return dataclasses.replace(plan, lock_for=pr)


def test_a_pull_request_holds_its_tenants_until_its_plan_is_applied(repo, env):
    write(repo, tenant("acme", "raw2"))
    plan_42 = pr_plan(repo, env, "42")
    held, others = api.lock_for(repo, plan_42, "42", author="Ana <ana@acme.example>", environ=env)
    assert ([lock.tenant for lock in held], others) == (["acme"], [])
    assert [(lock.tenant, lock.pr, lock.author) for lock in api.pr_locks(repo, environ=env)] == [
        ("acme", "42", "Ana <ana@acme.example>")
    ]

    # PR 43 touches acme and globex: told who holds acme; claims nothing (all or nothing)
    write(repo, tenant("globex", "raw2"))
    plan_43 = pr_plan(repo, env, "43")
    assert api.plan(repo, environ=env).locks[0].pr == "42"  # a plain plan sees the holder too
    held, others = api.lock_for(repo, plan_43, "43", author="bob@globex.example", environ=env)
    assert held == []
    (lock,) = others
    assert lock.describe().startswith(
        "tenant acme is locked by pull request 42 (Ana <ana@acme.example>) since "
    )
    assert [lock.tenant for lock in api.pr_locks(repo, environ=env)] == ["acme"]
    # ... and cannot apply over it
    with pytest.raises(LockedByPullRequestError, match="tenant acme is locked by pull request 42"):
        api.apply(plan_43, repo=repo, environ=env, options=ApplyOptions())

    # the same PR may claim again (a new push); its apply releases its locks
    held, _ = api.lock_for(repo, plan_42, "42", author="Ana <ana@acme.example>", environ=env)
    assert [lock.tenant for lock in held] == ["acme"]
    write(repo, tenant("globex"))  # PR 42's branch changes acme only
    fresh = pr_plan(repo, env, "42")
    result = api.apply(fresh, repo=repo, environ=env, options=ApplyOptions())
    assert result.changed
    assert api.pr_locks(repo, environ=env) == []


def test_a_pull_request_name_cannot_smuggle_text_into_other_peoples_output(repo, env):
    write(repo, tenant("acme", "raw2"))
    for bad in ("42\nNote: all clear", "\x1b[2J", "", "a b"):
        with pytest.raises(ValueError, match="does not name a pull request"):
            api.lock_for(repo, pr_plan(repo, env, "x"), bad, author=None, environ=env)
    assert api.pr_locks(repo, environ=env) == []


def test_only_the_author_or_a_project_admin_may_unlock(repo, env):
    write(repo, tenant("acme", "raw2"))
    api.lock_for(repo, pr_plan(repo, env, "7"), "7", author="ana@acme.example", environ=env)
    with pytest.raises(UnlockRefusedError, match=r"mallory@evil\.example is neither the author"):
        api.unlock(repo, author="mallory@evil.example", pr="7", environ=env)
    assert len(api.pr_locks(repo, environ=env)) == 1
    released = api.unlock(
        repo, author="Root <root@platform.example>", tenants=["acme"], environ=env
    )
    assert [(lock.tenant, lock.pr) for lock in released] == [("acme", "7")]
    api.lock_for(repo, pr_plan(repo, env, "8"), "8", author="ana@acme.example", environ=env)
    assert [
        lock.pr for lock in api.unlock(repo, author="ANA@acme.example", pr="8", environ=env)
    ] == ["8"]


def test_the_cli_plan_lock_for_exits_4_naming_the_holder_and_locks_lists_them(repo, env, tmp_path):
    write(repo, tenant("acme", "raw2"))

    def fabric(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fabric", *args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = fabric("plan", "--lock-for", "42", "--author", "ana@acme.example", "--out", "p.json")
    assert first.returncode == 0, first.stderr
    assert "Pull request 42 holds acme until its plan is applied." in first.stdout
    second = fabric("plan", "--lock-for", "43", "--author", "bob@globex.example")
    assert second.returncode == 4
    assert "tenant acme is locked by pull request 42 (ana@acme.example) since " in second.stderr
    listed = fabric("locks")
    assert listed.stdout.splitlines()[1].split()[:3] == ["acme", "42", "ana@acme.example"]
    stranger = fabric("unlock", "42", "--author", "mallory@evil.example")
    assert stranger.returncode == 3 and "is neither the author" in stranger.stderr
    applied = fabric("apply", "p.json", "--auto-approve", "--author", "ana@acme.example")
    assert applied.returncode == 0, applied.stderr
    assert fabric("locks").stdout.startswith("No apply locks are held.")
