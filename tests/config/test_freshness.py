"""`freshness:` on a pipeline, through the loader."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from fabric.config.loader import load_repository

MakeRepo = Callable[[Mapping[str, str]], Path]
P = "tenants/acme/pipelines.yaml"
HEAD = "pipelines:\n  orders:\n    source: shop_db\n    dataset: acme_raw\n"
HEAD += "    mode: single_table\n    table: orders\n    freshness:\n"


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (
            "      warn_after: {count: 12, period: hour}\n"
            "      error_after: {count: 1, period: day}\n      loaded_at_field: updated_at\n",
            [],
        ),
        ("      loaded_at_field: updated_at\n", [("missing-field", 7)]),
        (
            "      warn_after: {count: 2, period: day}\n"
            "      error_after: {count: 1, period: day}\n",
            [("invalid-value", 8)],
        ),
        ("      warn_after: {count: 2, period: week}\n", [("invalid-value", 8)]),
        ("      error_after: {count: 0, period: day}\n", [("wrong-type", 8)]),
        ("      error_afer: {count: 1, period: day}\n", [("unknown-field", 8)]),
    ],
)
def test_freshness_rules(make_repo: MakeRepo, body: str, found: list) -> None:
    result = load_repository(make_repo({P: HEAD + body}))
    assert [(d.code, d.span.line) for d in result.diagnostics] == found
    if not found:
        spec = result.desired.tenants["acme"].pipelines["orders"].spec
        assert spec.freshness.error_after.period == "day"
