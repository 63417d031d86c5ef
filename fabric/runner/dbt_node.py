"""Run a tenant's ready transformations through dbt, inside a worker process.  [shell]

The executor sends all the transformation nodes of one tenant that became ready together as one
batch; this module runs them as few dbt invocations as possible (one per warehouse: a batch
invocation targets one warehouse), through dbt's programmatic API in this (warm) process:

1. write the tenant's dbt project (fabric.runner.dbt_project) into `<workdir>/dbt`, touching
   only files whose content changed, so dbt's partial parsing stays warm;
2. make the process environment, for the length of the invocation only, the harmless base
   (fabric.settings.base_environment), the warehouse connection's fields (resolved by the
   runner) in the variables the profile's `env_var()`s read (the password under dbt's
   DBT_ENV_SECRET_ prefix, which dbt scrubs from its logs and refuses in models), and the
   variables the tenant declared in `env:` (NodeSpec.environment): nothing else, so a model's
   `env_var()` reaches no fabric setting; the previous environment is restored after, and
   nothing here logs it;
3. `dbt build --select <models> tag:fabric_tests__<model>...` (models and then their own tests;
   `dbt test` for tests-only nodes), with `--project-dir`/`--profiles-dir` (never a chdir) and a
   target folder per warehouse and worker slot, so concurrent workers of one tenant never share
   dbt's artifacts and each keeps its partial-parse state;
4. turn dbt's results into plain values (secrets redacted) and map them to one NodeResult per
   node (fabric.runner.dbt_project.node_results).

dbt is imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fabric import settings
from fabric.addresses import Address
from fabric.clock import utcnow
from fabric.domain.runs import NodeResult, NodeSpec
from fabric.errors import FabricError
from fabric.runner import dbt_project as dp
from fabric.runner.failures import redact
from fabric.runner.sessions import session_options

__all__ = [
    "compile_node",
    "generate_docs",
    "project_dir",
    "run_transformation_nodes",
    "write_project",
]

_UNPARSABLE: dict[tuple[str, str], tuple[str, str]] = {}
"""(project folder, model) -> (its SQL, dbt's parse error). A model whose SQL breaks dbt's
parsing would fail every model of the tenant; it is replaced by a stub and its own node fails
with the error. A warm worker remembers it, so it does not fail a parse on it again."""

_DOTS = re.compile(r" \.{3,} ")


def project_dir(node: NodeSpec) -> Path:
    if not node.workdir:
        raise FabricError(f"{node.address} cannot run: the node has no work folder")
    return Path(node.workdir).absolute() / dp.PROJECT_FOLDER


def run_transformation_nodes(nodes: Sequence[NodeSpec]) -> list[NodeResult]:
    """Run transformation nodes of one tenant: one dbt invocation per warehouse (and per
    full-refresh / tests-only flavour); one NodeResult per node, in order."""
    if not nodes:
        return []
    project = _project(nodes)
    root = project_dir(nodes[0])
    try:
        _check_packages(root, project, nodes[0])
    except FabricError as exc:
        return [NodeResult.failed(n.address, str(exc)) for n in nodes]
    groups: dict[tuple[str, bool, bool], list[NodeSpec]] = {}
    for node in nodes:
        key = (str(node.spec.get("warehouse") or ""), node.tests_only, node.full_refresh)
        groups.setdefault(key, []).append(node)
    results: dict[Address, NodeResult] = {}
    for (warehouse, tests_only, full_refresh), group in groups.items():
        try:
            done = _run_group(
                root, project, warehouse, group, tests_only=tests_only, full=full_refresh
            )
        except FabricError as exc:
            done = [NodeResult.failed(n.address, str(exc)) for n in group]
        results.update((r.address, r) for r in done)
    return [results[n.address] for n in nodes]


def _check_packages(root: Path, project: Mapping[str, Any], node: NodeSpec) -> None:
    """The packages the applied state declares are those `fabric deps` installed: a run never
    fetches anything, and a missing package would fail as an unknown macro deep in dbt."""
    packages = project.get("packages") or []
    if not packages:
        return
    tenant = str(project["tenant"])
    repo = Path(node.repo_root or ".").resolve().as_posix()
    expected = dp.packages_yml(tenant, packages, repo)
    try:
        installed = (root / "packages.yml").read_text()
    except OSError:
        installed = None
    if installed != expected or not (root / "dbt_packages").is_dir():
        what = "changed since they were installed" if installed else "not installed"
        raise FabricError(
            f"tenant {tenant}'s dbt packages are {what}: run `fabric deps --tenant {tenant}`."
        )


def compile_node(node: NodeSpec) -> str:
    """The SQL dbt compiles a transformation to (refs and sources resolved)."""
    project = _project([node])
    root = project_dir(node)
    warehouse = str(node.spec.get("warehouse") or "")
    name = node.address.name
    env, secrets = _warehouse_env(warehouse, node)

    def args(unparsable: Mapping[str, str], slot: _Slot) -> list[str] | None:
        if name in unparsable:
            return None
        return dp.invocation_args(
            "compile",
            project_dir=str(root),
            target=warehouse,
            target_path=str(slot.target),
            log_path=str(slot.logs),
            select=[name],
        )

    run, unparsable = _run_dbt(root, project, warehouse, env, secrets, args)
    if name in unparsable:
        raise FabricError(f"{node.address} does not compile: {redact(unparsable[name], secrets)}")
    code = None if run is None else run.compiled.get(name)
    if code is None:
        model = None if run is None else next((o for o in run.outcomes if o.model == name), None)
        why = (model.message if model else None) or (run and run.error) or "dbt compiled nothing"
        raise FabricError(f"{node.address} does not compile: {why}")
    return code


# ---------------------------------------------------------------------------------------------
# the project on disk


def write_project(root: Path, files: Mapping[str, str]) -> tuple[str, ...]:
    """Write the files whose content differs (atomically) and remove stale files from the
    folders fabric owns; returns the relative paths changed (empty: nothing was touched)."""
    changed = []
    for rel, text in files.items():
        path = root / rel
        try:
            current = path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            current = None
        if current != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
            changed.append(rel)
    for folder in dp.MANAGED_FOLDERS:
        if not (root / folder).is_dir():
            continue
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in files and not path.name.startswith("."):
                path.unlink(missing_ok=True)
                changed.append(rel)
    return tuple(changed)


def _project(nodes: Sequence[NodeSpec]) -> dict[str, Any]:
    """The tenant's project, with the batch's own specs in it (they are what must run)."""
    first = nodes[0]
    base = first.project or {}
    transformations = dict(base.get("transformations") or {})
    transformations.update((n.address.name, n.spec) for n in nodes if n.kind == "transformation")
    snapshots = dict(base.get("snapshots") or {})
    snapshots.update((n.address.name, n.spec) for n in nodes if n.kind == "snapshot")
    seeds = dict(base.get("seeds") or {})
    seeds.update((n.address.name, n.spec) for n in nodes if n.kind == "seed")
    return {
        "tenant": base.get("tenant") or first.address.tenant,
        "transformations": transformations,
        "pipelines": dict(base.get("pipelines") or {}),
        "connections": dict(base.get("connections") or {}),
        "snapshots": snapshots,
        "macros": dict(base.get("macros") or {}),
        "seeds": seeds,
        "tests": dict(base.get("tests") or {}),
        "packages": list(base.get("packages") or ()),
    }


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where one invocation's dbt writes: its target folder (artifacts, partial-parse state)
    and its log folder."""

    target: Path
    logs: Path


@contextlib.contextmanager
def _slot(root: Path, warehouse: str) -> Iterator[_Slot]:
    """Folders for dbt's target and logs that no other process uses while we hold them.

    Slots are numbered per warehouse (`target/<warehouse>/<n>`, `logs/<warehouse>/<n>`); a
    worker takes the first free one (a non-blocking flock on `target/<warehouse>/<n>.lock`), so
    concurrent invocations of one tenant never share artifacts, and a warm worker mostly gets
    the slot it used last, whose partial-parse state matches the project.
    """
    base = root / "target" / warehouse
    base.mkdir(parents=True, exist_ok=True)
    for i in itertools.count():
        handle = open(base / f"{i}.lock", "a")  # noqa: SIM115 - held across the yield
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield _Slot(target=base / str(i), logs=root / "logs" / warehouse / str(i))
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """For the block, the process environment is `values` (the profile's variables and the
    tenant's declared ones) over the harmless base (PATH, locale, HOME, ...) and nothing else:
    a model's `env_var()` can read no fabric setting, key or URL, even in a process that has
    them (`fabric compile` runs dbt in the CLI's own process). Restored after."""
    with settings.only_environment({**settings.base_environment(), **values}):
        yield


def _warehouse_env(warehouse: str, node: NodeSpec) -> tuple[dict[str, str], tuple[str, ...]]:
    """(environment for the profile, secret values to redact) of a warehouse connection."""
    if not warehouse:
        raise FabricError(f"{node.address} has no warehouse connection to run on")
    resolved = node.connections.get(warehouse)
    if resolved is None:
        raise FabricError(
            f"{node.address} runs on warehouse connection {warehouse!r}, which is not applied"
        )
    if resolved.type != "postgres":
        raise FabricError(
            f"{node.address}: dbt runs transformations on postgres warehouses; connection "
            f"{warehouse!r} is {resolved.type}"
        )
    try:
        env = dp.profile_env(warehouse, resolved.spec)
    except ValueError as exc:
        raise FabricError(f"{node.address}: warehouse connection {warehouse!r}: {exc}") from None
    secrets = (*resolved.secret_values, env[dp.env_name(warehouse, "password")])
    env = {**node.environment, **env}  # the tenant's declared variables; the profile's win
    env["DO_NOT_TRACK"] = "1"  # belt and braces: the project's flags turn tracking off too
    # libpq's default `options` for every session dbt opens (the profile sets none)
    env["PGOPTIONS"] = session_options(dp.target_schema(node.project, warehouse), node.session)
    return env, tuple(s for s in secrets if s)


# ---------------------------------------------------------------------------------------------
# one batch on one warehouse


def _run_group(
    root: Path,
    project: dict[str, Any],
    warehouse: str,
    nodes: Sequence[NodeSpec],
    *,
    tests_only: bool,
    full: bool,
) -> list[NodeResult]:
    started_at = utcnow()
    env, secrets = _warehouse_env(warehouse, nodes[0])
    # Snapshots and seeds share the models' namespace in dbt (validation keeps names apart).
    specs: Mapping[str, Mapping[str, Any]] = {
        **project["snapshots"],
        **project.get("seeds", {}),
        **project["transformations"],
    }
    names = [n.address.name for n in nodes]

    def args(unparsable: Mapping[str, str], slot: _Slot) -> list[str] | None:
        runnable = [n for n in names if n not in unparsable]
        singular = dp.singular_tests_of(project)
        tested = [n for n in runnable if dp.has_tests(specs[n]) or n in singular]
        select = dp.selection(runnable, tested, tests_only=tests_only)
        if not select:
            return None
        return dp.invocation_args(
            "test" if tests_only else "build",
            project_dir=str(root),
            target=warehouse,
            target_path=str(slot.target),
            log_path=str(slot.logs),
            select=select,
            full_refresh=full,
        )

    run, unparsable = _run_dbt(root, project, warehouse, env, secrets, args)
    invocation = (started_at, utcnow())
    batch = []
    for node in nodes:
        name = node.address.name
        lines = [] if run is None else run.lines_of(name)
        if tests_only and not (dp.has_tests(specs[name]) or name in dp.singular_tests_of(project)):
            lines.append("no tests declared")
        batch.append(
            dp.BatchNode(
                address=node.address,
                relation=dp.relation_name(specs[name], name),
                log=tuple(lines),
                sql=str(specs[name].get("sql") or ""),
                sql_path=dp.sql_path(node.address.tenant, specs[name]),
            )
        )
    results = dp.node_results(
        [b for b in batch if b.address.name not in unparsable],
        [] if run is None else run.outcomes,
        tests_only=tests_only,
        error=None if run is None else run.error,
        invocation=invocation,
    )
    by_address = {r.address: r for r in results}
    for b in batch:
        if b.address.name in unparsable:
            by_address[b.address] = NodeResult.failed(
                b.address,
                dp.explain_error(redact(unparsable[b.address.name], secrets), b.sql, b.sql_path),
                started_at=invocation[0],
                finished_at=invocation[1],
            )
    return [by_address[n.address] for n in nodes]


# ---------------------------------------------------------------------------------------------
# dbt itself


def _run_dbt(
    root: Path,
    project: Mapping[str, Any],
    warehouse: str,
    env: Mapping[str, str],
    secrets: Sequence[str],
    args_for: Callable[[Mapping[str, str], _Slot], list[str] | None],
) -> tuple[_Run | None, dict[str, str]]:
    """Write the project and invoke dbt with `args_for(unparsable models, slot folder)` (None:
    nothing to run). When dbt cannot parse the project because of one model's SQL, that model
    is stubbed (remembered in _UNPARSABLE) and dbt invoked again, so one broken model fails only
    its own node. Returns the run (None when nothing ran) and the unparsable models' errors."""
    key = str(root)
    # models and snapshots: a broken one of either is stubbed (names are unique across both)
    transformations: Mapping[str, Mapping[str, Any]] = {
        **(project.get("snapshots") or {}),
        **project["transformations"],
    }
    run: _Run | None = None
    unparsable: dict[str, str] = {}
    with _slot(root, warehouse) as slot, _environment(env):
        for _ in range(len(transformations) + 1):
            unparsable = {
                model: message
                for (folder, model), (sql, message) in _UNPARSABLE.items()
                if folder == key and (transformations.get(model) or {}).get("sql") == sql
            }
            write_project(root, dp.project_files(project, unparsable=unparsable))
            args = args_for(unparsable, slot)
            if args is None:
                return None, unparsable
            run = _invoke(args, secrets)
            bad = dp.unparsable_model(run.error or "", transformations) if run.not_parsed else None
            if bad is None or bad in unparsable:
                break
            _UNPARSABLE[(key, bad)] = (str(transformations[bad].get("sql") or ""), run.error or "")
    return run, unparsable


@dataclass
class _Run:
    """What one dbt invocation produced, as plain values with secrets redacted."""

    outcomes: list[dp.DbtOutcome] = field(default_factory=list)
    error: str | None = None
    """The invocation's own failure (no results at all, or a message dbt raised)."""
    not_parsed: bool = False
    """dbt produced no results: it failed before running anything (parse, profile, ...)."""
    logs: dict[str, list[str]] = field(default_factory=dict)
    """unique_id -> dbt's log lines about that node."""
    compiled: dict[str, str] = field(default_factory=dict)
    """model name -> compiled SQL."""

    def lines_of(self, model: str) -> list[str]:
        uids = [o.unique_id for o in self.outcomes if o.model == model]
        return [line for uid in uids for line in self.logs.get(uid, ())]


def _invoke(args: list[str], secrets: Sequence[str]) -> _Run:
    from dbt.cli.main import dbtRunner

    logs: dict[str, deque[str]] = {}
    errors: list[str] = []
    on_event = _collector(logs, errors)
    try:
        result = dbtRunner(callbacks=[on_event]).invoke(args)
    except Exception as exc:  # dbt catches its own errors; anything else is still a node error
        return _Run(error=redact(f"dbt failed: {exc}", secrets), not_parsed=True)
    run = _Run()
    entries = getattr(result.result, "results", None)
    if entries is None:
        run.not_parsed = True
        message = str(result.exception) if result.exception is not None else ""
        run.error = redact(message or "\n".join(errors) or "dbt failed", secrets)
    for entry in entries or ():
        for outcome in _outcomes(entry, secrets):
            run.outcomes.append(outcome)
            code = getattr(entry.node, "compiled_code", None)
            if outcome.resource_type == "model" and code is not None:
                run.compiled[outcome.name] = code
    if run.error is None and result.exception is not None:
        run.error = redact(str(result.exception), secrets)
    run.logs = {
        uid: [redact(_DOTS.sub(" ", line.strip()), secrets) for line in lines]
        for uid, lines in logs.items()
    }
    return run


def _collector(logs: dict[str, deque[str]], errors: list[str]) -> Callable[[Any], None]:
    def on_event(msg: Any) -> None:  # called for every event dbt fires, debug ones included
        info = msg.info
        if info.level not in ("info", "warn", "error") or not info.msg:
            return
        node_info = getattr(msg.data, "node_info", None)
        uid = node_info.unique_id if node_info is not None else ""
        if uid:
            logs.setdefault(uid, deque(maxlen=dp.LOG_TAIL_LINES)).append(info.msg)
        elif info.level == "error":
            errors.append(info.msg)

    return on_event


def _outcomes(entry: Any, secrets: Sequence[str]) -> list[dp.DbtOutcome]:
    """dbt's result of one node: one outcome per fabric node it belongs to (a singular test
    refs several models: it is reported with each)."""
    node = entry.node
    kind = getattr(node.resource_type, "value", str(node.resource_type))
    if kind in ("model", "snapshot", "seed"):
        models: list[str | None] = [node.name]
    elif kind == "test":
        tags = [t for t in (node.tags or ()) if t.startswith(dp.TESTS_TAG_PREFIX)]
        attached = getattr(node, "attached_node", None) or ""
        models = [t.removeprefix(dp.TESTS_TAG_PREFIX) for t in tags] or [attached.split(".")[-1]]
    else:
        return []
    return [_outcome(entry, kind, model, secrets) for model in models]


def _outcome(entry: Any, kind: str, model: str | None, secrets: Sequence[str]) -> dp.DbtOutcome:
    node = entry.node
    started, finished = _timing(entry)
    response = entry.adapter_response or {}
    rows = response.get("rows_affected") if isinstance(response, Mapping) else None
    status = getattr(entry.status, "value", str(entry.status))
    failures = getattr(entry, "failures", None)
    return dp.DbtOutcome(
        unique_id=node.unique_id,
        resource_type=kind,
        name=node.name,
        model=model,
        status=str(status),
        seconds=float(entry.execution_time or 0.0),
        started_at=started,
        finished_at=finished,
        rows_affected=rows if isinstance(rows, int) else None,
        message=redact(str(entry.message), secrets) if entry.message else None,
        failures=failures if kind == "test" and isinstance(failures, int) else None,
    )


def _timing(entry: Any) -> tuple[datetime | None, datetime | None]:
    """When dbt started and finished the node (compile to execute), as aware UTC datetimes."""
    starts = [t.started_at for t in entry.timing or () if t.started_at is not None]
    ends = [t.completed_at for t in entry.timing or () if t.completed_at is not None]

    def aware(moment: datetime | None) -> datetime | None:
        if moment is None or moment.tzinfo is not None:
            return moment
        return moment.replace(tzinfo=UTC)  # dbt records naive UTC times

    return aware(min(starts, default=None)), aware(max(ends, default=None))


# ---------------------------------------------------------------------------------------------
# docs


def generate_docs(node: NodeSpec, out: Path) -> Path:
    """`dbt docs generate --static` for the tenant of `node` (a transformation or snapshot whose
    warehouse the catalog is read from, with the tenant's own login); the static site is
    copied to `out/index.html`, which is returned."""
    import shutil

    project = _project([node])
    root = project_dir(node)
    warehouse = str(node.spec.get("warehouse") or "")
    env, secrets = _warehouse_env(warehouse, node)
    errors: list[str] = []
    with _slot(root, warehouse) as slot, _environment(env):
        write_project(root, dp.docs_files(project))
        args = dp.docs_args(
            project_dir=str(root),
            target=warehouse,
            target_path=str(slot.target),
            log_path=str(slot.logs),
        )
        from dbt.cli.main import dbtRunner

        try:
            result = dbtRunner(callbacks=[_collector({}, errors)]).invoke(args)
        except Exception as exc:
            raise FabricError(redact(f"dbt docs generate failed: {exc}", secrets)) from None
        site = slot.target / "static_index.html"
        if not result.success or not site.is_file():
            why = str(result.exception) if result.exception else "\n".join(errors)
            raise FabricError(redact(f"dbt docs generate failed: {why or 'no site'}", secrets))
        out.mkdir(parents=True, exist_ok=True)
        target = out / "index.html"
        shutil.copyfile(site, target)
    return target
