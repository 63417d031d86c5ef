"""dbt files a tenant brings (macros), and the project's shared macros, checked.  [pure]

A tenant's `macros/**/*.sql` are discovered in its folder (no YAML entry); each file is one
stored resource `<slug>.macro.<file stem>`, so a changed macro shows in the plan like a
changed SQL file. fabric.yaml's `dbt.macros` folder is shared by every tenant: its files are
part of every tenant's project, as `<slug>.macro.project__<stem>`, and they are the only code
tenants share.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

from fabric.addresses import NAME, Address, Kind
from fabric.config.macros import (
    RESERVED_MACROS,
    is_builtin,
    macro_calls,
    macro_definitions,
    package_calls,
)
from fabric.config.references import is_reserved_env
from fabric.config.specs import (
    MacroSpec,
    ProjectSpec,
    SeedConfig,
    SeedSpec,
    SingularTestSpec,
)
from fabric.config.sql_refs import env_vars
from fabric.diagnostics import Diagnostic, SourceSpan, did_you_mean, error

SHARED_PREFIX = "project__"
"""Name prefix of the shared macros' addresses in a tenant (tenant file stems may not use it)."""


@dataclass(frozen=True, slots=True)
class MacroFile:
    """One macro file as resolved: its address, stored spec and where it is."""

    address: Address
    spec: MacroSpec
    span: SourceSpan


def _stem(path: str) -> str:
    return PurePosixPath(path).stem


def shared_macro_problems(project: ProjectSpec, sources: Sequence[Any]) -> list[Diagnostic]:
    """Checks of the project's shared macro files, reported once (not once per tenant)."""
    diags: list[Diagnostic] = []
    seen: dict[str, str] = {}
    for source in sources:
        stem = _stem(source.path)
        if not NAME.fullmatch(stem):
            diags.append(_bad_file_name(source.path, None))
        elif stem in seen:
            diags.append(_duplicate_file(source.path, seen[stem], None))
        seen.setdefault(stem, source.path)
        diags += _reserved(source.path, source.text, None)
        used, dynamic = env_vars(source.text)
        allowed = frozenset(n for n in project.env if not is_reserved_env(n))
        for line in dynamic:
            diags.append(
                error(
                    "dynamic-env-var",
                    "Unresolvable env_var",
                    f"{source.path}: env_var on line {line} is not called with a plain string "
                    "literal, so which variable it reads cannot be checked.",
                    hint="Write {{ env_var('NAME') }} with a name listed in fabric.yaml's `env:`.",
                    span=SourceSpan(source.path, line, 1),
                )
            )
        for name, line in used:
            if name not in allowed:
                diags.append(
                    error(
                        "undeclared-env-var",
                        "Undeclared environment variable",
                        f"{source.path}: env_var({name!r}) on line {line}: a shared macro runs "
                        "in every tenant, so it may read only fabric.yaml's shared `env:`.",
                        hint="List the variable in fabric.yaml's `env:` (never a FABRIC_* or a "
                        "tenant's own variable).",
                        span=SourceSpan(source.path, line, 1),
                    )
                )
    return diags


def resolve_macros(
    slug: str,
    assets: Iterable[Any],
    shared: Iterable[Any],
    check_env: Callable[[Address, str, Callable[[int], SourceSpan]], None],
    diags: list[Diagnostic],
) -> dict[str, MacroFile]:
    """The tenant's macro files (its own, then the shared ones), by address name.

    `check_env(address, text, span_at)` applies the tenant's env_var rules to its own files.
    """
    prefix = f"tenants/{slug}/macros/"
    found: dict[str, MacroFile] = {}
    for source in assets:
        if not source.path.startswith(prefix):
            continue
        stem = _stem(source.path)
        address = Address(slug, Kind.MACRO, stem) if NAME.fullmatch(stem) else None
        if address is None or stem.startswith(SHARED_PREFIX):
            diags.append(_bad_file_name(source.path, Address.of_tenant(slug)))
            continue
        if stem in found:
            diags.append(_duplicate_file(source.path, found[stem].spec.file, address))
            continue
        diags += _reserved(source.path, source.text, address)
        check_env(address, source.text, functools.partial(_line_span, source.path))
        found[stem] = MacroFile(
            address, MacroSpec(file=source.path, sql=source.text), SourceSpan(source.path, 1, 1)
        )
    for source in shared:
        stem = _stem(source.path)
        if not NAME.fullmatch(stem):
            continue  # reported once by shared_macro_problems
        name = f"{SHARED_PREFIX}{stem}"
        if name in found or not NAME.fullmatch(name):
            continue
        found[name] = MacroFile(
            Address(slug, Kind.MACRO, name),
            MacroSpec(file=source.path, sql=source.text, shared=True),
            SourceSpan(source.path, 1, 1),
        )
    _check_definitions(found, diags)
    return found


