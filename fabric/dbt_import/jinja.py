"""The few pieces of dbt's Jinja the importer must understand, without running dbt.  [pure]

A dbt file is SQL with Jinja in it; the importer only needs to find and edit a handful of
calls (`config(...)`, `var(...)`, `source(...)`) and blocks (`{% snapshot %}`, `{% macro %}`,
`{% test %}`, `{% docs %}`, `{% materialization %}`). A small tokenizer does that and leaves
every other character of the user's file as it was; the values of config keywords are read as
literals (strings, numbers, booleans, lists, dicts) and anything else is reported, never run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_EXPRESSION = re.compile(r"\{\{-?(.*?)-?\}\}", re.DOTALL)
_CONFIG_CALL = re.compile(r"(?<![.\w])config\s*\(")
_KEYWORD = re.compile(r"\s*([A-Za-z_][\w-]*)\s*=(?!=)")
_CLOSING = {"(": ")", "[": "]", "{": "}"}
_BLOCK = r"\{%-?\s*NAME\b(.*?)-?%\}(.*?)\{%-?\s*endNAME\s*-?%\}"
_VAR_CALL = re.compile(r"(?<![.\w])var\s*\(")
_SOURCE_CALL = re.compile(
    r"""(?<![.\w])source\(\s*(['"])([^'"]*)\1\s*,\s*(['"])([^'"]*)\3\s*\)""", re.DOTALL
)
_REF_CALL = re.compile(r"""(?<![.\w])ref\(\s*(['"])([^'"]*)\1\s*\)""")
_ENV_VAR = re.compile(r"""(?<![.\w])env_var\s*\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")
_JINJA_NAMES = {"true": True, "True": True, "false": False, "False": False}
_NONE_NAMES = {"none", "None"}


class NotLiteral(ValueError):
    """A value the importer cannot read without running Jinja (a call, a variable)."""


def line_at(text: str, pos: int) -> int:
    """1-based line of offset `pos`."""
    return text.count("\n", 0, pos) + 1


def literal(source: str) -> Any:
    """The value of a Jinja literal (`'x'`, `1`, `true`, `none`, `['a']`, `{'k': 1}`)."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise NotLiteral(source.strip()) from exc
    return _value(tree.body, source)


def _value(node: ast.AST, source: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _JINJA_NAMES:
            return _JINJA_NAMES[node.id]
        if node.id in _NONE_NAMES:
            return None
    if isinstance(node, ast.List | ast.Tuple):
        return [_value(e, source) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {
            _value(k, source): _value(v, source)
            for k, v in zip(node.keys, node.values, strict=True)
        }
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _value(node.operand, source)
        if isinstance(inner, int | float):
            return -inner
    raise NotLiteral(source.strip())


def jinja_literal(value: Any) -> str:
    """`value` written as a Jinja literal (the inverse of `literal`)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(jinja_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{jinja_literal(k)}: {jinja_literal(v)}" for k, v in value.items())
            + "}"
        )
    return repr(value) if isinstance(value, str) else str(value)


def _blank_comments(text: str) -> str:
    """Jinja comments blanked out (newlines kept), so positions stay those of `text`."""
    return _JINJA_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def call_arguments(text: str, start: int) -> tuple[list[tuple[int, str]], int] | None:
    """The top-level comma-separated arguments of a call whose `(` ends just before `start`,
    as [(offset, text)], and the offset just after its `)`; None when it does not close."""
    parts: list[tuple[int, str]] = []
    stack = [")"]
    quote: str | None = None
    begin = i = start
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
                if text[begin:i].strip():
                    parts.append((begin, text[begin:i]))
                return parts, i + 1
        elif ch == "," and len(stack) == 1:
            parts.append((begin, text[begin:i]))
            begin = i + 1
        i += 1
    return None


@dataclass(frozen=True, slots=True)
class ConfigCall:
    """A `{{ config(...) }}` expression of a file: its keywords and what could not be read."""

    start: int
    end: int
    """The whole `{{ ... }}` expression, to cut out of the text."""
    line: int
    values: Mapping[str, Any]
    """Keyword -> literal value."""
    raw: Mapping[str, str]
    """Keyword -> its source text, for values that are not literals (kept as written)."""
    unreadable: tuple[str, ...]
    """Arguments with no keyword (`**opts`, a positional dict)."""


def config_calls(text: str) -> tuple[ConfigCall, ...]:
    """Every `{{ config(...) }}` expression of `text` whose expression is only that call."""
    blanked = _blank_comments(text)
    found: list[ConfigCall] = []
    for expr in _EXPRESSION.finditer(blanked):
        call = _CONFIG_CALL.match(expr.group(1).lstrip())
        if call is None:
            continue
        open_at = expr.start(1) + len(expr.group(1)) - len(expr.group(1).lstrip()) + call.end()
        parsed = call_arguments(blanked, open_at)
        if parsed is None or blanked[parsed[1] : expr.end(1)].strip():
            continue
        values: dict[str, Any] = {}
        raw: dict[str, str] = {}
        unreadable: list[str] = []
        for _, part in parsed[0]:
            keyword = _KEYWORD.match(part)
            if keyword is None:
                unreadable.append(part.strip())
                continue
            key = keyword.group(1)
            source = part[keyword.end() :].strip()
            try:
                values[key] = literal(source)
            except NotLiteral:
                raw[key] = source
        found.append(
            ConfigCall(
                expr.start(),
                expr.end(),
                line_at(text, expr.start()),
                values,
                raw,
                tuple(unreadable),
            )
        )
    return tuple(found)


def without_spans(text: str, spans: list[tuple[int, int]], *, keep_lines: bool = False) -> str:
    """`text` with each (start, end) span cut out. With `keep_lines` the span's newlines stay,
    so every other line keeps its number (dbt's and fabric's errors name the same line);
    without, a trailing newline of a span that fills its own line goes with it."""
    out: list[str] = []
    at = 0
    for start, end in sorted(spans):
        out.append(text[at:start])
        if keep_lines:
            out.append("\n" * text.count("\n", start, end))
        elif text[end : end + 1] == "\n":
            line_start = text.rfind("\n", 0, start) + 1
            if not text[line_start:start].strip():
                end += 1
        at = end
    out.append(text[at:])
    return "".join(out)


def config_expression(values: Mapping[str, Any], raw: Mapping[str, str]) -> str:
    """`{{ config(k=v, ...) }}` of literal values and raw source texts, in that order."""
    parts = [f"{k}={jinja_literal(v)}" for k, v in values.items()]
    parts += [f"{k}={v}" for k, v in raw.items()]
    return "{{ config(" + ", ".join(parts) + ") }}"


@dataclass(frozen=True, slots=True)
class Block:
    """A `{% name args %}body{% endname %}` block."""

    kind: str
    header: str
    """What follows the tag name, e.g. `customers_history` or `cents(col, scale=2)`."""
    body: str
    start: int
    end: int
    line: int

    @property
    def name(self) -> str:
        match = re.match(r"\s*([A-Za-z_]\w*)", self.header)
        return match.group(1) if match else ""


def blocks(text: str, kind: str) -> tuple[Block, ...]:
    """Every `{% kind ... %}...{% endkind %}` block of `text`."""
    pattern = re.compile(_BLOCK.replace("NAME", kind), re.DOTALL)
    blanked = _blank_comments(text)
    return tuple(
        Block(
            kind,
            m.group(1),
            text[m.start(2) : m.end(2)],
            m.start(),
            m.end(),
            line_at(text, m.start()),
        )
        for m in pattern.finditer(blanked)
    )


@dataclass(frozen=True, slots=True)
class VarUse:
    name: str
    line: int


def substitute_vars(
    text: str, lookup: Callable[[str], tuple[bool, Any]]
) -> tuple[str, tuple[VarUse, ...]]:
    """`text` with every `var('name')` / `var('name', default)` inside Jinja replaced by the
    value `lookup` knows (as a Jinja literal, so `{{ var('x') }}` renders what dbt rendered), or
    by its default; the uses neither resolves are returned (left as written)."""
    blanked = _blank_comments(text)
    spans: list[tuple[int, int, str]] = []
    missing: list[VarUse] = []
    for expr in re.finditer(r"\{\{.*?\}\}|\{%.*?%\}", blanked, re.DOTALL):
        for call in _VAR_CALL.finditer(blanked, expr.start(), expr.end()):
            parsed = call_arguments(blanked, call.end())
            if parsed is None or not parsed[0]:
                missing.append(VarUse("?", line_at(text, call.start())))
                continue
            args, end = parsed
            try:
                name = literal(args[0][1])
            except NotLiteral:
                missing.append(VarUse(args[0][1].strip(), line_at(text, call.start())))
                continue
            known, value = lookup(str(name))
            if known:
                spans.append((call.start(), end, jinja_literal(value)))
            elif len(args) > 1:
                spans.append((call.start(), end, args[1][1].strip()))
            else:
                missing.append(VarUse(str(name), line_at(text, call.start())))
    out, at = [], 0
    for start, end, replacement in spans:
        out.append(text[at:start])
        out.append(replacement)
        at = end
    out.append(text[at:])
    return "".join(out), tuple(missing)


def rename_sources(text: str, renames: Mapping[tuple[str, str], tuple[str, str]]) -> str:
    """`text` with `source('a', 'b')` calls renamed per `renames` ((a, b) -> (a', b'))."""

    def swap(m: re.Match[str]) -> str:
        new = renames.get((m.group(2), m.group(4)))
        if new is None:
            return m.group()
        return f"source('{new[0]}', '{new[1]}')"

    return _SOURCE_CALL.sub(swap, text)


def source_calls(text: str) -> tuple[tuple[str, str, int], ...]:
    """(source, table, line) of every literal `source('a', 'b')` in `text`."""
    return tuple(
        (m.group(2), m.group(4), line_at(text, m.start())) for m in _SOURCE_CALL.finditer(text)
    )


def ref_calls(text: str) -> tuple[tuple[str, int], ...]:
    """(name, line) of every literal `ref('x')` in `text`."""
    return tuple((m.group(2), line_at(text, m.start())) for m in _REF_CALL.finditer(text))


def env_var_names(text: str) -> tuple[tuple[str, int], ...]:
    """(name, line) of every `env_var('NAME')` in `text`."""
    return tuple((m.group(1), line_at(text, m.start())) for m in _ENV_VAR.finditer(text))
