"""Shell completion of tenant names, on top of click's own completion.  [shell]

click completes commands and options by itself once the shell is set up
(`eval "$(_FABRIC_COMPLETE=bash_source fabric)"`; zsh_source, fish_source likewise). This
module adds what is cheap to know: the tenant folders of the repository, for every `--tenant`
option and TENANT argument. It lists one folder; it never loads YAML or opens the database.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.shell_completion import CompletionItem

from fabric.addresses import TENANT_SLUG

NEW_NAMES = frozenset({"init", "new"})
"""Commands whose tenant is a new name: nothing to complete."""


def complete_tenants(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Tenant folder names under the repository's tenants/ that start with `incomplete`."""
    from fabric.config.discovery import find_repository

    given = ctx.params.get("repo") or ctx.params.get("repo_argument")
    root = Path(given) if given else find_repository(Path.cwd())
    if root is None or not (root / "tenants").is_dir():
        return []
    names = sorted(
        entry.name
        for entry in (root / "tenants").iterdir()
        if entry.is_dir() and TENANT_SLUG.fullmatch(entry.name)
    )
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def add_tenant_completion(command: click.Command) -> None:
    """Attach `complete_tenants` to every tenant parameter of `command` and its subcommands."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_tenant_completion(sub)
    if command.name in NEW_NAMES:
        return
    for param in command.params:
        if param.name in ("tenant", "tenants"):
            param._custom_shell_complete = complete_tenants  # what shell_complete= sets
