"""The importer's small Jinja reader: config() calls, blocks, vars and source renames."""

from __future__ import annotations

from fabric.dbt_import.jinja import (
    blocks,
    config_calls,
    jinja_literal,
    literal,
    rename_sources,
    substitute_vars,
    without_spans,
)

MODEL = """\
{# {{ config(materialized='view') }} is a comment, not a call #}
{{
  config(
    materialized = 'incremental',
    unique_key=['a', "b"],
    partition_by={'field': 'd', 'granularity': none},
    full_refresh = false,
    on_schema_change=var('mode'),
    **extra
  )
}}
select {{ other(config(x=1)) }} from t
"""


def test_config_calls_read_literal_keywords_and_keep_the_rest_as_written():
    (call,) = config_calls(MODEL)
    assert call.line == 2
    assert dict(call.values) == {
        "materialized": "incremental",
        "unique_key": ["a", "b"],
        "partition_by": {"field": "d", "granularity": None},
        "full_refresh": False,
    }
    assert dict(call.raw) == {"on_schema_change": "var('mode')"}
    assert call.unreadable == ("**extra",)
    cut = without_spans(MODEL, [(call.start, call.end)], keep_lines=True)
    assert cut.count("\n") == MODEL.count("\n")
    assert cut.splitlines()[11] == "select {{ other(config(x=1)) }} from t"


def test_literals_round_trip():
    for value in ("it's", 3, -2.5, True, None, ["a", 1], {"k": [False]}):
        assert literal(jinja_literal(value)) == value


def test_vars_are_substituted_with_values_or_defaults_and_the_rest_reported():
    sql = (
        "select {{ var('a') }}, {{ var('b', 'x') }}, {{ var('c') }} -- {{ var('a') }}\n"
        "{% if var('on') %}1{% endif %}"
    )
    values = {"a": "2024-01-01", "on": True}
    out, missing = substitute_vars(sql, lambda n: (n in values, values.get(n)))
    assert out == (
        "select {{ '2024-01-01' }}, {{ 'x' }}, {{ var('c') }} -- {{ '2024-01-01' }}\n"
        "{% if true %}1{% endif %}"
    )
    assert [(m.name, m.line) for m in missing] == [("c", 1)]


def test_blocks_and_source_renames():
    text = "{% snapshot s1 %}\nselect 1\n{% endsnapshot %}\n{%- snapshot s2 -%}x{%- endsnapshot -%}"
    assert [(b.name, b.line, b.body) for b in blocks(text, "snapshot")] == [
        ("s1", 1, "\nselect 1\n"),
        ("s2", 4, "x"),
    ]
    renamed = rename_sources(
        "{{ source('A', 'b') }} {{ source(\"A\", \"c\") }} {{ my.source('A', 'b') }}",
        {("A", "b"): ("a", "b"), ("A", "c"): ("a", "c_rows")},
    )
    assert renamed == "{{ source('a', 'b') }} {{ source('a', 'c_rows') }} {{ my.source('A', 'b') }}"
