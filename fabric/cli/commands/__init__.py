"""Every `fabric` command, in the one list `fabric.cli.main` registers.  [shell]

Importing these modules is cheap: their own imports of fabric's shell parts are lazy.
"""

from __future__ import annotations

import click

from fabric.cli.commands.codeowners import codeowners
from fabric.cli.commands.connections import connections_group
from fabric.cli.commands.dbt import compile_command, deps_command, test_command
from fabric.cli.commands.demo import demo
from fabric.cli.commands.freshness import docs, freshness
from fabric.cli.commands.import_dbt import import_group
from fabric.cli.commands.init import init_command, tenant_group
from fabric.cli.commands.plan_apply import apply, export, history, locks, plan, unlock
from fabric.cli.commands.queue import worker, workers
from fabric.cli.commands.run import graph, run_command, runs, status
from fabric.cli.commands.scheduler import scheduler
from fabric.cli.commands.secrets import secrets_group
from fabric.cli.commands.server import server_group
from fabric.cli.commands.validate import validate
from fabric.cli.commands.watch import watch_command

COMMANDS: tuple[click.Command, ...] = (
    init_command,
    tenant_group,
    validate,
    watch_command,
    plan,
    apply,
    export,
    import_group,
    history,
    locks,
    unlock,
    codeowners,
    run_command,
    test_command,
    compile_command,
    deps_command,
    runs,
    status,
    freshness,
    docs,
    scheduler,
    graph,
    worker,
    workers,
    connections_group,
    secrets_group,
    server_group,
    demo,
)
"""Registered by fabric.cli.main; `fabric --help` lists them by name."""

__all__ = ["COMMANDS"]
