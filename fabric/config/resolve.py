"""Validated specs of one tenant -> its resolved, checked TenantState.  [pure]

Resolution fills the defaults that depend on other resources (destination = the tenant's
warehouse, timezone = the project's) and collects the DAG's edges from `depends_on` and from
SQL refs. Every rule that needs more than one field lives here or in `checks.py` and reports a
diagnostic at the exact field; nothing stops at the first problem.
"""

from __future__ import annotations

import dataclasses
import functools
import graphlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from fabric.addresses import Address, Kind
from fabric.config import checks, dbt_files
from fabric.config.freshness import check_freshness
from fabric.config.moves import tenant_moves
from fabric.config.sections import BrokenSpec, ValidSpec
from fabric.config.snapshots import resolve_snapshots
from fabric.config.specs import MovedSpec, ProjectSpec, TenantSpec
from fabric.config.sql_refs import env_vars, sql_config_keys, sql_refs
from fabric.diagnostics import Diagnostic, SourceSpan, did_you_mean, error
from fabric.domain.state import Declared, Dependency, TenantState

Span = Callable[[], SourceSpan]
"""A span computed only when a diagnostic needs it (the happy path never does)."""
# `assets`/`shared_macros` are discovery.SourceFile values (path, text): any such object.
ReadSql = Callable[[str], tuple[str | None, str | None]]
"""Reads a tenant-relative `sql_file`: (text, None) or (None, why it cannot be read)."""


