"""The texts `fabric init` writes: schema comments resolve, CI templates match example-repo."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from fabric.config.json_schema import json_schemas, render_schema
from fabric.scaffold import InvalidSlugError, ci_files, repository_files, tenant_files

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = {name: render_schema(s) for name, s in json_schemas().items()}
SCHEMA_COMMENT = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def test_every_yaml_file_names_a_schema_that_is_written_beside_it():
    files = {**repository_files("p", "acme", schemas=SCHEMAS), **tenant_files("beta")}
    yaml_files = [p for p in files if p.endswith(".yaml") and not p.startswith(".")]
    assert len(yaml_files) == 6
    for rel in yaml_files:
        match = SCHEMA_COMMENT.match(files[rel].splitlines()[0])
        assert match, f"{rel} has no schema comment"
        target = PurePosixPath(rel).parent / match.group(1)
        resolved = str(PurePosixPath(*_normalise(target.parts)))
        written = {*files, *(f"schemas/{name}" for name in SCHEMAS)}
        assert resolved in written, f"{rel}: {match.group(1)} does not resolve"


def _normalise(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            out.pop()
        elif part != ".":
            out.append(part)
    return out


def test_the_schemas_written_are_the_committed_ones():
    files = repository_files("p", "acme", schemas=SCHEMAS)
    for name in SCHEMAS:
        assert files[f"schemas/{name}"] == (ROOT / "schemas" / name).read_text()


def test_the_ci_templates_are_kept_in_example_repo():
    for rel, text in ci_files().items():
        assert (ROOT / "example-repo" / rel).read_text() == text, rel
        yaml.safe_load(text)


def test_gitignore_keeps_fabric_state_and_saved_plans_out_of_git():
    ignored = repository_files("p", "acme", schemas=SCHEMAS)[".gitignore"].split()
    assert ".fabric/" in ignored and ".fabric-plan/" in ignored


@pytest.mark.parametrize("bad", ["Acme", "1acme", "ac-me", "", "a" * 41, "../x"])
def test_a_tenant_name_that_is_no_slug_is_refused_with_what_a_slug_is(bad):
    with pytest.raises(InvalidSlugError, match="is not a tenant slug"):
        tenant_files(bad)
