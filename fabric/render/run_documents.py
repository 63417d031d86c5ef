"""`fabric runs` and `fabric status` as versioned JSON documents, and as tables.  [pure]

The text tables are rendered from the same documents, so both formats always agree. The
documents are stable: fields are only ever added, and `format_version` changes otherwise.
Times are ISO 8601 with their offset; `seconds` is wall time from start to finish.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fabric.render.freshness import stale_sources_text
from fabric.render.runs import rows_total, short, table

FORMAT_VERSION = 1


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(started: dt.datetime | None, finished: dt.datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds(), 3)


def runs_document(records: Iterable[Any]) -> dict[str, Any]:
    """Run records (newest first) -> {"format_version", "kind": "fabric-runs", "runs": [...]}."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": "fabric-runs",
        "runs": [
            {
                "tenant": r.tenant,
                "id": r.id,
                "status": r.status,
                "trigger": r.trigger,
                "who": r.who,
                "selection": list(r.selection),
                "started_at": _time(r.started_at),
                "finished_at": _time(r.finished_at),
                "seconds": _seconds(r.started_at, r.finished_at),
                "error": r.error,
            }
            for r in records
        ],
    }


def status_document(
    tenant: str,
    nodes: Iterable[Any],
    schedules: Iterable[Any] = (),
    sources: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A tenant's nodes in DAG order, each with its last run (null: never run) and next fire;
    its schedules (fabric.scheduling.ScheduleOutlook), each with its last and next fires; and
    the last freshness check of its sources (the `sources` of a `fabric-freshness` document)."""
    out = []
    for n in nodes:
        last = n.last
        out.append(
            {
                "node": n.node,
                "last_run": None
                if last is None
                else {
                    "status": last.status,
                    "attempts": last.attempts,
                    "started_at": _time(last.started_at),
                    "finished_at": _time(last.finished_at),
                    "rows_loaded": dict(last.rows_loaded),
                    "error": last.error,
                },
                "next_run": None
                if n.next_fire is None
                else {
                    "at": _time(n.next_fire[0]),
                    "timezone": str(n.next_fire[0].tzinfo),
                    "schedule": n.next_fire[1],
                },
            }
        )
    return {
        "format_version": FORMAT_VERSION,
        "kind": "fabric-status",
        "tenant": tenant,
        "nodes": out,
        "schedules": [
            {
                "name": s.name,
                "cron": s.cron,
                "timezone": s.timezone,
                "active": s.active,
                "last_fire_at": _time(s.last_fire_at),
                "next_fires": [
                    {"at": _time(f.at), "dst_change": f.dst_change} for f in s.next_fires
                ],
            }
            for s in schedules
        ],
        "sources": list(sources),
    }


def render_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2)


def _minute(iso: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return dt.datetime.fromisoformat(iso).strftime(fmt) if iso else ""


def _local(iso: str, timezone: str) -> str:
    """A fire time in its schedule's timezone, with the zone's abbreviation (CET, EST, ...)."""
    from zoneinfo import ZoneInfo

    try:
        moment = dt.datetime.fromisoformat(iso).astimezone(ZoneInfo(timezone))
    except (ValueError, KeyError):
        moment = dt.datetime.fromisoformat(iso)
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def render_runs_text(doc: Mapping[str, Any]) -> str:
    runs: Sequence[Mapping[str, Any]] = doc["runs"]
    if not runs:
        return "No runs yet."
    return table(
        ("TENANT", "RUN", "STATUS", "TRIGGER", "STARTED", "SECONDS", "WHO", "SELECTION"),
        [
            (
                r["tenant"],
                r["id"],
                r["status"],
                r["trigger"],
                _minute(r["started_at"]),
                "" if r["seconds"] is None else f"{r['seconds']:.1f}",
                r["who"],
                " ".join(r["selection"]),
            )
            for r in runs
        ],
    )


def render_status_text(doc: Mapping[str, Any]) -> str:
    rows = []
    for n in doc["nodes"]:
        last, nxt = n["last_run"], n["next_run"]
        rows.append(
            (
                n["node"],
                last["status"] if last else "never run",
                _minute(last["finished_at"], "%Y-%m-%d %H:%M") if last else "",
                f"{rows_total(last['rows_loaded']):,}" if last else "",
                f"{_local(nxt['at'], nxt['timezone'])} ({nxt['schedule']})" if nxt else "",
                short(last["error"], 50) if last else "",
            )
        )
    text = table(("NODE", "LAST", "FINISHED", "ROWS", "NEXT RUN", "ERROR"), rows)
    if doc.get("schedules"):
        text += "\n\n" + _schedules_text(doc["schedules"])
    stale = stale_sources_text(doc.get("sources") or ())
    if stale:
        text += "\n\n" + stale
    return text


def _schedules_text(schedules: Sequence[Mapping[str, Any]]) -> str:
    """One row per schedule; a next fire near a DST change is marked `(DST change)`."""
    rows = []
    for s in schedules:
        nxt = [
            _local(f["at"], s["timezone"]) + (" (DST change)" if f["dst_change"] else "")
            for f in s["next_fires"]
        ]
        rows.append(
            (
                s["name"],
                s["cron"],
                s["timezone"],
                _local(s["last_fire_at"], s["timezone"]) if s["last_fire_at"] else "never",
                ", ".join(nxt) if s["active"] else "paused",
            )
        )
    return table(("SCHEDULE", "CRON", "TIMEZONE", "LAST FIRE", "NEXT FIRES"), rows)
