"""Macros a tenant's dbt project defines, and the macro calls of its SQL.  [pure]

dbt resolves an unprefixed call in a model against the root project's macros and its own
(global project, adapter); an unknown one fails only at run time, after every upstream node
ran. `macro_calls` finds the calls so `validate` reports them first, with file:line. Reading
Jinja with regular expressions is deliberately conservative: string literals and comments are
blanked first, method calls (`adapter.dispatch(`), filters (`| default(`) and Jinja tests
(`is divisibleby(`) are not calls of a macro.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fabric.config.dbt_builtins import CONTEXT, DBT_MACROS, DISPATCH_PREFIXES

_JINJA_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_STRING = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""", re.DOTALL)
_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(")
_DEFINITION = re.compile(r"\{%-?\s*(macro|test|materialization)\s+([A-Za-z_]\w*)")
_SET = re.compile(r"\{%-?\s*set\s+([A-Za-z_]\w*)")
_IMPORT = re.compile(r"\bimport\s+([A-Za-z_]\w*)|\bas\s+([A-Za-z_]\w*)")
_KEYWORDS = frozenset(
    {
        "and", "as", "block", "call", "elif", "else", "extends", "filter", "for", "from",
        "if", "import", "in", "include", "is", "macro", "materialization", "not", "or",
        "recursive", "set", "test", "with",
    }
)  # fmt: skip
_NOT_A_CALL_AFTER = frozenset({"macro", "test", "materialization", "is"})
"""A name after these words is defined or a Jinja test, not a macro call."""

RESERVED_MACROS = {
    "ref": "it would change what ref() resolves to behind fabric's dependency graph",
    "source": "it would change what source() resolves to behind fabric's dependency graph",
    "config": "fabric sets each model's config from its YAML",
    "env_var": "fabric checks which environment variables a tenant reads",
    "var": "fabric passes no project variables",
    "generate_schema_name": "fabric generates it: a model's schema is the YAML's `schema`",
    "generate_alias_name": "fabric names each relation after its transformation",
    "generate_database_name": "the warehouse connection sets the database",
}
"""Macro names a tenant (or the project's shared macros) may not define, and why."""


@dataclass(frozen=True, slots=True)
class MacroDef:
    name: str
    """The name a model calls it by (`test_<name>` for a `{% test name %}`)."""
    line: int
    kind: str
    """macro | test | materialization"""


@dataclass(frozen=True, slots=True)
class MacroCall:
    name: str
    line: int


def _blank(match: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", match.group())


def _scrubbed(text: str) -> str:
    """`text` with Jinja comments blanked (positions and lines kept)."""
    return _JINJA_COMMENT.sub(_blank, text)


def macro_definitions(text: str) -> tuple[MacroDef, ...]:
    """Every `{% macro name %}`, `{% test name %}` and `{% materialization name %}` of a file."""
    clean = _scrubbed(text)
    found = []
    for m in _DEFINITION.finditer(clean):
        kind, name = m.group(1), m.group(2)
        called = f"test_{name}" if kind == "test" else name
        found.append(MacroDef(called, clean.count("\n", 0, m.start()) + 1, kind))
    return tuple(found)


def macro_calls(sql: str) -> tuple[MacroCall, ...]:
    """Unprefixed calls inside the Jinja of `sql`, minus names the same text defines or sets."""
    clean = _scrubbed(sql)
    local = {d.name for d in macro_definitions(sql)} | set(_SET.findall(clean))
    for a, b in _IMPORT.findall(clean):
        local.add(a or b)
    found: list[MacroCall] = []
    for block in _JINJA_BLOCK.finditer(clean):
        body = _STRING.sub(_blank, block.group())
        for call in _CALL.finditer(body):
            name = call.group(1)
            if name in _KEYWORDS or name in local:
                continue
            before = body[: call.start()].rstrip()
            if before.endswith((".", "|")):
                continue
            previous = re.search(r"(\w+)$", before)
            if previous is not None and previous.group(1) in _NOT_A_CALL_AFTER:
                continue
            line = clean.count("\n", 0, block.start() + call.start()) + 1
            found.append(MacroCall(name, line))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class PackageCall:
    package: str
    name: str
    line: int


_PACKAGE_CALL = re.compile(r"([A-Za-z_]\w*)\s*\.\s*([A-Za-z_]\w*)\s*\(")


def package_calls(sql: str) -> tuple[PackageCall, ...]:
    """`pkg.macro(` calls inside the Jinja of `sql` (`a.b.c(` and method calls on a call's
    result are not: only a name followed by one attribute)."""
    clean = _scrubbed(sql)
    found: list[PackageCall] = []
    for block in _JINJA_BLOCK.finditer(clean):
        body = _STRING.sub(_blank, block.group())
        for call in _PACKAGE_CALL.finditer(body):
            before = body[: call.start()].rstrip()
            if before.endswith((".", "|", ")")):
                continue
            line = clean.count("\n", 0, block.start() + call.start()) + 1
            found.append(PackageCall(call.group(1), call.group(2), line))
    return tuple(found)


def is_builtin(name: str) -> bool:
    """dbt's own macros and Jinja context: callable in any model without defining them."""
    return name in DBT_MACROS or name in CONTEXT or name.startswith(DISPATCH_PREFIXES)
