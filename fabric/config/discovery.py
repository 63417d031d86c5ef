"""Find the files of a repository: `fabric.yaml` and `tenants/<slug>/**/*.yaml`.  [shell]"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

YAML_SUFFIXES = (".yaml", ".yml")
ASSET_FOLDERS = {"macros": ".sql", "seeds": ".csv", "tests": ".sql"}
"""Folders of a tenant whose files are dbt files (discovered, no YAML entry needed), with the
suffix of the files fabric reads there."""
MAX_SEED_BYTES = 1_000_000
"""A seed is loaded by `dbt seed` row by row through INSERTs and stored in the control plane:
beyond this, load it with a `files` pipeline instead."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file's repository-relative path (always with `/`) and its text."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class RepositoryFiles:
    root: Path
    project: SourceFile | None
    tenants: dict[str, tuple[SourceFile, ...]]
    """Folder name under tenants/ -> its YAML files, sorted by path."""
    stray: tuple[str, ...]
    """Files directly under tenants/ (they belong in a tenant folder)."""
    unreadable: tuple[tuple[str, str, int], ...]
    """(path, reason, line) for files that could not be read as UTF-8 text."""
    refused: tuple[tuple[str, str, str], ...] = ()
    """(path, why, what to do) for entries fabric will not read: a hidden folder under tenants/
    (`..acme`), a symlinked tenant folder, a YAML file linking out of its tenant's folder."""
    slugs: tuple[str, ...] = ()
    """Every tenant folder's name, read with `only` or not: which tenant owns an environment
    variable name depends on every tenant's prefix (config.references.env_owner)."""
    assets: dict[str, tuple[SourceFile, ...]] = field(default_factory=dict)
    """Folder name under tenants/ -> its dbt files (ASSET_FOLDERS), sorted by path."""
    oversized: tuple[tuple[str, int], ...] = ()
    """(path, bytes) of seed files over MAX_SEED_BYTES (not read)."""


def find_repository(start: Path) -> Path | None:
    """The nearest folder at or above `start` that holds a fabric.yaml (absolute), or None.

    Every command finds its repository this way when none is named, so a command run from a
    tenant's folder uses the same repository (and embedded server) as one run from the root.
    """
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "fabric.yaml").is_file():
            return folder
    return None


find_repository_root = find_repository
"""The older name of `find_repository`."""


