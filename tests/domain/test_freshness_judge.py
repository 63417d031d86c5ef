"""Judging a table's age against a pipeline's freshness thresholds (pure, clock injected)."""

from __future__ import annotations

import datetime as dt

import pytest

from fabric.domain.freshness import after_seconds, freshness_document, judge, worst
from fabric.render.freshness import age_text, render_freshness_text, stale_sources_text

LOADED = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
BOTH = {"warn_after": {"count": 12, "period": "hour"}, "error_after": {"count": 1, "period": "day"}}


def at(hours: float, freshness=BOTH, loaded=LOADED, error=None):
    return judge(
        pipeline="orders",
        table="orders",
        relation="acme_raw.orders",
        freshness=freshness,
        loaded_at=loaded,
        now=LOADED + dt.timedelta(hours=hours),
        error=error,
    )


@pytest.mark.parametrize(
    ("hours", "status"), [(0, "pass"), (12, "pass"), (12.01, "warn"), (24, "warn"), (25, "error")]
)
def test_age_against_warn_and_error(hours: float, status: str) -> None:
    assert at(hours).status == status


def test_one_threshold_none_or_no_load_time() -> None:
    only_error = {"error_after": {"count": 30, "period": "minute"}}
    assert at(0.4, only_error).status == "pass" and at(0.6, only_error).status == "error"
    assert at(1000, None).status == "unchecked"  # no thresholds: shown, never judged
    never = at(0, loaded=None)
    assert never.status == "error" and never.error == "never loaded"
    denied = at(0, loaded=None, error="permission denied for schema globex_raw")
    assert denied.status == "error" and denied.error.startswith("permission denied")
    assert after_seconds({"count": 2, "period": "minute"}) == 120
    assert worst([at(0), at(13)]) == "warn" and worst([at(13), at(30)]) == "error"
    assert worst([at(1, None)]) == "pass"


def test_document_and_text() -> None:
    doc = freshness_document("acme", [at(13)])
    (source,) = doc["sources"]
    assert doc["status"] == "warn" and source["age_seconds"] == 13 * 3600
    assert source["warn_after_seconds"] == 43200 and source["loaded_at"] == LOADED.isoformat()
    text = render_freshness_text(doc)
    assert "orders.orders" in text and "13h 0m" in text and "warn" in text
    assert "STALE SOURCE" in stale_sources_text(doc["sources"])
    assert stale_sources_text(freshness_document("acme", [at(1)])["sources"]) == ""
    assert age_text(90) == "1m 30s" and age_text(2 * 86400 + 3600) == "2d 1h"
