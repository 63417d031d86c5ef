"""Confine a tenant's local sources to its own data folder, at run time.  [shell]

The pure rule of `fabric.config.destinations` (a tenant's local files lie under
`<repository>/data/<slug>/`) is applied again where files are opened (the stored spec could
predate the rule, and `${env:...}` is only known now), then symlinks are followed: the
tenant's folder must be a real folder, and the source folder, the sqlite file and every file a
`files` pipeline lists must resolve inside it. So a link planted in the tenant's folder cannot
lead a load into fabric's home (`.fabric/secret.key`), another tenant's folder or `/etc`.

Used by the worker (`dlt_sources.py`) and by `fabric connections test` (`probes.py`). A file
swapped for a link between the check and the read is not re-checked (the data area is the
operator's; the check stops what the tenant's YAML can name).
"""

from __future__ import annotations

import os
from pathlib import Path

from fabric.config.destinations import (
    DATA_FOLDER,
    FolderTarget,
    glob_problem,
    source_target,
    sqlite_target,
)
from fabric.errors import FabricError


class LocalPathError(FabricError):
    """A connection names a local path its tenant may not read (or a link escapes its folder)."""


def tenant_root(repo_root: Path, tenant: str) -> Path:
    """The real path of `data/<tenant>`; refused when that folder is itself a symlink."""
    data = Path(os.path.realpath(repo_root / DATA_FOLDER))
    own = data / tenant
    if Path(os.path.realpath(repo_root / DATA_FOLDER / tenant)) != own:
        raise LocalPathError(
            f"{DATA_FOLDER}/{tenant} is a symlink; a tenant's data folder must be a real folder "
            "(remove the link)"
        )
    return own


def inside(own: Path, path: Path, shown: str) -> Path:
    """The real path of `path`, which must lie inside `own` (symlinks followed)."""
    real = Path(os.path.realpath(path))
    if real != own and not real.is_relative_to(own):
        raise LocalPathError(
            f"{shown} resolves to {real}, outside the tenant's folder {own}; a tenant reads "
            f"local files only under {DATA_FOLDER}/<its slug>/ (remove the link or move the file)"
        )
    return real


def source_folder(
    bucket_url: str, tenant: str, repo_root: Path, file_glob: str = "*"
) -> tuple[FolderTarget, Path | None]:
    """(target, real local folder or None for a remote URL) of a filesystem source.

    Raises:
        LocalPathError: the URL or glob is refused by the rule, or the folder escapes by a link.
    """
    root = Path(os.path.realpath(repo_root))
    target, problem = source_target(bucket_url, tenant, root.as_posix())
    if target is None:
        raise LocalPathError(f"tenant {tenant} may not read bucket_url {bucket_url!r}: {problem}")
    if problem := glob_problem(file_glob):
        raise LocalPathError(f"file_glob {file_glob!r} is refused: {problem}")
    if target.kind != "local":
        return target, None
    own = tenant_root(root, tenant)
    return target, inside(own, root / target.path, target.path)


def sqlite_file(path: str, tenant: str, repo_root: Path) -> Path:
    """The real path of a sqlite connection's file, inside the tenant's folder.

    Raises:
        LocalPathError: the path is refused by the rule, or it escapes by a link.
    """
    root = Path(os.path.realpath(repo_root))
    relative, problem = sqlite_target(path, tenant, root.as_posix())
    if relative is None:
        raise LocalPathError(f"tenant {tenant} may not open sqlite file {path!r}: {problem}")
    return inside(tenant_root(root, tenant), root / relative, relative)
