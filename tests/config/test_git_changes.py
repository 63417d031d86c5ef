"""The files changed since a git ref, read from a real git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fabric.config.git_changes import GitError, changed_paths


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def write(root: Path, files: dict[str, str]) -> None:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout whose fabric repository is the subfolder `platform/`."""
    git(tmp_path, "init", "-q", "-b", "main")
    write(
        tmp_path,
        {
            ".github/workflows/ci.yml": "on: push\n",
            "platform/fabric.yaml": "format_version: 1\n",
            "platform/tenants/acme/tenant.yaml": "a\n",
            "platform/tenants/globex/tenant.yaml": "g\n",
            "platform/tenants/initech/tenant.yaml": "i\n",
        },
    )
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "start")
    git(tmp_path, "checkout", "-qb", "feature")
    return tmp_path


def test_commits_since_the_branch_point_plus_the_working_tree(checkout: Path) -> None:
    repo = checkout / "platform"
    write(repo, {"tenants/acme/pipelines.yaml": "p\n"})
    git(checkout, "add", ".")
    git(checkout, "commit", "-qm", "acme pipelines")
    git(checkout, "mv", "platform/tenants/initech", "platform/tenants/initrode")
    write(repo, {"tenants/globex/tenant.yaml": "g2\n", "tenants/umbrella/tenant.yaml": "u\n"})
    write(checkout, {".github/workflows/ci.yml": "on: pull_request\n"})  # outside the repository
    # main moves on: its new commits are not this branch's changes
    git(checkout, "stash", "-u", "-q")
    git(checkout, "checkout", "-q", "main")
    write(repo, {"tenants/hooli/tenant.yaml": "h\n"})
    git(checkout, "add", ".")
    git(checkout, "commit", "-qm", "hooli on main")
    git(checkout, "checkout", "-q", "feature")
    git(checkout, "stash", "pop", "-q")

    assert changed_paths(repo, "main") == (
        "tenants/acme/pipelines.yaml",
        "tenants/globex/tenant.yaml",  # unstaged
        "tenants/initech/tenant.yaml",  # renamed away: the old tenant changed too
        "tenants/initrode/tenant.yaml",  # staged
        "tenants/umbrella/tenant.yaml",  # untracked
    )


def test_a_deleted_tenant_folder_is_listed(checkout: Path) -> None:
    git(checkout, "rm", "-rq", "platform/tenants/globex")
    git(checkout, "commit", "-qm", "drop globex")
    assert changed_paths(checkout / "platform", "main") == ("tenants/globex/tenant.yaml",)


def test_nothing_changed(checkout: Path) -> None:
    assert changed_paths(checkout / "platform", "main") == ()


def test_an_unknown_ref_is_a_clear_error(checkout: Path) -> None:
    with pytest.raises(GitError, match=r"Unknown git ref 'origin/nope'.*git fetch"):
        changed_paths(checkout / "platform", "origin/nope")
    with pytest.raises(GitError, match="Unknown git ref '--output=x'"):
        changed_paths(checkout / "platform", "--output=x")


def test_outside_a_git_checkout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not inside a git checkout"):
        changed_paths(tmp_path, "main")
