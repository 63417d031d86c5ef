"""One function per command: what the CLI and tests call.  [shell]"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric.addresses import Kind

if TYPE_CHECKING:  # NOTE: imported where used, so `runs` and `status` never load the YAML side
    from sqlalchemy import Engine

    from fabric.apply import ApplyOptions, ApplyResult
    from fabric.config.loader import LoadResult
    from fabric.plan.plan import Plan
    from fabric.plan.safety import SafetyOptions
    from fabric.running import RunResult
    from fabric.settings import Settings
    from fabric.state.secrets import SecretBox


@dataclass(frozen=True, slots=True)
class ValidateResult:
    load: LoadResult

    @property
    def ok(self) -> bool:
        return self.load.ok

    def counts(self) -> dict[str, int]:
        desired = self.load.desired
        kinds = (Kind.CONNECTION, Kind.PIPELINE, Kind.TRANSFORMATION, Kind.SCHEDULE)
        counts = {f"{k.value}s": 0 for k in kinds}
        counts["dependencies"] = 0
        if desired is not None:
            for tenant in desired.tenants.values():
                for k in kinds:
                    counts[f"{k.value}s"] += tenant.count(k)
                counts["dependencies"] += len(tenant.dependencies)
        return counts


def validate(repo: Path) -> ValidateResult:
    """Load and check a repository; never raises for a bad repository."""
    from fabric.config.loader import load_repository

    return ValidateResult(load_repository(repo))


# ---------------------------------------------------------------------------------------------
# plan / apply


@dataclass(frozen=True, slots=True)
class Workspace:
    """What every command against the control plane needs: where, with which settings."""

    root: Path
    settings: Settings
    environ: Mapping[str, str]

    def engine(self, command: str = "plan") -> Engine:
        from fabric.state.embedded import control_plane_url
        from fabric.state.engine import client_name, make_engine

        url = control_plane_url(self.root, self.settings)
        return make_engine(url, application_name=client_name(command))

    def secret_box(self) -> SecretBox:
        from fabric.state.embedded import fabric_home
        from fabric.state.secrets import load_secret_box

        home = None if self.settings.database_url else fabric_home(self.root, self.settings)
        return load_secret_box(self.settings, home)


def workspace(repo: Path, environ: Mapping[str, str] | None = None) -> Workspace:
    from fabric.settings import load_settings

    env = dict(os.environ if environ is None else environ)
    return Workspace(Path(repo).resolve(), load_settings(env), env)


@dataclass(frozen=True, slots=True)
class PlanResult:
    plan: Plan
    load: LoadResult


def load_valid(repo: Path) -> LoadResult:
    from fabric.config.loader import load_repository
    from fabric.errors import ConfigError

    load = load_repository(repo)
    if load.desired is None:
        raise ConfigError(load.diagnostics)
    return load


def plan(
    repo: Path,
    *,
    tenants: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    safety: SafetyOptions | None = None,
    engine: Engine | None = None,
) -> PlanResult:
    """Diff the repository against the control plane (read-only)."""
    from fabric.planning import make_plan

    ws = workspace(repo, environ)
    load = load_valid(ws.root)
    assert load.desired is not None
    engine = engine or ws.engine("plan")
    box = ws.secret_box()
    from fabric.config.loader import gc_paused

    with engine.connect() as conn, gc_paused():
        result = make_plan(
            conn,
            load.desired,
            repo=str(ws.root),
            box=box,
            environ=ws.environ,
            tenants=tenants,
            safety=safety,
        )
    return PlanResult(result, load)


def read_plan_file(path: Path) -> Plan:
    import json

    from fabric.errors import PlanError
    from fabric.plan.plan import from_document

    try:
        return from_document(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PlanError(f"{path} is not a usable fabric plan file: {exc}") from None


def check_plan_source(plan_: Plan, repo: Path) -> None:
    """Refuse a saved plan made from files other than the repository's current ones."""
    from fabric.errors import PlanError

    load = load_valid(repo)
    assert load.desired is not None
    if load.desired.source_hash != plan_.source_hash:
        raise PlanError(
            f"The plan was made from different files than {repo} holds now (source hash "
            f"{plan_.source_hash[:12]} vs {load.desired.source_hash[:12]}). "
            "Run `fabric plan` again."
        )


