"""Load a repository into a DesiredState, with every diagnostic at once.  [shell]

Reads the files (discovery), then runs the pure steps: parse, validate, resolve, check.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from fabric.addresses import TENANT_SLUG, Address
from fabric.config.checks import check_project_admins, check_project_env, check_project_timezone
from fabric.config.dbt_files import package_problems, shared_macro_problems
from fabric.config.discovery import (
    MAX_SEED_BYTES,
    YAML_SUFFIXES,
    RepositoryFiles,
    SourceFile,
    discover,
    project_files,
    read_local_package,
    read_tenant_text,
)
from fabric.config.ownership import (
    SchemaWrite,
    check_schema_ownership,
    check_shares,
    schema_writes,
)
from fabric.config.resolve import build_tenant
from fabric.config.sections import BrokenSpec, validate_project, validate_tenant_file
from fabric.config.specs import ProjectSpec
from fabric.config.yaml_source import MAX_FILE_BYTES, parse_yaml
from fabric.diagnostics import Diagnostic, SourceSpan, error, has_errors, sorted_unique
from fabric.domain.state import DesiredState, TenantState


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The desired state (None when there are errors) and every diagnostic found."""

    root: Path
    desired: DesiredState | None
    diagnostics: tuple[Diagnostic, ...]
    files: int = 0
    tenants: tuple[str, ...] = field(default=())
    project_digest: str = ""
    """sha256 of fabric.yaml."""
    tenant_digests: Mapping[str, str] = field(default_factory=dict)
    """Tenant folder -> sha256 of its YAML and SQL files."""
    only: frozenset[str] | None = None
    """The tenants loaded when loading was limited to some; None when all were."""

    @property
    def ok(self) -> bool:
        return self.desired is not None

    def source_hash_for(self, tenants: Iterable[str] | None = None) -> str:
        """Hash of fabric.yaml and these tenants' files (all loaded ones when None).

        A plan records the hash of the files it covers, so a plan of some tenants stays
        appliable while other tenants' files change, and the same hash is recomputed from a
        full load when the plan is applied.
        """
        return source_hash(self.project_digest, self.tenant_digests, tenants)


