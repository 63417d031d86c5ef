"""`fabric compile` and `fabric test`: the dbt side of transformations.  [shell]

Imports are lazy: registering these commands imports neither dbt nor SQLAlchemy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabric.cli.commands.run import SELECT, finish_runs, selected
from fabric.cli.repository import repository


@click.command(name="compile")
@click.argument("address")
@repository()
def compile_command(address: str, repo: Path) -> None:
    """Print the SQL an applied transformation compiles to (refs and sources resolved).

    ADDRESS is TENANT.transformation.NAME, e.g. acme.transformation.customer_totals;
    REPO, when given, comes after it.
    """
    from fabric.api import compile_transformation

    click.echo(compile_transformation(repo, address).rstrip("\n"))


@click.command(name="deps")
@click.option("--tenant", "tenants", multiple=True, help="Tenant to install for (repeatable).")
@repository()
def deps_command(tenants: tuple[str, ...], repo: Path) -> None:
    """Install the dbt packages of fabric.yaml's `dbt.packages` and each tenant's `packages`
    into the tenant's work folder, where its runs use them (default: every tenant)."""
    from fabric.api import deps

    for slug, packages in deps(repo, tenants=tenants).items():
        shown = ", ".join(packages) if packages else "no packages"
        click.echo(f"{slug}: {shown}")


@click.command(name="test")
@click.argument("selectors", nargs=-1)
@SELECT
@click.option("--tenant", "tenants", multiple=True, help="Tenant to test (repeatable).")
@click.option("--all-tenants", is_flag=True, help="Test every applied tenant.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel nodes (default: CPU count).")
@repository(variadic="selectors")
def test_command(
    selectors: tuple[str, ...],
    select: tuple[str, ...],
    tenants: tuple[str, ...],
    all_tenants: bool,
    workers: int | None,
    repo: Path,
) -> None:
    """Run only the tests of applied transformations (no model is rebuilt): SELECTORS as for
    `fabric run` (default: every transformation). Exit 1 when a test fails."""
    from fabric.api import run_tests
    from fabric.render.runs import report_tests

    color = sys.stdout.isatty()
    result = run_tests(
        repo,
        tenants=tenants,
        all_tenants=all_tenants,
        selectors=selected(selectors, select),
        workers=workers,
    )
    nodes = [
        (
            str(node),
            status.value,
            result.errors.get(node),
            result.results[node].tests if node in result.results else (),
        )
        for node, status in sorted(result.nodes.items(), key=lambda i: str(i[0]))
    ]
    click.echo(report_tests(nodes))
    finish_runs(result, color=color, label=" (tests only)")
