"""Rules across fields and resources: references, directions, modes, cron, ownership.  [pure]

Every function reports diagnostics at the field they are about and never raises.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from croniter import croniter

from fabric.addresses import NAME, Address, Kind
from fabric.config.destinations import (
    filesystem_target,
    glob_problem,
    source_target,
    sqlite_target,
    tenant_folder,
)
from fabric.config.references import (
    env_name_problem,
    env_owner,
    env_prefix,
    is_reserved_env,
    is_secret_key,
    references_in,
)
from fabric.config.sections import BrokenSpec, ValidSpec
from fabric.config.specs import (
    DESTINATION_TYPES,
    SQL_SOURCE_TYPES,
    WAREHOUSE_TYPES,
    ProjectSpec,
    TenantSpec,
)
from fabric.diagnostics import Diagnostic, SourceSpan, did_you_mean, error
from fabric.graph.selectors import parse_selector

MODE_SOURCE_TYPES: dict[str, frozenset[str]] = {
    "single_table": SQL_SOURCE_TYPES,
    "full_database": SQL_SOURCE_TYPES,
    "rest_api": frozenset({"rest_api"}),
    "files": frozenset({"filesystem"}),
}
MODE_ONLY_FIELDS: dict[str, str] = {
    "table": "single_table",
    "table_names": "full_database",
    "resources": "rest_api",
    "table_name": "files",
    "file_glob": "files",
}


@dataclass(frozen=True, slots=True)
class TenantContext:
    slug: str
    tenant: TenantSpec
    tenant_vs: ValidSpec
    by_kind: Mapping[Kind, Mapping[str, ValidSpec]]
    project: ProjectSpec
    broken: frozenset[Address] = frozenset()
    """Resources that exist but failed validation: references to them are not reported."""
    repo_root: str = ""
    """The repository's absolute POSIX path: where absolute destination paths may point."""
    tenant_slugs: frozenset[str] = frozenset()
    """Every tenant folder of the repository (not only those loaded): which tenant owns an
    environment variable name depends on all prefixes (references.env_owner)."""

    def env_problem(self, name: str) -> str | None:
        """Why this tenant may not name variable `name`, or None (references.env_name_problem)."""
        return env_name_problem(name, self.slug, self.tenant_slugs, self.project.env)

    def is_broken(self, kind: Kind, name: str) -> bool:
        return Address(self.slug, kind, name) in self.broken if name else False


def _at(vs: ValidSpec, *field: str | int, key: bool = False) -> SourceSpan:
    return vs.file.locate((*vs.loc, *field), key=key)


def _connection_ref(
    ctx: TenantContext,
    vs: ValidSpec,
    field: str,
    name: str,
    *,
    direction: str,
    types: frozenset[str],
    role: str,
    diags: list[Diagnostic],
) -> ValidSpec | None:
    connections = ctx.by_kind[Kind.CONNECTION]
    target = connections.get(name)

    def span() -> SourceSpan:  # computed only when there is something to report
        return _at(vs, field) if field in _spec_fields_set(vs) else _at(vs, key=True)

    if target is None and ctx.is_broken(Kind.CONNECTION, name):
        return None
    if target is None:
        diags.append(_unknown_connection(ctx, vs.address, field, name, span()))
        return None
    spec = target.spec
    if spec.direction != direction:
        diags.append(
            error(
                "wrong-direction",
                "Wrong connection direction",
                f"{vs.address}: {field} {name!r} is a {spec.direction} connection, "
                f"but a {role} must be a {direction}.",
                hint=f"Use a connection with `direction: {direction}`.",
                span=span(),
                address=vs.address,
            )
        )
        return None
    if spec.type not in types:
        diags.append(
            error(
                "wrong-connection-type",
                "Wrong connection type",
                f"{vs.address}: {field} {name!r} is of type {spec.type}; a {role} must be "
                f"one of {', '.join(sorted(types))}.",
                hint=f"Point {field} at a connection of a supported type.",
                span=span(),
                address=vs.address,
            )
        )
        return None
    return target


def _unknown_connection(
    ctx: TenantContext, owner: Address, field: str, name: str, span: SourceSpan
) -> Diagnostic:
    connections = ctx.by_kind[Kind.CONNECTION]
    return error(
        "unknown-reference",
        "Unknown reference",
        f"{owner}: {field} {name!r} names no connection of tenant {ctx.slug}.",
        hint=did_you_mean(name, connections)
        or "Declare it under `connections:` in this tenant's folder.",
        span=span,
        address=owner,
    )


_CONNECTION_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.PIPELINE: ("source", "destination"),
    Kind.TRANSFORMATION: ("warehouse",),
    Kind.SNAPSHOT: ("warehouse",),
}
_NODE_ENTRY = re.compile(rf"(?:(?:pipeline|transformation|snapshot):)?{NAME.pattern}")


