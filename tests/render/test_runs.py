"""Run records and test results as text."""

from __future__ import annotations

from fabric.domain.runs import TestResult
from fabric.render.runs import full_errors, report_tests, short


def test_the_test_report_names_each_test_with_its_failures_and_says_no_tests():
    report = report_tests(
        [
            (
                "acme.transformation.orders",
                "failed",
                "1 of 3 test(s) failed: ...",
                (
                    TestResult(name="not_null_orders_id", status="pass", failures=0),
                    TestResult(name="unique_orders_id", status="fail", failures=3),
                    TestResult(name="accepted_values_orders_s", status="warn", failures=1),
                ),
            ),
            ("acme.transformation.totals", "success", None, ()),
            ("acme.transformation.broken", "failed", "could not connect\nmore detail", ()),
        ]
    )
    assert report.splitlines() == [
        "✗ acme.transformation.orders: 1 of 3 tests failed",
        "    ✓ not_null_orders_id",
        "    ✗ unique_orders_id: 3 failures",
        "    ! accepted_values_orders_s: 1 failure (warning)",
        "- acme.transformation.totals: no tests",
        "✗ acme.transformation.broken: could not connect",
        "Tests: 1 passed, 1 warned, 1 failed.",
    ]


def test_errors_cut_short_in_a_table_are_shown_in_full_below_it():
    long = "x" * 100
    text = full_errors(
        [("a", "short one"), ("b", None), ("c", "headline\nmore detail"), ("d", long)]
    )
    assert short("headline\nmore detail") == "headline"
    assert text == f"c error:\n  headline\n  more detail\n\nd error:\n  {long}"
