"""`fabric deps`: install a tenant's dbt packages into its work folder.  [shell]

The tenant's generated project lives in `<work>/<tenant>/dbt`; `dbt deps` installs its packages
into `dbt_packages/` there, and every later run of the tenant reuses them (a run does not fetch
anything). A run whose installed packages.yml differs from what the applied state declares
fails at once, asking for `fabric deps` (fabric.runner.dbt_node). dbt is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fabric import settings
from fabric.errors import FabricError
from fabric.runner import dbt_project as dp


def install(
    project_dir: Path, tenant: str, packages: Sequence[Mapping[str, Any]], repo_root: Path
) -> list[str]:
    """Write packages.yml (and a dbt_project.yml if the project has none yet) and run `dbt
    deps`; returns what was installed (one line per package). Raises FabricError naming the
    package that could not be installed, never with a traceback."""
    root = Path(repo_root).resolve()
    for package in packages:
        if package.get("local"):
            target = (root / str(package["local"])).resolve()
            if not target.is_relative_to(root):
                raise FabricError(
                    f"tenant {tenant}: package {dp.describe_package(package)} points outside "
                    "the repository; a local package must be a folder of the repository."
                )
            if not (target / "dbt_project.yml").is_file():
                raise FabricError(
                    f"tenant {tenant}: package {dp.describe_package(package)} is not a dbt "
                    f"project (no {target.relative_to(root).as_posix()}/dbt_project.yml)."
                )
    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / "packages.yml").write_text(dp.packages_yml(tenant, packages, root.as_posix()))
    if not (project_dir / "dbt_project.yml").is_file():
        (project_dir / "dbt_project.yml").write_text(
            dp.project_files({"tenant": tenant})["dbt_project.yml"]
        )
    if not packages:
        return []
    _deps(project_dir, tenant, packages)
    return [dp.describe_package(p) for p in packages]


def _deps(project_dir: Path, tenant: str, packages: Sequence[Mapping[str, Any]]) -> None:
    messages: list[str] = []

    def on_event(msg: Any) -> None:
        if msg.info.level in ("warn", "error") and msg.info.msg:
            messages.append(str(msg.info.msg))

    # The harmless base only (no fabric setting or key), never prompting for git credentials.
    env = {**settings.base_environment(), "DO_NOT_TRACK": "1", "GIT_TERMINAL_PROMPT": "0"}
    with settings.only_environment(env):
        result, messages = _invoke(project_dir, on_event, messages)
    if result is not None and result.success:
        return
    _raise(tenant, packages, result, messages)


def _invoke(project_dir: Path, on_event: Any, messages: list[str]) -> tuple[Any, list[str]]:
    from dbt.cli.main import dbtRunner

    try:
        result = dbtRunner(callbacks=[on_event]).invoke(
            [
                "deps",
                "--project-dir",
                str(project_dir),
                "--profiles-dir",
                str(project_dir),
                "--log-path",
                str(project_dir / "logs"),
                "--log-level",
                "none",
            ]
        )
    except Exception as exc:  # dbt catches its own errors; anything else is still reported
        return None, [*messages, str(exc)]
    return result, messages


def _raise(
    tenant: str, packages: Sequence[Mapping[str, Any]], result: Any, messages: list[str]
) -> None:
    why = "\n".join(
        [*messages, str(result.exception) if result and result.exception else ""]
    ).strip()
    remote = [p for p in packages if not p.get("local")]
    named = [p for p in remote if str(p.get("git") or p.get("package")) in why] or remote
    names = ", ".join(dp.describe_package(p) for p in named) or "its packages"
    first = next((line for line in why.splitlines() if line.strip()), "dbt deps failed")
    raise FabricError(
        f"tenant {tenant}: package {names} could not be installed: {first.strip()}\n"
        "Check the package's URL or name and that this machine can reach it (a package index "
        "or git host), then run `fabric deps` again."
    )
