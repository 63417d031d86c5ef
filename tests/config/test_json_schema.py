"""The committed JSON Schemas match the models, and they accept/reject what the models do."""

from pathlib import Path

import jsonschema
import yaml

from fabric.config.json_schema import json_schemas, render_schema

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schemas_match_the_models():
    for name, schema in json_schemas().items():
        committed = (ROOT / "schemas" / name).read_text()
        assert committed == render_schema(schema), (
            f"schemas/{name} is out of date; regenerate it with: uv run python -m "
            "fabric.config.write_schemas"
        )


def test_example_files_validate_against_the_schemas():
    schemas = json_schemas()
    project = yaml.safe_load((ROOT / "example-repo" / "fabric.yaml").read_text())
    jsonschema.validate(project, schemas["fabric.schema.json"])
    tenant_files = sorted((ROOT / "example-repo" / "tenants").rglob("*.yaml"))
    assert tenant_files
    for path in tenant_files:
        data = yaml.safe_load(path.read_text())
        # YAML dates are not JSON; the models accept them as ISO text.
        jsonschema.validate(_jsonable(data), schemas["tenant.schema.json"])


def test_schema_rejects_an_unknown_field_and_a_literal_secret():
    schema = json_schemas()["tenant.schema.json"]
    bad_field = {"pipelines": {"p": {"source": "s", "dataset": "d", "mode": "files", "x": 1}}}
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad_field)
    literal = {
        "connections": {
            "c": {"type": "postgres", "direction": "source", "password": "hunter2"},
        }
    }
    assert not jsonschema.Draft202012Validator(schema).is_valid(literal)
    ok = {
        "connections": {
            "c": {"type": "postgres", "direction": "source", "password": "${env:PW}"},
        }
    }
    assert jsonschema.Draft202012Validator(schema).is_valid(ok)


def test_every_example_file_names_its_schema():
    for path in (ROOT / "example-repo").rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
