"""Diagnostics: configuration problems with a location, an address and a hint.

Loading never stops at the first problem; every step returns diagnostics and the loader
reports them all at once, sorted by location.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fabric.addresses import Address


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, order=True)
class SourceSpan:
    """A 1-based position in a file of the repository (path relative to the repo root)."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One problem. `summary` is fixed text per kind of problem so people learn to spot it."""

    severity: Severity = Severity.ERROR
    code: str
    """Stable machine-readable identifier, e.g. `unknown-field`; part of the JSON contract."""
    summary: str
    detail: str
    hint: str | None = None
    span: SourceSpan | None = None
    address: Address | None = None

    def sort_key(self) -> tuple[Any, ...]:
        span = self.span or SourceSpan("", 0, 0)
        return (span.path, span.line, span.column, self.code, self.detail)

    def to_document(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "summary": self.summary,
            "detail": self.detail,
            "hint": self.hint,
            "file": self.span.path if self.span else None,
            "line": self.span.line if self.span else None,
            "column": self.span.column if self.span else None,
            "address": str(self.address) if self.address else None,
        }


def error(
    code: str,
    summary: str,
    detail: str,
    *,
    hint: str | None = None,
    span: SourceSpan | None = None,
    address: Address | None = None,
) -> Diagnostic:
    return Diagnostic(
        code=code, summary=summary, detail=detail, hint=hint, span=span, address=address
    )


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """`Did you mean 'x'?`, or the allowed values when nothing is close."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"Did you mean {close[0]!r}?"
    if options and len(options) <= 30:
        return f"Allowed: {', '.join(options)}."
    return None


def sorted_unique(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """Sorted by location, without exact repeats (two rules may see the same fault)."""
    seen: dict[tuple[Any, ...], Diagnostic] = {}
    for d in diagnostics:
        seen.setdefault((d.sort_key(), d.summary, d.address), d)
    return tuple(sorted(seen.values(), key=Diagnostic.sort_key))


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)
