"""The `fabric` command: a click group of thin commands over `fabric.api`.  [shell]

Every command is registered here, from the one list in `fabric.cli.commands.COMMANDS`. Imports
of anything heavy (dlt, dbt, SQLAlchemy) happen inside commands, so `fabric --help` and
`fabric validate` stay fast.
"""

from __future__ import annotations

import click

from fabric.cli.commands import COMMANDS
from fabric.cli.completion import add_tenant_completion
from fabric.cli.errors import handle_errors

__all__ = ["cli", "handle_errors", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="etl-fabric", prog_name="fabric")
def cli() -> None:
    """fabric: GitOps for multi-tenant ETL.

    Tenants declare connections, dlt pipelines, dbt transformations and schedules as YAML;
    fabric validates, plans, applies and runs them.

    Every command takes the repository as REPO or --repo PATH; with neither, it is the nearest
    folder at or above the current directory that holds fabric.yaml.
    """


for _command in COMMANDS:
    cli.add_command(_command)
add_tenant_completion(cli)


def main() -> None:
    cli(prog_name="fabric")