def apply(
    plan_: Plan,
    *,
    repo: Path,
    options: ApplyOptions,
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
) -> ApplyResult:
    """Apply a plan in one locked transaction (see fabric/apply.py)."""
    from fabric.apply import apply_plan

    ws = workspace(repo, environ)
    engine = engine or ws.engine("apply")
    needs_box = any(c.target is not None and c.target.secret_refs for c in plan_.changes)
    box = ws.secret_box() if needs_box else None
    from fabric.config.loader import gc_paused

    with gc_paused():
        return apply_plan(engine, plan_, box=box, environ=ws.environ, options=options)


def git_identity(repo: Path) -> tuple[str | None, str | None]:
    """(commit, author) of the checkout's HEAD, or (None, None) outside a git checkout."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "log", "-1", "--format=%H%n%an <%ae>"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (out[0], out[1]) if len(out) >= 2 else (None, None)


def export(
    repo: Path,
    out: Path,
    *,
    tenants: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
) -> list[Path]:
    """Write the applied state of these tenants (all when empty) as a repository under `out`."""
    from fabric.config.export import export_files
    from fabric.config.json_schema import json_schemas, render_schema
    from fabric.errors import FabricError
    from fabric.state.snapshot import read_records, read_tenant_rows

    ws = workspace(repo, environ)
    engine = engine or ws.engine("export")
    with engine.connect() as conn:
        rows = read_tenant_rows(conn, tenants or None)
        missing = sorted(set(tenants) - set(rows))
        if missing:
            raise FabricError(f"No applied tenant named {', '.join(missing)} in the control plane.")
        records = read_records(conn, rows)
    files = export_files(records)
    for name, schema in json_schemas().items():
        files[f"schemas/{name}"] = render_schema(schema)
    root = Path(out).resolve()
    written = []
    for rel, body in sorted(files.items()):
        path = (root / rel).resolve()
        if not path.is_relative_to(root):  # a hand-edited sql_file must not escape `out`
            raise FabricError(f"Refusing to write {rel!r}: it points outside {root}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# run / runs / status / graph


def run(
    repo: Path,
    *,
    tenants: Sequence[str] = (),
    all_tenants: bool = False,
    selectors: Sequence[str] = (),
    exclude: Sequence[str] = (),
    workers: int | None = None,
    trigger: str = "manual",
    full_refresh: bool = False,
    tests_only: bool = False,
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
    on_event: Any = None,
) -> RunResult:
    """Run the selected nodes of what has been applied, recording the run(s)."""
    from fabric.runner.warmup import start_worker_server

    start_worker_server()  # first: workers import dlt/dbt while this process starts up
    from fabric.errors import FabricError
    from fabric.running import RunOptions, run_tenants
    from fabric.state.embedded import fabric_home
    from fabric.state.snapshot import read_tenant_rows

    ws = workspace(repo, environ)
    engine = engine or ws.engine("run")
    if all_tenants:
        with engine.connect() as conn:
            tenants = sorted(read_tenant_rows(conn))
    if not tenants:
        raise FabricError("Name a tenant with --tenant (repeatable) or pass --all-tenants.")
    home = fabric_home(ws.root, ws.settings)
    options = RunOptions(
        selectors=tuple(selectors),
        exclude=tuple(exclude),
        workers=workers,
        trigger=trigger,
        full_refresh=full_refresh,
        tests_only=tests_only,
        control_plane_url=engine.url.render_as_string(hide_password=False),
        workdir=home / "work",
        repo_root=ws.root,
        secret_home=None if ws.settings.database_url else home,
        environ=ws.environ,
    )
    try:
        return run_tenants(engine, list(tenants), options, on_event=on_event)
    except ValueError as exc:  # a selector that matches nothing or cannot be parsed
        raise FabricError(str(exc)) from None


def applied_dag(repo: Path, tenant: str, environ: Mapping[str, str] | None = None):
    """The tenant's applied DAG (and what was read), for `fabric graph` and `fabric status`."""
    from fabric.running import tenant_dag
    from fabric.state.applied import read_applied

    ws = workspace(repo, environ)
    with ws.engine("graph").connect() as conn:
        applied = read_applied(conn, tenant)
    return tenant_dag(applied), applied
