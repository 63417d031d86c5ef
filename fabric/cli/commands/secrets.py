"""`fabric secrets`: store, list and rotate encrypted secrets; make keys.  [shell]

A value is read from stdin or a hidden prompt, never from the command line (argv is visible in
`ps` and shell history), and no command ever prints one. Imports are lazy, so `fabric --help`
stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabric.cli.repository import group_repository, repository


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_value(name: str) -> str:
    if _stdin_is_terminal():
        # NOTE: click asks again on an empty answer, so an empty value never gets through.
        return str(click.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True))
    # Strip only the newline that `echo` or a file adds; other whitespace may be the value's.
    value = sys.stdin.read()
    return value.removesuffix("\r\n") if value.endswith("\r\n") else value.removesuffix("\n")


@click.group("secrets")
@group_repository
def secrets_group() -> None:
    """Store, list and rotate encrypted secrets (`${secret:NAME}` values).

    Values are encrypted with the Fernet keys in FABRIC_SECRET_KEYS (comma-separated, newest
    first) and bound to their tenant; they are never printed.
    """


@secrets_group.command("set")
@click.argument("tenant")
@click.argument("name")
@click.option(
    "--author",
    metavar="EMAIL",
    help="Who sets it: an admin of TENANT or a project admin (default: the HEAD commit's author).",
)
@repository(control_plane_only=True)
def set_command(tenant: str, name: str, repo: Path, author: str | None) -> None:
    """Store the value of ${secret:NAME} for TENANT, read from stdin or a hidden prompt.

    \b
    Examples:
      fabric secrets set acme dwh_password              (prompts, twice, without echo)
      printf %s "$PASSWORD" | fabric secrets set acme dwh_password
    """
    from fabric import api
    from fabric.errors import SecretError

    value = _read_value(name)
    if not value:
        raise SecretError(f"The value of secret {name!r} is empty; nothing was stored.")
    result = api.set_secret_result(repo, tenant, name, value, author=author)
    if result.changed and result.pending:
        click.echo(
            f"Stored secret {name!r} for tenant {tenant}, which is not applied yet: its first "
            "`fabric apply` binds it."
        )
    elif result.changed:
        click.echo(f"Stored secret {name!r} for tenant {tenant}.")
    else:
        click.echo(f"Secret {name!r} of tenant {tenant} already has this value; nothing changed.")


@secrets_group.command("list")
@click.argument("tenant")
@repository(control_plane_only=True)
def list_command(tenant: str, repo: Path) -> None:
    """List TENANT's secrets: names and when each last changed, never values."""
    from fabric import api

    rows = api.list_secrets(repo, tenant)
    if not rows:
        click.echo(f"Tenant {tenant} has no secrets. Add one with:")
        click.echo(f"  fabric secrets set {tenant} NAME")
        return
    width = max(len("NAME"), *(len(name) for name, _ in rows))
    click.echo(f"{'NAME':<{width}}  UPDATED")
    for name, updated_at in rows:
        click.echo(f"{name:<{width}}  {updated_at.isoformat(timespec='seconds')}")


@secrets_group.command("rotate")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Rows re-encrypted per transaction.",
)
@repository(control_plane_only=True)
def rotate_command(batch_size: int, repo: Path) -> None:
    """Re-encrypt every stored secret under the newest key (the first in FABRIC_SECRET_KEYS).

    Safe to interrupt and run again. Once it reports no failures, older keys can be removed
    from FABRIC_SECRET_KEYS.
    """
    from fabric import api

    result = api.rotate_secrets(repo, batch_size=batch_size)
    click.echo(
        f"Rotated {result.rotated} secret value(s) to the newest key; "
        f"{result.current} already used it; {len(result.failed)} failed."
    )
    for error in result.failed:
        click.secho(f"Error: {error}", fg="red", err=True)
    if result.failed:
        click.echo(
            "Keep the old keys in FABRIC_SECRET_KEYS until the failures are fixed.", err=True
        )
        raise SystemExit(1)


@secrets_group.command("keygen")
def keygen_command() -> None:
    """Print a new Fernet key for FABRIC_SECRET_KEYS."""
    from fabric import api

    click.echo(api.new_secret_key())
    click.echo(
        "Put it first in FABRIC_SECRET_KEYS (comma-separated, newest first: the first "
        "encrypts, all decrypt), then run `fabric secrets rotate`.",
        err=True,
    )


__all__ = ["secrets_group"]
