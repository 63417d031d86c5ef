"""The clock seam: the one place that asks the system for the time.  [shell]

Everything below the shell receives datetimes as arguments; tests of time-driven code (retries,
leases, schedules) pass their own clock instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)
