"""Read a dbt project folder into {project-relative path: text}.  [shell]

Only the project's own files are read: a symbolic link is followed only when it resolves
inside the project folder, folders dbt writes (target/, dbt_packages/, logs/) and hidden ones
are skipped, and a file that is too large or not UTF-8 text is refused. Everything refused is
returned as `Untranslated`, so `fabric import dbt` prints it.
"""

from __future__ import annotations

import os
from pathlib import Path

from fabric.dbt_import.project import Untranslated

SUFFIXES = (".sql", ".yml", ".yaml", ".csv", ".md", ".py")
SKIPPED_DIRS = frozenset({"target", "dbt_packages", "logs", "node_modules", "__pycache__"})
MAX_FILE_BYTES = 20 * 1024 * 1024


def read_project_dir(root: Path) -> tuple[dict[str, str], list[Untranslated]]:
    """(files, refused) of the dbt project at `root`."""
    base = Path(root).resolve()
    files: dict[str, str] = {}
    refused: list[Untranslated] = []
    for folder, dirs, names in os.walk(base, followlinks=False):
        here = Path(folder)
        for d in list(dirs):
            path = here / d
            rel = path.relative_to(base).as_posix()
            if d.startswith(".") or (here == base and d in SKIPPED_DIRS) or d in SKIPPED_DIRS:
                dirs.remove(d)
            elif path.is_symlink():
                dirs.remove(d)
                refused.append(
                    Untranslated(
                        rel,
                        None,
                        "linked folder",
                        "links are not followed into folders; copy its files into the project",
                    )
                )
        for name in sorted(names):
            if not name.endswith(SUFFIXES) or name.startswith("."):
                continue
            path = here / name
            rel = path.relative_to(base).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(base):
                    refused.append(
                        Untranslated(
                            rel,
                            None,
                            "linked file",
                            "it points outside the project "
                            "folder; only the project's own files are imported",
                        )
                    )
                    continue
            if not path.is_file():
                continue
            if path.stat().st_size > MAX_FILE_BYTES:
                refused.append(
                    Untranslated(rel, None, "file", f"larger than {MAX_FILE_BYTES // 2**20} MB")
                )
                continue
            try:
                files[rel] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                refused.append(Untranslated(rel, None, "file", "not UTF-8 text"))
    return files, refused