def build_tenant(
    slug: str,
    specs: Iterable[ValidSpec],
    project: ProjectSpec,
    read_sql: ReadSql,
    first_file: str,
    broken_specs: Sequence[BrokenSpec] = (),
    repo_root: str = "",
    tenant_slugs: frozenset[str] = frozenset(),
    *,
    assets: Sequence[Any] = (),
    shared_macros: Sequence[Any] = (),
    read_package: Callable[[str], tuple[str, tuple[str, ...]] | None] = lambda _: None,
) -> tuple[TenantState | None, list[Diagnostic]]:
    diags: list[Diagnostic] = []
    broken = frozenset(b.address for b in broken_specs)
    tenant_specs: list[ValidSpec] = []
    by_kind: dict[Kind, dict[str, ValidSpec]] = {k: {} for k in Kind if k is not Kind.TENANT}
    moved: list[ValidSpec] = []
    for vs in specs:
        if isinstance(vs.spec, MovedSpec):
            moved.append(vs)
            continue
        if vs.address.kind is Kind.TENANT:
            tenant_specs.append(vs)
            continue
        section = by_kind[vs.address.kind]
        if (first := section.get(vs.address.name)) is not None:
            diags.append(
                error(
                    "duplicate-resource",
                    "Duplicate resource",
                    f"{vs.address} is declared twice "
                    f"(first at {first.file.locate(first.loc, key=True)}).",
                    hint="Rename or remove one of them; names are unique per kind in a tenant.",
                    span=vs.file.locate(vs.loc, key=True),
                    address=vs.address,
                )
            )
            continue
        section[vs.address.name] = vs
    if not tenant_specs:
        if Address.of_tenant(slug) in broken:
            return None, diags
        diags.append(
            error(
                "missing-tenant",
                "Missing tenant section",
                f"Tenant folder tenants/{slug} has no `tenant:` section.",
                hint="Add tenants/" + slug + "/tenant.yaml with `tenant: {display_name: ...}`.",
                span=SourceSpan(first_file, 1, 1),
                address=Address.of_tenant(slug),
            )
        )
        return None, diags
    for extra in tenant_specs[1:]:
        diags.append(
            error(
                "duplicate-resource",
                "Duplicate tenant section",
                f"Tenant {slug} has a second `tenant:` section "
                f"(first at {tenant_specs[0].file.locate(('tenant',), key=True)}).",
                hint="Keep one `tenant:` section per tenant folder.",
                span=extra.file.locate(("tenant",), key=True),
                address=extra.address,
            )
        )
    tenant_vs = tenant_specs[0]
    tenant: TenantSpec = tenant_vs.spec
    if tenant.max_parallel_nodes is None and project.defaults.max_parallel_nodes is not None:
        tenant = tenant.model_copy(
            update={"max_parallel_nodes": project.defaults.max_parallel_nodes}
        )
    ctx = checks.TenantContext(
        slug, tenant, tenant_vs, by_kind, project, broken, repo_root, tenant_slugs | {slug}
    )

    _apply_defaults(ctx, diags)
    diags += dbt_files.package_problems(
        tenant.packages,
        slug,
        lambda i: tenant_vs.file.locate(("tenant", "packages", i, "local")),
        Address.of_tenant(slug),
    )
    diags += checks.check_tenant(ctx)
    diags += checks.check_connections(ctx)
    declared_specs = [vs for section in by_kind.values() for vs in section.values()]
    diags += checks.check_env_references(ctx, (tenant_vs, *declared_specs, *broken_specs))
    pipelines = checks.resolve_pipelines(ctx, diags)
    check_freshness(ctx, diags)
    transformations, sql_text = _transformations(ctx, read_sql, diags)

    def check_env(address: Address, text: str, span_at: Callable[[int], SourceSpan]) -> None:
        checks.check_env_vars(ctx, address, *env_vars(text), span_at, diags)

    macros = dbt_files.resolve_macros(slug, assets, shared_macros, check_env, diags)
    known_macros = dbt_files.defined_macros(macros)
    for name, sql in sql_text.items():
        vs = ctx.by_kind[Kind.TRANSFORMATION][name]
        check_env(vs.address, sql, functools.partial(_sql_span, vs))
        dbt_files.check_calls(
            vs.address, sql, known_macros, functools.partial(_sql_span, vs), diags
        )
    schedules = checks.resolve_schedules(ctx, diags)
    snapshots, snapshot_text = resolve_snapshots(ctx, read_sql, _sql_span, diags)
    for name, sql in snapshot_text.items():
        vs = ctx.by_kind[Kind.SNAPSHOT][name]
        check_env(vs.address, sql, functools.partial(_sql_span, vs))
    seeds = dbt_files.resolve_seeds(
        slug,
        assets,
        ctx.by_kind[Kind.SEED],
        (tenant.defaults.transformations, project.defaults.transformations),
        tenant.warehouse,
        ctx.by_kind[Kind.TRANSFORMATION],
        diags,
    )
    dependencies = _dependencies(ctx, sql_text, diags, snapshot_text, seeds)
    nodes = {n: vs.address for n, vs in ctx.by_kind[Kind.TRANSFORMATION].items()}
    nodes |= {n: s.address for n, s in seeds.items()}
    nodes |= {n: vs.address for n, vs in ctx.by_kind[Kind.SNAPSHOT].items()}
    singular = dbt_files.resolve_singular_tests(
        slug,
        assets,
        nodes,
        known_macros,
        check_env,
        diags,
        [(d.upstream, d.downstream) for d in dependencies],
    )
    declared_packages = (*project.dbt.packages, *tenant.packages)
    local = dbt_files.local_package_macros(declared_packages, read_package)
    packages = frozenset(dbt_files.package_name(p) for p in declared_packages) | set(local)
    for vs in ctx.by_kind[Kind.TRANSFORMATION].values():
        if vs.address.name in sql_text:
            dbt_files.check_package_calls(
                vs.address,
                sql_text[vs.address.name],
                local,
                functools.partial(_sql_span, vs),
                diags,
            )
    for vs in ctx.by_kind[Kind.TRANSFORMATION].values():
        dbt_files.check_test_names(
            vs.address,
            vs.spec.tests,
            known_macros,
            packages,
            lambda column, i, vs=vs: vs.file.locate((*vs.loc, "tests", column, i)),
            diags,
            local,
        )
    for name, vs in ctx.by_kind[Kind.SEED].items():
        if name in seeds:
            dbt_files.check_test_names(
                seeds[name].address,
                vs.spec.tests,
                known_macros,
                packages,
                lambda column, i, vs=vs: vs.file.locate((*vs.loc, "tests", column, i)),
                diags,
                local,
            )
    diags += checks.check_broken_references(ctx, broken_specs)
    moves, move_diags = tenant_moves(slug, moved, by_kind)
    diags += move_diags

    def declared(kind: Kind, specs: Mapping[str, Any]) -> Mapping[str, Declared[Any]]:
        return MappingProxyType(
            {
                name: Declared(
                    address=vs.address,
                    spec=specs.get(name, vs.spec),
                    span=vs.file.locate(vs.loc, key=True),
                    written=written_form(vs),
                )
                for name, vs in sorted(by_kind[kind].items())
            }
        )

    state = TenantState(
        slug=slug,
        spec=tenant,
        span=tenant_vs.file.locate(("tenant",), key=True),
        connections=declared(Kind.CONNECTION, {}),
        pipelines=declared(Kind.PIPELINE, pipelines),
        transformations=declared(Kind.TRANSFORMATION, transformations),
        schedules=declared(Kind.SCHEDULE, schedules),
        sql=MappingProxyType(dict(sorted(sql_text.items()))),
        dependencies=tuple(sorted(dependencies)),
        moves=moves,
        written=written_form(tenant_vs),
        snapshots=declared(Kind.SNAPSHOT, snapshots),
        snapshot_sql=MappingProxyType(dict(sorted(snapshot_text.items()))),
        macros=MappingProxyType(
            {
                name: Declared(address=m.address, spec=m.spec, span=m.span)
                for name, m in sorted(macros.items())
            }
        ),
        seeds=MappingProxyType(
            {
                name: Declared(address=s.address, spec=s.spec, span=s.span)
                for name, s in sorted(seeds.items())
            }
        ),
        tests=MappingProxyType(
            {
                name: Declared(address=t.address, spec=t.spec, span=t.span)
                for name, t in sorted(singular.items())
            }
        ),
    )
    return state, diags


