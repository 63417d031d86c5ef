"""`fabric run`, `fabric runs`, `fabric status`, `fabric graph`.  [shell]"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabric.cli.errors import handle_errors
from fabric.cli.repository import (
    RepositoryGroup,
    current_repository,
    group_with_repository,
    repository,
)

SELECT = click.option(
    "-s",
    "--select",
    "select",
    multiple=True,
    help="A selector, as dbt users type it (repeatable; may hold several, space-separated); "
    "joins the positional SELECTORS.",
)


def selected(selectors: tuple[str, ...], select: tuple[str, ...]) -> tuple[str, ...]:
    """Positional selectors and `-s/--select` values, in the order given, split on spaces."""
    return (*selectors, *(item for value in select for item in value.split()))


SYMBOL = {"success": "✓", "failed": "✗", "skipped": "-", "cancelled": "!", "retrying": "↻"}


@click.command(name="run")
@click.argument("selectors", nargs=-1)
@SELECT
@click.option("--tenant", "tenants", multiple=True, help="Tenant to run (repeatable).")
@click.option("--all-tenants", is_flag=True, help="Run every applied tenant.")
@click.option("--exclude", multiple=True, help="Leave out nodes matching this selector.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel nodes (default: CPU count).")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
@click.option(
    "--executor",
    type=click.Choice(["local", "queue"]),
    default="local",
    show_default=True,
    help="local: run here; queue: defer to the queue, where `fabric worker` processes run it.",
)
@click.option(
    "--wait/--no-wait",
    default=False,
    help="With --executor queue: follow the run until it ends and exit like a local run "
    "(default: print the run id and return).",
)
@click.option(
    "--if-active",
    type=click.Choice(["refuse", "wait"]),
    default="refuse",
    show_default=True,
    help="When an active run (local or queue) shares a node: refuse (naming it), or wait "
    "and start when it ends (queue: as `queued`; local: this command waits).",
)
@click.option("--queue", "queue_name", help="With --executor queue: the queue (default fabric).")
@repository(variadic="selectors")
def run_command(
    selectors: tuple[str, ...],
    select: tuple[str, ...],
    tenants: tuple[str, ...],
    all_tenants: bool,
    exclude: tuple[str, ...],
    workers: int | None,
    full_refresh: bool,
    executor: str,
    wait: bool,
    if_active: str,
    queue_name: str | None,
    repo: Path,
) -> None:
    """Run applied pipelines and transformations: SELECTORS like orders, +customer_totals,
    orders+, pipeline:orders, tag:nightly (default: everything).

    REPO, when given, comes first: `fabric run example-repo orders --tenant acme`.
    """
    from fabric import api
    from fabric.render.runs import rows_total, short, table

    color = sys.stdout.isatty()
    if executor == "queue":
        _run_queued(
            repo,
            tenants=tenants,
            all_tenants=all_tenants,
            selectors=selected(selectors, select),
            exclude=exclude,
            full_refresh=full_refresh,
            wait=wait,
            if_active=if_active,
            queue=queue_name,
            color=color,
        )
        return

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
                f"{r.seconds:.1f} s{extra}{err}",
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
        selectors=selected(selectors, select),
        exclude=exclude,
        workers=workers,
        full_refresh=full_refresh,
        on_event=progress,
        if_active=if_active,
    )
    for slug, run_id in result.abandoned:
        click.secho(f"Marked run {run_id} of {slug} failed: abandoned.", fg="yellow", color=color)
    rows = [
        (
            str(node),
            status.value,
            result.attempts.get(node, 0),
            f"{result.seconds(node):.1f}s",
            f"{rows_total(result.rows.get(node)):,}",
            short(result.errors.get(node), 60),
        )
        for node, status in sorted(result.nodes.items(), key=lambda i: str(i[0]))
    ]
    click.echo()
    click.echo(table(("NODE", "STATUS", "ATTEMPTS", "TIME", "ROWS", "ERROR"), rows))
    finish_runs(result, color=color)


def _run_queued(repo: Path, *, wait: bool, color: bool, **kw) -> None:
    from fabric import api
    from fabric.render.runs import short

    def finished(slug: str, node) -> None:
        fg = "green" if node.status == "success" else "red"
        err = f": {short(node.error)}" if node.error else ""
        click.secho(
            f"{SYMBOL.get(node.status, '?')} {node.status:8} {node.node} "
            f"(attempt {node.attempts}){err}",
            fg=fg,
            color=color,
        )

    result = api.run(repo, executor="queue", wait=wait, on_node=finished, **kw)
    if not wait:
        for slug, run_id in sorted(result.runs.items()):
            status = result.status[slug].value
            click.echo(
                f"Run {run_id} of {slug}: {status} (follow it: fabric runs show "
                f"{run_id} --tenant {slug})"
            )
        return
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


@click.group(cls=RepositoryGroup, invoke_without_command=True)
@click.option("--tenant", "tenants", multiple=True, help="Tenant (default: all applied tenants).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@group_with_repository
@click.pass_context
@handle_errors
def runs(ctx: click.Context, tenants: tuple[str, ...], limit: int, fmt: str) -> None:
    """List recent runs (`fabric runs show RUN_ID --tenant T` for one run's nodes).

    `--format json` prints the document described in README.md (kind `fabric-runs`).
    """
    if ctx.invoked_subcommand is not None:
        return
    from fabric import api
    from fabric.render import run_documents as render

    repo = current_repository(control_plane_only=True)
    doc = render.runs_document(api.list_runs(repo, tenants=tenants, limit=limit))
    click.echo(render.render_json(doc) if fmt == "json" else render.render_runs_text(doc))


@runs.command(name="show")
@click.argument("run_id", type=int)
@click.option("--tenant", required=True, help="The run's tenant (run ids are per tenant).")
@repository(control_plane_only=True)
def runs_show(run_id: int, tenant: str, repo: Path) -> None:
    """One run: its nodes, attempts, rows, errors and log tails."""
    from fabric import api
    from fabric.errors import FabricError
    from fabric.render.runs import full_errors, rows_total, short, table

    record = api.read_run(repo, tenant, run_id)
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
            ("NODE", "STATUS", "ATTEMPTS", "TIME", "ROWS", "ERROR"),
            [
                (
                    n.node,
                    f"{n.status} ({n.failure})" if n.failure else n.status,
                    n.attempts,
                    f"{n.seconds:.1f}s" if n.seconds is not None else "",
                    f"{rows_total(n.rows_loaded):,}",
                    short(n.error),
                )
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


@runs.command(name="cancel")
@click.argument("run_id", type=int)
@click.option("--tenant", required=True, help="The run's tenant (run ids are per tenant).")
@repository(control_plane_only=True)
def runs_cancel(run_id: int, tenant: str, repo: Path) -> None:
    """Cancel a queue run: running nodes stopped, queued ones dropped."""
    from fabric import api

    nodes = api.cancel_run(repo, tenant, run_id)
    click.echo(f"Cancelled run {run_id} of {tenant} ({len(nodes)} node(s) stopped or dropped).")


@runs.command(name="retry")
@click.argument("run_id", type=int)
@click.option("--tenant", required=True, help="The run's tenant (run ids are per tenant).")
@repository(control_plane_only=True)
def runs_retry(run_id: int, tenant: str, repo: Path) -> None:
    """Run a finished queue run's failed and skipped nodes again (workers take them)."""
    from fabric import api

    nodes = api.retry_run(repo, tenant, run_id)
    click.echo(f"Retrying run {run_id} of {tenant}: {', '.join(nodes)}")


@click.command()
@click.option("--tenant", required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@repository(control_plane_only=True)
def status(tenant: str, fmt: str, repo: Path) -> None:
    """Each node's last run and its next scheduled fire time; each schedule's last fire and
    next fires (a fire near a DST change is flagged); the sources the last `fabric freshness`
    found stale.

    `--format json` prints the document described in README.md (kind `fabric-status`).
    """
    from fabric import api
    from fabric.domain.freshness import freshness_document
    from fabric.render import run_documents as render

    sources = freshness_document(tenant, api.freshness_status(repo, tenant))["sources"]
    doc = render.status_document(
        tenant, api.tenant_status(repo, tenant), api.schedule_status(repo, tenant), sources
    )
    click.echo(render.render_json(doc) if fmt == "json" else render.render_status_text(doc))


@click.command()
@click.option("--tenant", required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text")
@repository(control_plane_only=True)
def graph(tenant: str, fmt: str, repo: Path) -> None:
    """The tenant's applied DAG as text, Mermaid or Graphviz dot."""
    from fabric import api
    from fabric.render.graph import render_graph

    dag, _ = api.applied_dag(repo, tenant)
    click.echo(render_graph(dag, fmt))
