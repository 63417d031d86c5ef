"""The one repository rule every command follows.  [shell]

A command names its repository with an optional REPO argument or `--repo PATH` (both accepted,
an error when they differ); with neither, the repository is the nearest folder at or above the
current directory that holds `fabric.yaml`. So `fabric runs` in `tenants/acme/` uses the same
repository, and the same embedded server in its `.fabric/`, as `fabric runs` at the root.

Commands whose positional arguments are variadic (`run`, `test`, `connections test`) take REPO
as their first positional when it is a folder holding `fabric.yaml` (or a path with a `/`).
Groups (`runs`, `server`, `secrets`, `connections`) take `--repo` too and pass it down.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fabric.cli.errors import handle_errors
from fabric.errors import FabricError

F = TypeVar("F", bound=Callable[..., Any])

REPO_HELP = (
    "The repository (a folder holding fabric.yaml). Default: the nearest such folder at or "
    "above the current directory."
)
_GIVEN = "fabric.repo_given"


class NotARepositoryError(FabricError):
    """No repository was named and none holds the current directory, or the named one is none."""


def find_repository(start: Path) -> Path | None:
    from fabric.config.discovery import find_repository as find

    return find(start)


def resolve_repository(
    argument: Path | None,
    option: Path | None,
    *,
    cwd: Path,
    needs_repository: bool = True,
    inherited: Path | None = None,
) -> Path:
    """The repository a command uses, by the rule in this module's docstring.

    `needs_repository=False` (the command can work without one: validate reports the missing
    fabric.yaml itself, control-plane reads with FABRIC_DATABASE_URL set) falls back to the
    named folder or the current directory instead of failing.
    """
    given = [p for p in (argument, option, inherited) if p is not None]
    if len({p.resolve() for p in given}) > 1:
        shown = " and ".join(str(p) for p in given)
        raise click.UsageError(f"Two different repositories were given ({shown}); name one.")
    if given:
        folder = given[0]
        if not folder.is_dir():
            raise NotARepositoryError(f"Repository {folder} is not a folder.")
        if needs_repository and not (folder / "fabric.yaml").is_file():
            found = find_repository(folder)
            above = f" (its repository is {found})" if found else ""
            raise NotARepositoryError(
                f"{folder} is not a fabric repository: it holds no fabric.yaml{above}. "
                "Name the folder that holds fabric.yaml."
            )
        return folder.resolve()
    found = find_repository(cwd)
    if found is not None:
        return found
    if not needs_repository:
        return cwd.resolve()
    raise NotARepositoryError(
        f"Not inside a fabric repository: neither {cwd.resolve()} nor a folder above it holds "
        "a fabric.yaml. Run the command inside a repository, or name one with --repo PATH "
        "(the example repository is example-repo/ in fabric's source)."
    )


def current_repository(*, control_plane_only: bool = False) -> Path:
    """The repository of a group invoked without a subcommand (`fabric runs`), by the rule."""
    needs = not (control_plane_only and _uses_database_url())
    ctx = click.get_current_context()
    return resolve_repository(
        None, None, cwd=Path.cwd(), needs_repository=needs, inherited=_inherited(ctx, self_too=True)
    )


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    path, cwd = Path(path).resolve(), Path.cwd().resolve()
    return (path.relative_to(cwd).as_posix() or ".") if path.is_relative_to(cwd) else str(path)


def _uses_database_url() -> bool:
    from fabric.settings import load_settings

    return load_settings().database_url is not None


def _inherited(ctx: click.Context, *, self_too: bool = False) -> Path | None:
    parent = ctx if self_too else ctx.parent
    while parent is not None:
        if (given := parent.meta.get(_GIVEN)) is not None:
            return given
        parent = parent.parent
    return None


def _path_type(**kw: Any) -> click.Path:
    return click.Path(exists=True, file_okay=False, path_type=Path, **kw)


def repository(
    *,
    argument: bool = True,
    variadic: str | None = None,
    control_plane_only: bool = False,
    required: bool = True,
) -> Callable[[F], F]:
    """Add REPO / --repo to a command and pass the resolved repository as `repo`.

    `argument=False`: only --repo (the command's positionals are something else).
    `variadic="selectors"`: REPO may be the first item of that variadic argument.
    `control_plane_only`: the command only reads the control plane, so with
    FABRIC_DATABASE_URL set it works outside a repository.
    `required=False`: never fail for want of a repository (validate reports it as a diagnostic).
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, repo_argument: Path | None = None, repo: Path | None, **kw: Any):
            if variadic is not None:
                items = list(kw[variadic])
                if items and _looks_like_repository(items[0]):
                    repo_argument = Path(items.pop(0))
                kw[variadic] = tuple(items)
            ctx = click.get_current_context()
            needs = required and not (control_plane_only and _uses_database_url())
            resolved = resolve_repository(
                repo_argument,
                repo,
                cwd=Path.cwd(),
                needs_repository=needs,
                inherited=_inherited(ctx),
            )
            return fn(*args, repo=resolved, **kw)

        wrapped: Any = handle_errors(wrapper)
        wrapped = click.option("--repo", type=_path_type(), help=REPO_HELP)(wrapped)
        if argument and variadic is None:
            wrapped = click.argument(
                "repo_argument", required=False, type=_path_type(), metavar="REPO"
            )(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


def _looks_like_repository(item: str) -> bool:
    """A variadic command's first positional is REPO when it is plainly a folder."""
    path = Path(item)
    if not path.is_dir():
        return False
    return (path / "fabric.yaml").is_file() or "/" in item or item in (".", "..")


def group_repository(fn: F) -> F:
    """`--repo` on a group: remembered for its subcommands (which may also name one)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, repo: Path | None, **kw: Any) -> Any:
        click.get_current_context().meta[_GIVEN] = repo
        return fn(*args, **kw)

    return click.option("--repo", type=_path_type(), help=REPO_HELP)(wrapper)  # type: ignore[return-value]


class RepositoryGroup(click.Group):
    """A group that is also a command taking REPO: `fabric runs [REPO]`, `fabric runs show ...`.

    click would read a first positional as a subcommand name; this group reads it as REPO
    when it names no subcommand.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subcommand_metavar", "[REPO] | COMMAND [ARGS]...")
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {
            name
            for p in self.params
            if isinstance(p, click.Option) and not p.is_flag
            for name in p.opts
        }
        i = 0
        while i < len(args):
            token = args[i]
            if token == "--":
                break
            if token.startswith("-"):
                i += 2 if token in takes_value else 1
                continue
            if token not in self.commands:
                args = [*args[:i], "--repo-argument", token, *args[i + 1 :]]
            break
        return super().parse_args(ctx, args)


def group_with_repository(fn: F) -> F:
    """For a RepositoryGroup: REPO (as a hidden option) and --repo, remembered for subcommands."""

    @functools.wraps(fn)
    def wrapper(*args: Any, repo_argument: Path | None, repo: Path | None, **kw: Any) -> Any:
        given = [p for p in (repo_argument, repo) if p is not None]
        if len({p.resolve() for p in given}) > 1:
            shown = " and ".join(str(p) for p in given)
            raise click.UsageError(f"Two different repositories were given ({shown}); name one.")
        click.get_current_context().meta[_GIVEN] = given[0] if given else None
        return fn(*args, **kw)

    wrapped: Any = click.option("--repo", type=_path_type(), help=REPO_HELP)(wrapper)
    wrapped = click.option("--repo-argument", type=_path_type(), hidden=True)(wrapped)
    return wrapped  # type: ignore[no-any-return]