def defined_macros(macros: Mapping[str, MacroFile]) -> dict[str, str]:
    """Macro name -> the file defining it (first wins), over every macro file of the tenant."""
    names: dict[str, str] = {}
    for macro in macros.values():
        for definition in macro_definitions(macro.spec.sql):
            names.setdefault(definition.name, macro.spec.file)
    return names


def check_calls(
    address: Address,
    sql: str,
    known: Mapping[str, str],
    span_at: Callable[[int], SourceSpan],
    diags: list[Diagnostic],
) -> None:
    """Every unprefixed call in `sql` names a macro of the tenant, a shared one, or dbt's own."""
    for call in macro_calls(sql):
        if call.name in known or is_builtin(call.name):
            continue
        choices = [n for n in known if not n.startswith("test_")]
        hint = did_you_mean(call.name, choices) if choices else None
        diags.append(
            error(
                "unknown-macro",
                "Unknown macro",
                f"{address}: {call.name}() on SQL line {call.line} is no macro of tenant "
                f"{address.tenant} (its macros/ folder), of the project's shared macros or of "
                "dbt.",
                hint=hint
                or "Define it in a .sql file of the tenant's macros/ folder, or call a package "
                "macro with its package's name (dbt_utils.star(...)).",
                span=span_at(call.line),
                address=address,
            )
        )


def _check_definitions(found: Mapping[str, MacroFile], diags: list[Diagnostic]) -> None:
    where: dict[str, tuple[str, int]] = {}
    for macro in found.values():
        for definition in macro_definitions(macro.spec.sql):
            first = where.get(definition.name)
            if first is None:
                where[definition.name] = (macro.spec.file, definition.line)
                continue
            if macro.spec.shared and first[0] == macro.spec.file:
                continue
            diags.append(
                error(
                    "duplicate-macro",
                    "Macro defined twice",
                    f"{macro.address}: macro {definition.name!r} is defined in "
                    f"{macro.spec.file} line {definition.line} and in {first[0]} line "
                    f"{first[1]}; dbt refuses two macros of one name in a project.",
                    hint="Rename or remove one of them (shared macros come from fabric.yaml's "
                    "dbt.macros folder).",
                    span=SourceSpan(macro.spec.file, definition.line, 1),
                    address=macro.address,
                )
            )


def _reserved(path: str, text: str, address: Address | None) -> list[Diagnostic]:
    out = []
    for definition in macro_definitions(text):
        why = RESERVED_MACROS.get(definition.name)
        if why is None:
            continue
        out.append(
            error(
                "reserved-macro",
                "Macro fabric does not let a project override",
                f"{path}: macro {definition.name!r} (line {definition.line}) would override "
                f"dbt's: {why}.",
                hint="Give the macro another name.",
                span=SourceSpan(path, definition.line, 1),
                address=address,
            )
        )
    return out


def _bad_file_name(path: str, address: Address | None) -> Diagnostic:
    return error(
        "bad-name",
        "Invalid resource name",
        f"{path}: a dbt file's name (without .sql/.csv) names its resource, so it must start "
        f"with a lowercase letter and hold only a-z, 0-9 and _ (and not start with "
        f"{SHARED_PREFIX!r}).",
        hint="Rename the file, e.g. money_macros.sql.",
        span=SourceSpan(path, 1, 1),
        address=address,
    )


def _duplicate_file(path: str, first: str, address: Address | None) -> Diagnostic:
    return error(
        "duplicate-resource",
        "Duplicate resource",
        f"{path} has the same name as {first}; a file's name (without its folder) names its "
        "resource.",
        hint="Rename one of them.",
        span=SourceSpan(path, 1, 1),
        address=address,
    )


