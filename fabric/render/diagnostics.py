"""Diagnostics -> human text (colour on a TTY), a JSON document, GitHub annotations, SARIF.  [pure]

The GitHub and SARIF forms let CI show each problem on the line of the pull request it is about.
"""

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


# ---------------------------------------------------------------------------------------------
# GitHub Actions workflow commands

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"


def _escape_data(text: str) -> str:
    """A workflow command's message: `%`, CR and LF are its only special characters."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """A workflow command's property value: also `:` and `,`, which end a value."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _message(d: Diagnostic) -> str:
    hint = f"\nhint: {d.hint}" if d.hint else ""
    return f"{d.detail}{hint}"


def render_github(diagnostics: Sequence[Diagnostic]) -> str:
    """One `::error file=,line=,col=,title=::message` annotation per diagnostic."""
    lines = []
    for d in diagnostics:
        props = []
        if d.span:
            props += [
                f"file={_escape_property(d.span.path)}",
                f"line={d.span.line}",
                f"col={d.span.column}",
            ]
        props.append(f"title={_escape_property(d.summary)}")
        lines.append(f"::{d.severity.value} {','.join(props)}::{_escape_data(_message(d))}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# SARIF 2.1.0


def sarif_document(diagnostics: Sequence[Diagnostic], *, tool_version: str) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run: rule per diagnostic code, result per diagnostic.

    Paths are relative to the repository root (`%SRCROOT%`), which is what code-scanning
    services expect of a checkout.
    """
    rules: dict[str, dict[str, Any]] = {}
    for d in diagnostics:
        rules.setdefault(
            d.code,
            {
                "id": d.code,
                "name": "".join(part.title() for part in d.code.split("-")),
                "shortDescription": {"text": d.summary},
                "defaultConfiguration": {"level": _sarif_level(d.severity)},
            },
        )
    index = {code: i for i, code in enumerate(rules)}
    results = []
    for d in diagnostics:
        result: dict[str, Any] = {
            "ruleId": d.code,
            "ruleIndex": index[d.code],
            "level": _sarif_level(d.severity),
            "message": {"text": _message(d)},
        }
        if d.span:
            result["locations"] = [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": d.span.path, "uriBaseId": "%SRCROOT%"},
                        "region": {
                            "startLine": max(d.span.line, 1),
                            "startColumn": max(d.span.column, 1),
                        },
                    },
                    **(
                        {"logicalLocations": [{"fullyQualifiedName": str(d.address)}]}
                        if d.address
                        else {}
                    ),
                }
            ]
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "fabric",
                        "version": tool_version,
                        "rules": list(rules.values()),
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def _sarif_level(severity: Severity) -> str:
    return "error" if severity is Severity.ERROR else "warning"
