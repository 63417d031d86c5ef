"""Event lines: text with key=value pairs, or one JSON object per line."""

import json
from datetime import UTC, datetime

from fabric.render.events import event_line

AT = datetime(2026, 10, 25, 0, 30, 2, tzinfo=UTC)


def test_text_line_has_time_event_and_keys_quoting_values_with_spaces():
    line = event_line(AT, "missed", {"tenant": "acme", "reason": "misfire: 9 s late"}, "text")
    assert line == '2026-10-25T00:30:02Z missed tenant=acme reason="misfire: 9 s late"'


def test_json_line_is_one_object_with_utc_times_and_no_empty_fields():
    fields = {"tenant": "acme", "fire_at": AT, "run": 7, "error": None, "sel": ("a", "b")}
    doc = json.loads(event_line(AT, "fired", fields, "json"))
    assert doc == {
        "ts": "2026-10-25T00:30:02Z",
        "event": "fired",
        "tenant": "acme",
        "fire_at": "2026-10-25T00:30:02Z",
        "run": 7,
        "sel": ["a", "b"],
    }
