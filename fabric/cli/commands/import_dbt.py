"""`fabric import dbt PROJECT_DIR --tenant T`: a dbt project becomes a tenant.  [shell]"""

from __future__ import annotations

from pathlib import Path

import click

from fabric.cli.errors import handle_errors
from fabric.cli.repository import NotARepositoryError, find_repository


@click.group("import")
def import_group() -> None:
    """Bring a project from another tool into the repository."""


@import_group.command("dbt")
@click.argument("project_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tenant", required=True, help="Slug of the tenant to create (tenants/<slug>/).")
@click.option(
    "--into",
    "--repo",
    "into",
    type=click.Path(file_okay=False, path_type=Path),
    help="The repository to write into (created when it holds no fabric.yaml). Default: the "
    "nearest folder at or above the current directory that holds fabric.yaml.",
)
@click.option(
    "--warehouse",
    metavar="NAME",
    help="Build in this managed warehouse of fabric.yaml (`warehouses:`) instead of a "
    "connection read from ${env:<SLUG>_WAREHOUSE_*}.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be written; write nothing.")
@click.option("--force", is_flag=True, help="Replace the tenant's folder when it exists.")
@click.option("--strict", is_flag=True, help="Exit 1 when anything was not translated.")
@handle_errors
def import_dbt(
    project_dir: Path,
    tenant: str,
    into: Path | None,
    warehouse: str | None,
    dry_run: bool,
    force: bool,
    strict: bool,
) -> None:
    """Translate the dbt project in PROJECT_DIR (models and their config blocks, folder
    configs, properties files, sources, seeds, snapshots, macros, tests, packages) into the
    files of tenant --tenant, and print what could not be translated and why."""
    from fabric import api
    from fabric.dbt_import.report import report_text

    repo = into if into is not None else find_repository(Path.cwd())
    if repo is None:
        raise NotARepositoryError(
            "Not inside a fabric repository: name one with --into (a new folder is created "
            "as a repository)."
        )
    result = api.import_dbt(
        project_dir, tenant, into=repo, dry_run=dry_run, force=force, warehouse=warehouse
    )
    click.echo(report_text(result.translation, result.written, dry_run=dry_run, strict=strict))
    if strict and result.translation.untranslated:
        raise SystemExit(1)
