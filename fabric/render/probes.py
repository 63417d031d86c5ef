"""The `fabric connections test` report: one versioned document, rendered as text or JSON.
[pure]"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric.runner.probes import ConnectionCheck


def to_document(tenant: str, checks: Iterable[ConnectionCheck]) -> dict[str, Any]:
    """The report as a versioned, JSON-able document (what `--format json` prints)."""
    rows = [
        {
            "name": c.name,
            "type": c.type,
            "direction": c.direction,
            "ok": c.ok,
            "detail": c.detail,
            "seconds": c.seconds,
            "warning": c.warning,
        }
        for c in checks
    ]
    failed = sum(not r["ok"] for r in rows)
    return {
        "format_version": 1,
        "kind": "fabric-connection-test",
        "tenant": tenant,
        "ok": failed == 0,
        "summary": {
            "tested": len(rows),
            "ok": len(rows) - failed,
            "failed": failed,
            "warnings": sum(bool(r["warning"]) for r in rows),
        },
        "connections": rows,
    }


def render_text(doc: Mapping[str, Any], *, color: bool = False) -> str:
    """The report for a terminal: one line per connection, then a summary line."""
    rows = doc["connections"]
    if not rows:
        return f"Tenant {doc['tenant']} has no applied connections."

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    name_w = max(len(r["name"]) for r in rows)
    type_w = max(len(r["type"]) for r in rows)
    dir_w = max(len(r["direction"]) for r in rows)
    lines = []
    for r in rows:
        status = paint("ok  ", "32") if r["ok"] else paint("FAIL", "31;1")
        lines.append(
            f"{status}  {r['name']:<{name_w}}  {r['type']:<{type_w}}  {r['direction']:<{dir_w}}"
            f"  {r['detail']} ({r['seconds']:.2f}s)"
        )
        if r.get("warning"):
            lines.append(paint(f"      warning: {r['warning']}", "33"))
    summary = doc["summary"]
    line = (
        f"Tenant {doc['tenant']}: {summary['tested']} connection"
        f"{'s' if summary['tested'] != 1 else ''} tested, {summary['ok']} ok, "
        f"{summary['failed']} failed"
        + (f", {summary['warnings']} with warnings." if summary.get("warnings") else ".")
    )
    lines += ["", paint(line, "32" if doc["ok"] else "31")]
    return "\n".join(lines)


def render_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2)