def _line_span(path: str, line: int) -> SourceSpan:
    return SourceSpan(path, line, 1)


@dataclass(frozen=True, slots=True)
class SeedFile:
    address: Address
    spec: SeedSpec
    span: SourceSpan


def resolve_seeds(
    slug: str,
    assets: Sequence[Any],
    configs: Mapping[str, Any],
    defaults: tuple[Any, ...],
    warehouse: str | None,
    taken: Iterable[str],
    diags: list[Diagnostic],
) -> dict[str, SeedFile]:
    """The tenant's seeds: one per `seeds/**/*.csv`, configured by its `seeds:` entry.

    `configs` are the `seeds:` entries (ValidSpecs), `defaults` the transformation defaults
    (tenant's, project's) a seed's schema falls back to, `taken` the transformation names (a
    seed and a model of one name would be two dbt resources of one name)."""
    prefix = f"tenants/{slug}/seeds/"
    models = frozenset(taken)
    found: dict[str, SeedFile] = {}
    for source in assets:
        if not source.path.startswith(prefix):
            continue
        stem = _stem(source.path)
        if not NAME.fullmatch(stem):
            diags.append(_bad_file_name(source.path, Address.of_tenant(slug)))
            continue
        address = Address(slug, Kind.SEED, stem)
        if stem in found:
            diags.append(_duplicate_file(source.path, found[stem].spec.file, address))
            continue
        if stem in models:
            diags.append(
                error(
                    "duplicate-resource",
                    "Duplicate resource",
                    f"{source.path}: seed {stem!r} has the name of a transformation of tenant "
                    f"{slug}; ref({stem!r}) could mean either.",
                    hint="Rename the CSV file or the transformation.",
                    span=SourceSpan(source.path, 1, 1),
                    address=address,
                )
            )
            continue
        vs = configs.get(stem)
        config = vs.spec if vs is not None else SeedConfig()
        schema = config.schema_ or next((d.schema_ for d in defaults if d.schema_), None)
        severity = config.tests_severity or next(
            (d.tests_severity for d in defaults if d.tests_severity), "error"
        )
        if schema is None:
            diags.append(
                error(
                    "missing-field",
                    "Missing field",
                    f"{address} needs a schema.",
                    hint=f"Add `seeds: {{{stem}: {{schema: ...}}}}`, or a default for every "
                    "transformation and seed: `defaults: {transformations: {schema: ...}}` "
                    "under `tenant:` or in fabric.yaml.",
                    span=SourceSpan(source.path, 1, 1),
                    address=address,
                )
            )
            continue
        header = next(iter(source.text.splitlines()), "")
        columns = {c.strip().strip('"') for c in header.split(",")}
        for column in (*config.column_types, *config.columns, *config.tests):
            if column not in columns and vs is not None:
                diags.append(
                    error(
                        "unknown-column",
                        "Unknown column",
                        f"{address}: column {column!r} is not in the header of {source.path}.",
                        hint=did_you_mean(column, sorted(columns)) or "Check the CSV's header.",
                        span=vs.file.locate((*vs.loc,), key=True),
                        address=address,
                    )
                )
        spec = SeedSpec.model_validate(
            {
                **config.model_dump(by_alias=True),
                "schema": schema,
                "tests_severity": severity,
                "file": source.path,
                "csv": source.text,
                "warehouse": warehouse,
            }
        )
        found[stem] = SeedFile(address, spec, SourceSpan(source.path, 1, 1))
    for name, vs in configs.items():
        if name not in found:
            if any(_stem(a.path) == name and a.path.startswith(prefix) for a in assets):
                continue  # the file exists but was refused above
            diags.append(
                error(
                    "unknown-reference",
                    "Unknown reference",
                    f"{vs.address}: there is no seed file {prefix}{name}.csv to configure.",
                    hint=did_you_mean(name, found) or f"Add {prefix}{name}.csv.",
                    span=vs.file.locate(vs.loc, key=True),
                    address=vs.address,
                )
            )
    return found


def package_name(package: Any) -> str:
    """The name a package's macros and tests are called by (`dbt_utils.star`): a local
    folder's name, a hub package's last part, a git repository's name."""
    text = str(package.local or package.package or package.git or "")
    last = text.rstrip("/").rsplit("/", 1)[-1]
    return last.removesuffix(".git").replace("-", "_")