def check_broken_references(ctx: TenantContext, broken: Sequence[BrokenSpec]) -> list[Diagnostic]:
    """The references of resources that failed validation, where the field holding them is
    usable on its own (a well-formed name), so one fault never hides another.

    Only existence is checked: rules that need the rest of the resource (a connection's
    direction against the pipeline's mode, SQL refs) wait until it validates.
    """
    diags: list[Diagnostic] = []
    connections = ctx.by_kind[Kind.CONNECTION]
    for b in broken:
        if not isinstance(b.data, Mapping):
            continue
        for field in _CONNECTION_FIELDS.get(b.address.kind, ()):
            name = b.data.get(field)
            if not isinstance(name, str) or not NAME.fullmatch(name):
                continue  # absent, or already reported by validation
            if name not in connections and not ctx.is_broken(Kind.CONNECTION, name):
                span = b.file.locate((*b.loc, field))
                diags.append(_unknown_connection(ctx, b.address, field, name, span))
        entries = b.data.get("depends_on") if b.address.kind in _CONNECTION_FIELDS else None
        for i, entry in enumerate(entries if isinstance(entries, list) else ()):
            if isinstance(entry, str) and _NODE_ENTRY.fullmatch(entry):
                where = functools.partial(b.file.locate, (*b.loc, "depends_on", i))
                resolve_node_name(ctx, entry, b.address, where, diags)
    return diags


def _spec_fields_set(vs: ValidSpec) -> frozenset[str]:
    return frozenset(vs.spec.model_fields_set) | frozenset(
        f.alias
        for n, f in type(vs.spec).model_fields.items()
        if n in vs.spec.model_fields_set and f.alias
    )


def check_tenant(ctx: TenantContext) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    if ctx.tenant.warehouse is not None:
        _connection_ref(
            ctx,
            ctx.tenant_vs,
            "warehouse",
            ctx.tenant.warehouse,
            direction="destination",
            types=WAREHOUSE_TYPES,
            role="warehouse",
            diags=diags,
        )
    seen: dict[str, int] = {}
    for i, member in enumerate(ctx.tenant.members):
        who = member.who.strip().lower()
        if who in seen:
            diags.append(
                error(
                    "duplicate-member",
                    "Duplicate member",
                    f"Tenant {ctx.slug} lists {member.who!r} twice in members "
                    f"(first as entry {seen[who] + 1}).",
                    hint="List each member once, with the highest role they need.",
                    span=_at(ctx.tenant_vs, "members", i),
                    address=ctx.tenant_vs.address,
                )
            )
        seen.setdefault(who, i)
        if "@" not in who and member.who.strip() not in ctx.project.groups:
            diags.append(
                error(
                    "unknown-group",
                    "Unknown group",
                    f"Tenant {ctx.slug} lists {member.who!r} in members: it is not an email "
                    "and no group of fabric.yaml has that name.",
                    hint=did_you_mean(member.who, sorted(ctx.project.groups))
                    or "Write an email address, or declare the group under `groups:` in "
                    "fabric.yaml.",
                    span=_at(ctx.tenant_vs, "members", i, "who"),
                    address=ctx.tenant_vs.address,
                )
            )
    if ctx.tenant.members and not any(m.role == "owner" for m in ctx.tenant.members):
        diags.append(
            error(
                "no-owner",
                "Tenant without an owner",
                f"Tenant {ctx.slug} lists members but no owner: the last owner cannot be removed.",
                hint="Keep at least one member with `role: owner` (add the new owner first, "
                "apply, then remove the old one).",
                span=_at(ctx.tenant_vs, "members"),
                address=ctx.tenant_vs.address,
            )
        )
    _check_declared_env(ctx, diags)
    return diags


def check_project_admins(
    project: ProjectSpec, locate: Callable[[tuple[str | int, ...]], SourceSpan]
) -> list[Diagnostic]:
    """`admins:` entries without `@` must name a declared group."""
    return [
        error(
            "unknown-group",
            "Unknown group",
            f"fabric.yaml: admins lists {who!r}: it is not an email and no group has that name.",
            hint=did_you_mean(who, sorted(project.groups))
            or "Write an email address, or declare the group under `groups:`.",
            span=locate(("admins", i)),
        )
        for i, who in enumerate(project.admins)
        if "@" not in who and who.strip() not in project.groups
    ]


def _check_declared_env(ctx: TenantContext, diags: list[Diagnostic]) -> None:
    """`env:` names only the tenant's own variables or shared ones (references.env_name_problem):
    a declared variable is handed to the tenant's SQL."""
    seen: set[str] = set()
    for i, name in enumerate(ctx.tenant.env):
        problem = ctx.env_problem(name)
        if problem is not None:
            diags.append(
                _env_name_error(
                    ctx, name, problem, f"declares {name!r} in env:", ctx.tenant_vs, ("env", i)
                )
            )
        elif name in seen:
            diags.append(
                error(
                    "duplicate-env",
                    "Duplicate environment variable",
                    f"Tenant {ctx.slug} declares {name!r} twice in env:.",
                    hint="List each variable once.",
                    span=_at(ctx.tenant_vs, "env", i),
                    address=ctx.tenant_vs.address,
                )
            )
        seen.add(name)


