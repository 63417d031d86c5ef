"""`fabric init [DIR]` and `fabric tenant new NAME`: the first hour of a repository.  [shell]"""

from __future__ import annotations

from pathlib import Path

import click

from fabric.cli.errors import handle_errors
from fabric.cli.repository import repository, shown_path


@click.command("init")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--tenant",
    default="acme",
    show_default=True,
    help="Slug of the first tenant (its folder under tenants/).",
)
@click.option("--name", help="The project's name in fabric.yaml (default: the folder's name).")
@handle_errors
def init_command(folder: Path | None, tenant: str, name: str | None) -> None:
    """Start a repository in FOLDER (default: the current one): fabric.yaml, one tenant with
    one of each resource, JSON Schemas, .gitignore, CI templates and a README.

    Writes nothing when any of those files exists already.
    """
    from fabric import api

    target = folder or Path(".")
    result = api.init_repository(target, tenant=tenant, name=name)
    where = shown_path(result.root)
    click.echo(f"Created a fabric repository in {where} ({len(result.written)} files):")
    for rel in result.written:
        click.echo(f"  {rel}")
    cd = "" if where == "." else f"cd {where}\n  "
    click.echo(
        "\nNext:\n"
        f"  {cd}fabric validate\n"
        "  printf %s 'postgresql://USER:PASSWORD@HOST:5432/DB' | "
        f"fabric secrets set {tenant} WAREHOUSE_URL\n"
        "  fabric apply --auto-approve\n"
        f"  fabric run --tenant {tenant}"
    )


@click.group("tenant")
def tenant_group() -> None:
    """Add tenants to the repository."""


@tenant_group.command("new")
@click.argument("slug", metavar="NAME")
@click.option("--display-name", help="The tenant's display name (default: from NAME).")
@repository()
def tenant_new(slug: str, display_name: str | None, repo: Path) -> None:
    """Create tenants/NAME/ with a commented tenant.yaml (NAME is the tenant's slug)."""
    from fabric import api

    result = api.new_tenant(repo, slug, display_name=display_name)
    for rel in result.written:
        click.echo(f"Created {shown_path(result.root / rel)}.")
    click.echo("Add its connections, pipelines and transformations there; then `fabric plan`.")
