"""Source freshness: how old the tables a pipeline loads are, judged against its `freshness:`.
[pure]

The shell (fabric.runner.freshness) reads each table's newest load time through the tenant's
own warehouse login; this module turns that time and "now" (always passed in) into a status:
pass, warn or error against the pipeline's thresholds, or unchecked when it declares none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
Status = Literal["pass", "warn", "error", "unchecked"]
STALE: frozenset[str] = frozenset({"warn", "error"})


def after_seconds(after: Mapping[str, Any] | None) -> float | None:
    """`{count: 12, period: hour}` -> 43200.0 (None: no threshold)."""
    if not after:
        return None
    return float(after["count"]) * PERIOD_SECONDS[str(after["period"])]


@dataclass(frozen=True, slots=True, kw_only=True)
class TableFreshness:
    """One loaded table's freshness at `checked_at`."""

    pipeline: str
    table: str
    relation: str
    """`dataset.table` in the warehouse."""
    status: Status
    loaded_at: dt.datetime | None
    checked_at: dt.datetime
    warn_after_seconds: float | None = None
    error_after_seconds: float | None = None
    error: str | None = None
    """Why the load time could not be read (the table is missing, access denied, ...)."""

    @property
    def age_seconds(self) -> float | None:
        if self.loaded_at is None:
            return None
        return max(0.0, (self.checked_at - self.loaded_at).total_seconds())


def judge(
    *,
    pipeline: str,
    table: str,
    relation: str,
    freshness: Mapping[str, Any] | None,
    loaded_at: dt.datetime | None,
    now: dt.datetime,
    error: str | None = None,
) -> TableFreshness:
    """The table's status: its age against error_after, then warn_after. A table whose load
    time cannot be read is an error when the pipeline declares thresholds."""
    warn = after_seconds((freshness or {}).get("warn_after"))
    fail = after_seconds((freshness or {}).get("error_after"))
    status: Status
    if warn is None and fail is None:
        status = "unchecked"
    elif loaded_at is None:
        status = "error"
    else:
        age = (now - loaded_at).total_seconds()
        if fail is not None and age > fail:
            status = "error"
        elif warn is not None and age > warn:
            status = "warn"
        else:
            status = "pass"
    return TableFreshness(
        pipeline=pipeline,
        table=table,
        relation=relation,
        status=status,
        loaded_at=loaded_at,
        checked_at=now,
        warn_after_seconds=warn,
        error_after_seconds=fail,
        error=error if error is not None or loaded_at is not None else "never loaded",
    )


def worst(results: Sequence[TableFreshness]) -> Status:
    """The worst status of `results` (pass when all passed or none was checked)."""
    statuses = {r.status for r in results}
    for status in ("error", "warn"):
        if status in statuses:
            return status  # type: ignore[return-value]
    return "pass"


def freshness_document(tenant: str, results: Sequence[TableFreshness]) -> dict[str, Any]:
    """`fabric freshness --format json`: kind `fabric-freshness`."""
    return {
        "format_version": 1,
        "kind": "fabric-freshness",
        "tenant": tenant,
        "status": worst(results),
        "sources": [
            {
                "pipeline": r.pipeline,
                "table": r.table,
                "relation": r.relation,
                "status": r.status,
                "loaded_at": r.loaded_at.isoformat() if r.loaded_at else None,
                "age_seconds": None if r.age_seconds is None else round(r.age_seconds, 1),
                "warn_after_seconds": r.warn_after_seconds,
                "error_after_seconds": r.error_after_seconds,
                "checked_at": r.checked_at.isoformat(),
                "error": r.error,
            }
            for r in results
        ],
    }
