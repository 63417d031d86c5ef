"""fabric never leaves files in the user's working tree that git would show (issue 11, item 6).

With FABRIC_DATABASE_URL set there is no embedded server, yet runs still write work folders
(dbt projects, dlt state) under `.fabric/`; fabric ignores that folder itself, so `git status`
stays clean even in a repository whose own `.gitignore` does not mention `.fabric/`.
"""

from __future__ import annotations

import os
import subprocess
import sys

from cryptography.fernet import Fernet

from fabric import api


def test_git_status_stays_clean_after_apply_and_run_with_an_external_database(
    tmp_path, make_database
):
    repo = tmp_path / "repo"
    api.init_repository(repo, tenant="acme")
    (repo / ".gitignore").unlink()  # the user's repository does not ignore .fabric/
    git = ["git", "-c", "user.name=ana", "-c", "user.email=ana@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
    }
    warehouse = make_database().replace("postgresql+psycopg://", "postgresql://")

    def fabric(*args: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "fabric", *args],
            cwd=repo,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    fabric("secrets", "set", "acme", "WAREHOUSE_URL", stdin=warehouse)
    fabric("apply", "--auto-approve")
    fabric("run", "--tenant", "acme", "--workers", "1")
    assert (repo / ".fabric" / "work" / "acme").is_dir()  # the run did write there
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""