def discover(root: Path, *, max_bytes: int, only: frozenset[str] | None = None) -> RepositoryFiles:
    """Read the repository's files; with `only`, only those tenants' folders are read."""
    root = root.resolve()
    unreadable: list[tuple[str, str, int]] = []

    def read(path: Path) -> SourceFile | None:
        rel = path.relative_to(root).as_posix()
        try:
            if path.stat().st_size > max_bytes:
                # Keep only a prefix: the parser reports the size before parsing anything.
                with path.open("rb") as fh:
                    return SourceFile(rel, fh.read(max_bytes + 1).decode("utf-8", "replace"))
            return SourceFile(rel, path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = exc.object.count(b"\n", 0, exc.start) + 1
            unreadable.append((rel, f"not UTF-8 text ({exc.reason} at byte {exc.start})", line))
        except OSError as exc:
            unreadable.append((rel, exc.strerror or str(exc), 1))
        return None

    project_path = root / "fabric.yaml"
    project = read(project_path) if project_path.is_file() else None
    tenants: dict[str, tuple[SourceFile, ...]] = {}
    stray: list[str] = []
    refused: list[tuple[str, str, str]] = []
    tenants_dir = root / "tenants"
    slugs: list[str] = []
    assets: dict[str, tuple[SourceFile, ...]] = {}
    oversized: list[tuple[str, int]] = []
    if tenants_dir.is_dir():
        for entry in sorted(os.scandir(tenants_dir), key=lambda e: e.name):
            rel = f"tenants/{entry.name}"
            if entry.is_symlink():
                if entry.name.endswith(YAML_SUFFIXES) or not entry.is_dir():
                    if entry.name.endswith(YAML_SUFFIXES):
                        stray.append(rel)
                    continue
                refused.append((rel, _link_problem(root, Path(entry.path)), _LINK_HINT))
                continue
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                slugs.append(entry.name)
            if only is not None and entry.name not in only:
                continue
            if not entry.is_dir(follow_symlinks=False):
                if entry.name.endswith(YAML_SUFFIXES):
                    stray.append(rel)
                continue
            folder = Path(entry.path)
            paths = _yaml_files(folder, refused, root)
            if entry.name.startswith("."):
                # NOTE: a hidden folder holding YAML (`..acme`, `.acme`) would declare a
                # tenant that silently vanishes; one without YAML declares nothing.
                if paths:
                    refused.append(
                        (
                            rel,
                            f"{rel} starts with '.', so it cannot be a tenant folder, yet it "
                            "holds YAML files that would be ignored",
                            "Rename it to the tenant's slug (e.g. tenants/acme), or move it "
                            "out of tenants/.",
                        )
                    )
                continue
            files = [read(p) for p in paths]
            tenants[entry.name] = tuple(f for f in files if f is not None)
            found: list[SourceFile] = []
            for path in _asset_files(folder, refused, root):
                size = path.stat().st_size
                if path.suffix == ".csv" and size > MAX_SEED_BYTES:
                    oversized.append((path.relative_to(root).as_posix(), size))
                    continue
                if (source := read(path)) is not None:
                    found.append(source)
            assets[entry.name] = tuple(found)
    return RepositoryFiles(
        root,
        project,
        tenants,
        tuple(stray),
        tuple(unreadable),
        tuple(refused),
        tuple(slugs),
        assets,
        tuple(oversized),
    )


_LINK_HINT = (
    "Tenant folders and their YAML files must be real files of the repository: replace the "
    "link with the folder or file itself."
)


def _link_problem(root: Path, link: Path) -> str:
    rel = link.relative_to(root).as_posix()
    target = Path(os.path.realpath(link))
    if not target.is_relative_to(root):
        return f"{rel} is a symlink to {target}, outside the repository"
    return f"{rel} is a symlink (to {target.relative_to(root).as_posix()})"


def _asset_files(folder: Path, refused: list[tuple[str, str, str]], root: Path) -> list[Path]:
    """The dbt files of a tenant folder (ASSET_FOLDERS); links out of it are refused."""
    found: list[Path] = []
    for sub, suffix in ASSET_FOLDERS.items():
        if (folder / sub).is_dir() and not (folder / sub).is_symlink():
            found += _yaml_files(folder / sub, refused, root, (suffix,), folder)
        elif (folder / sub).is_symlink():
            why = _link_problem(root, folder / sub) + "; a tenant's dbt folders must be real"
            refused.append(((folder / sub).relative_to(root).as_posix(), why, _LINK_HINT))
    return found


def project_files(root: Path, relative: str, suffix: str) -> tuple[list[SourceFile], str | None]:
    """The `suffix` files under a folder of the repository named in fabric.yaml (`dbt.macros`);
    (files, None) or ([], why it is refused: absolute, outside the repository, missing)."""
    root = root.resolve()
    if Path(relative).is_absolute():
        return [], "is an absolute path; give a folder relative to the repository root"
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root):
        return [], "points outside the repository"
    if not folder.is_dir():
        return [], "is not a folder of the repository"
    refused: list[tuple[str, str, str]] = []
    files = []
    for path in _yaml_files(folder, refused, root, (suffix,), root):
        try:
            files.append(SourceFile(path.relative_to(root).as_posix(), path.read_text("utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            return [], f"holds {path.relative_to(root).as_posix()}, which cannot be read ({exc})"
    if refused:
        return [], refused[0][1]
    return files, None


def _yaml_files(
    folder: Path,
    refused: list[tuple[str, str, str]],
    root: Path,
    suffixes: tuple[str, ...] = YAML_SUFFIXES,
    within: Path | None = None,
) -> list[Path]:
    """The YAML files (or `suffixes` files) of a tenant folder; links leading out of it (or
    out of `within`) are refused, not read."""
    found: list[Path] = []
    real = Path(os.path.realpath(within if within is not None else folder))
    for dirpath, dirnames, filenames in os.walk(folder):  # never follows symlinked folders
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            path = Path(dirpath) / name
            if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(real):
                why = _link_problem(root, path) + ", outside its tenant's folder"
                refused.append((path.relative_to(root).as_posix(), why, _LINK_HINT))
        for name in filenames:
            if not name.endswith(suffixes) or name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(real):
                why = _link_problem(root, path) + ", outside its tenant's folder"
                refused.append((path.relative_to(root).as_posix(), why, _LINK_HINT))
                continue
            found.append(path)
    return sorted(found)


def read_tenant_text(root: Path, tenant: str, relative: str) -> tuple[str | None, str | None]:
    """Read a file a tenant refers to (a `sql_file`), refusing paths outside its folder.

    Returns (text, None) or (None, reason). Symlinks are resolved before the check, so a link
    pointing out of the tenant's folder is refused like a `..`.
    """
    folder = (root / "tenants" / tenant).resolve()
    if Path(relative).is_absolute():
        return None, "is an absolute path; give a path relative to the tenant's folder"
    try:
        target = (folder / relative).resolve()
        if not target.is_relative_to(folder):
            return None, "points outside the tenant's folder"
        if not target.is_file():
            return None, "does not exist"
        return target.read_text(encoding="utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except RuntimeError:  # raised by Path.resolve for a symlink loop (Python < 3.13)
        return None, "is a symlink loop"
    except ValueError:  # e.g. a NUL character
        return None, "is not a valid path"
    except OSError as exc:  # e.g. a name too long
        return None, f"cannot be read ({exc.strerror or type(exc).__name__})"


def read_local_package(root: Path, relative: str) -> tuple[str, tuple[str, ...]] | None:
    """(the dbt project name, the text of every macro file) of a local package of the
    repository, or None when it is not one (validate reports bad paths; `fabric deps` reports
    a folder that is no dbt project)."""
    root = root.resolve()
    try:
        folder = (root / relative).resolve()
        if not folder.is_relative_to(root) or not (folder / "dbt_project.yml").is_file():
            return None
        header = (folder / "dbt_project.yml").read_text("utf-8")
        texts = tuple(
            path.read_text("utf-8")
            for path in sorted((folder / "macros").rglob("*.sql"))
            if (folder / "macros").is_dir() and Path(os.path.realpath(path)).is_relative_to(root)
        )
    except (OSError, UnicodeDecodeError, RuntimeError, ValueError):
        return None
    name = next(
        (
            line.split(":", 1)[1].strip().strip("'\"")
            for line in header.splitlines()
            if line.startswith("name:")
        ),
        None,
    )
    return (name, texts) if name else None