def source_hash(
    project_digest: str, tenant_digests: Mapping[str, str], tenants: Iterable[str] | None = None
) -> str:
    chosen = sorted(tenant_digests if tenants is None else set(tenants) & set(tenant_digests))
    digest = hashlib.sha256(f"fabric.yaml\0{project_digest}\0".encode())
    for slug in chosen:
        digest.update(f"{slug}\0{tenant_digests[slug]}\0".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading.

    Parsing keeps every file's node tree alive until its specs are validated: hundreds of
    thousands of small, acyclic objects that make the collector rescan the heap again and
    again (it tripled the time of a 12 MB repository). Nothing built here forms cycles, so
    reference counting frees it all; the collector resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(slots=True)
class LoadCache:
    """Per-file and per-tenant results of earlier loads, keyed by content, for `fabric watch`.

    A tenant file's parse and validation depend only on its path, text and tenant; a tenant's
    resolution only on the project, its files' results and the SQL files it read. So after a
    one-file edit a reload re-reads every file (cheap) but parses and resolves only what
    changed. Entries of files and tenants not seen in the last load are dropped, so the cache
    never outgrows the repository. Not thread-safe; one per watcher.
    """

    files: dict[tuple[str, str, str], tuple] = field(default_factory=dict)
    """(path, slug, sha256 of text) -> (parse diagnostics, parse failed, specs, broken,
    problems)."""
    tenants: dict[str, tuple] = field(default_factory=dict)
    """slug -> (key, state, problems, {sql rel: (text, problem)}, schema writes) of its last
    resolution."""
    hits: int = 0
    """Files whose parse and validation came from the cache in the last load (for tests)."""
    discovered: RepositoryFiles | None = None
    """The files of the last full load: a reload told which tenants changed reads only those."""


def load_repository(
    root: Path,
    *,
    tenants: Iterable[str] | None = None,
    cache: LoadCache | None = None,
    changed: Iterable[str] | None = None,
) -> LoadResult:
    """Load every tenant, or only `tenants` (for `plan --changed-since`).

    A limited load reads and checks only those tenants' files: checks across tenants (schema
    ownership) then see only them, so whatever applies such a plan loads every tenant again
    (`fabric apply PLANFILE` does). `cache` (see LoadCache) makes reloading after small edits
    fast; the result is the same as without it. `changed` (with a cache) names the only tenant
    folders whose files may differ from the cache's last load (`fabric watch` knows them from
    file events): the other tenants' files are not even read again.
    """
    only = None if tenants is None else frozenset(tenants)
    with gc_paused():
        files = _discover(Path(root), only, cache, changed)
        # NOTE: with `changed`, a tenant not named kept its files, so its SQL files are trusted too
        fresh = None if changed is None or cache is None else frozenset(changed)
        return _load_repository(files, only, cache, fresh)


def _discover(
    root: Path, only: frozenset[str] | None, cache: LoadCache | None, changed: Iterable[str] | None
) -> RepositoryFiles:
    last = cache.discovered if cache is not None else None
    if only is not None or changed is None or last is None or last.root != root.resolve():
        files = discover(root, max_bytes=MAX_FILE_BYTES, only=only)
        if cache is not None and only is None:
            cache.discovered = files
        return files
    fresh_only = frozenset(changed)
    fresh = discover(root, max_bytes=MAX_FILE_BYTES, only=fresh_only)

    def kept(path: str) -> bool:
        parts = path.split("/")
        return not (len(parts) >= 2 and parts[0] == "tenants" and parts[1] in fresh_only)

    tenants = {k: v for k, v in last.tenants.items() if k not in fresh_only} | fresh.tenants
    assets = {k: v for k, v in last.assets.items() if k not in fresh_only} | fresh.assets
    files = RepositoryFiles(
        fresh.root,
        fresh.project,
        dict(sorted(tenants.items())),
        last.stray,
        tuple(u for u in last.unreadable if kept(u[0])) + fresh.unreadable,
        tuple(dict.fromkeys((*(r for r in last.refused if kept(r[0])), *fresh.refused))),
        fresh.slugs,
        assets,
        tuple(o for o in last.oversized if kept(o[0])) + fresh.oversized,
    )
    cache.discovered = files
    return files


def _validated_file(source, slug: str, cache: LoadCache | None, seen: set) -> tuple:
    key = (source.path, slug, hashlib.sha256(source.text.encode()).hexdigest())
    seen.add(key)
    if cache is not None and key in cache.files:
        cache.hits += 1
        return cache.files[key]
    parsed = parse_yaml(source.text, source.path)
    failed = parsed.data is None and bool(parsed.diagnostics)
    found, broken, problems = validate_tenant_file(parsed, slug)
    result = (tuple(parsed.diagnostics), failed, tuple(found), tuple(broken), tuple(problems))
    if cache is not None:
        cache.files[key] = result
    return result


def _load_repository(
    files: RepositoryFiles,
    only: frozenset[str] | None,
    cache: LoadCache | None,
    changed: frozenset[str] | None = None,
) -> LoadResult:
    diags: list[Diagnostic] = []
    project_digest = ""
    tenant_digests: dict[str, str] = {}
    for path, reason, line in files.unreadable:
        diags.append(
            error(
                "unreadable-file",
                "Unreadable file",
                f"{path} cannot be read: {reason}.",
                hint="Save the file as UTF-8 text.",
                span=SourceSpan(path, line, 1),
            )
        )
    project: ProjectSpec | None = None
    shared_macros: list[SourceFile] = []
    for path, size in files.oversized:
        diags.append(
            error(
                "seed-too-large",
                "Seed file too large",
                f"{path} holds {size} bytes; a seed may hold at most {MAX_SEED_BYTES} "
                "(dbt seed loads it row by row and fabric stores it with the tenant's state).",
                hint="Load a big CSV with a `files` pipeline and read it with source().",
                span=SourceSpan(path, 1, 1),
            )
        )
    if files.project is None:
        diags.append(
            error(
                "missing-project",
                "Not a fabric repository",
                f"{files.root} has no fabric.yaml.",
                hint="Name the folder that holds fabric.yaml (`fabric validate PATH`), or start a "
                "repository by copying example-repo/ from fabric's source.",
                span=SourceSpan("fabric.yaml", 1, 1),
            )
        )
    else:
        project_digest = hashlib.sha256(files.project.text.encode()).hexdigest()
        parsed = parse_yaml(files.project.text, files.project.path)
        diags += parsed.diagnostics
        if parsed.data is not None or not parsed.diagnostics:
            project, problems = validate_project(parsed)
            diags += problems
            if project is not None:
                where = functools.partial(parsed.locate, ("defaults", "timezone"))
                diags += check_project_timezone(project, where)
                diags += check_project_env(project, parsed.locate)
                diags += check_project_admins(project, parsed.locate)
                shared_macros, problems = _project_macros(files.root, project, parsed)
                diags += problems + shared_macro_problems(project, shared_macros)
                diags += package_problems(
                    project.dbt.packages,
                    None,
                    lambda i: parsed.locate(("dbt", "packages", i, "local")),
                )
                project_digest = _with_files(project_digest, shared_macros)
    for path, why, hint in files.refused:
        diags.append(
            error(
                "refused-tenant-path",
                "Tenant folder or file fabric will not read",
                f"{why}.",
                hint=hint,
                span=SourceSpan(path, 1, 1),
            )
        )
    for path in files.stray:
        diags.append(
            error(
                "stray-file",
                "File outside a tenant folder",
                f"{path} is directly under tenants/; fabric reads tenants/<slug>/*.yaml only.",
                hint="Move it into a tenant's folder, e.g. tenants/acme/.",
                span=SourceSpan(path, 1, 1),
            )
        )

    tenants: dict[str, TenantState] = {}
    all_slugs = frozenset(s for s in files.slugs if TENANT_SLUG.fullmatch(s))
    seen_files: set[tuple[str, str, str]] = set()
    seen_tenants: set[str] = set()
    tenant_writes: dict[str, tuple[SchemaWrite, ...]] = {}
    if cache is not None:
        cache.hits = 0
    root_posix = Path(files.root).resolve().as_posix()
    count = 1 if files.project else 0
    unreadable_tenants = {p.split("/")[1] for p, _, _ in files.unreadable if p.count("/") >= 2}
    for slug, sources in files.tenants.items():
        if not sources:
            continue  # an empty folder declares nothing; plan treats the tenant as removed
        count += len(sources)
        if not TENANT_SLUG.fullmatch(slug):
            diags.append(
                error(
                    "bad-tenant-slug",
                    "Invalid tenant folder name",
                    f"tenants/{slug} is not a valid tenant slug.",
                    hint="Tenant folders are named like ^[a-z][a-z0-9_]{0,39}$, e.g. acme_retail.",
                    span=SourceSpan(sources[0].path, 1, 1),
                )
            )
            continue
        specs = []
        broken: list[BrokenSpec] = []
        digest = hashlib.sha256()
        # A file that could not be read or parsed may declare anything: checking the tenant's
        # references without it would only add false errors, so the tenant is not built.
        is_complete = slug not in unreadable_tenants
        assets = files.assets.get(slug, ())
        for source in (*sources, *assets):
            digest.update(source.path.encode() + b"\0" + source.text.encode() + b"\0")
            if not source.path.endswith(YAML_SUFFIXES):
                continue
            parse_diags, failed_parse, found, failed, problems = _validated_file(
                source, slug, cache, seen_files
            )
            diags += parse_diags
            is_complete = is_complete and not failed_parse
            specs += found
            broken += failed
            diags += problems
        tenant_digests[slug] = digest.hexdigest()
        if project is None or not is_complete:
            continue
        sql_files: dict[str, str] = {}
        reads: dict[str, tuple[str | None, str | None]] = {}

        def read_sql(rel: str, slug: str = slug, sql_files=sql_files, reads=reads):
            text, problem = read_tenant_text(files.root, slug, rel)
            reads[rel] = (text, problem)
            if text is not None:
                sql_files[rel] = text
            return text, problem

        key = (project_digest, tenant_digests[slug], sources[0].path, all_slugs)
        cached = cache.tenants.get(slug) if cache is not None else None
        if (
            cached is not None
            and cached[0] == key
            and (
                (changed is not None and slug not in changed)
                or all(
                    read_tenant_text(files.root, slug, rel) == seen
                    for rel, seen in cached[3].items()
                )
            )
        ):
            _, state, problems, reads, *known = cached
            if known and state is not None:
                tenant_writes[slug] = known[0]
            sql_files.update({rel: text for rel, (text, _) in reads.items() if text is not None})
        else:
            state, problems = build_tenant(
                slug,
                specs,
                project,
                read_sql,
                sources[0].path,
                broken,
                root_posix,
                all_slugs,
                assets=assets,
                shared_macros=shared_macros,
                read_package=functools.partial(read_local_package, files.root),
            )
        if cache is not None:
            if state is not None and slug not in tenant_writes:
                tenant_writes[slug] = tuple(schema_writes(state))
            cache.tenants[slug] = (key, state, problems, dict(reads), tenant_writes.get(slug))
        seen_tenants.add(slug)
        diags += problems
        for rel, text in sorted(sql_files.items()):
            digest.update(f"tenants/{slug}/{rel}".encode() + b"\0" + text.encode() + b"\0")
        tenant_digests[slug] = digest.hexdigest()
        if state is not None:
            tenants[slug] = state
    diags += check_schema_ownership(tenants, writes=tenant_writes)
    diags += check_shares(tenants)
    if cache is not None and only is None:  # forget what the repository no longer holds
        cache.files = {k: v for k, v in cache.files.items() if k in seen_files}
        cache.tenants = {k: v for k, v in cache.tenants.items() if k in seen_tenants}

    diagnostics = sorted_unique(diags)
    desired = None
    if project is not None and not has_errors(diagnostics):
        desired = DesiredState(
            project=project,
            tenants=MappingProxyType(tenants),
            source_hash=source_hash(project_digest, tenant_digests),
            files=count,
        )
    return LoadResult(
        files.root,
        desired,
        diagnostics,
        count,
        tuple(sorted(tenants)),
        project_digest,
        MappingProxyType(tenant_digests),
        only,
    )


def _project_macros(
    root: Path, project: ProjectSpec, parsed
) -> tuple[list[SourceFile], list[Diagnostic]]:
    """The macro files of fabric.yaml's `dbt.macros` folder, shared by every tenant."""
    folder = project.dbt.macros
    if folder is None:
        return [], []
    found, problem = project_files(root, folder, ".sql")
    if problem is None:
        return found, []
    return [], [
        error(
            "bad-macros-folder",
            "Macros folder not usable",
            f"fabric.yaml: dbt.macros {folder!r} {problem}.",
            hint="Name a folder inside the repository, e.g. `macros`.",
            span=parsed.locate(("dbt", "macros")),
        )
    ]


def _with_files(digest: str, sources: Iterable[SourceFile]) -> str:
    """`digest` extended with these files, so a changed shared file changes the source hash."""
    extended = hashlib.sha256(digest.encode())
    for source in sources:
        extended.update(source.path.encode() + b"\0" + source.text.encode() + b"\0")
    return extended.hexdigest() if sources else digest


__all__ = ["Address", "LoadCache", "LoadResult", "load_repository"]
