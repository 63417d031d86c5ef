"""parse_yaml and locate: plain data, positions, and what PyYAML alone would let through."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from fabric.config.yaml_source import MAX_DEPTH, locate, parse_yaml
from fabric.diagnostics import SourceSpan

PATH = "tenants/acme/x.yaml"


def parse(text: str, **kwargs):
    return parse_yaml(textwrap.dedent(text), PATH, **kwargs)


def codes(parsed) -> list[str]:
    return [d.code for d in parsed.diagnostics]


def at(line: int, column: int) -> SourceSpan:
    return SourceSpan(PATH, line, column)


# --------------------------------------------------------------------------------------------
# data


def test_plain_data_with_yaml_scalar_types() -> None:
    parsed = parse(
        """\
        name: orders
        port: 5432
        ratio: 0.5
        active: yes
        empty: ~
        day: 2024-01-01
        quoted: "2024-01-01"
        items: [a, 1, {b: 2}]
        """
    )
    assert parsed.diagnostics == ()
    assert parsed.data == {
        "name": "orders",
        "port": 5432,
        "ratio": 0.5,
        "active": True,
        "empty": None,
        "day": dt.date(2024, 1, 1),
        "quoted": "2024-01-01",
        "items": ["a", 1, {"b": 2}],
    }


def test_an_empty_document_is_no_data_and_no_problem() -> None:
    for text in ("", "# only a comment\n", "---\n"):
        parsed = parse_yaml(text, PATH)
        assert (parsed.data, parsed.diagnostics) == (None, ())


def test_anchors_and_aliases_are_expanded() -> None:
    parsed = parse(
        """\
        base: &base [a, b]
        copy: *base
        """
    )
    assert parsed.data == {"base": ["a", "b"], "copy": ["a", "b"]}


def test_merge_keys_explicit_keys_win_then_earlier_sources() -> None:
    parsed = parse(
        """\
        one: &one {a: 1, b: 1, c: 1}
        two: &two {b: 2, d: 2}
        merged:
          <<: [*two, *one]
          c: 3
        """
    )
    assert parsed.diagnostics == ()
    assert parsed.data["merged"] == {"a": 1, "b": 2, "c": 3, "d": 2}


def test_a_merge_of_a_non_mapping_is_rejected() -> None:
    parsed = parse(
        """\
        a:
          <<: [1]
        """
    )
    assert codes(parsed) == ["yaml-bad-merge"]
    assert parsed.diagnostics[0].span == at(2, 8)


# --------------------------------------------------------------------------------------------
# duplicate keys


@pytest.mark.parametrize(
    ("text", "line", "column", "first"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, 1, 1),
        ("top:\n  x: 1\n  y: 2\n  x: 3\n", 4, 3, 2),
        ("top: {x: 1, x: 2}\n", 1, 13, 1),
        ("top:\n  - {k: 1}\n  - k: 1\n    j: 2\n    k: 3\n", 5, 5, 3),
        ("1: a\n01: b\n", 2, 1, 1),  # the same int written twice differently
    ],
    ids=["top", "nested", "flow", "in-a-list", "same-value"],
)
def test_duplicate_keys_are_reported_at_the_second_with_the_first_line(
    text: str, line: int, column: int, first: int
) -> None:
    parsed = parse_yaml(text, PATH)
    assert codes(parsed) == ["duplicate-key"]
    diag = parsed.diagnostics[0]
    assert diag.span == at(line, column)
    assert f"(first at line {first})" in diag.detail
    assert parsed.data is not None  # reported, and the rest of the file is still checked


# --------------------------------------------------------------------------------------------
# syntax errors and what is refused


def test_a_syntax_error_points_where_it_is_found() -> None:
    parsed = parse(
        """\
        a:
          b: [1, 2
          c: 3
        """
    )
    assert (parsed.data, codes(parsed)) == (None, ["yaml-syntax"])
    assert parsed.diagnostics[0].span == at(3, 4)


@pytest.mark.parametrize(
    ("text", "span"),
    [('a: 1\nb: "open\n', at(2, 4)), ("a: 1\nb: [1, 2\n\n", at(2, 4)), ("a: {b: 1", at(1, 4))],
    ids=["quote", "sequence", "mapping"],
)
def test_something_left_open_at_the_end_points_at_where_it_opens(
    text: str, span: SourceSpan
) -> None:
    parsed = parse_yaml(text, PATH)
    assert codes(parsed) == ["yaml-syntax"]
    assert parsed.diagnostics[0].span == span


def test_a_control_character_is_located_by_characters_not_bytes() -> None:
    parsed = parse_yaml("a: äöü\nb: 😀 \x07\n", PATH)
    assert codes(parsed) == ["yaml-syntax"]
    assert parsed.diagnostics[0].span == at(2, 6)
    assert "#x0007" in parsed.diagnostics[0].detail


def test_more_than_one_document_is_refused() -> None:
    assert codes(parse_yaml("a: 1\n---\nb: 2\n", PATH)) == ["yaml-syntax"]


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object/apply:os.system [echo hi]",
        "!custom x",
        "!!binary aGVsbG8=",
        "!!set {a, b}",
    ],
)
def test_unsupported_tags_are_refused_not_constructed(value: str) -> None:
    parsed = parse_yaml(f"a: {value}\n", PATH)
    assert (parsed.data, codes(parsed)) == (None, ["yaml-tag"])
    assert parsed.diagnostics[0].span == at(1, 4)


@pytest.mark.parametrize("value", ["!!int abc", "!!float x", "!!bool maybe", "!!timestamp no"])
def test_a_value_that_does_not_fit_its_tag_is_a_diagnostic(value: str) -> None:
    parsed = parse_yaml(f"a: 1\nb: {value}\n", PATH)
    assert (parsed.data, codes(parsed)) == (None, ["yaml-tag"])
    assert parsed.diagnostics[0].span == at(2, 4)
    assert "does not fit its tag" in parsed.diagnostics[0].detail


def test_a_complex_key_is_refused() -> None:
    parsed = parse_yaml("[a, b]: 1\n", PATH)
    assert codes(parsed) == ["yaml-complex-key"]


# --------------------------------------------------------------------------------------------
# limits


def test_an_alias_bomb_is_refused() -> None:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 12)]
    parsed = parse_yaml("\n".join(lines) + "\n", PATH)
    assert (parsed.data, codes(parsed)) == (None, ["yaml-alias-bomb"])


def test_a_small_fan_out_of_aliases_is_fine() -> None:
    lines = ["l0: &l0 [a, b]"] + [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, 8)]
    parsed = parse_yaml("\n".join(lines) + "\n", PATH)
    assert parsed.diagnostics == ()


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 200 + "]" * 200 + "\n",
        "".join("  " * i + f"k{i}:\n" for i in range(200)),
        "a: " + "[" * 5000 + "]" * 5000 + "\n",  # beyond libyaml's own limit
    ],
    ids=["flow", "block", "flow-5000"],
)
def test_deep_nesting_is_refused(text: str) -> None:
    parsed = parse_yaml(text, PATH)
    assert (parsed.data, codes(parsed)) == (None, ["yaml-too-deep"])


def test_nesting_up_to_the_limit_is_fine() -> None:
    text = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert parse_yaml(text, PATH).diagnostics == ()


def test_a_file_over_the_size_limit_is_refused_before_parsing() -> None:
    parsed = parse_yaml("a: [" + "1, " * 100 + "\n", PATH, max_bytes=100)  # not even valid
    assert (parsed.data, codes(parsed)) == (None, ["file-too-large"])
    assert parsed.diagnostics[0].span == at(1, 1)


def test_the_size_limit_counts_bytes() -> None:
    assert codes(parse_yaml("a: " + "é" * 60 + "\n", PATH, max_bytes=100)) == ["file-too-large"]


# --------------------------------------------------------------------------------------------
# locate


DOC = """\
pipelines:
  orders:
    source: shop_db
    primary_key: [id, customer_id]
    filters:
      - column: status
        op: ne
"""


def test_locate_values_keys_and_list_items() -> None:
    parsed = parse_yaml(DOC, PATH)
    assert parsed.locate(("pipelines", "orders", "source")) == at(3, 13)
    assert parsed.locate(("pipelines", "orders", "source"), key=True) == at(3, 5)
    assert parsed.locate(("pipelines", "orders"), key=True) == at(2, 3)
    assert parsed.locate(("pipelines", "orders", "primary_key", 1)) == at(4, 23)
    assert parsed.locate(("pipelines", "orders", "filters", 0, "op")) == at(7, 13)


def test_locate_falls_back_to_the_nearest_ancestor() -> None:
    parsed = parse_yaml(DOC, PATH)
    assert parsed.locate(("pipelines", "orders", "missing")) == at(3, 5)
    assert parsed.locate(("pipelines", "orders", "primary_key", 9)) == at(4, 18)
    assert parsed.locate(("nope",)) == at(1, 1)
    # `key=True` only applies when the last part exists
    assert parsed.locate(("pipelines", "orders", "missing"), key=True) == at(3, 5)


def test_locate_follows_merge_keys_to_where_the_value_is_written() -> None:
    parsed = parse(
        """\
        pipelines:
          orders: &base
            source: shop_db
            mode: single_table
          customers:
            <<: *base
            mode: full_database
        """
    )
    assert parsed.locate(("pipelines", "customers", "source")) == at(3, 13)
    assert parsed.locate(("pipelines", "customers", "mode")) == at(7, 11)


def test_locate_in_a_file_that_could_not_be_parsed() -> None:
    parsed = parse_yaml("a: [\n", PATH)
    assert parsed.locate(("a",)) == at(1, 1)
    assert locate(None, ("a", 1), PATH) == at(1, 1)
