"""Diagnostics -> human text (with colour on a TTY) or a stable JSON document.  [pure]"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fabric.diagnostics import Diagnostic, Severity

RED, YELLOW, BOLD, DIM, RESET = "\033[31m", "\033[33m", "\033[1m", "\033[2m", "\033[0m"
DIAGNOSTICS_FORMAT_VERSION = 1


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color else text


def render_diagnostic(d: Diagnostic, *, color: bool = False) -> str:
    where = f"{d.span}: " if d.span else ""
    sev = _paint(d.severity.value, RED if d.severity is Severity.ERROR else YELLOW, color)
    lines = [f"{where}{sev}: {_paint(d.summary, BOLD, color)}", f"  {d.detail}"]
    if d.hint:
        lines.append(f"  {_paint('hint:', DIM, color)} {d.hint}")
    return "\n".join(lines)


def render_diagnostics_text(diagnostics: Sequence[Diagnostic], *, color: bool = False) -> str:
    return "\n\n".join(render_diagnostic(d, color=color) for d in diagnostics)


def render_summary(counts: Mapping[str, int], tenants: Iterable[str]) -> str:
    tenants = list(tenants)
    parts = ", ".join(f"{n} {k if n != 1 else _singular(k)}" for k, n in counts.items())
    noun = "tenant" if len(tenants) == 1 else "tenants"
    return f"Loaded {len(tenants)} {noun} ({', '.join(tenants)}): {parts}."


def _singular(plural: str) -> str:
    return plural[:-3] + "y" if plural.endswith("ies") else plural.removesuffix("s")


def diagnostics_document(
    diagnostics: Sequence[Diagnostic], *, valid: bool, summary: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "format_version": DIAGNOSTICS_FORMAT_VERSION,
        "valid": valid,
        "errors": sum(d.severity is Severity.ERROR for d in diagnostics),
        "warnings": sum(d.severity is Severity.WARNING for d in diagnostics),
        "summary": dict(summary),
        "diagnostics": [d.to_document() for d in diagnostics],
    }


def render_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, default=str)