def written_form(vs: ValidSpec) -> Mapping[str, Any] | None:
    """The resource's mapping as the file wrote it, JSON-safe (dates as ISO text, as fabric
    reads them), for `fabric export`; None when it is not a mapping."""
    node: Any = vs.file.data
    for part in vs.loc:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return _json_safe(node) if isinstance(node, dict) else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


_BUILT_IN_DEFAULTS = {"materialized": "view", "tests_severity": "error", "tags": ()}
_DEFAULTED = ("schema_", "materialized", "tests_severity", "tags")


def _apply_defaults(ctx: checks.TenantContext, diags: list[Diagnostic]) -> None:
    """Fill each transformation's unset fields from the tenant's `defaults.transformations`,
    then fabric.yaml's, then the built-in ones (resource > tenant > project > built-in), so
    stored specs, the plan and the run all see the resolved values. A transformation with no
    schema anywhere is an error at its name."""
    tenant = ctx.tenant.defaults.transformations
    project = ctx.project.defaults.transformations
    section = ctx.by_kind[Kind.TRANSFORMATION]
    for name, vs in list(section.items()):
        spec = vs.spec
        written = spec.model_fields_set
        updates: dict[str, Any] = {}
        for field in _DEFAULTED:
            if field in written and getattr(spec, field) is not None:
                continue
            for source in (getattr(tenant, field), getattr(project, field)):
                if source is not None:
                    updates[field] = source
                    break
            else:
                if field in _BUILT_IN_DEFAULTS:
                    updates[field] = _BUILT_IN_DEFAULTS[field]
        if updates.get("schema_", spec.schema_) is None:
            diags.append(
                error(
                    "missing-field",
                    "Missing field",
                    f"{vs.address} needs field 'schema'.",
                    hint="Add `schema:` to the transformation, or a default for every "
                    "transformation: `defaults: {transformations: {schema: ...}}` under "
                    "`tenant:` or in fabric.yaml.",
                    span=vs.file.locate(vs.loc, key=True),
                    address=vs.address,
                )
            )
        if updates:
            resolved = spec.model_copy(update=updates)
            # What the YAML wrote stays known (diagnostics point at written fields only).
            object.__setattr__(resolved, "__pydantic_fields_set__", set(written))
            section[name] = dataclasses.replace(vs, spec=resolved)


