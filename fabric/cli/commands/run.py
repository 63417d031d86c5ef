"""`fabric run`, `fabric runs`, `fabric status`, `fabric graph`.  [shell]"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabric.cli.main import cli, handle_errors

REPO_OPT = click.option(
    "--repo",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The repository (locates the embedded database and relative paths).",
)
SYMBOL = {"success": "✓", "failed": "✗", "skipped": "-", "cancelled": "!", "retrying": "↻"}


@cli.command(name="run")
@click.argument("selectors", nargs=-1)
@click.option("--tenant", "tenants", multiple=True, help="Tenant to run (repeatable).")
@click.option("--all-tenants", is_flag=True, help="Run every applied tenant.")
@click.option("--exclude", multiple=True, help="Leave out nodes matching this selector.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel nodes (default: CPU count).")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
@REPO_OPT
@handle_errors
def run_command(
    selectors: tuple[str, ...],
    tenants: tuple[str, ...],
    all_tenants: bool,
    exclude: tuple[str, ...],
    workers: int | None,
    full_refresh: bool,
    repo: Path,
) -> None:
    """Run applied pipelines and transformations: SELECTORS like orders, +customer_totals,
    orders+, pipeline:orders, tag:nightly (default: everything)."""
    from fabric import api
    from fabric.render.runs import rows_total, short, table

    color = sys.stdout.isatty()

    def progress(event, counts) -> None:
        node = str(event.address)
        done = f"[{counts['done']}/{counts['total']}]"
        if event.kind == "started":
            attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            click.echo(f"{done} started   {node}{attempt}")
        elif event.kind == "retrying":
            click.secho(
                f"{done} retrying  {node} in {event.retry_in:.0f} s: {short(event.result.error)}",
                fg="yellow",
                color=color,
            )
        elif event.kind == "finished":
            r = event.result
            fg = "green" if r.status.value == "success" else "red"
            rows = rows_total(r.rows_loaded)
            extra = f" {rows:,} rows" if rows else ""
            err = f": {short(r.error)}" if r.error else ""
            click.secho(
                f"{done} {SYMBOL[r.status.value]} {r.status.value:8} {node} "
                f"{r.duration_seconds:.1f} s{extra}{err}",
                fg=fg,
                color=color,
            )
        else:
            click.secho(
                f"{done} {SYMBOL[event.kind]} {event.kind:8} {node}", fg="yellow", color=color
            )

    result = api.run(
        repo,
        tenants=tenants,
        all_tenants=all_tenants,
        selectors=selectors,
        exclude=exclude,
        workers=workers,
        full_refresh=full_refresh,
        on_event=progress,
    )
    for slug, run_id in result.abandoned:
        click.secho(f"Marked run {run_id} of {slug} failed: abandoned.", fg="yellow", color=color)
    rows = [
        (
            str(node),
            status.value,
            result.attempts.get(node, 0),
            f"{result.durations.get(node, 0):.1f}s",
            f"{rows_total(result.rows.get(node)):,}",
            short(result.errors.get(node), 60),
        )
        for node, status in sorted(result.nodes.items(), key=lambda i: str(i[0]))
    ]
    click.echo()
    click.echo(table(("NODE", "STATUS", "ATTEMPTS", "TIME", "ROWS", "ERROR"), rows))
    finish_runs(result, color=color)


def finish_runs(result, *, color: bool, label: str = "") -> None:
    """One line per tenant's run, then the exit code: 130 cancelled, 1 failed, else 0."""
    for slug, run_id in sorted(result.runs.items()):
        status = result.status.get(slug)
        click.secho(
            f"Run {run_id} of {slug}{label}: {status.value if status else '?'}",
            fg="green" if status and status.value == "success" else "red",
            color=color,
        )
    if result.cancelled:
        raise SystemExit(130)
    if not result.ok:
        raise SystemExit(1)


