"""Next fire times of schedules, for `fabric status`.  [pure]"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from fabric.addresses import Address
from fabric.graph.dag import Dag


def next_fire_times(
    dag: Dag, schedules: Mapping[str, Mapping[str, Any]], now: dt.datetime
) -> dict[Address, tuple[dt.datetime, str]]:
    """For each node, the soonest (fire time, schedule name) among active schedules selecting it."""
    out: dict[Address, tuple[dt.datetime, str]] = {}
    for name, spec in sorted(schedules.items()):
        if not spec.get("active", True):
            continue
        try:
            selected = dag.select(spec.get("targets") or ())
        except ValueError:
            continue
        tz = ZoneInfo(spec.get("timezone") or "UTC")
        fire = croniter(spec["cron"], now.astimezone(tz)).get_next(dt.datetime)
        for node in selected:
            if node not in out or fire < out[node][0]:
                out[node] = (fire, name)
    return out
