"""Next fire times of schedules, for `fabric status`.  [pure]

Fire times follow fabric's DST policy (fabric.schedule.fire_times), so what `status` shows is
what the scheduler fires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from fabric.addresses import Address
from fabric.graph.dag import Dag
from fabric.schedule.fire_times import dst_change_near, fire_times, next_fire, since


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
        timezone = spec.get("timezone") or "UTC"
        fire = next_fire(spec["cron"], timezone, now).astimezone(ZoneInfo(timezone))
        for node in selected:
            if node not in out or fire < out[node][0]:
                out[node] = (fire, name)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class UpcomingFire:
    at: dt.datetime
    """In the schedule's timezone."""
    dst_change: bool
    """The fire falls within an hour of a DST change in its timezone (shifted or kept once)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleOutlook:
    """One schedule as `fabric status` shows it."""

    name: str
    cron: str
    timezone: str
    active: bool
    last_fire_at: dt.datetime | None
    next_fires: tuple[UpcomingFire, ...]


def schedule_outlook(
    name: str,
    spec: Mapping[str, Any],
    *,
    now: dt.datetime,
    next_fire_at: dt.datetime | None,
    last_fire_at: dt.datetime | None,
    count: int = 3,
) -> ScheduleOutlook:
    """The schedule's next `count` fires from its stored `next_fire_at` (from `now` without one)."""
    timezone = str(spec.get("timezone") or "UTC")
    zone = ZoneInfo(timezone)
    active = bool(spec.get("active", True))
    fires: tuple[dt.datetime, ...] = ()
    if active:
        start = since(next_fire_at) if next_fire_at is not None else now
        fires = fire_times(
            str(spec["cron"]), timezone, start, dt.datetime.max.replace(tzinfo=dt.UTC), limit=count
        )
    return ScheduleOutlook(
        name=name,
        cron=str(spec["cron"]),
        timezone=timezone,
        active=active,
        last_fire_at=last_fire_at,
        next_fires=tuple(
            UpcomingFire(at=f.astimezone(zone), dst_change=dst_change_near(f, zone)) for f in fires
        ),
    )
