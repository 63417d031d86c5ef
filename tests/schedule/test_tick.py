"""The tick decision: misfire, coalesce, catch-up (with its cap), max_instances, next_fire_at.

Time is injected: every test says what "now" is.
"""

from datetime import UTC, datetime, timedelta

from fabric.schedule.tick import RECORD_LIMIT, Outcome, Policy, decide


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


HOURLY = dict(cron="0 * * * *", timezone="UTC")


def run(policy: Policy, now: str, next_fire_at: str, active: int = 0, cap: int = 10):
    return decide(
        policy, now=utc(now), next_fire_at=utc(next_fire_at), active_runs=active, catchup_cap=cap
    )


def outcomes(decision) -> list[tuple[str, str]]:
    return [(f.at.strftime("%H:%M"), f.outcome.value) for f in decision.fires]


def test_a_schedule_not_yet_due_settles_nothing_and_keeps_its_next_fire():
    d = run(Policy(**HOURLY), "2026-01-01 09:59", "2026-01-01 10:00")
    assert d.fires == () and d.next_fire_at == utc("2026-01-01 10:00")


def test_a_due_fire_within_grace_fires_and_next_fire_advances_past_now():
    d = run(Policy(**HOURLY), "2026-01-01 10:00:03", "2026-01-01 10:00")
    assert outcomes(d) == [("10:00", "fired")]
    assert d.next_fire_at == utc("2026-01-01 11:00")


def test_without_catchup_many_missed_times_fire_once_the_latest_and_the_rest_are_coalesced():
    policy = Policy(**HOURLY, catchup=False, misfire_grace_seconds=6 * 3600)
    d = run(policy, "2026-01-01 10:30", "2026-01-01 07:00")
    assert outcomes(d) == [
        ("07:00", "missed"),
        ("08:00", "missed"),
        ("09:00", "missed"),
        ("10:00", "fired"),
    ]
    assert all(f.reason.startswith("coalesced") for f in d.fires if f.outcome is Outcome.MISSED)
    assert d.next_fire_at == utc("2026-01-01 11:00")


def test_with_catchup_each_missed_time_fires():
    policy = Policy(**HOURLY, catchup=True, max_instances=10, misfire_grace_seconds=6 * 3600)
    d = run(policy, "2026-01-01 10:30", "2026-01-01 07:00")
    assert d.fired == tuple(utc(f"2026-01-01 {h:02}:00") for h in (7, 8, 9, 10))


def test_catchup_fires_only_the_latest_times_up_to_the_cap():
    policy = Policy(**HOURLY, catchup=True, max_instances=10, misfire_grace_seconds=24 * 3600)
    d = run(policy, "2026-01-01 10:30", "2026-01-01 03:00", cap=3)
    assert d.fired == (utc("2026-01-01 08:00"), utc("2026-01-01 09:00"), utc("2026-01-01 10:00"))
    capped = [f for f in d.fires if f.outcome is Outcome.MISSED]
    assert [f.at.hour for f in capped] == [3, 4, 5, 6, 7]
    assert all("catch-up cap" in f.reason for f in capped)


def test_a_fire_older_than_the_grace_is_missed_not_run():
    policy = Policy(**HOURLY, misfire_grace_seconds=300)
    d = run(policy, "2026-01-01 10:06", "2026-01-01 10:00")
    assert outcomes(d) == [("10:00", "missed")]
    assert d.fires[0].reason.startswith("misfire: 360 s late")
    assert d.next_fire_at == utc("2026-01-01 11:00")


def test_misfire_applies_before_catchup_only_times_within_grace_run():
    policy = Policy(**HOURLY, catchup=True, max_instances=5, misfire_grace_seconds=2 * 3600)
    d = run(policy, "2026-01-01 10:30", "2026-01-01 06:00")
    assert outcomes(d) == [
        ("06:00", "missed"),
        ("07:00", "missed"),
        ("08:00", "missed"),  # 08:00 is 2 h 30 min late: past the 2 h grace
        ("09:00", "fired"),
        ("10:00", "fired"),
    ]
    assert all(f.reason.startswith("misfire") for f in d.fires[:3])


def test_max_instances_skips_a_fire_while_that_many_runs_are_active():
    d = run(Policy(**HOURLY, max_instances=2), "2026-01-01 10:00:01", "2026-01-01 10:00", active=2)
    assert outcomes(d) == [("10:00", "skipped")]
    assert d.fires[0].reason == "max_instances: 2 run(s) of this schedule active"
    assert d.next_fire_at == utc("2026-01-01 11:00")


def test_max_instances_lets_catchup_fire_only_the_room_left_oldest_first():
    policy = Policy(**HOURLY, catchup=True, max_instances=3, misfire_grace_seconds=6 * 3600)
    d = run(policy, "2026-01-01 10:30", "2026-01-01 07:00", active=1)
    assert outcomes(d) == [
        ("07:00", "fired"),
        ("08:00", "fired"),
        ("09:00", "skipped"),
        ("10:00", "skipped"),
    ]


def test_a_long_outage_records_a_bounded_number_of_misses_and_counts_the_rest():
    policy = Policy(cron="* * * * *", timezone="UTC", misfire_grace_seconds=60)
    d = run(policy, "2026-01-02 00:00:30", "2026-01-01 00:00")
    missed = [f for f in d.fires if f.outcome is Outcome.MISSED]
    assert len(missed) == RECORD_LIMIT
    assert len(missed) + d.unrecorded_missed + len(d.fired) == 24 * 60 + 1
    assert d.fired == (utc("2026-01-02 00:00"),)


def test_daily_berlin_schedule_on_fall_back_fires_once_across_ticks():
    policy = Policy(cron="30 2 * * *", timezone="Europe/Berlin")
    first = utc("2026-10-25 00:30")  # 02:30 CEST
    d = decide(
        policy,
        now=first + timedelta(seconds=2),
        next_fire_at=first,
        active_runs=0,
        catchup_cap=10,
    )
    assert d.fired == (first,)
    # The repeated 02:30 CET (01:30 UTC) is not a fire time: the next one is the day after.
    assert d.next_fire_at == utc("2026-10-26 01:30")


def test_daily_new_york_schedule_on_spring_forward_fires_at_the_end_of_the_gap():
    policy = Policy(cron="30 2 * * *", timezone="America/New_York")
    d = decide(
        policy,
        now=utc("2026-03-08 07:00:05"),
        next_fire_at=utc("2026-03-08 07:00"),
        active_runs=0,
        catchup_cap=10,
    )
    assert d.fired == (utc("2026-03-08 07:00"),)  # 03:00 EDT
    assert d.next_fire_at == utc("2026-03-09 06:30")


def test_policy_reads_a_stored_spec_with_defaults():
    p = Policy.of({"cron": "0 2 * * *", "timezone": "Europe/Berlin", "targets": ["x"]})
    assert (p.catchup, p.max_instances, p.misfire_grace_seconds) == (False, 1, 300)


def test_a_stored_next_fire_off_the_cron_is_still_settled():
    policy = Policy(cron="0 3 * * *", timezone="UTC")
    d = run(policy, "2026-01-01 10:00:01", "2026-01-01 10:00")
    assert outcomes(d) == [("10:00", "fired")]
    assert d.next_fire_at == utc("2026-01-02 03:00")