@cli.group(invoke_without_command=True)
@click.option("--tenant", "tenants", multiple=True, help="Tenant (default: all applied tenants).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@REPO_OPT
@click.pass_context
@handle_errors
def runs(ctx: click.Context, tenants: tuple[str, ...], limit: int, repo: Path) -> None:
    """List recent runs (`fabric runs show RUN_ID --tenant T` for one run's nodes)."""
    if ctx.invoked_subcommand is not None:
        return
    from fabric import api
    from fabric.render.runs import table
    from fabric.runner.records import list_runs
    from fabric.state.snapshot import read_tenant_rows

    with api.workspace(repo).engine("runs").connect() as conn:
        rows_by_tenant = read_tenant_rows(conn, tenants or None)
        found = []
        for slug in sorted(rows_by_tenant):
            found += list_runs(conn, rows_by_tenant[slug], limit=limit)
    found.sort(key=lambda r: (r.started_at is None, r.started_at), reverse=True)
    if not found:
        click.echo("No runs yet.")
        return
    click.echo(
        table(
            ("TENANT", "RUN", "STATUS", "TRIGGER", "STARTED", "SECONDS", "WHO", "SELECTION"),
            [
                (
                    r.tenant,
                    r.id,
                    r.status,
                    r.trigger,
                    f"{r.started_at:%Y-%m-%d %H:%M:%S}" if r.started_at else "",
                    f"{(r.finished_at - r.started_at).total_seconds():.1f}"
                    if r.finished_at and r.started_at
                    else "",
                    r.who,
                    " ".join(r.selection),
                )
                for r in found[:limit]
            ],
        )
    )


@runs.command(name="show")
@click.argument("run_id", type=int)
@click.option("--tenant", required=True, help="The run's tenant (run ids are per tenant).")
@REPO_OPT
@handle_errors
def runs_show(run_id: int, tenant: str, repo: Path) -> None:
    """One run: its nodes, attempts, rows, errors and log tails."""
    from fabric import api
    from fabric.errors import FabricError
    from fabric.render.runs import full_errors, rows_total, short, table
    from fabric.runner.records import read_run
    from fabric.state.applied import read_applied

    with api.workspace(repo).engine("runs").connect() as conn:
        record = read_run(conn, read_applied(conn, tenant).tenant, run_id)
    if record is None:
        raise FabricError(f"Tenant {tenant} has no run {run_id}. List runs with `fabric runs`.")
    took = (
        f" in {(record.finished_at - record.started_at).total_seconds():.1f} s"
        if record.finished_at and record.started_at
        else ""
    )
    click.echo(
        f"Run {record.id} of {record.tenant}: {record.status}{took} "
        f"(trigger {record.trigger}, by {record.who}, selection {' '.join(record.selection)})"
    )
    if record.error:
        click.echo(f"  {record.error}")
    click.echo()
    click.echo(
        table(
            ("NODE", "STATUS", "ATTEMPTS", "ROWS", "ERROR"),
            [
                (n.node, n.status, n.attempts, f"{rows_total(n.rows_loaded):,}", short(n.error))
                for n in record.nodes
            ],
        )
    )
    if errors := full_errors((n.node, n.error) for n in record.nodes):
        click.echo(f"\n{errors}")
    for n in record.nodes:
        if n.rows_loaded and len(n.rows_loaded) > 1:
            per_table = ", ".join(f"{t}={c:,}" for t, c in sorted(n.rows_loaded.items()))
            click.echo(f"\n{n.node} rows: {per_table}")
        if n.log_tail and n.status != "success":
            click.echo(f"\n--- {n.node} (last lines of its log) ---\n{n.log_tail}")


@cli.command()
@click.option("--tenant", required=True)
@REPO_OPT
@handle_errors
def status(tenant: str, repo: Path) -> None:
    """Each node's last run and its next scheduled fire time."""
    import datetime as dt

    from fabric import api
    from fabric.render.runs import rows_total, short, table
    from fabric.runner.records import last_node_runs
    from fabric.scheduling import next_fire_times

    dag, applied = api.applied_dag(repo, tenant)
    with api.workspace(repo).engine("status").connect() as conn:
        last = last_node_runs(conn, applied.tenant)
    upcoming = next_fire_times(dag, applied.schedules, dt.datetime.now(dt.UTC))
    rows = []
    for node in dag.order():
        r = last.get(str(node))
        nxt = upcoming.get(node)
        rows.append(
            (
                str(node),
                r.status if r else "never run",
                f"{r.finished_at:%Y-%m-%d %H:%M}" if r and r.finished_at else "",
                f"{rows_total(r.rows_loaded):,}" if r else "",
                f"{nxt[0]:%Y-%m-%d %H:%M %Z} ({nxt[1]})" if nxt else "",
                short(r.error, 50) if r else "",
            )
        )
    click.echo(table(("NODE", "LAST", "FINISHED", "ROWS", "NEXT RUN", "ERROR"), rows))


@cli.command()
@click.option("--tenant", required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text")
@REPO_OPT
@handle_errors
def graph(tenant: str, fmt: str, repo: Path) -> None:
    """The tenant's applied DAG as text, Mermaid or Graphviz dot."""
    from fabric import api
    from fabric.render.graph import render_graph

    dag, _ = api.applied_dag(repo, tenant)
    click.echo(render_graph(dag, fmt))
