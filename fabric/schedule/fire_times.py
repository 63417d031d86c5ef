"""When a cron fires in a timezone, with fabric's DST policy.  [pure]

croniter iterates wall-clock times in the zone. Around a DST change it does two things fabric
does not want for a daily job (croniter 7, pinned by tests/schedule/test_fire_times.py):
- on the fall-back day a repeated local time (`30 2 * * *` in Europe/Berlin) fires twice;
- on the spring-forward day a skipped local time fires at the end of the gap (03:00), which
  is what fabric wants, but several skipped times then coincide.

DST policy (README, "Schedules and DST"):
- a local time that occurs twice fires once, at its first occurrence, unless the cron runs
  hourly or more often (its hour field matches every hour): then every occurrence fires, as
  each is a real hour that went by;
- a local time that does not exist fires once, at the end of the gap;
- fire times are strictly increasing instants: two wall times mapping to one instant fire once.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

_TINY = timedelta(microseconds=1)


@functools.lru_cache(maxsize=4096)
def _parsed(cron: str) -> croniter:
    """The cron parsed once; iterators are shallow copies set to their start (4x cheaper than
    parsing again, which is most of a scheduler tick's Python time). Never iterated itself."""
    return croniter(cron)


@functools.lru_cache(maxsize=4096)
def is_hourly(cron: str) -> bool:
    """True when the cron's hour field matches every hour (`* * * * *`, `*/15 * * * *`, ...)."""
    hours = _parsed(cron).expanded[1]
    return hours == ["*"] or set(hours) == set(range(24))


def is_repeat(at: datetime, zone: ZoneInfo) -> bool:
    """True when `at` is the second occurrence of a local time repeated by a fall-back change."""
    wall = at.astimezone(zone).replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return False
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        return False  # a time inside a spring-forward gap, not a repeated one
    return at.astimezone(UTC) == second.astimezone(UTC) and at.astimezone(UTC) != first.astimezone(
        UTC
    )


def dst_change_near(at: datetime, zone: ZoneInfo) -> bool:
    """True when the zone's offset differs an hour either side of `at` (a DST change is near)."""
    before = (at - timedelta(hours=1)).astimezone(zone).utcoffset()
    after = (at + timedelta(hours=1)).astimezone(zone).utcoffset()
    return before != after


def iter_fire_times(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after `after`, oldest first, in UTC, with the DST policy."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    zone = ZoneInfo(timezone)
    hourly = is_hourly(cron)
    last = after.astimezone(UTC)
    it = copy.copy(_parsed(cron))
    it.set_current(after.astimezone(zone), force=True)
    while True:
        at: datetime = it.get_next(datetime).astimezone(UTC)
        if at <= last:
            continue  # the end of a gap that coincides with a regular fire time
        if not hourly and is_repeat(at, zone):
            continue
        last = at
        yield at


def fire_times(
    cron: str, timezone: str, after: datetime, until: datetime, *, limit: int
) -> tuple[datetime, ...]:
    """Fire times in (after, until], oldest first, in UTC; at most `limit` of them."""
    if until.tzinfo is None:
        raise ValueError("until must be timezone-aware")
    out: list[datetime] = []
    if limit <= 0:
        return ()
    for at in iter_fire_times(cron, timezone, after):
        if at > until:
            break
        out.append(at)
        if len(out) >= limit:
            break
    return tuple(out)


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after `after`, in UTC."""
    return next(iter_fire_times(cron, timezone, after))


def since(at: datetime) -> datetime:
    """An instant just before `at`: `fire_times(since(t), ...)` includes `t` itself."""
    return at - _TINY
