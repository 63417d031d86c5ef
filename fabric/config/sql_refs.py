"""`{{ ref('model') }}`, `{{ source('pipeline', 'table') }}` and `env_var('NAME')` found in a
model's SQL.  [pure]"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REF = re.compile(r"""\{\{\s*ref\(\s*['"]([^'"]*)['"]\s*\)\s*\}\}""")
_SOURCE = re.compile(r"""\{\{\s*source\(\s*['"]([^'"]*)['"]\s*,\s*['"]([^'"]*)['"]\s*\)\s*\}\}""")
_ANY_CALL = re.compile(r"\{\{\s*(ref|source)\s*\(")
_ENV_VAR = re.compile(r"""\benv_var\s*\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]\s*[,)]""")
_ANY_ENV_VAR = re.compile(r"\benv_var\b")


@dataclass(frozen=True, slots=True)
class SqlRef:
    kind: str  # "ref" | "source"
    name: str
    """The model name (ref) or the pipeline name (source)."""
    table: str | None
    line: int
    """1-based line inside the SQL text."""


def sql_refs(sql: str) -> tuple[tuple[SqlRef, ...], tuple[int, ...]]:
    """The refs and sources in `sql`, and the lines of calls too dynamic to resolve."""
    found: list[SqlRef] = []
    understood: set[int] = set()
    for m in _REF.finditer(sql):
        found.append(SqlRef("ref", m.group(1), None, sql.count("\n", 0, m.start()) + 1))
        understood.add(m.start())
    for m in _SOURCE.finditer(sql):
        line = sql.count("\n", 0, m.start()) + 1
        found.append(SqlRef("source", m.group(1), m.group(2), line))
        understood.add(m.start())
    dynamic = tuple(
        sql.count("\n", 0, m.start()) + 1
        for m in _ANY_CALL.finditer(sql)
        if m.start() not in understood
    )
    return tuple(sorted(found, key=lambda r: (r.line, r.kind, r.name))), dynamic


def env_vars(sql: str) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
    """The (name, line) of every `env_var('NAME')` in `sql`, and the lines where `env_var` is
    used in any other way (a computed name, an alias): those cannot be checked, so they are
    errors. Jinja runs inside SQL comments too, so comments are not skipped."""
    found: list[tuple[str, int]] = []
    understood: set[int] = set()
    for m in _ENV_VAR.finditer(sql):
        found.append((m.group(1), sql.count("\n", 0, m.start()) + 1))
        understood.add(m.start())
    dynamic = tuple(
        sql.count("\n", 0, m.start()) + 1
        for m in _ANY_ENV_VAR.finditer(sql)
        if m.start() not in understood
    )
    return tuple(found), dynamic
