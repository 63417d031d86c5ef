"""`fabric freshness` as a table, and the stale sources `fabric status` lists.  [pure]"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fabric.render.runs import short, table


def age_text(seconds: float | None) -> str:
    """43200 -> '12h 0m'; 90 -> '1m 30s'; None -> 'never loaded'."""
    if seconds is None:
        return "never loaded"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _limit(seconds: float | None) -> str:
    return "" if seconds is None else age_text(seconds)


def render_freshness_text(doc: Mapping[str, Any]) -> str:
    sources: Sequence[Mapping[str, Any]] = doc["sources"]
    if not sources:
        return f"Tenant {doc['tenant']} loads no warehouse tables."
    rows = [
        (
            f"{s['pipeline']}.{s['table']}",
            s["status"],
            age_text(s["age_seconds"]) if s["loaded_at"] else "never loaded",
            _limit(s["warn_after_seconds"]),
            _limit(s["error_after_seconds"]),
            short(s["error"] or "", 60),
        )
        for s in sources
    ]
    head = ("SOURCE", "STATUS", "AGE", "WARN AFTER", "ERROR AFTER", "PROBLEM")
    return table(head, rows) + f"\n\nFreshness of {doc['tenant']}: {doc['status']}"


def stale_sources_text(sources: Sequence[Mapping[str, Any]]) -> str:
    """The stale ones of the last freshness check (empty text when none is stale)."""
    stale = [s for s in sources if s["status"] in ("warn", "error")]
    if not stale:
        return ""
    rows = [
        (f"{s['pipeline']}.{s['table']}", s["status"], s["checked_at"][:16].replace("T", " "))
        for s in stale
    ]
    return table(("STALE SOURCE", "STATUS", "CHECKED"), rows)
