"""`fabric server status|start|stop`: the handle on the embedded PostgreSQL.  [shell]

With FABRIC_DATABASE_URL unset, the first command that needs the control plane starts a
PostgreSQL in the repository's `.fabric/` (FABRIC_HOME moves it); it keeps running between
commands so later ones start instantly. These commands show it, start it and stop it.
"""

from __future__ import annotations

from pathlib import Path

import click

from fabric.cli.repository import group_repository, repository


@click.group("server")
@group_repository
def server_group() -> None:
    """The embedded PostgreSQL that holds the control plane when FABRIC_DATABASE_URL is unset.

    It keeps running between commands; `fabric server stop` stops it.
    """


def _describe(status) -> list[str]:  # api.ServerStatus
    lines = []
    if status.running:
        lines.append(f"Embedded PostgreSQL: running (pid {status.pid}, port {status.port}).")
        lines.append(f"  URL:         {status.url} (password in {status.home / 'server.json'})")
    else:
        lines.append("Embedded PostgreSQL: not running.")
    lines.append(f"  Data folder: {status.data_folder}")
    if status.database_url:
        lines.append(
            f"This repository uses FABRIC_DATABASE_URL ({status.database_url}), "
            "not the embedded server."
        )
    else:
        lines.append("This repository uses the embedded server (FABRIC_DATABASE_URL is unset).")
    return lines


@server_group.command("status")
@repository()
def status_command(repo: Path) -> None:
    """Whether the embedded server runs, its pid, port and data folder, and who uses it."""
    from fabric import api

    for line in _describe(api.server_status(repo)):
        click.echo(line)


@server_group.command("start")
@repository()
def start_command(repo: Path) -> None:
    """Start the embedded server (or reuse the running one) and print its URL."""
    from fabric import api

    for line in _describe(api.start_server(repo)):
        click.echo(line)


@server_group.command("stop")
@repository()
def stop_command(repo: Path) -> None:
    """Stop the embedded server cleanly (fast shutdown); nothing to do when it is not running.

    The next command that needs the control plane starts it again, with its data.
    """
    from fabric import api

    if api.stop_server(repo):
        click.echo("Stopped the embedded PostgreSQL.")
    else:
        click.echo("The embedded PostgreSQL is not running; nothing to stop.")


__all__ = ["server_group"]