def _env_name_error(
    ctx: TenantContext,
    name: str,
    problem: str,
    what: str,
    vs: ValidSpec | BrokenSpec,
    field: tuple[str | int, ...],
) -> Diagnostic:
    own = env_prefix(ctx.slug)
    if is_reserved_env(name):
        code, title = "reserved-env", "Reserved environment variable"
        hint = f"Name a variable of your own, e.g. {own}REGION, set in the runner's environment."
    else:
        owner = env_owner(name, ctx.tenant_slugs)
        rest = name.removeprefix(env_prefix(owner)) if owner else name
        rest = rest.upper().removeprefix(own)  # acme_region -> ACME_REGION, not ACME_ACME_...
        code, title = "foreign-env", "Environment variable not the tenant's"
        hint = (
            f"Rename it to {own}{rest.upper()} (tenant {ctx.slug} names only variables beginning "
            f"{own}), or, if every tenant may read it, share it under `env:` in fabric.yaml."
        )
    return error(
        code,
        title,
        f"{vs.address}: tenant {ctx.slug} {what}, {problem}.",
        hint=hint,
        span=vs.file.locate((*vs.loc, *field)),
        address=vs.address,
    )


def check_env_references(
    ctx: TenantContext, specs: Iterable[ValidSpec | BrokenSpec]
) -> list[Diagnostic]:
    """Every `${env:NAME}` in the tenant's files names a variable the tenant may read
    (references.env_name_problem): apply and the runner resolve it from their own
    environment, and the value lands in this tenant's resource."""
    diags: list[Diagnostic] = []
    for vs in specs:
        data = vs.data if isinstance(vs, BrokenSpec) else _data_at(vs.file.data, vs.loc)
        for field, value in _strings_in(data, ()):
            for ref in references_in(value):
                if ref.scheme != "env":
                    continue
                problem = ctx.env_problem(ref.name)
                if problem is not None:
                    diags.append(
                        _env_name_error(
                            ctx, ref.name, problem, f"reads ${{env:{ref.name}}}", vs, field
                        )
                    )
    return diags


