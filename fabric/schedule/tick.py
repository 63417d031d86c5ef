"""What one tick does with one due schedule: fire, record as missed, or skip.  [pure]

Given the schedule's policy, the time now, its stored `next_fire_at` and how many of its runs are
active, `decide` returns the fire times to run, the ones to record as missed or skipped (each
with its reason) and the new `next_fire_at`. The shell (fabric/state/schedules.py) writes that
decision in the transaction that claimed the schedule.

Policies (README, "Schedules"), in the order they apply:
1. misfire: a fire time older than `misfire_grace_seconds` is missed, never run;
2. coalesce (`catchup: false`): of the fire times still within grace, only the latest runs; the
   earlier ones are missed ("coalesced");
   catch-up (`catchup: true`): each runs, the latest `catchup_cap` of them; older ones are missed;
3. max_instances: while that many runs of the schedule are active, a fire is skipped.
`next_fire_at` becomes the first fire time after now: a tick settles every time up to now.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from fabric.schedule.fire_times import fire_times, iter_fire_times, since

RECORD_LIMIT = 100
"""At most this many missed fire times are recorded per schedule and tick; the rest are counted."""
SCAN_LIMIT = 10_000
"""At most this many fire times within the grace window are looked at (the newest matter)."""


class Outcome(StrEnum):
    FIRED = "fired"
    MISSED = "missed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The parts of a schedule's spec a tick reads."""

    cron: str
    timezone: str
    catchup: bool = False
    max_instances: int = 1
    misfire_grace_seconds: float = 300

    @classmethod
    def of(cls, spec: dict[str, Any] | Any) -> Policy:
        return cls(
            cron=str(spec["cron"]),
            timezone=str(spec.get("timezone") or "UTC"),
            catchup=bool(spec.get("catchup", False)),
            max_instances=int(spec.get("max_instances") or 1),
            misfire_grace_seconds=float(
                300 if spec.get("misfire_grace_seconds") is None else spec["misfire_grace_seconds"]
            ),
        )


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire time and what became of it."""

    at: datetime
    outcome: Outcome
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    fires: tuple[Fire, ...]
    """Every fire time settled by this tick, oldest first (fired, missed and skipped)."""
    next_fire_at: datetime
    unrecorded_missed: int = 0
    """Missed fire times beyond RECORD_LIMIT: counted in the log, not written one by one."""

    @property
    def fired(self) -> tuple[datetime, ...]:
        return tuple(f.at for f in self.fires if f.outcome is Outcome.FIRED)


def decide(
    policy: Policy,
    *,
    now: datetime,
    next_fire_at: datetime,
    active_runs: int,
    catchup_cap: int,
) -> Decision:
    """Settle every fire time in [next_fire_at, now] (nothing when next_fire_at is later)."""
    if next_fire_at > now:
        return Decision(fires=(), next_fire_at=next_fire_at)
    grace = timedelta(seconds=policy.misfire_grace_seconds)
    window_start = max(next_fire_at, now - grace)
    fires: list[Fire] = []
    unrecorded = 0
    late: tuple[datetime, ...] = ()
    if next_fire_at < window_start:  # some fire times are past their grace: missed
        late = _times(policy, next_fire_at, window_start, limit=RECORD_LIMIT + 1)
        if next_fire_at not in late:
            late = (next_fire_at, *late)
        unrecorded = _count_beyond(policy, late, window_start)
        for at in late[:RECORD_LIMIT]:
            seconds = int((now - at).total_seconds())
            fires.append(
                Fire(
                    at,
                    Outcome.MISSED,
                    f"misfire: {seconds} s late, more than misfire_grace_seconds "
                    f"({policy.misfire_grace_seconds:g})",
                )
            )
    # One iterator walks the window and yields the first fire time after it, too.
    times = iter_fire_times(policy.cron, policy.timezone, since(window_start))
    newest: deque[datetime] = deque(maxlen=SCAN_LIMIT)
    following = next(times)
    while following <= now:
        newest.append(following)
        following = next(times)
    due = tuple(newest)
    # NOTE: the stored next_fire_at is a fire time by construction; should it not match the
    # cron (a hand edit), it is still the time the clock promised, so it is settled too.
    if next_fire_at >= window_start and next_fire_at not in due:
        due = (next_fire_at, *due)
    if policy.catchup:
        keep_from = len(due) - min(len(due), max(0, catchup_cap))
        run, dropped = due[keep_from:], due[:keep_from]
        dropped_reason = f"catch-up cap: only the latest {catchup_cap} missed times run"
    else:
        run, dropped = due[-1:], due[:-1]
        dropped_reason = (
            f"coalesced: catchup is false, {due[-1].isoformat()} ran instead" if due else ""
        )
    fires.extend(Fire(at, Outcome.MISSED, dropped_reason) for at in dropped[-RECORD_LIMIT:])
    unrecorded += max(0, len(dropped) - RECORD_LIMIT)
    room = max(0, policy.max_instances - active_runs)
    for i, at in enumerate(run):
        if i < room:
            fires.append(Fire(at, Outcome.FIRED))
        else:
            fires.append(
                Fire(
                    at,
                    Outcome.SKIPPED,
                    f"max_instances: {policy.max_instances} run(s) of this schedule active",
                )
            )
    fires.sort(key=lambda f: f.at)
    return Decision(fires=tuple(fires), next_fire_at=following, unrecorded_missed=unrecorded)


def _times(policy: Policy, start: datetime, end: datetime, *, limit: int) -> tuple[datetime, ...]:
    """Fire times in [start, end)."""
    found = fire_times(policy.cron, policy.timezone, since(start), end, limit=limit)
    return tuple(t for t in found if t < end)


def _count_beyond(policy: Policy, late: tuple[datetime, ...], window_start: datetime) -> int:
    """How many late fire times there are past the first RECORD_LIMIT (bounded by SCAN_LIMIT)."""
    if len(late) <= RECORD_LIMIT:
        return 0
    rest = _times(policy, late[RECORD_LIMIT], window_start, limit=SCAN_LIMIT)
    return len(rest)
