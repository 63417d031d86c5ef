"""`fabric compile` and `fabric test`: the dbt side of transformations.  [shell]

Imports are lazy: registering these commands imports neither dbt nor SQLAlchemy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabric.cli.commands.run import REPO_OPT
from fabric.cli.main import cli, handle_errors


@cli.command(name="compile")
@click.argument("address")
@REPO_OPT
@handle_errors
def compile_command(address: str, repo: Path) -> None:
    """Print the SQL an applied transformation compiles to (refs and sources resolved).

    ADDRESS is TENANT.transformation.NAME, e.g. acme.transformation.customer_totals.
    """
    from fabric.transforming import compile_transformation

    click.echo(compile_transformation(repo, address).rstrip("\n"))


@cli.command(name="test")
@click.argument("selectors", nargs=-1)
@click.option("--tenant", "tenants", multiple=True, help="Tenant to test (repeatable).")
@click.option("--all-tenants", is_flag=True, help="Test every applied tenant.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel nodes (default: CPU count).")
@REPO_OPT
@handle_errors
def test_command(
    selectors: tuple[str, ...],
    tenants: tuple[str, ...],
    all_tenants: bool,
    workers: int | None,
    repo: Path,
) -> None:
    """Run only the tests of applied transformations (no model is rebuilt): SELECTORS as for
    `fabric run` (default: every transformation). Exit 1 when a test fails."""
    from fabric.cli.commands.run import finish_runs
    from fabric.render.runs import report_tests
    from fabric.transforming import run_tests

    color = sys.stdout.isatty()
    tests = {}

    def collect(event, counts) -> None:
        if event.kind == "finished":
            tests[event.address] = event.result.tests

    result = run_tests(
        repo,
        tenants=tenants,
        all_tenants=all_tenants,
        selectors=selectors,
        workers=workers,
        on_event=collect,
    )
    nodes = [
        (str(node), status.value, result.errors.get(node), tests.get(node, ()))
        for node, status in sorted(result.nodes.items(), key=lambda i: str(i[0]))
    ]
    click.echo(report_tests(nodes))
    finish_runs(result, color=color, label=" (tests only)")
