"""`fabric worker` and `fabric workers`: the queue executor's processes.  [shell]"""

from __future__ import annotations

from pathlib import Path

import click

from fabric.cli.repository import repository


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Nodes this worker runs at once (each in a process of the node's tenant).",
)
@click.option("--queues", help="Comma-separated queues to take jobs from (default: all).")
@click.option(
    "--lost-after",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds without a heartbeat after which a worker's nodes are failed: worker_lost.",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between this worker's heartbeats (keep well under --lost-after).",
)
@click.option(
    "--name", default="", help="This worker's name in logs and records (default: host:pid)."
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per event; json: one JSON object per line.",
)
@repository(control_plane_only=True)
def worker(
    concurrency: int,
    queues: str | None,
    lost_after: float,
    heartbeat: float,
    name: str,
    log_format: str,
    repo: Path,
) -> None:
    """Run queued nodes (`fabric run --executor queue`) until SIGTERM; start one per machine.

    SIGTERM (or Ctrl-C) stops taking jobs and finishes the running nodes first. Every worker
    also settles the nodes of workers whose heartbeat lapsed (failed: worker_lost, retried
    when the node's retries allow).
    """
    from fabric import api

    api.worker(
        repo,
        concurrency=concurrency,
        queues=[q.strip() for q in (queues or "").split(",") if q.strip()],
        lost_after=lost_after,
        heartbeat=heartbeat,
        reap_every=min(5.0, lost_after / 2),
        log_format=log_format,
        name=name,
    )


@click.command()
@repository(control_plane_only=True)
def workers(repo: Path) -> None:
    """The queue's live workers: last heartbeat and what each runs now."""
    from fabric import api
    from fabric.render.runs import table

    rows = []
    for w in api.list_workers(repo):
        running = "; ".join(
            f"{j['tenant']} run {j['run_id']}: {', '.join(j['nodes'])}" for j in w.jobs
        )
        beat = w.last_heartbeat.strftime("%Y-%m-%d %H:%M:%S %Z") if w.last_heartbeat else ""
        rows.append((str(w.id), beat, running or "(idle)"))
    if not rows:
        click.echo("No worker is running. Start one with `fabric worker`.")
        return
    click.echo(table(("WORKER", "LAST HEARTBEAT", "RUNNING"), rows))
