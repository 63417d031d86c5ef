"""The `fabric` command: a click group of thin commands over `fabric.api`.  [shell]

Imports of anything heavy (dlt, dbt, SQLAlchemy) happen inside commands, so `fabric --help`
and `fabric validate` stay fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Print a FabricError as a message (no traceback) and exit 1; other errors are bugs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from fabric.errors import FabricError

        try:
            return fn(*args, **kwargs)
        except FabricError as exc:
            from fabric.errors import ConfigError

            if isinstance(exc, ConfigError):
                from fabric.render.diagnostics import render_diagnostics_text

                color = sys.stderr.isatty()
                click.echo(render_diagnostics_text(exc.diagnostics, color=color), err=True)
            click.secho(f"Error: {exc}", fg="red", err=True)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="etl-fabric", prog_name="fabric")
def cli() -> None:
    """fabric: GitOps for multi-tenant ETL.

    Tenants declare connections, dlt pipelines, dbt transformations and schedules as YAML;
    fabric validates, plans, applies and runs them.
    """


REPO = click.argument(
    "repo", type=click.Path(exists=True, file_okay=False, path_type=Path), default="."
)


@cli.command()
@REPO
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
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
    else:
        color = sys.stdout.isatty()
        if load.diagnostics:
            click.echo(render.render_diagnostics_text(load.diagnostics, color=color))
            click.echo()
        if result.ok:
            click.echo(render.render_summary(result.counts(), load.tenants))
            click.secho(f"{load.root}: valid ({load.files} files).", fg="green", color=color)
        else:
            errors = sum(d.severity.value == "error" for d in load.diagnostics)
            click.secho(f"{load.root}: {errors} error(s).", fg="red", color=color)
    raise SystemExit(0 if result.ok else 1)


@cli.command()
@click.option("--workers", type=click.IntRange(min=1), help="Parallel nodes (default: CPU count).")
@handle_errors
def demo(workers: int | None) -> None:
    """Create sample sources, apply example-repo, run every tenant and show the results."""
    from fabric.demo.flow import run_demo

    raise SystemExit(run_demo(click.echo, workers=workers))


def _register() -> None:
    """Attach the command modules (importing them is cheap: their imports are lazy)."""
    from fabric.cli.commands import connections, dbt, plan_apply, run  # noqa: F401

    try:
        from fabric.cli.commands.secrets import secrets_group
    except ImportError:  # pragma: no cover - during development only
        return
    cli.add_command(secrets_group, "secrets")


def main() -> None:
    _register()
    cli(prog_name="fabric")
