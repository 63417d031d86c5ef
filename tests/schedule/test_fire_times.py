"""Fire times and fabric's DST policy, in Europe/Berlin and America/New_York."""

from datetime import UTC, datetime

import pytest

from fabric.schedule.fire_times import dst_change_near, fire_times, is_hourly, next_fire


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(cron: str, tz: str, after: str, until: str) -> list[str]:
    found = fire_times(cron, tz, utc(after), utc(until), limit=1000)
    return [t.strftime("%Y-%m-%d %H:%M") for t in found]


def test_daily_time_repeated_by_fall_back_fires_once_at_its_first_occurrence_in_berlin():
    # 2026-10-25: 03:00 CEST -> 02:00 CET, so 02:30 happens at 00:30 UTC and again at 01:30 UTC.
    assert fires("30 2 * * *", "Europe/Berlin", "2026-10-24 00:00", "2026-10-27 00:00") == [
        "2026-10-24 00:30",
        "2026-10-25 00:30",
        "2026-10-26 01:30",
    ]


def test_repeat_is_not_fired_when_iteration_starts_between_the_two_occurrences():
    after_first = "2026-10-25 00:30"
    assert fires("30 2 * * *", "Europe/Berlin", after_first, "2026-10-26 12:00") == [
        "2026-10-26 01:30"
    ]


def test_daily_time_skipped_by_spring_forward_fires_once_at_the_end_of_the_gap_in_berlin():
    # 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist, 03:00 CEST is 01:00 UTC.
    assert fires("30 2 * * *", "Europe/Berlin", "2026-03-28 00:00", "2026-03-31 00:00") == [
        "2026-03-28 01:30",
        "2026-03-29 01:00",
        "2026-03-30 00:30",
    ]


def test_hourly_cron_fires_every_real_hour_on_fall_back_in_berlin():
    assert fires("0 * * * *", "Europe/Berlin", "2026-10-24 22:30", "2026-10-25 02:30") == [
        "2026-10-24 23:00",  # 01:00 CEST
        "2026-10-25 00:00",  # 02:00 CEST
        "2026-10-25 01:00",  # 02:00 CET, the repeated hour: it is a real hour, so it fires
        "2026-10-25 02:00",  # 03:00 CET
    ]


def test_hourly_cron_has_one_fewer_fire_on_spring_forward_in_berlin():
    assert fires("0 * * * *", "Europe/Berlin", "2026-03-28 23:30", "2026-03-29 02:30") == [
        "2026-03-29 00:00",  # 01:00 CET
        "2026-03-29 01:00",  # 03:00 CEST (02:00 does not exist: end of the gap, once)
        "2026-03-29 02:00",
    ]


def test_every_fifteen_minutes_collapses_the_gap_into_one_fire_in_berlin():
    assert fires("*/15 * * * *", "Europe/Berlin", "2026-03-29 00:30", "2026-03-29 01:30") == [
        "2026-03-29 00:45",  # 01:45 CET
        "2026-03-29 01:00",  # 03:00 CEST: 02:00-02:45 do not exist and fire once, here
        "2026-03-29 01:15",
        "2026-03-29 01:30",
    ]


def test_every_fifteen_minutes_fires_through_the_repeated_hour_in_berlin():
    found = fires("*/15 * * * *", "Europe/Berlin", "2026-10-24 23:50", "2026-10-25 02:00")
    assert len(found) == 9  # 00:00 .. 02:00 UTC: two real hours plus the end, none dropped
    assert found[0] == "2026-10-25 00:00" and found[-1] == "2026-10-25 02:00"


def test_daily_time_repeated_by_fall_back_fires_once_in_new_york():
    # 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 happens at 05:30 and at 06:30 UTC.
    assert fires("30 1 * * *", "America/New_York", "2026-10-31 00:00", "2026-11-03 00:00") == [
        "2026-10-31 05:30",
        "2026-11-01 05:30",
        "2026-11-02 06:30",
    ]


def test_daily_time_skipped_by_spring_forward_fires_at_the_end_of_the_gap_in_new_york():
    # 2026-03-08: 02:00 EST -> 03:00 EDT; 02:30 does not exist; 03:00 EDT is 07:00 UTC.
    assert fires("30 2 * * *", "America/New_York", "2026-03-07 00:00", "2026-03-10 00:00") == [
        "2026-03-07 07:30",
        "2026-03-08 07:00",
        "2026-03-09 06:30",
    ]


def test_two_wall_times_on_one_instant_fire_once():
    # 02:00 is skipped (fires at 03:00 CEST) and 03:00 itself is a fire time: one fire.
    assert fires("0 2,3 * * *", "Europe/Berlin", "2026-03-28 23:00", "2026-03-29 03:00") == [
        "2026-03-29 01:00"
    ]


def test_hourly_means_the_hour_field_matches_every_hour():
    assert is_hourly("0 * * * *") and is_hourly("*/15 * * * *") and is_hourly("5 0-23 * * *")
    assert not is_hourly("30 2 * * *") and not is_hourly("15 7-22 * * *")


def test_a_dst_change_is_flagged_near_the_change_and_not_elsewhere():
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    assert dst_change_near(utc("2026-10-25 00:30"), berlin)
    assert dst_change_near(utc("2026-03-29 01:00"), berlin)
    assert not dst_change_near(utc("2026-10-26 01:30"), berlin)


def test_times_are_utc_and_bounds_are_after_exclusive_until_inclusive():
    start, end = utc("2026-01-01 00:00"), utc("2026-01-01 02:00")
    found = fire_times("0 * * * *", "UTC", start, end, limit=9)
    assert [t.hour for t in found] == [1, 2] and all(t.tzinfo is UTC for t in found)
    assert next_fire("0 * * * *", "UTC", utc("2026-01-01 00:00")) == utc("2026-01-01 01:00")


def test_limit_bounds_the_answer():
    assert len(fires("* * * * *", "UTC", "2026-01-01 00:00", "2026-01-02 00:00")) == 1000


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        fire_times("0 * * * *", "UTC", datetime(2026, 1, 1), utc("2026-01-02 00:00"), limit=1)