def _transformations(
    ctx: checks.TenantContext, read_sql: ReadSql, diags: list[Diagnostic]
) -> tuple[dict[str, Any], dict[str, str]]:
    resolved: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for name, vs in ctx.by_kind[Kind.TRANSFORMATION].items():
        spec = vs.spec
        updates = checks.check_transformation(ctx, vs, diags)
        if updates:
            resolved[name] = spec.model_copy(update=updates)
        if spec.sql is not None and spec.sql_file is None:
            texts[name] = spec.sql
        elif spec.sql_file is not None and spec.sql is None:
            text, problem = read_sql(spec.sql_file)
            if text is None:
                diags.append(
                    error(
                        "bad-sql-file",
                        "SQL file not usable",
                        f"{vs.address}: sql_file {spec.sql_file!r} {problem}.",
                        hint="Point sql_file at a .sql file inside the tenant's folder, "
                        "e.g. models/" + name + ".sql.",
                        span=vs.file.locate((*vs.loc, "sql_file")),
                        address=vs.address,
                    )
                )
            else:
                texts[name] = text
    return resolved, texts


def _sql_span(vs: ValidSpec, line: int) -> SourceSpan:
    spec = vs.spec
    if spec.sql_file is not None:
        folder = vs.file.path.split("/")[:2]  # tenants/<slug>
        return SourceSpan("/".join([*folder, spec.sql_file.lstrip("./")]), line, 1)
    base = vs.file.locate((*vs.loc, "sql"))
    # A block scalar (`sql: |`) starts on the line after its indicator.
    if _is_block(vs):
        return SourceSpan(base.path, base.line + line, 1)
    return SourceSpan(base.path, base.line + line - 1, base.column if line == 1 else 1)


def _is_block(vs: ValidSpec) -> bool:
    node = vs.file.root
    for part in (*vs.loc, "sql"):
        found = None
        for key, value in getattr(node, "value", []):
            if getattr(key, "value", None) == part:
                found = value
                break
        if found is None:
            return False
        node = found
    return getattr(node, "style", None) in ("|", ">")


_YAML_CONFIG = {"materialized", "schema", "unique_key", "tags"}
"""config() keys that are fields of a transformation's YAML: the YAML is what plan shows."""
_MANAGED_CONFIG = {
    "alias": "fabric names the relation after the transformation",
    "database": "the warehouse connection sets the database",
    "enabled": "remove the transformation from the YAML to stop building it",
    "pre_hook": "hooks run SQL outside the model; put that SQL into the model itself",
    "post_hook": "hooks run SQL outside the model; put that SQL into the model itself",
    "grants": "grants change who may read the relation; fabric does not manage them per model",
    "full_refresh": "use `fabric run --full-refresh`",
    "sql_header": "it runs SQL outside the model; put that SQL into the model itself",
}
"""config() keys fabric manages itself, or that reach beyond the model's own relation."""


