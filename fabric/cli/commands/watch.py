"""`fabric watch [REPO]`: re-validate on every save, then show the plan.  [shell]

The loop is fabric.watch.watch_repository; this module feeds it watchfiles' debounced batches
and prints each report.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from fabric.cli.repository import repository


@click.command("watch")
@click.option(
    "--debounce",
    type=click.IntRange(min=10),
    default=300,
    show_default=True,
    help="Milliseconds to wait for saves to settle before re-validating.",
)
@click.option("--no-plan", is_flag=True, help="Only validate; do not read the control plane.")
@repository()
def watch_command(repo: Path, debounce: int, no_plan: bool) -> None:
    """Re-validate REPO on every save and show the plan of what changed (Ctrl-C stops)."""
    import watchfiles

    from fabric import api
    from fabric.watch import watch_repository

    color = sys.stdout.isatty()

    def plan(load, tenants):
        return api.plan(repo, tenants=tenants or (), load=load).plan

    def batches():
        # NOTE: raise_interrupt=False: Ctrl-C while waiting ends the iteration quietly
        for changes in watchfiles.watch(repo, debounce=debounce, raise_interrupt=False):
            yield [path for _, path in changes]

    click.echo(f"Watching {repo} (Ctrl-C stops).")
    watch_repository(
        repo,
        batches(),
        on_report=lambda report: _show(report, color=color),
        plan=None if no_plan else plan,
    )
    click.echo("Stopped watching.")


def _show(report, *, color: bool) -> None:  # fabric.watch.WatchReport
    from fabric.plan.plan import to_document
    from fabric.render import diagnostics as render
    from fabric.render.plan_text import render_plan_text

    now = dt.datetime.now().strftime("%H:%M:%S")
    what = ", ".join(report.changed) if report.changed else "start"
    click.secho(f"\n[{now}] {what}", bold=True, color=color)
    load = report.load
    if load is not None and load.diagnostics:
        click.echo(render.render_diagnostics_text(load.diagnostics, color=color))
    if load is not None:
        errors = sum(d.severity.value == "error" for d in load.diagnostics)
        state = "valid" if load.ok else f"{errors} error(s)"
        click.secho(
            f"{state} ({load.files} files, {report.seconds:.2f} s)",
            fg="green" if load.ok else "red",
            color=color,
        )
    if report.problem:
        click.secho(report.problem, fg="yellow", color=color)
    if report.plan is not None:
        click.echo(render_plan_text(to_document(report.plan), color=color))
