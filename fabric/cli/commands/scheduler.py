"""`fabric scheduler`: fire due schedules, as one of any number of replicas.  [shell]"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from fabric.cli.repository import repository


@click.command(name="scheduler")
@click.option("--once", is_flag=True, help="Tick once, wait for the runs it started, and exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between ticks.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "queue"]),
    default="local",
    show_default=True,
    help="Where fired runs execute: `local` runs them on this machine; `queue` defers their "
    "root nodes to the queue in the tick's transaction, and `fabric worker` processes run them.",
)
@click.option(
    "--if-active",
    type=click.Choice(["refuse", "wait"]),
    default="refuse",
    show_default=True,
    help="When an active run (local or queue) shares a node with a fired run: refuse it "
    "(recorded failed, naming the active run), or wait and start when that run ends.",
)
@click.option("--queue", "queue_name", help="With --executor queue: the queue (default fabric).")
@click.option(
    "--max-runs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Runs executing at once on this machine (local executor); the rest wait, pending.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Parallel nodes per run (local executor; default: CPU count).",
)
@click.option(
    "--catchup-cap",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="A `catchup: true` schedule runs at most this many missed times (the latest).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per event: key=value text, or one JSON object per line.",
)
@repository(control_plane_only=True)
def scheduler(
    once: bool,
    interval: float,
    executor: str,
    max_runs: int,
    workers: int | None,
    catchup_cap: int,
    if_active: str,
    queue_name: str | None,
    log_format: str,
    repo: Path,
) -> None:
    """Fire schedules when they are due; run as many replicas as you like (each fire once).

    Stops gracefully on SIGTERM or Ctrl-C: no new tick, runs in progress finish, runs not yet
    started stay pending and the next tick of any scheduler adopts them. With --executor queue
    a tick's runs are on the queue when it commits: nothing is left pending.
    """
    from fabric import api
    from fabric.clock import utcnow
    from fabric.render.events import event_line

    stop = threading.Event()
    lock = threading.Lock()

    def log(event: str, fields: Mapping[str, Any]) -> None:
        line = event_line(utcnow(), event, fields, log_format)  # type: ignore[arg-type]
        with lock:  # runs finish on other threads: one whole line at a time
            click.echo(line)

    def on_signal(signum: int, _frame: Any) -> None:
        # NOTE: no logging here: the signal may interrupt `log` itself, which holds `lock`.
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    api.scheduler(
        repo,
        stop=stop,
        log=log,
        once=once,
        interval=interval,
        max_runs=max_runs,
        workers=workers,
        catchup_cap=catchup_cap,
        executor=executor,
        if_active=if_active,
        queue=queue_name,
    )