def _check_sql_config(vs: ValidSpec, sql: str, diags: list[Diagnostic]) -> None:
    """`{{ config(...) }}` in a model's SQL must not override what the YAML owns: plan, graph
    and the warehouse would disagree (the YAML says view, dbt builds a table)."""
    declared = vs.file.locate(vs.loc, key=True)
    for found in sql_config_keys(sql):
        key = found.key
        if key is None:
            diags.append(
                error(
                    "dynamic-config",
                    "Unreadable config()",
                    f"{vs.address}: a config() call on SQL line {found.line} does not spell "
                    "out its keys, so fabric cannot tell whether it overrides the YAML "
                    f"(the transformation is declared at {declared}).",
                    hint="Write config(key=value, ...) with literal keys, or move the "
                    "settings into the transformation's YAML.",
                    span=_sql_span(vs, found.line),
                    address=vs.address,
                )
            )
        elif key in _YAML_CONFIG or key in _MANAGED_CONFIG:
            if key in _YAML_CONFIG:
                written = ("schema_" if key == "schema" else key) in vs.spec.model_fields_set
                where = vs.file.locate((*vs.loc, key)) if written else declared
                detail = f"would override the YAML's `{key}` ({where})"
                hint = f"Remove {key} from config() and set `{key}:` in the YAML instead."
            else:
                detail = f"sets {key!r}, which fabric manages (declared at {declared})"
                hint = f"Remove {key} from config(): {_MANAGED_CONFIG[key]}."
            diags.append(
                error(
                    "sql-config-override",
                    "config() overrides the YAML",
                    f"{vs.address}: config({key}=...) on SQL line {found.line} {detail}.",
                    hint=hint,
                    span=_sql_span(vs, found.line),
                    address=vs.address,
                )
            )


