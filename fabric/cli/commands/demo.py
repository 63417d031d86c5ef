"""`fabric demo`: the first minute, end to end on example-repo.  [shell]"""

from __future__ import annotations

import click

from fabric.cli.errors import handle_errors


@click.command()
@click.option("--workers", type=click.IntRange(min=1), help="Parallel nodes (default: CPU count).")
@click.option("--full-plan", is_flag=True, help="Print the whole plan, every change.")
@handle_errors
def demo(workers: int | None, full_plan: bool) -> None:
    """Create sample sources, apply example-repo, run every tenant and show the results."""
    from fabric.demo.flow import run_demo

    raise SystemExit(run_demo(click.echo, workers=workers, full_plan=full_plan))
