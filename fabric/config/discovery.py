"""Find the files of a repository: `fabric.yaml` and `tenants/<slug>/**/*.yaml`.  [shell]"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

YAML_SUFFIXES = (".yaml", ".yml")


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
    tenants_dir = root / "tenants"
    if tenants_dir.is_dir():
        for entry in sorted(os.scandir(tenants_dir), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if only is not None and entry.name not in only:
                continue
            if entry.is_dir(follow_symlinks=False):
                files = [read(p) for p in _yaml_files(Path(entry.path))]
                tenants[entry.name] = tuple(f for f in files if f is not None)
            elif entry.name.endswith(YAML_SUFFIXES):
                stray.append(f"tenants/{entry.name}")
    return RepositoryFiles(root, project, tenants, tuple(stray), tuple(unreadable))


def _yaml_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # never follows symlinked folders
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath) / name
            for name in filenames
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
        )
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