def _dependencies(
    ctx: checks.TenantContext,
    sql_text: Mapping[str, str],
    diags: list[Diagnostic],
    snapshot_text: Mapping[str, str] = MappingProxyType({}),
    seeds: Mapping[str, Any] = MappingProxyType({}),
) -> list[Dependency]:
    pipelines = ctx.by_kind[Kind.PIPELINE]
    transformations = ctx.by_kind[Kind.TRANSFORMATION]
    snapshots = ctx.by_kind[Kind.SNAPSHOT]
    # What ref() may name: models and snapshots (a name clash is reported by snapshots.py).
    refable = {**snapshots, **transformations}
    edges: dict[tuple[Address, Address], tuple[str, Span]] = {}

    def add(up: Address, down: Address, origin: str, span: Span, explicit: bool) -> None:
        if up == down:
            diags.append(
                error(
                    "self-dependency",
                    "Self-dependency",
                    f"{down} depends on itself.",
                    hint="Remove it from depends_on (or the ref to itself from its SQL).",
                    span=span(),
                    address=down,
                )
            )
            return
        if (up, down) in edges:
            previous_origin, previous_span = edges[(up, down)]
            if explicit and previous_origin == "depends_on":
                diags.append(
                    error(
                        "duplicate-dependency",
                        "Duplicate dependency",
                        f"{down} lists {up} twice in depends_on (first at {previous_span()}).",
                        hint="Remove the repeated entry.",
                        span=span(),
                        address=down,
                    )
                )
            return
        edges[(up, down)] = (origin, span)

    for vs in (*pipelines.values(), *transformations.values(), *snapshots.values()):
        for i, entry in enumerate(vs.spec.depends_on):
            span = functools.partial(vs.file.locate, (*vs.loc, "depends_on", i))
            up = checks.resolve_node_name(ctx, entry, vs.address, span, diags)
            if up is not None:
                add(up, vs.address, "depends_on", span, True)
    with_sql = [(transformations[name], sql) for name, sql in sql_text.items()]
    with_sql += [(snapshots[name], sql) for name, sql in snapshot_text.items()]
    for vs, sql in with_sql:
        if vs.address.kind is Kind.TRANSFORMATION:
            _check_sql_config(vs, sql, diags)
        refs, dynamic = sql_refs(sql)
        for line in dynamic:
            diags.append(
                error(
                    "dynamic-ref",
                    "Unresolvable ref",
                    f"{vs.address}: a ref()/source() call on SQL line {line} is not a plain "
                    "string literal, so its dependency cannot be known.",
                    hint="Write {{ ref('model') }} or {{ source('pipeline', 'table') }} with "
                    "literal names.",
                    span=_sql_span(vs, line),
                    address=vs.address,
                )
            )
        for ref in refs:
            span = functools.partial(_sql_span, vs, ref.line)
            kinds = (Kind.TRANSFORMATION, Kind.SNAPSHOT) if ref.kind == "ref" else (Kind.PIPELINE,)
            if any(ctx.is_broken(kind, ref.name) for kind in kinds):
                continue
            if ref.kind == "ref" and ref.name in seeds:
                add(seeds[ref.name].address, vs.address, "ref", span, False)
                continue
            if ref.kind == "ref" and ctx.is_broken(Kind.SEED, ref.name):
                continue
            if ref.kind == "ref":
                if ref.name not in refable:
                    diags.append(
                        error(
                            "unknown-reference",
                            "Unknown reference",
                            f"{vs.address}: ref({ref.name!r}) names no transformation"
                            f"{', snapshot' if snapshots else ''} or seed of tenant {ctx.slug}.",
                            hint=did_you_mean(ref.name, [*refable, *seeds]),
                            span=span(),
                            address=vs.address,
                        )
                    )
                    continue
                add(refable[ref.name].address, vs.address, "ref", span, False)
            else:
                target = pipelines.get(ref.name)
                if target is None:
                    diags.append(
                        error(
                            "unknown-reference",
                            "Unknown reference",
                            f"{vs.address}: source({ref.name!r}, {ref.table!r}) names no "
                            f"pipeline of tenant {ctx.slug}.",
                            hint=did_you_mean(ref.name, pipelines),
                            span=span(),
                            address=vs.address,
                        )
                    )
                    continue
                if checks.writes_files(ctx, target):
                    diags.append(
                        error(
                            "source-not-in-warehouse",
                            "Source written to files",
                            f"{vs.address}: source({ref.name!r}, {ref.table!r}) names pipeline "
                            f"{ref.name!r}, which writes files to destination "
                            f"{target.spec.destination!r}, not warehouse tables dbt could read.",
                            hint="Read from a pipeline that loads into the warehouse.",
                            span=span(),
                            address=vs.address,
                        )
                    )
                    continue
                tables = checks.pipeline_tables(ctx, target)
                if tables is not None and ref.table not in tables:
                    diags.append(
                        error(
                            "unknown-reference",
                            "Unknown reference",
                            f"{vs.address}: pipeline {ref.name!r} loads no table "
                            f"{ref.table!r} (it loads {', '.join(sorted(tables)) or 'none'}).",
                            hint=did_you_mean(str(ref.table), tables),
                            span=span(),
                            address=vs.address,
                        )
                    )
                    continue
                add(target.address, vs.address, "source", span, False)

    _check_cycles(edges, diags)
    return [
        Dependency(upstream=up, downstream=down, origin=origin)  # type: ignore[arg-type]
        for (up, down), (origin, _) in edges.items()
    ]


def _check_cycles(
    edges: Mapping[tuple[Address, Address], tuple[str, Span]], diags: list[Diagnostic]
) -> None:
    """Report every cycle, each once, naming all of its nodes in order."""
    remaining = dict(edges)
    seen: set[frozenset[Address]] = set()
    while True:
        sorter: graphlib.TopologicalSorter[Address] = graphlib.TopologicalSorter()
        for up, down in remaining:
            sorter.add(down, up)
        try:
            sorter.prepare()
            return
        except graphlib.CycleError as exc:
            # [a, b, ..., a]: each node is an immediate upstream of the next one
            path: list[Address] = exc.args[1]
        members = frozenset(path)
        if members not in seen:
            seen.add(members)
            first = (path[0], path[1])
            diags.append(
                error(
                    "dependency-cycle",
                    "Dependency cycle",
                    "These nodes depend on each other in a cycle: "
                    + " -> ".join(str(a) for a in path)
                    + ".",
                    hint="Remove one of the dependencies (depends_on or a ref in the SQL).",
                    span=remaining[first][1]() if first in remaining else None,
                    address=path[1],
                )
            )
        # Break this cycle at one edge and look for others.
        remaining.pop((path[0], path[1]), None)