def check_test_names(
    address: Address,
    tests: Mapping[str, Sequence[Any]],
    known_macros: Mapping[str, str],
    packages: frozenset[str],
    locate: Callable[[str, int], SourceSpan],
    diags: list[Diagnostic],
    local: Mapping[str, frozenset[str]] = MappingProxyType({}),
) -> None:
    """Every generic test a `tests:` entry names exists: dbt's four, a `{% test %}` of the
    tenant's or the shared macros, or a declared package's (`dbt_utils.accepted_range`)."""
    from fabric.config.specs import BUILT_IN_TESTS

    custom = sorted(n.removeprefix("test_") for n in known_macros if n.startswith("test_"))
    for column, entries in tests.items():
        for i, test in enumerate(entries):
            name = test.test
            if name in BUILT_IN_TESTS or f"test_{name}" in known_macros:
                continue
            package, _, test_name = name.rpartition(".")
            if package in local and f"test_{test_name}" not in local[package]:
                tests = sorted(n.removeprefix("test_") for n in local[package] if "test_" in n)
                diags.append(
                    error(
                        "unknown-test",
                        "Unknown test",
                        f"{address}: local package {package!r} defines no test {test_name!r}.",
                        hint=did_you_mean(test_name, tests) or "Check the package's macros/.",
                        span=locate(column, i),
                        address=address,
                    )
                )
                continue
            if package and package in packages:
                continue
            if package:
                detail = (
                    f"{address}: test {name!r} on column {column!r} names package {package!r}, "
                    "which neither fabric.yaml's dbt.packages nor the tenant's packages declare."
                )
                hint = did_you_mean(package, packages) or "Declare the package under `packages:`."
            else:
                detail = (
                    f"{address}: test {name!r} on column {column!r} is neither dbt's "
                    "(not_null, unique, accepted_values, relationships) nor a {% test %} of the "
                    "tenant's macros/ or the shared macros."
                )
                hint = did_you_mean(name, [*sorted(BUILT_IN_TESTS), *custom]) or (
                    "Define it with {% test " + name + "(model, column_name) %} in macros/."
                )
            diags.append(
                error(
                    "unknown-test",
                    "Unknown test",
                    detail,
                    hint=hint,
                    span=locate(column, i),
                    address=address,
                )
            )


@dataclass(frozen=True, slots=True)
class TestFile:
    address: Address
    spec: SingularTestSpec
    span: SourceSpan


def resolve_singular_tests(
    slug: str,
    assets: Sequence[Any],
    nodes: Mapping[str, Address],
    known_macros: Mapping[str, str],
    check_env: Callable[[Address, str, Callable[[int], SourceSpan]], None],
    diags: list[Diagnostic],
    edges: Iterable[tuple[Address, Address]] = (),
) -> dict[str, TestFile]:
    """The tenant's singular tests (`tests/**/*.sql`), each attached to the transformations
    and seeds (`nodes`: name -> address) it refs that no other of its refs depends on (over
    `edges`, upstream -> downstream): it runs with them, so after everything it reads."""
    upstream: dict[Address, set[Address]] = {}
    for up, down in edges:
        upstream.setdefault(down, set()).add(up)

    def ancestors(node: Address) -> set[Address]:
        seen: set[Address] = set()
        todo = list(upstream.get(node, ()))
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo += upstream.get(current, ())
        return seen

    from fabric.config.sql_refs import sql_refs

    prefix = f"tenants/{slug}/tests/"
    found: dict[str, TestFile] = {}
    for source in assets:
        if not source.path.startswith(prefix):
            continue
        stem = _stem(source.path)
        if not NAME.fullmatch(stem):
            diags.append(_bad_file_name(source.path, Address.of_tenant(slug)))
            continue
        address = Address(slug, Kind.TEST, stem)
        if stem in found:
            diags.append(_duplicate_file(source.path, found[stem].spec.file, address))
            continue
        span_at = functools.partial(_line_span, source.path)
        check_env(address, source.text, span_at)
        check_calls(address, source.text, known_macros, span_at, diags)
        refs, dynamic = sql_refs(source.text)
        attached: list[str] = []
        for line in dynamic:
            diags.append(
                error(
                    "dynamic-ref",
                    "Unresolvable ref",
                    f"{address}: a ref()/source() call on line {line} is not a plain string "
                    "literal, so which models the test checks cannot be known.",
                    hint="Write {{ ref('model') }} with a literal name.",
                    span=span_at(line),
                    address=address,
                )
            )
        for ref in refs:
            if ref.kind != "ref":
                continue
            if ref.name not in nodes:
                diags.append(
                    error(
                        "unknown-reference",
                        "Unknown reference",
                        f"{address}: ref({ref.name!r}) names no transformation or seed of "
                        f"tenant {slug}.",
                        hint=did_you_mean(ref.name, nodes),
                        span=span_at(ref.line),
                        address=address,
                    )
                )
            elif ref.name not in attached:
                attached.append(ref.name)
        if not refs and not dynamic:
            diags.append(
                error(
                    "unattached-test",
                    "Singular test refs nothing",
                    f"{address}: a singular test runs with the models it ref()s, and this one "
                    "refs none.",
                    hint="Select from {{ ref('model') }} (or a seed) in the test's SQL.",
                    span=SourceSpan(source.path, 1, 1),
                    address=address,
                )
            )
        below = set().union(*(ancestors(nodes[n]) for n in attached)) if attached else set()
        attached = [n for n in attached if nodes[n] not in below]
        if attached:
            spec = SingularTestSpec(file=source.path, sql=source.text, attached=tuple(attached))
            found[stem] = TestFile(address, spec, SourceSpan(source.path, 1, 1))
    return found


