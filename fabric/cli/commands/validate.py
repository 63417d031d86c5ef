"""`fabric validate`: report every problem of a repository's YAML at once.  [shell]"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabric.cli.repository import repository, shown_path


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github", "sarif"]),
    default="text",
    help="text for people; json; github: workflow annotations; sarif: SARIF 2.1.0 for code "
    "scanning.",
)
@repository(required=False)
def validate(repo: Path, fmt: str) -> None:
    """Check a repository's YAML and report every problem at once (exit 1 if any)."""
    from fabric import api
    from fabric.render import diagnostics as render

    result = api.validate(repo)
    load = result.load
    if fmt == "json":
        summary = {"tenants": list(load.tenants), "files": load.files, **result.counts()}
        doc = render.diagnostics_document(load.diagnostics, valid=result.ok, summary=summary)
        click.echo(render.render_json(doc))
    elif fmt == "sarif":
        from fabric import __version__

        sarif = render.sarif_document(load.diagnostics, tool_version=__version__)
        click.echo(render.render_json(sarif))
    elif fmt == "github":
        if load.diagnostics:
            click.echo(render.render_github(load.diagnostics))
        errors = sum(d.severity.value == "error" for d in load.diagnostics)
        state = "valid" if result.ok else f"{errors} error(s)"
        click.echo(f"{shown_path(load.root)}: {state} ({load.files} files).")
    else:
        color = sys.stdout.isatty()
        if load.diagnostics:
            click.echo(render.render_diagnostics_text(load.diagnostics, color=color))
            click.echo()
        if result.ok:
            click.echo(render.render_summary(result.counts(), load.tenants))
            click.secho(
                f"{shown_path(load.root)}: valid ({load.files} files).", fg="green", color=color
            )
        else:
            errors = sum(d.severity.value == "error" for d in load.diagnostics)
            click.secho(f"{shown_path(load.root)}: {errors} error(s).", fg="red", color=color)
    raise SystemExit(0 if result.ok else 1)
