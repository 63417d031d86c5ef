"""Write a `Translation` into a repository's `tenants/<slug>/`.  [shell]

The tenant's folder is the only place written (plus fabric.yaml and schemas/ when the target
folder is not a repository yet): the slug is checked, every path is checked to be relative and
to stay inside the folder once symbolic links are resolved, and an existing tenant folder is
replaced only with `force` (never when it is a link).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from fabric.dbt_import.translate import SLUG_PATTERN, Translation, is_safe_relative
from fabric.errors import FabricError


class ImportRefusedError(FabricError):
    """`fabric import dbt` will not write where it was asked to."""


@dataclass(frozen=True)
class WriteResult:
    root: Path
    written: tuple[str, ...]
    """Repository-relative paths, in order."""


def check_tenant_slug(tenant: str) -> None:
    if not SLUG_PATTERN.match(tenant):
        raise ImportRefusedError(
            f"--tenant {tenant!r} is not a tenant slug: use lowercase letters, digits and _ "
            "(starting with a letter, at most 40), e.g. --tenant shop. It names the folder "
            "tenants/<slug>/, so it can hold no / or .."
        )


def shared_env(root: Path) -> tuple[str, ...]:
    """The variables the repository's fabric.yaml shares with every tenant (`env:`)."""
    try:
        data = yaml.safe_load((root / "fabric.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ()
    env = data.get("env") if isinstance(data, dict) else None
    return tuple(str(n) for n in env or () if isinstance(n, str))


def tenant_folder(root: Path, tenant: str, *, force: bool) -> Path:
    """`root/tenants/<tenant>`, checked: inside the repository, no link, free unless `force`."""
    check_tenant_slug(tenant)
    base = root.resolve()
    tenants = base / "tenants"
    if tenants.is_symlink() or (tenants.exists() and tenants.resolve() != tenants):
        raise ImportRefusedError(f"{tenants} is a link; fabric writes only inside {base}.")
    folder = tenants / tenant
    if folder.is_symlink():
        raise ImportRefusedError(f"tenants/{tenant} is a link; refusing to write through it.")
    if folder.exists() and not force:
        raise ImportRefusedError(
            f"tenants/{tenant} exists already; pass --force to replace it, or import into "
            "another --tenant."
        )
    return folder


def packages_folder(root: Path, tenant: str, *, force: bool) -> Path:
    """`root/packages/<tenant>`, where the project's local packages go; checked like the
    tenant's folder."""
    base = root.resolve()
    packages = base / "packages"
    if packages.is_symlink() or (packages.exists() and packages.resolve() != packages):
        raise ImportRefusedError(f"{packages} is a link; fabric writes only inside {base}.")
    folder = packages / tenant
    if folder.is_symlink():
        raise ImportRefusedError(f"packages/{tenant} is a link; refusing to write through it.")
    if folder.exists() and not force:
        raise ImportRefusedError(
            f"packages/{tenant} exists already; pass --force to replace it, or import into "
            "another --tenant."
        )
    return folder


def _write(folder: Path, rel: str, text: str) -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.parent.resolve().is_relative_to(folder.resolve()) or path.is_symlink():
        raise ImportRefusedError(f"Refusing to write {rel!r}: it would leave {folder}.")
    path.write_text(text)


def write_translation(translation: Translation, root: Path, *, force: bool = False) -> WriteResult:
    """Write the tenant's files (replacing its folder with `force`); fabric.yaml and schemas/
    too when `root` holds no fabric.yaml."""
    from fabric.config.json_schema import json_schemas, render_schema

    base = root.resolve()
    folder = tenant_folder(base, translation.tenant, force=force)
    packages = packages_folder(base, translation.tenant, force=force)
    prefix = f"packages/{translation.tenant}/"
    for rel in translation.files:
        if not is_safe_relative(rel):
            raise ImportRefusedError(
                f"Refusing to write {rel!r}: it would leave tenants/{translation.tenant}/."
            )
    for rel in translation.repo_files:
        if not is_safe_relative(rel) or not rel.startswith(prefix):
            raise ImportRefusedError(f"Refusing to write {rel!r}: it would leave {prefix}.")
    written: list[str] = []
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "fabric.yaml").exists():
        (base / "fabric.yaml").write_text(
            "# yaml-language-server: $schema=schemas/fabric.schema.json\nformat_version: 1\n"
        )
        written.append("fabric.yaml")
        for name, schema in json_schemas().items():
            target = base / "schemas" / name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(render_schema(schema))
                written.append(f"schemas/{name}")
    for old in (folder, packages):
        if old.exists():
            shutil.rmtree(old)
    folder.mkdir(parents=True)
    for rel, text in translation.files.items():
        _write(folder, rel, text)
        written.append(f"tenants/{translation.tenant}/{rel}")
    if translation.repo_files:
        packages.mkdir(parents=True)
    for rel, text in translation.repo_files.items():
        _write(packages, rel[len(prefix) :], text)
        written.append(rel)
    return WriteResult(base, tuple(written))
