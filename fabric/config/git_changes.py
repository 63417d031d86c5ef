"""The files of a repository changed since a git ref, for `plan --changed-since`.  [shell]

Changed means: committed on this branch since it left REF (`git diff REF...HEAD`, so commits
that landed on REF meanwhile do not count), plus what the working tree changes against HEAD
(staged, unstaged, and untracked files not ignored). Renames count as a delete plus an add, so
a moved tenant folder changes both tenants. Paths are relative to the repository folder, which
may be a subfolder of the git checkout; files outside it are not fabric's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fabric.errors import FabricError


class GitError(FabricError):
    """git is missing, the repository is not a git checkout, or the ref is unknown."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            timeout=120,
        )
    except FileNotFoundError:
        raise GitError("`--changed-since` needs git, and no `git` command was found.") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git took longer than 120 s in {repo}.") from None


def changed_paths(repo: Path, ref: str) -> tuple[str, ...]:
    """Repository-relative paths changed since `ref` (sorted, without repeats)."""
    inside = _git(repo, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise GitError(
            f"{repo} is not inside a git checkout, so `--changed-since {ref}` cannot tell what "
            "changed. Run it in a clone of the repository, or plan without --changed-since."
        )
    if (
        ref.startswith("-")
        or _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode
    ):
        raise GitError(
            f"Unknown git ref {ref!r} in {repo}. Name a branch, tag or commit that exists here "
            "(in CI, fetch it first, e.g. `git fetch origin main` and `--changed-since "
            "origin/main`)."
        )
    listings = (
        ("diff", "--name-only", "--no-renames", "--relative", "-z", f"{ref}...HEAD", "--"),
        ("diff", "--name-only", "--no-renames", "--relative", "-z", "HEAD", "--"),
        ("ls-files", "--others", "--exclude-standard", "-z", "--", "."),
    )
    paths: set[str] = set()
    for args in listings:
        done = _git(repo, *args)
        if done.returncode != 0:
            raise GitError(
                f"`git {' '.join(a for a in args if a != '-z')}` failed in {repo}: "
                f"{done.stderr.strip() or 'no message'}"
            )
        paths.update(p for p in done.stdout.split("\0") if p)
    return tuple(sorted(paths))