def package_problems(
    packages: Sequence[Any],
    tenant: str | None,
    locate: Callable[[int], SourceSpan],
    address: Address | None = None,
) -> list[Diagnostic]:
    """A local package is a folder of the repository: never absolute, never up out of it with
    `..`, and a tenant's never inside another tenant's folder (shared code lives outside
    tenants/, named in fabric.yaml)."""
    out = []
    for i, package in enumerate(packages):
        if package.local is None:
            continue
        path = package.local
        norm = posixpath.normpath(path)
        why = None
        if posixpath.isabs(path) or PurePosixPath(path).is_absolute():
            why = "is an absolute path; give a folder relative to the repository root"
        elif norm == ".." or norm.startswith("../"):
            why = "points outside the repository"
        elif norm.split("/")[0] == "tenants":
            parts = norm.split("/")
            if tenant is None:
                why = "is inside a tenant's folder; shared packages live outside tenants/"
            elif len(parts) < 2 or parts[1] != tenant:
                why = f"is inside another tenant's folder; tenant {tenant} may use its own"
        if why is not None:
            out.append(
                error(
                    "bad-package-path",
                    "Local package not usable",
                    f"package local {path!r} {why}.",
                    hint="Point `local:` at a folder of the repository, e.g. packages/my_utils "
                    "(relative to the repository root).",
                    span=locate(i),
                    address=address,
                )
            )
    return out


def local_package_macros(
    packages: Sequence[Any], read: Callable[[str], tuple[str, tuple[str, ...]] | None]
) -> dict[str, frozenset[str]]:
    """Local package name (its dbt_project.yml's) -> the macros and tests it defines."""
    out: dict[str, frozenset[str]] = {}
    for package in packages:
        if package.local is None:
            continue
        found = read(package.local)
        if found is not None:
            name, texts = found
            out[name] = frozenset(d.name for text in texts for d in macro_definitions(text))
    return out


def check_package_calls(
    address: Address,
    sql: str,
    local: Mapping[str, frozenset[str]],
    span_at: Callable[[int], SourceSpan],
    diags: list[Diagnostic],
) -> None:
    """`pkg.macro(...)` of a local package names a macro the package defines."""
    for call in package_calls(sql):
        macros = local.get(call.package)
        if macros is None or call.name in macros:
            continue
        diags.append(
            error(
                "unknown-macro",
                "Unknown macro",
                f"{address}: {call.package}.{call.name}() on SQL line {call.line}: local "
                f"package {call.package!r} defines no macro {call.name!r}.",
                hint=did_you_mean(call.name, sorted(macros)) or "Check the package's macros/.",
                span=span_at(call.line),
                address=address,
            )
        )
