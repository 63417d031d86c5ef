"""One function per command: what the CLI and tests call.  [shell]"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric.addresses import Address, Kind

if TYPE_CHECKING:  # NOTE: imported where used, so `runs` and `status` never load the YAML side
    from sqlalchemy import Engine

    from fabric.apply import ApplyOptions, ApplyResult
    from fabric.config.loader import LoadResult
    from fabric.domain.runs import SessionLimits
    from fabric.plan.plan import Plan
    from fabric.plan.safety import SafetyOptions
    from fabric.runner.driver import RunResult
    from fabric.runner.local import NodeFunction
    from fabric.runner.probes import ConnectionCheck
    from fabric.runner.reach import ReachScope
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
            snapshots = sum(t.count(Kind.SNAPSHOT) for t in desired.tenants.values())
            if snapshots:  # only when there are some: summaries without them read as before
                counts["snapshots"] = snapshots
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
        from fabric.state.engine import client_name, make_control_plane_engine

        url = control_plane_url(self.root, self.settings)
        return make_control_plane_engine(url, application_name=client_name(command))

    def secret_box(self) -> SecretBox:
        from fabric.state.embedded import fabric_home
        from fabric.state.secrets import load_secret_box

        home = None if self.settings.database_url else fabric_home(self.root, self.settings)
        return load_secret_box(self.settings, home)


def workspace(repo: Path, environ: Mapping[str, str] | None = None) -> Workspace:
    from fabric.settings import load_settings, process_environ

    env = process_environ() if environ is None else dict(environ)
    return Workspace(Path(repo).resolve(), load_settings(env), env)


def session_limits(settings: Settings) -> SessionLimits:
    """The timeouts of warehouse and source sessions, from FABRIC_WAREHOUSE_* (settings)."""
    from fabric.domain.runs import SessionLimits

    return SessionLimits(
        statement_timeout=settings.warehouse_statement_timeout,
        lock_timeout=settings.warehouse_lock_timeout,
    )


@dataclass(frozen=True, slots=True)
class PlanResult:
    plan: Plan
    load: LoadResult
    approvers: Mapping[str, tuple[str, ...]] | None = None
    """Per touched tenant, who may approve its changes (owners, admins, project admins)."""
    refusals: tuple[Any, ...] | None = None
    """With an author given to plan: the changes they may not make (None: not checked)."""
    locks: tuple[Any, ...] = ()
    """Pull-request locks (state/pr_locks.PrLock) on the tenants the plan changes."""


def load_valid(repo: Path, *, tenants: frozenset[str] | None = None) -> LoadResult:
    from fabric.config.loader import load_repository
    from fabric.errors import ConfigError

    load = load_repository(repo, tenants=tenants)
    if load.desired is None:
        raise ConfigError(load.diagnostics)
    return load


def plan(
    repo: Path,
    *,
    tenants: Sequence[str] = (),
    changed_since: str | None = None,
    environ: Mapping[str, str] | None = None,
    safety: SafetyOptions | None = None,
    engine: Engine | None = None,
    author: str | None = None,
    load: LoadResult | None = None,
) -> PlanResult:
    """Diff the repository against the control plane (read-only).

    Also says who may approve each touched tenant's changes and, with `author`, which changes
    that author may not make (what `fabric apply` would refuse).

    With `changed_since` (a git ref), only the tenants whose files changed since it are loaded
    and planned, or every tenant when a shared file changed (fabric/config/changes.py).
    `load` is the repository loaded already (valid; `fabric watch` keeps one up to date).
    """
    import dataclasses

    from fabric.planning import make_plan

    ws = workspace(repo, environ)
    notes: list[str] = []
    only: frozenset[str] | None = None
    if changed_since is not None:
        from fabric.config.changes import changed_tenants
        from fabric.config.git_changes import changed_paths

        changed = changed_tenants(changed_paths(ws.root, changed_since))
        if changed.every:
            shown = ", ".join(changed.shared[:3]) + (", ..." if len(changed.shared) > 3 else "")
            notes.append(f"shared files changed since {changed_since} ({shown}): every tenant")
        else:
            only = changed.tenants & set(tenants) if tenants else changed.tenants
            tenants = sorted(only)
            listed = ", ".join(tenants) or "none"
            notes.append(
                f"tenants changed since {changed_since}: {listed}; checks across tenants "
                "(schema ownership) covered these only, `fabric apply PLANFILE` checks all"
            )
    if load is None or changed_since is not None:
        load = load_valid(ws.root, tenants=only)
    elif load.desired is None:
        from fabric.errors import ConfigError

        raise ConfigError(load.diagnostics)
    assert load.desired is not None
    if only is not None and not only:
        import datetime as dt
        from types import MappingProxyType

        from fabric.plan.plan import Plan

        empty = Plan(
            source_hash=load.source_hash_for(()),
            repo=str(ws.root),
            tenants=(),
            read_set=MappingProxyType({}),
            changes=(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            notes=tuple(notes),
        )
        return PlanResult(empty, load)
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
        result = dataclasses.replace(
            result,
            source_hash=load.source_hash_for(result.tenants),
            notes=tuple(sorted({*result.notes, *notes})),
        )
        approvers, refusals = _ownership_view(conn, result, load, author)
        from fabric.plan.diff import tenants_of
        from fabric.state.pr_locks import read_locks

        held = tuple(read_locks(conn, tenants_of(result.changes))) if result.changes else ()
    return PlanResult(result, load, approvers, refusals, held)


def lock_for(
    repo: Path,
    plan_: Plan,
    pr: str,
    *,
    author: str | None,
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
) -> tuple[list[Any], list[Any]]:
    """Pull request `pr` claims the tenants `plan_` changes until its plan is applied:
    (locks it holds now, locks other PRs hold). All or nothing: with any tenant held by
    another PR, nothing is claimed. Migrates the shared schema first if needed."""
    from fabric.plan.diff import tenants_of
    from fabric.state.locks import acquire_migration_lock
    from fabric.state.migrate import shared_is_current, upgrade_shared
    from fabric.state.pr_locks import claim

    ws = workspace(repo, environ)
    engine = engine or ws.engine("plan")
    with engine.begin() as conn:
        if not shared_is_current(conn):
            acquire_migration_lock(conn)
            upgrade_shared(conn)
        return claim(conn, pr, author, plan_.plan_hash, tenants_of(plan_.changes))


def check_pull_request(pr: str) -> str:
    """`pr` if it can name a pull request in a lock; ValueError saying why not."""
    from fabric.state.pr_locks import check_pr

    return check_pr(pr)


def pr_locks(repo: Path, environ: Mapping[str, str] | None = None) -> list[Any]:
    """Every pull-request lock held now, by tenant."""
    from fabric.state.pr_locks import read_locks

    with workspace(repo, environ).engine("locks").connect() as conn:
        return read_locks(conn)


def unlock(
    repo: Path,
    *,
    author: str | None,
    pr: str | None = None,
    tenants: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Any]:
    """Release the locks of `pr` (and/or on `tenants`). Only the locks' author or a project
    admin (the control plane's recorded fabric.yaml governs, see plan/authorize.governing)."""
    from fabric.errors import UnlockRefusedError
    from fabric.plan.authorize import author_email, governing
    from fabric.state.history import read_project, shared_tables_exist
    from fabric.state.pr_locks import read_locks, release

    ws = workspace(repo, environ)
    email = author_email(author)
    with ws.engine("locks").begin() as conn:
        wanted = read_locks(conn, tenants)
        wanted = [lock for lock in wanted if pr is None or lock.pr == pr]
        if not wanted:
            return []
        recorded = read_project(conn) if shared_tables_exist(conn) else None
        repository = repository_project(ws.root) if (ws.root / "fabric.yaml").exists() else None
        governance, _ = governing(recorded, repository)
        refused = [
            lock
            for lock in wanted
            if not (
                (email is not None and author_email(lock.author) == email)
                or governance.is_admin(email)
            )
        ]
        if refused:
            raise UnlockRefusedError(refused, author)
        return release(conn, pr=pr, tenants=[lock.tenant for lock in wanted])


def _project_json(project: Any) -> dict[str, Any]:
    return project.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _ownership_view(
    conn: Any, plan_: Plan, load: LoadResult, author: str | None
) -> tuple[dict[str, tuple[str, ...]], tuple[Any, ...] | None]:
    """Who may approve each touched tenant, and (with an author) what apply would refuse."""
    from fabric.apply import ApplyOptions, authorization
    from fabric.plan.authorize import approvers, governing, tenant_members
    from fabric.plan.diff import tenants_of
    from fabric.state.history import read_members, read_project, shared_tables_exist

    assert load.desired is not None
    project = _project_json(load.desired.project)
    touched = tenants_of(plan_.changes)
    exists = shared_tables_exist(conn)
    stored = read_members(conn, touched) if exists and touched else {}
    governance, _ = governing(read_project(conn) if exists else None, project)
    members = tenant_members(plan_.changes, stored)
    shown = {slug: approvers(members[slug], governance) for slug in touched}
    refusals = None
    if author is not None:
        options = ApplyOptions(author=author, project=project)
        refusals = authorization(conn, plan_.changes, touched, options)
    return shown, refusals


def plan_file_text(
    plan_: Plan, repo: Path, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    """(document, text) of a plan to save for `fabric apply PLANFILE`, signed.

    The signature is an HMAC with a key derived from the secret keys (SecretBox.sign): a
    reader of the plan file cannot make one for an edited plan.
    """
    import json

    from fabric.plan.plan import SIGNATURE, signing_payload, to_document

    doc = to_document(plan_)
    doc[SIGNATURE] = workspace(repo, environ).secret_box().sign(signing_payload(doc))
    return doc, json.dumps(doc, indent=2) + "\n"


def read_plan_file(
    path: Path, repo: Path | None = None, environ: Mapping[str, str] | None = None
) -> Plan:
    """The plan saved in `path`, once its signature and every target record are checked.

    `repo` defaults to the repository the plan was made from; its secret keys verify the
    signature. Every target record is validated again with the rules of `validate`
    (names, identifiers, secret references), so an edited plan is refused even with a valid
    signature made elsewhere.

    Raises:
        PlanError: not a plan file, no or a wrong signature, or a record fails validation.
    """
    import json

    from fabric.config.sections import validate_records
    from fabric.errors import PlanError
    from fabric.plan.plan import SIGNATURE, from_document, signing_payload

    try:
        doc = json.loads(Path(path).read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a fabric plan file")
        signature = doc.get(SIGNATURE)
        box = workspace(Path(repo or doc["repo"]), environ).secret_box()
        if not isinstance(signature, str) or not box.verify(signing_payload(doc), signature):
            why = "has no signature" if not signature else "has a signature that does not match"
            raise PlanError(
                f"{path} {why}: it was not saved by `fabric plan --out` with this "
                "installation's secret keys, or it was edited since. Make the plan again "
                "with `fabric plan --out` and apply that file."
            )
        plan_ = from_document(doc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PlanError(f"{path} is not a usable fabric plan file: {exc}") from None
    records = [(c.address, dict(c.target.spec)) for c in plan_.changes if c.target is not None]
    problems = validate_records(records, str(path))
    if problems:
        listed = "; ".join(f"{d.address or ''}: {d.detail}" for d in problems[:5])
        raise PlanError(
            f"{path} holds records that fail validation, so it was edited: {listed}. Make the "
            "plan again with `fabric plan --out`."
        )
    return plan_


def check_plan_source(plan_: Plan, repo: Path) -> None:
    """Refuse a saved plan made from files other than the repository's current ones."""
    from fabric.errors import PlanError

    load = load_valid(repo)
    assert load.desired is not None
    current = load.source_hash_for(plan_.tenants)
    if current != plan_.source_hash:
        raise PlanError(
            f"The plan was made from different files than {repo} holds now (source hash "
            f"{plan_.source_hash[:12]} vs {current[:12]}). "
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
    import dataclasses

    from fabric.apply import apply_plan
    from fabric.plan.warehouse import WAREHOUSE_KINDS

    ws = workspace(repo, environ)
    if options.project is None:  # the policy (ownership, admins) is read from fabric.yaml
        options = dataclasses.replace(options, project=repository_project(ws.root))
    engine = engine or ws.engine("apply")
    managed = any(c.address.kind in WAREHOUSE_KINDS for c in plan_.changes)
    needs_box = managed or any(c.target is not None and c.target.secret_refs for c in plan_.changes)
    box = ws.secret_box() if needs_box else None
    if managed and not options.warehouses:
        # Runs read the managed warehouses (host, database, role prefix) from the recorded
        # project, so an apply that changes roles always records fabric.yaml.
        project = load_valid(ws.root, tenants=frozenset()).desired.project  # type: ignore[union-attr]
        warehouses = {n: w for n, w in project.warehouses.items() if w.manage_roles}
        recorded = options.project or project.model_dump(
            mode="json", by_alias=True, exclude_unset=True
        )
        options = dataclasses.replace(options, warehouses=warehouses, project=recorded)
    from fabric.config.loader import gc_paused
    from fabric.errors import LockedByPullRequestError
    from fabric.plan.diff import tenants_of
    from fabric.state.pr_locks import read_locks, release

    with engine.connect() as conn:
        held = [
            lock
            for lock in read_locks(conn, tenants_of(plan_.changes))
            if lock.pr != plan_.lock_for
        ]
    if held:
        raise LockedByPullRequestError(held, "apply")
    with gc_paused():
        result = apply_plan(engine, plan_, box=box, environ=ws.environ, options=options)
    if plan_.lock_for is not None:  # the holder's plan is applied: its locks go
        with engine.begin() as conn:
            release(conn, pr=plan_.lock_for)
    return _with_reach_warnings(result, plan_, ws, engine, box)


def _with_reach_warnings(
    result: ApplyResult, plan_: Plan, ws: Workspace, engine: Engine, box: SecretBox | None
) -> ApplyResult:
    """`result` with a warning per applied PostgreSQL connection whose login reaches beyond
    its tenant (fabric.runner.reach). Only connections created or changed in who logs in
    where are probed (at most REACH_MAX_PROBES), one query each, side by side, under one
    deadline, after the commit: apply's transaction and locks never wait on a tenant's
    server, and a large first apply costs one read of the schemas plus a few seconds."""
    import dataclasses

    from fabric.runner.probes import check_reach
    from fabric.runner.reach import connections_to_probe
    from fabric.state.applied import read_applied

    wanted = connections_to_probe(plan_.changes) if result.changed else {}
    pairs = [(tenant, name) for tenant, names in wanted.items() for name in names]
    if not pairs:
        return result
    probed, skipped = pairs[:REACH_MAX_PROBES], pairs[REACH_MAX_PROBES:]
    with engine.connect() as conn:
        scopes = _reach_scopes(conn, sorted({t for t, _ in probed}))
        applied = {t: read_applied(conn, t) for t in scopes}
    checks = check_reach(
        [(applied[t], n, scopes[t]) for t, n in probed if n in applied[t].connections],
        box=box,
        repo_root=ws.root,
        timeout=REACH_TIMEOUT,
        environ=ws.environ,
        session=session_limits(ws.settings),
    )
    warnings: list[str] = []
    for tenant, check in checks:
        if check.warning:
            warnings.append(f"{tenant}: {check.warning}")
        elif not check.ok:
            warnings.append(
                f"{tenant}: connection {check.name} could not be checked for what its login "
                f"reaches: {check.detail}"
            )
    if skipped:
        tenants = sorted({t for t, _ in skipped})
        warnings.append(
            f"{len(skipped)} more changed connection(s) were not checked for what their logins "
            f"reach (an apply checks {REACH_MAX_PROBES}): run `fabric connections test --tenant "
            f"NAME` for {', '.join(tenants[:5])}{' ...' if len(tenants) > 5 else ''}"
        )
    return dataclasses.replace(result, warnings=tuple(warnings))


REACH_TIMEOUT = 5.0
"""Seconds apply waits for the changed connections' servers to say what their logins reach."""
REACH_MAX_PROBES = 16
"""Changed connections an apply probes; the others are named in one note."""


def repository_project(repo: Path) -> dict[str, Any]:
    """fabric.yaml as JSON (the fields it sets), read without loading any tenant."""
    load = load_valid(repo, tenants=frozenset())
    assert load.desired is not None
    return _project_json(load.desired.project)


def refusals(
    plan_: Plan,
    *,
    repo: Path,
    author: str | None,
    project: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
) -> tuple[Any, ...]:
    """The plan's changes `author` may not make, as apply would judge them now (read-only).

    Apply checks again inside its transaction; this lets the CLI refuse before asking.
    """
    from fabric.apply import ApplyOptions, authorization
    from fabric.plan.diff import tenants_of

    ws = workspace(repo, environ)
    options = ApplyOptions(author=author, project=project or repository_project(ws.root))
    own = engine is None
    engine = engine or ws.engine("apply")
    try:
        with engine.connect() as conn:
            return authorization(conn, plan_.changes, tenants_of(plan_.changes), options)
    finally:
        if own:
            engine.dispose()


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
    from fabric.state.history import read_project
    from fabric.state.snapshot import read_records, read_tenant_rows

    ws = workspace(repo, environ)
    engine = engine or ws.engine("export")
    with engine.connect() as conn:
        rows = read_tenant_rows(conn, tenants or None)
        missing = sorted(set(tenants) - set(rows))
        if missing:
            raise FabricError(f"No applied tenant named {', '.join(missing)} in the control plane.")
        spelled: dict[Any, Any] = {}
        records = read_records(conn, rows, release=True, written=spelled)
        project = read_project(conn)
    files = export_files(records, project=project, written=spelled)
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
    execute: NodeFunction | None = None,
    executor: str = "local",
    wait: bool = True,
    if_active: str = "refuse",
    queue: str | None = None,
    on_node: Any = None,
) -> RunResult:
    """Run the selected nodes of what has been applied, recording the run(s).

    `execute` replaces what a worker runs for a node (tests); fabric's dlt/dbt by default.
    `executor="queue"` creates the runs and defers their root nodes to the queue, where
    `fabric worker` processes take them; with `wait` it follows the runs until they end
    (`on_node` sees each finished node), else returns at once with the runs' ids and status
    (running, or queued behind an active run when `if_active` is "wait").
    """
    if executor == "queue":
        return _run_queued(
            repo,
            tenants=tenants,
            all_tenants=all_tenants,
            selectors=selectors,
            exclude=exclude,
            trigger=trigger,
            full_refresh=full_refresh,
            tests_only=tests_only,
            environ=environ,
            engine=engine,
            wait=wait,
            if_active=if_active,
            queue=queue,
            on_node=on_node,
        )
    from fabric.runner.warmup import start_worker_server

    start_worker_server(environ)  # first: workers import dlt/dbt while this process starts up
    from fabric.errors import FabricError
    from fabric.runner.driver import RunOptions, run_tenants
    from fabric.state.embedded import ignored_home

    ws = workspace(repo, environ)
    engine = engine or ws.engine("run")
    tenants = _tenants_to_run(engine, tenants, all_tenants)
    home = ignored_home(ws.root, ws.settings)
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
        environ=ws.environ,
        session=session_limits(ws.settings),
        secret_box=ws.secret_box,
        execute=execute,
        if_active=if_active,
    )
    try:
        return run_tenants(engine, list(tenants), options, on_event=on_event)
    except ValueError as exc:  # a selector that matches nothing or cannot be parsed
        raise FabricError(str(exc)) from None


def deps(
    repo: Path, *, tenants: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """`fabric deps`: install each tenant's dbt packages (fabric.yaml's `dbt.packages`, then
    the tenant's `packages`) into its work folder, where its runs find them; tenant -> the
    packages installed. The repository must validate; every tenant when none is named."""
    from fabric.errors import FabricError
    from fabric.runner.dbt_deps import install
    from fabric.runner.dbt_project import PROJECT_FOLDER
    from fabric.state.embedded import ignored_home

    ws = workspace(repo, environ)
    load = load_valid(ws.root)
    desired = load.desired
    assert desired is not None
    unknown = sorted(set(tenants) - set(desired.tenants))
    if unknown:
        raise FabricError(f"no tenant {', '.join(unknown)} in {ws.root}.")
    home = ignored_home(ws.root, ws.settings)
    shared = [p.model_dump(mode="json", exclude_none=True) for p in desired.project.dbt.packages]
    installed: dict[str, list[str]] = {}
    for slug in sorted(tenants or desired.tenants):
        own = [
            p.model_dump(mode="json", exclude_none=True)
            for p in desired.tenants[slug].spec.packages
        ]
        folder = home / "work" / slug / PROJECT_FOLDER
        installed[slug] = install(folder, slug, [*shared, *own], ws.root)
    return installed


def _tenants_to_run(engine: Engine, tenants: Sequence[str], all_tenants: bool) -> list[str]:
    """The named tenants, or every applied one with --all-tenants; none is an error."""
    from fabric.errors import FabricError
    from fabric.state.snapshot import read_tenant_rows

    if all_tenants:
        with engine.connect() as conn:
            tenants = sorted(read_tenant_rows(conn))
    if not tenants:
        raise FabricError("Name a tenant with --tenant (repeatable) or pass --all-tenants.")
    return list(tenants)


def _run_queued(
    repo: Path,
    *,
    tenants: Sequence[str],
    all_tenants: bool,
    selectors: Sequence[str],
    exclude: Sequence[str],
    trigger: str,
    full_refresh: bool,
    tests_only: bool,
    environ: Mapping[str, str] | None,
    engine: Engine | None,
    wait: bool,
    if_active: str,
    queue: str | None,
    on_node: Any,
) -> RunResult:
    from fabric.domain.runs import RunStatus
    from fabric.errors import FabricError
    from fabric.runner.driver import RunOptions, RunResult, follow_runs, queue_tenants

    ws = workspace(repo, environ)
    engine = engine or ws.engine("run")
    tenants = _tenants_to_run(engine, tenants, all_tenants)
    options = RunOptions(
        selectors=tuple(selectors),
        exclude=tuple(exclude),
        trigger=trigger,
        full_refresh=full_refresh,
        tests_only=tests_only,
    )
    try:
        created = queue_tenants(engine, list(tenants), options, if_active=if_active, queue=queue)
    except ValueError as exc:
        raise FabricError(str(exc)) from None
    runs = {slug: run_id for slug, (run_id, _) in created.items()}
    if wait:
        return follow_runs(engine, runs, on_node=on_node)
    return RunResult(runs=runs, status={s: RunStatus(st) for s, (_, st) in created.items()})


def cancel_run(
    repo: Path, tenant: str, run_id: int, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Cancel a queue run: queued nodes dropped, running ones stopped; returns those nodes."""
    from fabric.state import queue
    from fabric.state.applied import read_applied

    with workspace(repo, environ).engine("runs").connect() as conn:
        return queue.cancel_run(conn, read_applied(conn, tenant).tenant, run_id)


def retry_run(
    repo: Path, tenant: str, run_id: int, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Run a finished queue run's failed and skipped nodes again; returns them."""
    from fabric.state import queue
    from fabric.state.applied import read_applied

    with workspace(repo, environ).engine("runs").connect() as conn:
        return queue.retry_run(conn, read_applied(conn, tenant).tenant, run_id)


def list_workers(repo: Path, environ: Mapping[str, str] | None = None) -> list[Any]:
    """The queue's workers, their last heartbeat and the jobs they run now."""
    from fabric.state import queue

    with workspace(repo, environ).engine("workers").connect() as conn:
        return queue.list_workers(conn)


def worker(
    repo: Path,
    *,
    concurrency: int = 1,
    queues: Sequence[str] = (),
    lost_after: float = 30.0,
    heartbeat: float = 5.0,
    reap_every: float = 5.0,
    log_format: str = "text",
    name: str = "",
    environ: Mapping[str, str] | None = None,
    execute: NodeFunction | None = None,
    execute_batch: Any = None,
) -> None:
    """Run a queue worker until SIGTERM/SIGINT (`fabric worker`)."""
    from fabric.runner.queue_worker import WorkerOptions, run_worker
    from fabric.runner.warmup import start_worker_server

    start_worker_server(environ)  # first: node processes import dlt/dbt while this starts
    from fabric.state.embedded import fabric_home

    ws = workspace(repo, environ)
    home = fabric_home(ws.root, ws.settings)
    options = WorkerOptions(
        concurrency=concurrency,
        queues=tuple(queues),
        name=name,
        lost_after=lost_after,
        heartbeat=heartbeat,
        reap_every=reap_every,
        log_format=log_format,
        workdir=home / "work",
        repo_root=ws.root,
        environ=ws.environ,
        secret_box=ws.secret_box,
        execute=execute,
        execute_batch=execute_batch,
    )
    run_worker(ws.engine("worker"), options)


def applied_dag(repo: Path, tenant: str, environ: Mapping[str, str] | None = None):
    """The tenant's applied DAG (and what was read), for `fabric graph` and `fabric status`."""
    from fabric.runner.driver import tenant_dag
    from fabric.state.applied import read_applied

    ws = workspace(repo, environ)
    with ws.engine("graph").connect() as conn:
        applied = read_applied(conn, tenant)
    return tenant_dag(applied), applied


# ---------------------------------------------------------------------------------------------
# compile / test (what has been applied, never the YAML on disk)


def compile_transformation(
    repo: Path,
    address: str | Address,
    environ: Mapping[str, str] | None = None,
    *,
    engine: Engine | None = None,
) -> str:
    """The SQL dbt compiles an applied transformation to, refs and sources resolved.

    `address` is `tenant.transformation.name`. dbt connects to the transformation's warehouse
    (an incremental model's `is_incremental()` looks at the existing table), with the
    credentials decrypted in this process and handed to dbt through the environment only.
    """
    from fabric.errors import FabricError
    from fabric.runner.dbt_node import compile_node
    from fabric.runner.driver import RunOptions, node_spec
    from fabric.state.applied import read_applied
    from fabric.state.embedded import ignored_home

    target = _transformation_address(address)
    ws = workspace(repo, environ)
    engine = engine or ws.engine("compile")
    with engine.connect() as conn:
        applied = read_applied(conn, target.tenant)
    if target not in applied.nodes:
        known = sorted(a.name for a in applied.nodes if a.kind is Kind.TRANSFORMATION)
        hint = f" Applied transformations: {', '.join(known)}." if known else ""
        raise FabricError(f"{target} is not an applied transformation.{hint}")
    home = ignored_home(ws.root, ws.settings)
    options = RunOptions(
        workdir=home / "work",
        repo_root=ws.root,
        environ=ws.environ,
        session=session_limits(ws.settings),
    )
    return compile_node(node_spec(applied, target, options, ws.secret_box))


def run_tests(
    repo: Path,
    *,
    tenants: Sequence[str] = (),
    all_tenants: bool = False,
    selectors: Sequence[str] = (),
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
    on_event: Any = None,
) -> RunResult:
    """Run only the tests of the selected transformations (`fabric test`), recorded as a run.

    The normal runner path with `tests_only`: the selection keeps transformations only, and
    each node runs `dbt test` on its own model's tests. Reads what has been applied, never
    the YAML on disk, like `compile_transformation`.
    """
    return run(
        repo,
        tenants=tenants,
        all_tenants=all_tenants,
        selectors=selectors,
        workers=workers,
        tests_only=True,
        environ=environ,
        engine=engine,
        on_event=on_event,
    )


def _transformation_address(address: str | Address) -> Address:
    from fabric.errors import FabricError

    if isinstance(address, Address):
        target = address
    else:
        try:
            target = Address.parse(address)
        except ValueError:
            target = None
    if target is None or target.kind is not Kind.TRANSFORMATION:
        raise FabricError(
            f"{str(address)!r} is not a transformation's address; expected "
            "TENANT.transformation.NAME, e.g. acme.transformation.customer_totals"
        )
    return target


# ---------------------------------------------------------------------------------------------
# connections test


def test_connections(
    repo: Path,
    tenant: str,
    names: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    timeout: float = 10.0,
    engine: Engine | None = None,
) -> list[ConnectionCheck]:
    """Test the tenant's applied connections (all of them, or `names`), by name.

    Raises:
        TenantNotAppliedError: the tenant is not in the control plane.
        UnknownConnectionError: a name the tenant has not applied.
        SecretKeyError: a connection has secrets and no keys are configured.
    """
    from fabric.config.discovery import find_repository_root
    from fabric.runner.probes import check_connections, selected_connections
    from fabric.state.applied import read_applied
    from fabric.state.secrets import list_secrets

    ws = workspace(find_repository_root(Path(repo)) or Path(repo), environ)
    own_engine = engine is None
    engine = engine or ws.engine("connections test")
    try:
        with engine.connect() as conn:
            applied = read_applied(conn, tenant)
            stored = {name for name, _ in list_secrets(conn, applied.tenant.schema_name)}
            managed = _managed_connections(conn, applied, ws)
            chosen = selected_connections(applied, names)
            reach = _reach_scope(conn, tenant) if any(_is_postgres(c) for c in chosen) else None
    finally:
        if own_engine:
            engine.dispose()
    needs_box = any(entry.get("ct") is not None for c in chosen for entry in c.secrets.values())
    return check_connections(
        applied,
        names,
        managed=managed,
        box=ws.secret_box() if needs_box else None,
        repo_root=ws.root,
        timeout=timeout,
        environ=ws.environ,
        stored_secrets=stored,
        session=session_limits(ws.settings),
        reach=reach,
    )


def _managed_connections(conn: Any, applied: Any, ws: Workspace) -> dict[str, Any]:
    """The tenant's connections to managed warehouses, resolved to its own role."""
    from fabric.runner.credentials import managed_connection
    from fabric.runner.driver import managed_login

    names = [n for n, c in applied.connections.items() if c.spec.get("warehouse")]
    if not names:
        return {}
    login = managed_login(conn, applied.tenant, ws.secret_box)
    out = {}
    for name in names:
        stored = applied.connections[name]
        wh = str(stored.spec["warehouse"])
        if login is not None and wh in login.warehouses:
            role = f"{login.role_prefix[wh]}{applied.tenant.slug}_loader"
            out[name] = managed_connection(
                stored, login.warehouses[wh], role, login.password, ws.environ
            )
    return out


def _is_postgres(stored: Any) -> bool:
    return stored.spec.get("type") == "postgres"


def _reach_scope(conn: Any, tenant: str) -> ReachScope:
    """What tenant's logins are checked against (see _reach_scopes)."""
    return _reach_scopes(conn, [tenant])[tenant]


def _reach_scopes(conn: Any, tenants: Sequence[str]) -> dict[str, ReachScope]:
    """Per tenant, what its logins are checked against: every other applied tenant's schemas
    and the control plane's database (fabric.runner.reach); one read for all of them."""
    from fabric.runner.reach import ReachScope
    from fabric.state.engine import server_identity
    from fabric.state.snapshot import read_shared_with, read_tenant_rows, read_written_schemas

    written = read_written_schemas(conn, read_tenant_rows(conn))
    shared_with = read_shared_with(conn)
    database, started = server_identity(conn)
    scopes = {}
    for tenant in tenants:
        others = set().union(*(s for slug, s in written.items() if slug != tenant))
        others -= shared_with.get(tenant, set())  # read-only shares are meant to be readable
        scopes[tenant] = ReachScope(
            other_schemas=tuple(sorted(others)),
            control_database=database,
            control_started=started,
        )
    return scopes


# NOTE: the name is the command's (`fabric connections test`); keep pytest from collecting it.
test_connections.__test__ = False  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Read-only views and small actions for the CLI: cli/ reaches the database only through these.


def list_runs(
    repo: Path,
    *,
    tenants: Sequence[str] = (),
    limit: int = 20,
    environ: Mapping[str, str] | None = None,
) -> list[Any]:
    """The most recent runs of these tenants (all applied when empty), newest first."""
    from fabric.state.runs import list_runs as read_runs
    from fabric.state.snapshot import read_tenant_rows

    with workspace(repo, environ).engine("runs").connect() as conn:
        rows = read_tenant_rows(conn, tenants or None)
        found = [r for slug in sorted(rows) for r in read_runs(conn, rows[slug], limit=limit)]
    found.sort(key=lambda r: (r.started_at is not None, r.started_at, r.tenant), reverse=True)
    return found[:limit]


def read_run(repo: Path, tenant: str, run_id: int, environ: Mapping[str, str] | None = None) -> Any:
    """One run of `tenant` with its node runs, or None."""
    from fabric.state.applied import read_applied
    from fabric.state.runs import read_run as read_one

    with workspace(repo, environ).engine("runs").connect() as conn:
        return read_one(conn, read_applied(conn, tenant).tenant, run_id)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A node's last run (None: never run) and its next scheduled fire time, for `status`."""

    node: str
    last: Any
    next_fire: tuple[Any, str] | None


def tenant_status(
    repo: Path, tenant: str, *, now: Any = None, environ: Mapping[str, str] | None = None
) -> list[NodeStatus]:
    """Each applied node of `tenant` in DAG order, with its last run and next fire time."""
    import datetime as dt

    from fabric.scheduling import next_fire_times
    from fabric.state.runs import last_node_runs

    dag, applied = applied_dag(repo, tenant, environ)
    with workspace(repo, environ).engine("status").connect() as conn:
        last = last_node_runs(conn, applied.tenant)
    upcoming = next_fire_times(dag, applied.schedules, now or dt.datetime.now(dt.UTC))
    return [NodeStatus(str(n), last.get(str(n)), upcoming.get(n)) for n in dag.order()]


def schedule_status(
    repo: Path, tenant: str, *, now: Any = None, environ: Mapping[str, str] | None = None
) -> list[Any]:
    """Each applied schedule of `tenant` with its last fire and next fires (ScheduleOutlook).

    Next fires start from the scheduler's stored `next_fire_at` (a time still due shows first).
    """
    import datetime as dt

    from fabric.scheduling import schedule_outlook
    from fabric.state.applied import read_applied
    from fabric.state.schedules import read_clock

    with workspace(repo, environ).engine("status").connect() as conn:
        applied = read_applied(conn, tenant)
        clock = {e.name: e for e in read_clock(conn, applied.tenant)}
    now = now or dt.datetime.now(dt.UTC)
    out = []
    for name, spec in sorted(applied.schedules.items()):
        entry = clock.get(name)
        out.append(
            schedule_outlook(
                name,
                spec,
                now=now,
                next_fire_at=entry.next_fire_at if entry else None,
                last_fire_at=entry.last_fire_at if entry else None,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# source freshness


def freshness(
    repo: Path,
    tenant: str,
    *,
    now: Any = None,
    environ: Mapping[str, str] | None = None,
) -> list[Any]:
    """The freshness (fabric.domain.freshness.TableFreshness) of every table the tenant's
    applied pipelines load, read through the tenant's own warehouse logins; the result is
    stored for `fabric status`. `now` is injectable (default: the clock)."""
    import datetime as dt

    from fabric.runner.driver import managed_login
    from fabric.runner.freshness import check_tables, loaded_tables, resolve_destination
    from fabric.state.applied import read_applied
    from fabric.state.freshness import write_freshness

    ws = workspace(repo, environ)
    engine = ws.engine("freshness")
    opened: list[Any] = []

    def box() -> Any:
        if not opened:
            opened.append(ws.secret_box())
        return opened[0]

    try:
        with engine.connect() as conn:
            applied = read_applied(conn, tenant)
            tables = loaded_tables(applied)
            managed = any(c.spec.get("warehouse") for c in applied.connections.values())
            login = managed_login(conn, applied.tenant, box) if managed else None
        moment = now or dt.datetime.now(dt.UTC)
        results = []
        limits = session_limits(ws.settings)
        for destination in sorted({t.destination for t in tables}):
            mine = [t for t in tables if t.destination == destination]
            try:
                connection: Any = resolve_destination(applied, destination, ws.environ, box, login)
            except Exception as exc:  # a missing secret or variable: every table says why
                connection = exc
            results += check_tables(mine, connection, now=moment, limits=limits)
        with engine.begin() as conn:
            write_freshness(conn, applied.tenant, results)
    finally:
        engine.dispose()
    return results


def docs(
    repo: Path,
    tenant: str,
    *,
    out: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Write dbt's static docs site of the tenant's applied project to `out/index.html`
    (default: `.fabric/docs/<tenant>/`): models with their descriptions and columns,
    snapshots, and the pipelines that feed them as dbt sources (loader dlt). The catalog is
    read through the tenant's own warehouse login. Returns the file written."""
    from fabric.errors import FabricError
    from fabric.runner.dbt_node import generate_docs
    from fabric.runner.driver import RunOptions, managed_login, node_spec
    from fabric.state.applied import read_applied
    from fabric.state.embedded import ignored_home

    ws = workspace(repo, environ)
    engine = ws.engine("docs")
    try:
        with engine.connect() as conn:
            applied = read_applied(conn, tenant)
            managed = any(c.spec.get("warehouse") for c in applied.connections.values())
            login = managed_login(conn, applied.tenant, ws.secret_box) if managed else None
    finally:
        engine.dispose()
    nodes = sorted(a for a in applied.nodes if a.kind in (Kind.TRANSFORMATION, Kind.SNAPSHOT))
    if not nodes:
        raise FabricError(
            f"tenant {tenant} has no applied transformations or snapshots to document"
        )
    home = ignored_home(ws.root, ws.settings)
    options = RunOptions(
        workdir=home / "work",
        repo_root=ws.root,
        environ=ws.environ,
        session=session_limits(ws.settings),
    )
    spec = node_spec(applied, nodes[0], options, ws.secret_box, login)
    return generate_docs(spec, Path(out) if out is not None else home / "docs" / tenant)


def freshness_status(
    repo: Path, tenant: str, environ: Mapping[str, str] | None = None
) -> list[Any]:
    """The last stored freshness check of the tenant's tables (for `fabric status`)."""
    from fabric.state.applied import read_applied
    from fabric.state.freshness import read_freshness

    with workspace(repo, environ).engine("status").connect() as conn:
        return read_freshness(conn, read_applied(conn, tenant).tenant)


def scheduler(
    repo: Path,
    *,
    stop: Any,
    log: Any,
    once: bool = False,
    interval: float = 5.0,
    max_runs: int = 2,
    workers: int | None = None,
    catchup_cap: int = 10,
    dispatch: Any = None,
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
    execute: NodeFunction | None = None,
    clock: Any = None,
    executor: str = "local",
    if_active: str = "refuse",
    queue: str | None = None,
    adopt_after: float = 60.0,
) -> int:
    """Fire due schedules until `stop` (a threading.Event) is set, or once; returns runs fired.

    `dispatch` starts the fired runs (fabric.runner.scheduler.Dispatch); None: by `executor`,
    "local" runs them on this machine, `max_runs` at once, each on up to `workers` processes;
    "queue" defers their root nodes to `queue` in the tick's transaction (`fabric worker`
    processes run them). `if_active`: a fired run that shares a node with an active run is
    refused (failed, naming it) or waits. Runs left pending `adopt_after` seconds are adopted.
    `log(event, fields)` receives one call per event. `execute` replaces what a worker runs for
    a node (tests).
    """
    from fabric.clock import utcnow
    from fabric.runner.driver import RunOptions, who_am_i
    from fabric.runner.scheduler import (
        LocalDispatch,
        QueueDispatch,
        SchedulerOptions,
        run_scheduler,
    )
    from fabric.state.embedded import fabric_home
    from fabric.state.migrate import shared_is_current

    ws = workspace(repo, environ)
    engine = engine or ws.engine("scheduler")
    with engine.connect() as conn:
        if not shared_is_current(conn):
            from fabric.errors import FabricError

            raise FabricError(
                "The control plane is not at the current schema version: run `fabric apply` "
                "(it migrates) before starting the scheduler."
            )
    local: LocalDispatch | None = None
    if dispatch is None and executor == "queue":
        dispatch = QueueDispatch(who=who_am_i(), if_active=if_active, queue=queue, log=log)
    elif dispatch is None:
        home = fabric_home(ws.root, ws.settings)
        template = RunOptions(
            workers=workers,
            trigger="schedule",
            control_plane_url=engine.url.render_as_string(hide_password=False),
            workdir=home / "work",
            repo_root=ws.root,
            environ=ws.environ,
            secret_box=ws.secret_box,
            execute=execute,
            if_active=if_active,
        )
        local = dispatch = LocalDispatch(engine, template, max_runs=max_runs, log=log)
    options = SchedulerOptions(
        interval=interval, catchup_cap=catchup_cap, who=who_am_i(), adopt_after=adopt_after
    )
    fired = 0
    try:
        fired = run_scheduler(
            engine, dispatch, options, stop=stop, log=log, clock=clock or utcnow, once=once
        )
    finally:
        if local is not None:
            local.close(wait=True)  # runs in progress finish; waiting ones stay pending
        log("stopped", {"fired": fired})
    return fired


def apply_history(
    repo: Path,
    *,
    limit: int = 20,
    tenant: str | None = None,
    resource: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Any]:
    """Recorded applies, newest first (none before the first apply), each with the changes it
    made (of `tenant` or `resource` when given) in `changes`: the audit log. Two queries."""
    from fabric.state.history import AuditedApply, read_audit, read_history
    from fabric.state.migrate import shared_is_current

    with workspace(repo, environ).engine("history").connect() as conn:
        if not shared_is_current(conn):
            return []
        records = read_history(conn, limit=limit, tenant=tenant, resource=resource)
        audit = read_audit(conn, [r.id for r in records], tenant=tenant, address=resource)
    return [AuditedApply(r, tuple(audit.get(r.id, ()))) for r in records]


def apply_locks(repo: Path, environ: Mapping[str, str] | None = None) -> list[Any]:
    """Apply locks held right now, named by tenant (applied or in the repository's YAML)."""
    from fabric.state.locks import held_locks
    from fabric.state.snapshot import read_tenant_rows

    ws = workspace(repo, environ)
    with ws.engine("locks").connect() as conn:
        slugs = [*read_tenant_rows(conn), *validate(ws.root).load.tenants]
        return held_locks(conn, slugs)


def set_secret(
    repo: Path,
    tenant: str,
    name: str,
    value: str,
    environ: Mapping[str, str] | None = None,
    *,
    author: str | None = None,
) -> bool:
    """Store `${secret:NAME}` of a tenant, encrypted; False when it was unchanged.

    A tenant not applied yet keeps the value pending: its first apply moves it into the
    tenant's store and binds it, so a new tenant needs one apply, not apply, set, apply. Like a
    change of the tenant's connections, it needs an admin of the tenant (as the control plane
    holds its members; for a tenant not applied yet, as its own YAML declares them) or a project
    admin: `author`, else the checkout's HEAD author.

    Raises:
        UnauthorizedError: the author may not set the tenant's secrets.
    """
    return set_secret_result(repo, tenant, name, value, environ, author=author).changed


@dataclass(frozen=True, slots=True)
class SetSecretResult:
    changed: bool
    pending: bool
    """True when the tenant is not applied yet: its first apply binds the value."""


def set_secret_result(
    repo: Path,
    tenant: str,
    name: str,
    value: str,
    environ: Mapping[str, str] | None = None,
    *,
    author: str | None = None,
) -> SetSecretResult:
    """`set_secret`, saying also whether the value waits for the tenant's first apply."""
    from fabric.errors import TenantNotAppliedError, UnauthorizedError
    from fabric.scaffold import check_slug
    from fabric.state.locks import acquire_migration_lock
    from fabric.state.migrate import shared_is_current, upgrade_shared
    from fabric.state.secrets import set_pending_secret, tenant_schema
    from fabric.state.secrets import set_secret as store

    ws = workspace(repo, environ)
    box = ws.secret_box()  # before starting anything: bad keys fail fast
    author = author or git_identity(ws.root)[1]
    engine = ws.engine("secrets set")
    try:
        with engine.begin() as conn:
            try:
                schema = tenant_schema(conn, tenant)
            except TenantNotAppliedError:
                schema = None
            if schema is not None:
                refused = _secret_refusals(conn, ws.root, tenant, name, author)
                if refused:
                    raise UnauthorizedError(refused, author)
                return SetSecretResult(store(conn, box, tenant, schema, name, value), False)
        check_slug(tenant)
        with engine.begin() as conn:
            if not shared_is_current(conn):
                acquire_migration_lock(conn)
                upgrade_shared(conn)
            try:  # applied meanwhile (the migration lock may have waited for an apply)
                schema = tenant_schema(conn, tenant)
            except TenantNotAppliedError:
                schema = None
            members = None if schema is not None else _declared_members(ws.root, tenant)
            refused = _secret_refusals(conn, ws.root, tenant, name, author, members)
            if refused:
                raise UnauthorizedError(refused, author)
            if schema is None:
                return SetSecretResult(set_pending_secret(conn, box, tenant, name, value), True)
            return SetSecretResult(store(conn, box, tenant, schema, name, value), False)
    finally:
        engine.dispose()


def _declared_members(root: Path, tenant: str) -> tuple[tuple[str, str], ...]:
    """The members a tenant not applied yet declares in its own YAML (its first owners decide,
    as they do for its first apply); none when the repository does not hold it."""
    from fabric.config.loader import load_repository
    from fabric.errors import FabricError

    try:
        desired = load_repository(root, tenants=[tenant]).desired
    except (FabricError, OSError):  # an unreadable repository declares no one
        return ()
    if desired is None or tenant not in desired.tenants:
        return ()
    return tuple((m.who, m.role) for m in desired.tenants[tenant].spec.members)


def _secret_refusals(
    conn: Any,
    root: Path,
    tenant: str,
    name: str,
    author: str | None,
    members: tuple[tuple[str, str], ...] | None = None,
):
    """Why `author` may not set the secret (empty: it may); `members`: the tenant's as declared
    when it is not applied yet, else the control plane's."""
    from fabric.errors import ConfigError
    from fabric.plan.authorize import authorize_secret, governing
    from fabric.state.history import read_members, read_project

    try:
        project = repository_project(root)
    except ConfigError:  # outside a repository (FABRIC_DATABASE_URL): the recorded one decides
        project = None
    governance, _ = governing(read_project(conn), project)
    return authorize_secret(
        tenant,
        name,
        stored_members=members
        if members is not None
        else read_members(conn, [tenant]).get(tenant, ()),
        governance=governance,
        author=author,
    )


def list_secrets(repo: Path, tenant: str, environ: Mapping[str, str] | None = None) -> list:
    """(name, updated_at) of a tenant's stored secrets; never values.

    For a tenant not applied yet: its pending secrets (raises TenantNotAppliedError if none).
    """
    from fabric.errors import TenantNotAppliedError
    from fabric.state.secrets import list_pending_secrets, tenant_schema
    from fabric.state.secrets import list_secrets as names

    engine = workspace(repo, environ).engine("secrets list")
    try:
        with engine.connect() as conn:
            try:
                return names(conn, tenant_schema(conn, tenant))
            except TenantNotAppliedError:
                pending = list_pending_secrets(conn, tenant)
                if not pending:
                    raise
                return pending
    finally:
        engine.dispose()


def rotate_secrets(repo: Path, *, batch_size: int, environ: Mapping[str, str] | None = None):
    """Re-encrypt every stored secret under the newest key (see state/secrets.rotate_all)."""
    from fabric.state.secrets import rotate_all

    ws = workspace(repo, environ)
    box = ws.secret_box()
    engine = ws.engine("secrets rotate")
    try:
        return rotate_all(engine, box, batch_size=batch_size)
    finally:
        engine.dispose()


def new_secret_key() -> str:
    """A new Fernet key for FABRIC_SECRET_KEYS."""
    from fabric.state.secrets import generate_key

    return generate_key()


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """The embedded PostgreSQL of a repository, and whether the repository uses it."""

    home: Path
    """The fabric home; the server's data folder is `home/pgdata`."""
    running: bool
    pid: int | None
    port: int | None
    url: str | None
    """Where it listens over TCP, without the password (it is in home/server.json)."""
    database_url: str | None
    """FABRIC_DATABASE_URL with its password hidden, when set: then the repository does not
    use the embedded server."""

    @property
    def data_folder(self) -> Path:
        return self.home / "pgdata"


def server_status(repo: Path, environ: Mapping[str, str] | None = None) -> ServerStatus:
    """Inspect the embedded server without starting it."""
    from fabric.state.embedded import fabric_home, running_server

    ws = workspace(repo, environ)
    home = fabric_home(ws.root, ws.settings)
    return _server_status(ws, home, running_server(home))


def start_server(repo: Path, environ: Mapping[str, str] | None = None) -> ServerStatus:
    """Start the embedded server (or reuse the running one) with its control-plane database."""
    from fabric.state.embedded import CONTROL_PLANE_DATABASE, ensure_server, fabric_home
    from fabric.state.engine import create_database

    ws = workspace(repo, environ)
    home = fabric_home(ws.root, ws.settings)
    server = ensure_server(home)
    create_database(server.url(), CONTROL_PLANE_DATABASE)
    return _server_status(ws, home, server)


def stop_server(repo: Path, environ: Mapping[str, str] | None = None) -> bool:
    """Stop the embedded server cleanly; False when none was running."""
    from fabric.state.embedded import fabric_home
    from fabric.state.embedded import stop_server as stop

    ws = workspace(repo, environ)
    return stop(fabric_home(ws.root, ws.settings))


def _server_status(ws: Workspace, home: Path, server: Any) -> ServerStatus:
    from fabric.state.embedded import CONTROL_PLANE_DATABASE
    from fabric.state.engine import shown_url

    database_url = shown_url(ws.settings.database_url) if ws.settings.database_url else None
    if server is None:
        return ServerStatus(home, False, None, None, None, database_url)
    url = shown_url(server.tcp_url(CONTROL_PLANE_DATABASE, driver=None), drop_password=True)
    return ServerStatus(home, True, server.pid, server.port, url, database_url)


# ---------------------------------------------------------------------------------------------
# codeowners


def codeowners(repo: Path) -> str:
    """The CODEOWNERS text for the repository's tenants (owners, admins) and project admins."""
    from fabric.render.codeowners import codeowners_text

    load = load_valid(repo)
    assert load.desired is not None
    members = {
        slug: tuple((m.who, m.role) for m in tenant.spec.members)
        for slug, tenant in load.desired.tenants.items()
    }
    return codeowners_text(load.desired.project, members)


# ---------------------------------------------------------------------------------------------
# init / tenant new


@dataclass(frozen=True, slots=True)
class ScaffoldResult:
    """What `fabric init` or `fabric tenant new` wrote."""

    root: Path
    written: tuple[str, ...]
    """Repository-relative paths, sorted."""


def init_repository(
    folder: Path, *, tenant: str = "acme", name: str | None = None
) -> ScaffoldResult:
    """Write a new repository into `folder` (created if missing) with one tenant.

    Refuses, writing nothing, when any of the files exists already (the error names them).
    """
    from fabric.config.json_schema import json_schemas, render_schema
    from fabric.scaffold import repository_files

    folder = Path(folder)
    project = name or folder.resolve().name or "fabric"
    schemas = {file: render_schema(schema) for file, schema in json_schemas().items()}
    return _write_new(folder, repository_files(project, tenant, schemas=schemas))


def new_tenant(repo: Path, slug: str, *, display_name: str | None = None) -> ScaffoldResult:
    """Write `tenants/<slug>/tenant.yaml` (commented) into the repository; never overwrites."""
    from fabric.errors import FabricError
    from fabric.scaffold import tenant_files

    if (Path(repo) / "tenants" / slug).exists():
        raise FabricError(
            f"tenants/{slug}/ exists already in {repo}; nothing was written. Pick another name, "
            "or edit that tenant's files."
        )
    return _write_new(Path(repo), tenant_files(slug, display=display_name))


def _write_new(root: Path, texts: Mapping[str, str]) -> ScaffoldResult:
    from fabric.errors import FabricError

    existing = sorted(rel for rel in texts if (root / rel).exists() or (root / rel).is_symlink())
    if existing:
        shown = ", ".join(existing[:10]) + (
            f" and {len(existing) - 10} more" if len(existing) > 10 else ""
        )
        raise FabricError(
            f"{root} already holds {shown}; nothing was written. fabric never overwrites your "
            "files: move them away, or pick an empty folder."
        )
    for rel, text in texts.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as f:  # "x": a file created meanwhile is not lost
            f.write(text)
    return ScaffoldResult(root.resolve(), tuple(sorted(texts)))


# ---------------------------------------------------------------------------------------------
# import dbt


@dataclass(frozen=True)
class ImportResult:
    """What `fabric import dbt` translated and wrote (or would write, with `dry_run`)."""

    translation: Any
    """fabric.dbt_import.translate.Translation"""
    root: Path
    written: tuple[str, ...]
    """Repository-relative paths."""
    dry_run: bool


def import_dbt(
    project_dir: Path,
    tenant: str,
    *,
    into: Path,
    dry_run: bool = False,
    force: bool = False,
    warehouse: str | None = None,
) -> ImportResult:
    """Translate the dbt project at `project_dir` into tenant `tenant` of the repository
    `into` (see fabric/dbt_import); refuses a bad slug or an existing tenant folder (unless
    `force`) before reading anything."""
    from fabric.dbt_import.reader import read_project_dir
    from fabric.dbt_import.translate import translate
    from fabric.dbt_import.writer import (
        packages_folder,
        shared_env,
        tenant_folder,
        write_translation,
    )
    from fabric.errors import FabricError

    root = Path(into)
    tenant_folder(root.resolve(), tenant, force=force)
    packages_folder(root.resolve(), tenant, force=force)
    project_dir = Path(project_dir)
    if not (project_dir / "dbt_project.yml").is_file():
        raise FabricError(
            f"{project_dir} holds no dbt_project.yml: name the folder of a dbt project."
        )
    files, refused = read_project_dir(project_dir)
    translation = translate(
        files, tenant, refused=refused, shared_env=shared_env(root), warehouse=warehouse
    )
    if dry_run:
        written = (
            *(f"tenants/{tenant}/{rel}" for rel in translation.files),
            *translation.repo_files,
        )
        return ImportResult(translation, root.resolve(), written, True)
    result = write_translation(translation, root, force=force)
    return ImportResult(translation, result.root, result.written, False)
