"""`fabric codeowners`: a CODEOWNERS file from the tenants' owners and admins.  [shell]"""

from __future__ import annotations

from pathlib import Path

import click

from fabric.cli.repository import repository

DEFAULT_PATH = ".github/CODEOWNERS"


@click.command()
@click.option(
    "--out",
    metavar="PATH",
    default=DEFAULT_PATH,
    show_default=True,
    help="Where to write it, relative to the repository ('-' prints it).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 when the file at --out differs from what would be written (CI).",
)
@repository()
def codeowners(repo: Path, out: str, check: bool) -> None:
    """Write CODEOWNERS so the git host asks the same people to review as apply accepts."""
    from fabric import api

    text = api.codeowners(repo)
    if out == "-":
        click.echo(text, nl=False)
        return
    path = Path(out) if Path(out).is_absolute() else repo / out
    if check:
        current = path.read_text() if path.is_file() else None
        if current != text:
            why = "is missing" if current is None else "is stale"
            click.echo(f"{path} {why}: run `fabric codeowners` and commit it.", err=True)
            raise SystemExit(1)
        click.echo(f"{path} is up to date.")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    click.echo(f"Wrote {path}.")
