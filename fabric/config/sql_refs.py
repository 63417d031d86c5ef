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


# `{{ config(...) }}` sets model options from inside the SQL, where they override what the
# YAML declares. Only the keyword names matter here; their values are never read.
_JINJA_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_CONFIG_CALL = re.compile(r"(?<![.\w])config\s*\(")
_KEYWORD = re.compile(r"\s*([A-Za-z_]\w*)\s*=(?!=)")
_CLOSING = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True, slots=True)
class SqlConfigKey:
    """One keyword of a `config()` call in a model's SQL; key None: the call's keys cannot be
    read (`**options`, a positional dict, unbalanced parentheses)."""

    key: str | None
    line: int
    """1-based line inside the SQL text."""


def sql_config_keys(sql: str) -> tuple[SqlConfigKey, ...]:
    """The keywords of every `config(...)` call inside a Jinja block of `sql`."""
    # Comments are blanked, not removed, so positions (and lines) stay those of the text.
    text = _JINJA_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), sql)
    found: list[SqlConfigKey] = []
    for block in _JINJA_BLOCK.finditer(text):
        for call in _CONFIG_CALL.finditer(text, block.start(), block.end()):
            arguments = _arguments(text, call.end())
            if arguments is None:
                found.append(SqlConfigKey(None, _line(text, call.start())))
                continue
            for start, part in arguments:
                keyword = _KEYWORD.match(part)
                at = start + len(part) - len(part.lstrip())
                if keyword is not None:
                    found.append(SqlConfigKey(keyword.group(1), _line(text, at)))
                elif part.strip():
                    found.append(SqlConfigKey(None, _line(text, at)))
    return tuple(found)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _arguments(text: str, start: int) -> list[tuple[int, str]] | None:
    """The top-level comma-separated arguments of a call whose `(` ends just before `start`,
    as (offset, text); None when the parentheses do not close."""
    parts: list[tuple[int, str]] = []
    stack = [")"]
    quote: str | None = None
    begin = start
    i = start
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _CLOSING:
            stack.append(_CLOSING[ch])
        elif ch in ")]}":
            if ch != stack.pop():
                return None
            if not stack:
                parts.append((begin, text[begin:i]))
                return parts
        elif ch == "," and len(stack) == 1:
            parts.append((begin, text[begin:i]))
            begin = i + 1
        i += 1
    return None


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
