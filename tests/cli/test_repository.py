"""The one repository rule: REPO or --repo (equal if both), else the nearest fabric.yaml upward."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from fabric.cli.commands import COMMANDS
from fabric.cli.repository import NotARepositoryError, resolve_repository
from fabric.config.discovery import find_repository
from tests.cli.conftest import base_env, run_fabric, write_repo

NO_REPOSITORY = ("secrets keygen", "demo", "init")
"""Commands that need no repository: keygen makes a key, demo always uses example-repo, init
makes one."""
REPOSITORY_BY_OPTION = ("import dbt",)
"""Commands whose argument is something else (the dbt project): the repository is --repo
(alias --into) only."""


def test_find_repository_walks_up_to_the_nearest_fabric_yaml(tmp_path: Path):
    outer = write_repo(tmp_path / "outer", {"fabric.yaml": "format_version: 1\n"})
    inner = write_repo(outer / "nested", {"fabric.yaml": "format_version: 1\n"})
    deep = inner / "tenants" / "acme" / "models"
    deep.mkdir(parents=True)
    assert find_repository(deep) == inner.resolve()
    assert find_repository(outer / "nested") == inner.resolve()
    (outer / "tenants").mkdir()
    assert find_repository(outer / "tenants") == outer.resolve()
    assert find_repository(tmp_path) is None


def test_resolution_rule(small_repo: Path, tmp_path: Path):
    sub = small_repo / "tenants" / "acme"
    assert resolve_repository(None, None, cwd=sub) == small_repo.resolve()
    assert resolve_repository(small_repo, None, cwd=tmp_path) == small_repo.resolve()
    assert resolve_repository(None, small_repo, cwd=tmp_path) == small_repo.resolve()
    # The same folder spelt two ways is one repository.
    assert resolve_repository(small_repo, sub / ".." / "..", cwd=tmp_path) == small_repo.resolve()
    other = write_repo(tmp_path / "other", {"fabric.yaml": "format_version: 1\n"})
    with pytest.raises(click.UsageError, match="Two different repositories"):
        resolve_repository(small_repo, other, cwd=tmp_path)
    with pytest.raises(NotARepositoryError, match=r"holds no fabric.yaml \(its repository is"):
        resolve_repository(sub, None, cwd=tmp_path)
    with pytest.raises(NotARepositoryError, match="--repo PATH"):
        resolve_repository(None, None, cwd=tmp_path)
    assert resolve_repository(None, None, cwd=tmp_path, needs_repository=False) == tmp_path


def _leaves(command: click.Command, prefix: str = "") -> list[tuple[str, click.Command]]:
    name = f"{prefix}{command.name}"
    if isinstance(command, click.Group):
        found = [(name, command)] if command.invoke_without_command else []
        for sub in command.commands.values():
            found += _leaves(sub, name + " ")
        return found
    return [(name, command)]


def test_every_command_takes_the_repository_as_repo_and_with_the_repo_option():
    checked = 0
    for top in COMMANDS:
        for name, command in _leaves(top):
            if name in NO_REPOSITORY:
                continue
            options = {opt for p in command.params for opt in p.opts}
            assert "--repo" in options, f"fabric {name} has no --repo"
            positional = [p.name for p in command.params if isinstance(p, click.Argument)]
            hidden = "--repo-argument" in options  # a group that is also a command
            takes_repo = (
                hidden
                or name in REPOSITORY_BY_OPTION
                or any(n in ("repo_argument", "target", "selectors", "names") for n in positional)
            )
            assert takes_repo, f"fabric {name} takes no REPO argument: {positional}"
            checked += 1
    assert checked >= 18


def test_a_command_in_a_subfolder_uses_the_repository_root_and_its_embedded_server(
    small_repo: Path,
):
    """`fabric runs` in tenants/acme/ once started a second embedded server there."""
    sub = small_repo / "tenants" / "acme"
    env = base_env()
    try:
        done = run_fabric("runs", cwd=sub, env=env)
        assert done.returncode == 0, done.stderr
        assert "No runs yet." in done.stdout
        assert not (sub / ".fabric").exists()
        assert (small_repo / ".fabric" / "pgdata").is_dir()

        status = run_fabric("server", "status", cwd=sub, env=env)
        assert status.returncode == 0, status.stderr
        assert "Embedded PostgreSQL: running (pid " in status.stdout
        assert f"Data folder: {(small_repo / '.fabric' / 'pgdata').resolve()}" in status.stdout
        assert "uses the embedded server" in status.stdout
        secret = (small_repo / ".fabric" / "server.json").read_text()
        assert "postgresql://postgres@127.0.0.1:" in status.stdout
        assert secret.split('"password": "')[1].split('"')[0] not in status.stdout

        # REPO and --repo name the same repository from anywhere.
        for args in (["runs", str(small_repo)], ["runs", "--repo", str(small_repo)]):
            again = run_fabric(*args, cwd=small_repo.parent, env=env)
            assert again.returncode == 0 and "No runs yet." in again.stdout, again.stderr
        assert not (small_repo.parent / ".fabric").exists()
    finally:
        stop = run_fabric("server", "stop", cwd=small_repo, env=env)
    assert stop.returncode == 0 and "Stopped the embedded PostgreSQL." in stop.stdout, stop.stderr
    assert not (small_repo / ".fabric" / "pgdata" / "postmaster.pid").exists()
    again = run_fabric("server", "stop", cwd=small_repo, env=env)
    assert again.returncode == 0 and "not running; nothing to stop" in again.stdout
    status = run_fabric("server", "status", cwd=small_repo, env=env)
    assert status.returncode == 0 and "Embedded PostgreSQL: not running." in status.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["plan"],
        ["status", "--tenant", "acme"],
        ["run", "--tenant", "acme"],
        ["history"],
        ["server", "status"],
        ["secrets", "list", "acme"],
    ],
)
def test_outside_a_repository_a_command_says_what_to_do_and_starts_nothing(tmp_path, args):
    assert find_repository(tmp_path) is None
    done = run_fabric(*args, cwd=tmp_path, env=base_env(), timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Not inside a fabric repository" in done.stderr
    assert "--repo PATH" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".fabric").exists()


def test_two_different_repositories_are_refused(small_repo: Path, tmp_path: Path):
    other = write_repo(tmp_path / "other", {"fabric.yaml": "format_version: 1\n"})
    done = run_fabric(
        "validate", str(small_repo), "--repo", str(other), cwd=tmp_path, env=base_env()
    )
    assert done.returncode == 2
    assert "Two different repositories" in done.stderr


def test_validate_in_a_subfolder_validates_the_repository(small_repo: Path):
    done = run_fabric("validate", cwd=small_repo / "tenants" / "acme", env=base_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{small_repo.resolve()}: valid" in done.stdout
