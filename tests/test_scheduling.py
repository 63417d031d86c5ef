"""What `fabric status` shows of schedules: next fires with the DST policy, flagged near a
DST change, rendered as a table and in the status document."""

from datetime import UTC, datetime

from fabric.render.run_documents import render_status_text, status_document
from fabric.scheduling import schedule_outlook


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


SPEC = {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "targets": ["orders"]}


def test_next_fires_start_at_the_stored_next_fire_and_flag_the_fall_back_day():
    outlook = schedule_outlook(
        "nightly",
        SPEC,
        now=utc("2026-10-23 12:00"),
        next_fire_at=utc("2026-10-24 00:30"),
        last_fire_at=utc("2026-10-23 00:30"),
    )
    assert [(f.at.isoformat(), f.dst_change) for f in outlook.next_fires] == [
        ("2026-10-24T02:30:00+02:00", False),
        ("2026-10-25T02:30:00+02:00", True),  # once, not again at 02:30 CET
        ("2026-10-26T02:30:00+01:00", False),
    ]


def test_a_skipped_local_time_shows_at_the_end_of_the_gap_flagged():
    outlook = schedule_outlook(
        "nightly", SPEC, now=utc("2026-03-28 12:00"), next_fire_at=None, last_fire_at=None
    )
    assert outlook.next_fires[0].at.isoformat() == "2026-03-29T03:00:00+02:00"
    assert outlook.next_fires[0].dst_change


def test_a_paused_schedule_has_no_next_fires():
    outlook = schedule_outlook(
        "p", {**SPEC, "active": False}, now=utc("2026-01-01"), next_fire_at=None, last_fire_at=None
    )
    assert not outlook.active and outlook.next_fires == ()


def test_status_document_and_text_show_last_fire_next_fires_and_the_dst_flag():
    outlook = schedule_outlook(
        "nightly",
        SPEC,
        now=utc("2026-10-24 12:00"),
        next_fire_at=utc("2026-10-25 00:30"),
        last_fire_at=utc("2026-10-24 00:30"),
        count=2,
    )
    doc = status_document("acme", [], [outlook])
    assert doc["schedules"] == [
        {
            "name": "nightly",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "active": True,
            "last_fire_at": "2026-10-24T00:30:00+00:00",
            "next_fires": [
                {"at": "2026-10-25T02:30:00+02:00", "dst_change": True},
                {"at": "2026-10-26T02:30:00+01:00", "dst_change": False},
            ],
        }
    ]
    text = render_status_text(doc)
    assert "nightly   30 2 * * *  Europe/Berlin  2026-10-24 02:30 CEST" in text
    assert "2026-10-25 02:30 CEST (DST change), 2026-10-26 02:30 CET" in text
