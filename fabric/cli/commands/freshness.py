"""`fabric freshness` and `fabric docs`: what dbt users know as `source freshness` and
`docs generate`.  [shell]

Imports are lazy: registering these commands imports neither dbt nor SQLAlchemy.
"""

from __future__ import annotations

from pathlib import Path

import click

from fabric.cli.repository import repository


@click.command()
@click.option("--tenant", required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@repository(control_plane_only=True)
def freshness(tenant: str, fmt: str, repo: Path) -> None:
    """How old each table the tenant's pipelines load is, against their `freshness:`.

    Reads through the tenant's own warehouse login. Exit code 0: fresh (a warning is printed,
    not failed); 1: a table is older than its error_after (or cannot be read). The result is
    kept for `fabric status`.
    """
    from fabric import api
    from fabric.domain.freshness import freshness_document
    from fabric.render.freshness import render_freshness_text
    from fabric.render.run_documents import render_json

    doc = freshness_document(tenant, api.freshness(repo, tenant))
    click.echo(render_json(doc) if fmt == "json" else render_freshness_text(doc))
    if doc["status"] == "error":
        raise SystemExit(1)


@click.command()
@click.option("--tenant", required=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for index.html (default: .fabric/docs/<tenant>).",
)
@repository()
def docs(tenant: str, out: Path | None, repo: Path) -> None:
    """Write dbt's static docs site of the tenant (one self-contained index.html): models and
    snapshots with their descriptions and columns, and the lineage from the pipelines (dbt
    sources, loader dlt) that feed them. Catalog queries use the tenant's own login."""
    from fabric import api

    click.echo(f"Wrote {api.docs(repo, tenant, out=out)}")
