"""`fabric connections test`: open a tenant's applied connections and report each.  [shell]

Parses options, calls fabric.api.test_connections, renders, picks the exit code (1 when any
connection failed). Imports are lazy, so `fabric --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabric.cli.repository import group_repository, repository


@click.group("connections")
@group_repository
def connections_group() -> None:
    """Check the connections a tenant has applied."""


@connections_group.command("test")
@click.argument("names", nargs=-1)
@click.option("--tenant", required=True, help="The tenant whose applied connections to test.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds each connection may take to answer.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@repository(variadic="names")
def test_command(tenant: str, names: tuple[str, ...], repo: Path, timeout: float, fmt: str) -> None:
    """Open each applied connection of TENANT (or only NAMES) and report ok or the error.

    Connections are read from the control plane (what was applied), not from the YAML. No
    secret is ever printed. Exit code 1 when any connection failed.

    \b
    Examples:
      fabric connections test --tenant acme
      fabric connections test --tenant acme shop_db dwh --timeout 5 --format json
    """
    from fabric import api
    from fabric.render import probes as render

    checks = api.test_connections(repo, tenant, names, timeout=timeout)
    doc = render.to_document(tenant, checks)
    if fmt == "json":
        click.echo(render.render_json(doc))
    else:
        click.echo(render.render_text(doc, color=sys.stdout.isatty()))
    if not doc["ok"]:
        raise SystemExit(1)


__all__ = ["connections_group"]