def _data_at(data: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _strings_in(
    data: Any, loc: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(location, text) of every string value under `data`, depth first."""
    if isinstance(data, str):
        yield loc, data
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from _strings_in(value, (*loc, key))
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            yield from _strings_in(value, (*loc, i))


def check_env_vars(
    ctx: TenantContext,
    address: Address,
    used: tuple[tuple[str, int], ...],
    dynamic: tuple[int, ...],
    span_at: Callable[[int], SourceSpan],
    diags: list[Diagnostic],
    *,
    allowed: frozenset[str] | None = None,
) -> None:
    """A model's `env_var('NAME')` may read only what the tenant declared in `env:`; `used`
    and `dynamic` come from fabric.config.sql_refs.env_vars, `span_at(line)` locates an SQL
    line. `allowed` replaces the tenant's `env:` list (a project-wide macro may read only
    fabric.yaml's shared `env:`)."""
    if allowed is None:
        allowed = frozenset(ctx.tenant.env)
    declared = frozenset(n for n in allowed if not is_reserved_env(n))
    for line in dynamic:
        diags.append(
            error(
                "dynamic-env-var",
                "Unresolvable env_var",
                f"{address}: env_var on SQL line {line} is not called with a plain string "
                "literal, so which variable it reads cannot be checked.",
                hint="Write {{ env_var('NAME') }} with a literal name declared in the tenant's "
                "`env:` list.",
                span=span_at(line),
                address=address,
            )
        )
    for name, line in used:
        if name in declared:
            continue
        why = (
            "a variable of fabric's own, which no tenant may read"
            if is_reserved_env(name)
            else f"not declared in tenant {ctx.slug}'s env: list"
        )
        diags.append(
            error(
                "undeclared-env-var",
                "Undeclared environment variable",
                f"{address}: env_var({name!r}) on SQL line {line} reads {why}.",
                hint=f"Add {name} to `env:` under `tenant:` (values come from the runner's "
                "environment)."
                if not is_reserved_env(name)
                else "Read only variables the tenant declares in `env:`.",
                span=span_at(line),
                address=address,
            )
        )


def check_project_timezone(
    project: ProjectSpec, locate: Callable[[], SourceSpan]
) -> list[Diagnostic]:
    """The project's default timezone is checked where it is written, used or not."""
    if _valid_timezone(project.defaults.timezone):
        return []
    return [
        error(
            "bad-timezone",
            "Unknown timezone",
            f"fabric.yaml: defaults.timezone {project.defaults.timezone!r} "
            "is not an IANA timezone.",
            hint="Use a name such as Europe/Berlin or UTC.",
            span=locate(),
        )
    ]


def check_project_env(
    project: ProjectSpec, locate: Callable[[tuple[str | int, ...]], SourceSpan]
) -> list[Diagnostic]:
    """fabric.yaml's `env:` shares variables with every tenant; fabric's own cannot be."""
    diags: list[Diagnostic] = []
    seen: set[str] = set()
    for i, name in enumerate(project.env):
        if is_reserved_env(name):
            diags.append(
                error(
                    "reserved-env",
                    "Reserved environment variable",
                    f"fabric.yaml shares {name!r} in env:, a variable of fabric's own (FABRIC_* "
                    "and DBT_ENV_SECRET_* hold fabric's settings, keys and warehouse "
                    "credentials), which no tenant may read.",
                    hint="Share only variables meant for every tenant, e.g. DEMO_PG_PORT.",
                    span=locate(("env", i)),
                )
            )
        elif name in seen:
            diags.append(
                error(
                    "duplicate-env",
                    "Duplicate environment variable",
                    f"fabric.yaml shares {name!r} twice in env:.",
                    hint="List each variable once.",
                    span=locate(("env", i)),
                )
            )
        seen.add(name)
    return diags


def check_connections(ctx: TenantContext) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    for vs in ctx.by_kind[Kind.CONNECTION].values():
        spec = vs.spec
        _check_free_form_secrets(vs, diags)
        if getattr(spec, "warehouse", None) is not None:
            _check_managed_connection(ctx, vs, diags)
        elif spec.type in ("postgres", "mysql", "mssql"):
            if spec.url is not None and (spec.host or spec.database or spec.password):
                diags.append(
                    error(
                        "conflicting-fields",
                        "Conflicting fields",
                        f"{vs.address} sets both url and host/database/password.",
                        hint="Use either url, or host, port, database, username and password.",
                        span=_at(vs, "url"),
                        address=vs.address,
                    )
                )
            elif spec.url is None and not (spec.host and spec.database):
                missing = "host" if not spec.host else "database"
                diags.append(
                    error(
                        "missing-field",
                        "Missing field",
                        f"{vs.address} needs field {missing!r} (or a url).",
                        hint="Give host and database, or url: ${secret:NAME}.",
                        span=_at(vs, key=True),
                        address=vs.address,
                    )
                )
        if spec.type == "filesystem" and spec.direction == "destination":
            _check_destination_folder(ctx, vs, diags)
        if spec.type == "filesystem" and spec.direction == "source":
            _check_source_folder(ctx, vs, diags)
        if spec.type == "sqlite" and not references_in(spec.path):  # else checked at run time
            problem = sqlite_target(spec.path, ctx.slug, ctx.repo_root)[1]
            _check_local_path(ctx, vs, "path", problem, diags)
        if spec.type == "rest_api":
            seen: dict[str, int] = {}
            for i, resource in enumerate(spec.resources):
                if resource.name in seen:
                    diags.append(
                        error(
                            "duplicate-resource",
                            "Duplicate resource",
                            f"{vs.address} declares REST resource {resource.name!r} twice.",
                            hint="Give each resource a unique name.",
                            span=_at(vs, "resources", i, "name"),
                            address=vs.address,
                        )
                    )
                seen[resource.name] = i
    return diags


def _check_managed_connection(ctx: TenantContext, vs: ValidSpec, diags: list[Diagnostic]) -> None:
    """A connection to a managed warehouse takes host, database and login from fabric."""
    spec = vs.spec
    declared = ctx.project.warehouses.get(spec.warehouse)
    if declared is None or not declared.manage_roles:
        known = sorted(n for n, w in ctx.project.warehouses.items() if w.manage_roles)
        diags.append(
            error(
                "unknown-warehouse",
                "Unknown managed warehouse",
                f"{vs.address} names warehouse {spec.warehouse!r}, which fabric.yaml does not "
                "declare under warehouses: with manage_roles: true.",
                hint=f"Managed warehouses: {', '.join(known) or 'none'}.",
                span=_at(vs, "warehouse"),
                address=vs.address,
            )
        )
    if spec.direction != "destination":
        diags.append(
            error(
                "managed-source",
                "Managed warehouse as a source",
                f"{vs.address} reads from a managed warehouse; only destinations may name one.",
                hint="Read another tenant's data through a share instead.",
                span=_at(vs, "direction"),
                address=vs.address,
            )
        )
    extra = [
        f for f in ("host", "port", "database", "username", "password", "url") if getattr(spec, f)
    ]
    if extra:
        diags.append(
            error(
                "conflicting-fields",
                "Conflicting fields",
                f"{vs.address} names a managed warehouse and also sets {', '.join(extra)}.",
                hint="Remove them: host and database come from fabric.yaml, and fabric logs in "
                "as the tenant's own role.",
                span=_at(vs, extra[0]),
                address=vs.address,
            )
        )


def _check_destination_folder(ctx: TenantContext, vs: ValidSpec, diags: list[Diagnostic]) -> None:
    """A filesystem destination writes inside the tenant's own data folder (or a bucket)."""
    url = vs.spec.bucket_url
    if references_in(url):
        return  # known only at run time, where the same rule is applied
    _, problem = filesystem_target(url, ctx.slug, ctx.repo_root)
    if problem is None:
        return
    own = tenant_folder(ctx.slug)
    diags.append(
        error(
            "unsafe-destination-path",
            "Destination outside the tenant's folder",
            f"{vs.address}: tenant {ctx.slug} may not write to bucket_url {url!r}: {problem}.",
            hint=f"Write to a folder under {own}/ (relative to the repository root), e.g. "
            f"`bucket_url: {own}/lake`, or to an s3://, gs:// or az:// bucket.",
            span=_at(vs, "bucket_url"),
            address=vs.address,
        )
    )


def _check_source_folder(ctx: TenantContext, vs: ValidSpec, diags: list[Diagnostic]) -> None:
    """A filesystem source reads inside the tenant's own data folder (or a remote URL)."""
    url = vs.spec.bucket_url
    if not references_in(url):  # else known only at run time, where the same rule is applied
        _check_local_path(
            ctx, vs, "bucket_url", source_target(url, ctx.slug, ctx.repo_root)[1], diags
        )
    check_file_glob(vs, ("file_glob",), vs.spec.file_glob, diags)


def check_file_glob(
    vs: ValidSpec, field: tuple[str | int, ...], glob: str | None, diags: list[Diagnostic]
) -> None:
    """A `file_glob` (connection or pipeline) stays inside the folder it is matched in."""
    problem = glob_problem(glob) if glob else None
    if problem is None:
        return
    diags.append(
        error(
            "unsafe-local-path",
            "Local path outside the tenant's folder",
            f"{vs.address}: file_glob {glob!r} is refused: {problem}.",
            hint="Write a pattern relative to bucket_url, e.g. `orders/*.csv`.",
            span=_at(vs, *field),
            address=vs.address,
        )
    )


def _check_local_path(
    ctx: TenantContext, vs: ValidSpec, field: str, problem: str | None, diags: list[Diagnostic]
) -> None:
    if problem is None:
        return
    own = tenant_folder(ctx.slug)
    value = getattr(vs.spec, field)
    diags.append(
        error(
            "unsafe-local-path",
            "Local path outside the tenant's folder",
            f"{vs.address}: tenant {ctx.slug} may not read {field} {value!r}: {problem}.",
            hint=f"Put the tenant's local files under {own}/ (relative to the repository root), "
            f"e.g. `{field}: {own}/{'drops' if field == 'bucket_url' else 'erp.sqlite'}`"
            + (
                ", or read an s3://, gs://, az:// or https:// URL."
                if field == "bucket_url"
                else "."
            ),
            span=_at(vs, field),
            address=vs.address,
        )
    )


def _check_free_form_secrets(vs: ValidSpec, diags: list[Diagnostic]) -> None:
    """Credentials in free-form maps (`Authorization` header, `api_key` param) are references."""
    spec = vs.spec
    maps: list[tuple[tuple[str | int, ...], Mapping[str, Any]]] = [
        ((name,), getattr(spec, name)) for name in ("options", "headers") if hasattr(spec, name)
    ]
    if spec.type == "rest_api":
        maps += [(("resources", i, "params"), r.params) for i, r in enumerate(spec.resources)]
    for loc, mapping in maps:
        for key, value in mapping.items():
            if is_secret_key(key) and not (isinstance(value, str) and references_in(value)):
                field = ".".join(str(p) for p in (*loc, key))
                diags.append(
                    error(
                        "literal-secret",
                        "Secret written as a literal",
                        f"{vs.address}: field {field!r} holds a credential, so it must use a "
                        "${env:NAME} or ${secret:NAME} reference, never a value.",
                        hint="Store it with `fabric secrets set` and write ${secret:NAME} "
                        "(e.g. `Bearer ${secret:api_token}`), or use ${env:NAME}.",
                        span=_at(vs, *loc, key),
                        address=vs.address,
                    )
                )


def resolve_pipelines(ctx: TenantContext, diags: list[Diagnostic]) -> dict[str, Any]:
    """Checks every pipeline; returns specs whose destination was filled from the warehouse."""
    resolved: dict[str, Any] = {}
    for name, vs in ctx.by_kind[Kind.PIPELINE].items():
        spec = vs.spec
        fields_set = _spec_fields_set(vs)
        source = _connection_ref(
            ctx,
            vs,
            "source",
            spec.source,
            direction="source",
            types=MODE_SOURCE_TYPES[spec.mode],
            role=f"{spec.mode} pipeline's source",
            diags=diags,
        )
        destination = spec.destination or ctx.tenant.warehouse
        if destination is None:
            diags.append(
                error(
                    "missing-field",
                    "Missing field",
                    f"{vs.address} has no destination and tenant {ctx.slug} has no warehouse.",
                    hint="Set `destination:` on the pipeline or `warehouse:` on the tenant.",
                    span=_at(vs, key=True),
                    address=vs.address,
                )
            )
        elif spec.destination is None:  # the tenant's warehouse, checked once on the tenant
            resolved[name] = spec.model_copy(update={"destination": destination})
        else:
            target = _connection_ref(
                ctx,
                vs,
                "destination",
                destination,
                direction="destination",
                types=DESTINATION_TYPES,
                role="pipeline's destination",
                diags=diags,
            )
            if target is not None and target.spec.type == "filesystem":
                _check_filesystem_disposition(vs, spec, diags)
        if spec.mode == "files":
            check_file_glob(vs, ("file_glob",), spec.file_glob, diags)
        for field, mode in MODE_ONLY_FIELDS.items():
            if field in fields_set and spec.mode != mode:
                diags.append(
                    error(
                        "field-not-for-mode",
                        "Field not used by this mode",
                        f"{vs.address}: {field!r} applies only to mode {mode}, "
                        f"but the pipeline's mode is {spec.mode}.",
                        hint=f"Remove {field!r} or change the mode to {mode}.",
                        span=_at(vs, field, key=True),
                        address=vs.address,
                    )
                )
        if spec.mode == "single_table" and spec.table is None:
            diags.append(
                error(
                    "missing-field",
                    "Missing field",
                    f"{vs.address} needs field 'table' (mode single_table).",
                    hint="Name the source table: `table: orders`.",
                    span=_at(vs, "mode"),
                    address=vs.address,
                )
            )
        if spec.source_schema is not None and spec.mode not in ("single_table", "full_database"):
            diags.append(
                error(
                    "field-not-for-mode",
                    "Field not used by this mode",
                    f"{vs.address}: 'source_schema' applies only to SQL sources.",
                    hint="Remove source_schema.",
                    span=_at(vs, "source_schema", key=True),
                    address=vs.address,
                )
            )
        if spec.incremental is not None and spec.mode not in ("single_table", "files"):
            diags.append(
                error(
                    "field-not-for-mode",
                    "Field not used by this mode",
                    f"{vs.address}: 'incremental' needs mode single_table or files "
                    f"(mode is {spec.mode}).",
                    hint="For full_database load tables one per single_table pipeline to make "
                    "them incremental.",
                    span=_at(vs, "incremental", key=True),
                    address=vs.address,
                )
            )
        rest_keys = False
        if spec.mode == "rest_api" and source is not None:
            known = {r.name: r for r in source.spec.resources}
            for i, wanted in enumerate(spec.resources):
                if wanted not in known:
                    diags.append(
                        error(
                            "unknown-reference",
                            "Unknown reference",
                            f"{vs.address}: resource {wanted!r} is not declared by connection "
                            f"{spec.source!r}.",
                            hint=did_you_mean(wanted, known),
                            span=_at(vs, "resources", i),
                            address=vs.address,
                        )
                    )
            chosen = [known[r] for r in spec.resources if r in known] or list(known.values())
            rest_keys = bool(chosen) and all(r.primary_key for r in chosen)
        if spec.write_disposition == "merge" and not spec.primary_key and not rest_keys:
            diags.append(
                error(
                    "merge-needs-primary-key",
                    "Merge without primary key",
                    f"{vs.address} uses write_disposition merge but declares no primary_key.",
                    hint="Add `primary_key: [id]` (the columns that identify a row).",
                    span=_at(vs, "write_disposition"),
                    address=vs.address,
                )
            )
        for i, f in enumerate(spec.filters):
            is_list = isinstance(f.value, tuple)
            if (f.op in ("in", "not_in")) != is_list:
                want = "a list of values" if f.op in ("in", "not_in") else "a single value"
                diags.append(
                    error(
                        "invalid-value",
                        "Invalid value",
                        f"{vs.address}: filter {i + 1} on {f.column!r} with op {f.op} "
                        f"needs {want}.",
                        hint="Use a list with in/not_in and a single value with the other ops.",
                        span=_at(vs, "filters", i, "value"),
                        address=vs.address,
                    )
                )
    return resolved


def _check_filesystem_disposition(vs: ValidSpec, spec: Any, diags: list[Diagnostic]) -> None:
    # NOTE: dlt's filesystem destination merges only its delta and iceberg table formats; for
    # parquet, jsonl and csv files it logs a warning and appends, so a merge would duplicate rows.
    if spec.write_disposition != "merge":
        return
    diags.append(
        error(
            "merge-not-supported",
            "Merge into files",
            f"{vs.address} uses write_disposition merge into filesystem destination "
            f"{spec.destination!r}, but dlt can only append or replace parquet, jsonl and csv "
            "files (a merge would silently append duplicates).",
            hint="Use `write_disposition: append` (every load adds files) or `replace` (each "
            "load rewrites the tables), or load into a postgres warehouse to merge.",
            span=_at(vs, "write_disposition"),
            address=vs.address,
        )
    )


def check_transformation(
    ctx: TenantContext, vs: ValidSpec, diags: list[Diagnostic]
) -> dict[str, Any]:
    """Checks one transformation; returns field updates (the resolved warehouse)."""
    spec = vs.spec
    if (spec.sql is None) == (spec.sql_file is None):
        diags.append(
            error(
                "sql-xor-sql-file",
                "SQL missing or given twice",
                f"{vs.address} must set exactly one of 'sql' and 'sql_file'.",
                hint="Write the query inline under `sql:` or put it in a file named by "
                "`sql_file:`.",
                span=_at(vs, key=True),
                address=vs.address,
            )
        )
    if spec.unique_key is not None and spec.materialized != "incremental":
        diags.append(
            error(
                "field-not-for-mode",
                "Field not used by this materialization",
                f"{vs.address}: 'unique_key' applies only to materialized: incremental.",
                hint="Remove unique_key or set `materialized: incremental`.",
                span=_at(vs, "unique_key", key=True),
                address=vs.address,
            )
        )
    transformations = ctx.by_kind[Kind.TRANSFORMATION]
    for column, tests in spec.tests.items():
        for i, test in enumerate(tests):
            if test.test == "relationships":
                target = (test.to or "").strip()
                if target.startswith("ref("):
                    target = target[4:].rstrip(")").strip(" '\"")
                if target not in transformations or not test.field:
                    diags.append(
                        error(
                            "unknown-reference",
                            "Unknown reference",
                            f"{vs.address}: the relationships test on {column!r} must name a "
                            f"transformation of tenant {ctx.slug} in 'to' and a column in "
                            f"'field' (got to={test.to!r}).",
                            hint=did_you_mean(target, transformations),
                            span=_at(vs, "tests", column, i),
                            address=vs.address,
                        )
                    )
            if test.test == "accepted_values" and not test.values:
                diags.append(
                    error(
                        "invalid-value",
                        "Invalid value",
                        f"{vs.address}: accepted_values on {column!r} needs a non-empty list.",
                        hint="accepted_values: [gold, silver, bronze]",
                        span=_at(vs, "tests", column, i),
                        address=vs.address,
                    )
                )
    warehouse = spec.warehouse or ctx.tenant.warehouse
    if warehouse is None:
        diags.append(
            error(
                "missing-field",
                "Missing field",
                f"{vs.address} has no warehouse and tenant {ctx.slug} has no default warehouse.",
                hint="Set `warehouse:` on the transformation or on the tenant.",
                span=_at(vs, key=True),
                address=vs.address,
            )
        )
        return {}
    if spec.warehouse is None:  # the tenant's warehouse, checked once on the tenant
        return {"warehouse": warehouse}
    _connection_ref(
        ctx,
        vs,
        "warehouse",
        warehouse,
        direction="destination",
        types=WAREHOUSE_TYPES,
        role="transformation's warehouse",
        diags=diags,
    )
    return {}


def resolve_schedules(ctx: TenantContext, diags: list[Diagnostic]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, vs in ctx.by_kind[Kind.SCHEDULE].items():
        spec = vs.spec
        fields = spec.cron.split()
        if len(fields) != 5 or not croniter.is_valid(spec.cron):
            diags.append(
                error(
                    "bad-cron",
                    "Invalid cron expression",
                    f"{vs.address}: {spec.cron!r} is not a valid 5-field cron expression.",
                    hint='Use minute hour day-of-month month day-of-week, e.g. "0 2 * * *".',
                    span=_at(vs, "cron"),
                    address=vs.address,
                )
            )
        timezone = spec.timezone or ctx.project.defaults.timezone
        if not _valid_timezone(timezone):
            diags.append(
                error(
                    "bad-timezone",
                    "Unknown timezone",
                    f"{vs.address}: timezone {timezone!r} is not an IANA timezone.",
                    hint="Use a name such as Europe/Berlin or UTC.",
                    span=_at(vs, "timezone") if spec.timezone else _at(vs, key=True),
                    address=vs.address,
                )
            )
        elif spec.timezone is None:
            resolved[name] = spec.model_copy(update={"timezone": timezone})
        for i, target in enumerate(spec.targets):
            _check_selector(ctx, vs, target, functools.partial(_at, vs, "targets", i), diags)
    return resolved


def _valid_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # `Europe` is a folder
        return False
    return True


def _check_selector(
    ctx: TenantContext,
    vs: ValidSpec,
    text: str,
    span: Callable[[], SourceSpan],
    diags: list[Diagnostic],
) -> None:
    try:
        selector = parse_selector(text)
    except ValueError as exc:
        diags.append(
            error(
                "bad-selector",
                "Invalid selector",
                f"{vs.address}: {exc}.",
                hint="Examples: orders, pipeline:orders, +customer_totals, orders+, tag:nightly.",
                span=span(),
                address=vs.address,
            )
        )
        return
    nodes = (Kind.PIPELINE, Kind.TRANSFORMATION, Kind.SNAPSHOT)
    if selector.method == "tag":
        tags = {t for kind in nodes for vs2 in ctx.by_kind[kind].values() for t in vs2.spec.tags}
        # The tag may be on a node that failed validation (already reported).
        if selector.value not in tags and not any(a.kind in nodes for a in ctx.broken):
            diags.append(
                error(
                    "unknown-reference",
                    "Unknown reference",
                    f"{vs.address}: target {text!r} selects nothing: no pipeline or "
                    f"transformation of tenant {ctx.slug} has tag {selector.value!r}.",
                    hint=did_you_mean(selector.value, tags),
                    span=span(),
                    address=vs.address,
                )
            )
        return
    kinds = {
        "name": nodes,
        "pipeline": (Kind.PIPELINE,),
        "transformation": (Kind.TRANSFORMATION,),
        "snapshot": (Kind.SNAPSHOT,),
    }
    if selector.method not in kinds:  # `*`
        return
    pool = {name: vs2 for kind in kinds[selector.method] for name, vs2 in ctx.by_kind[kind].items()}
    if selector.value in pool or any(
        ctx.is_broken(kind, selector.value) for kind in kinds[selector.method]
    ):
        return  # found, or it failed validation (already reported)
    what = "pipeline or transformation" if selector.method == "name" else selector.method
    diags.append(
        error(
            "unknown-reference",
            "Unknown reference",
            f"{vs.address}: target {text!r} names no {what} of tenant {ctx.slug}.",
            hint=did_you_mean(selector.value, pool),
            span=span(),
            address=vs.address,
        )
    )


def resolve_node_name(
    ctx: TenantContext,
    entry: str,
    owner: Address,
    span: Callable[[], SourceSpan],
    diags: list[Diagnostic],
) -> Address | None:
    """`orders` or `pipeline:orders` in depends_on -> the node's address."""
    kind_text, _, name = entry.rpartition(":")
    pipelines = ctx.by_kind[Kind.PIPELINE]
    transformations = ctx.by_kind[Kind.TRANSFORMATION]
    snapshots = ctx.by_kind[Kind.SNAPSHOT]
    candidates: list[ValidSpec] = []
    if kind_text in ("", "pipeline") and name in pipelines:
        candidates.append(pipelines[name])
    if kind_text in ("", "transformation") and name in transformations:
        candidates.append(transformations[name])
    if kind_text in ("", "snapshot") and name in snapshots:
        candidates.append(snapshots[name])
    if kind_text not in ("", "pipeline", "transformation", "snapshot"):
        candidates = []
    if len(candidates) == 1:
        return candidates[0].address
    node_kinds = (Kind.PIPELINE, Kind.TRANSFORMATION, Kind.SNAPSHOT)
    if not candidates and any(ctx.is_broken(k, name) for k in node_kinds):
        return None
    if len(candidates) > 1:
        diags.append(
            error(
                "ambiguous-reference",
                "Ambiguous reference",
                f"{owner}: depends_on {entry!r} names both a pipeline and a transformation.",
                hint=f"Write pipeline:{name} or transformation:{name}.",
                span=span(),
                address=owner,
            )
        )
        return None
    diags.append(
        error(
            "unknown-reference",
            "Unknown reference",
            f"{owner}: depends_on {entry!r} names no pipeline or transformation of tenant "
            f"{ctx.slug}.",
            hint=did_you_mean(name, {**pipelines, **transformations, **snapshots})
            or "depends_on takes names of pipelines or transformations of the same tenant.",
            span=span(),
            address=owner,
        )
    )
    return None


def writes_files(ctx: TenantContext, vs: ValidSpec) -> bool:
    """Whether a pipeline loads into a filesystem destination (no tables for dbt to read)."""
    name = vs.spec.destination or ctx.tenant.warehouse or ""
    connection = ctx.by_kind[Kind.CONNECTION].get(name)
    return connection is not None and connection.spec.type == "filesystem"


def pipeline_tables(ctx: TenantContext, vs: ValidSpec) -> frozenset[str] | None:
    """Tables a pipeline loads (what `source('pipeline', 'table')` may name); None = unknown."""
    spec = vs.spec
    match spec.mode:
        case "single_table":
            return frozenset({spec.table}) if spec.table else frozenset()
        case "full_database":
            return frozenset(spec.table_names) if spec.table_names else None
        case "files":
            return frozenset({spec.table_name or vs.address.name})
        case _:
            connection = ctx.by_kind[Kind.CONNECTION].get(spec.source)
            if connection is None or connection.spec.type != "rest_api":
                return None
            declared = [r.name for r in connection.spec.resources]
            return frozenset(spec.resources or declared)
