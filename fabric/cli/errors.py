"""The single error handler of the `fabric` command.  [shell]"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Print a FabricError as a message (no traceback) and exit 1 (3 for a refused author);
    other errors are bugs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from fabric.errors import FabricError

        try:
            return fn(*args, **kwargs)
        except FabricError as exc:
            from fabric.errors import ConfigError

            if isinstance(exc, ConfigError):
                from fabric.render.diagnostics import render_diagnostics_text

                color = sys.stderr.isatty()
                click.echo(render_diagnostics_text(exc.diagnostics, color=color), err=True)
            click.secho(f"Error: {exc}", fg="red", err=True)
            raise SystemExit(getattr(exc, "exit_code", 1)) from None

    return wrapper  # type: ignore[return-value]
