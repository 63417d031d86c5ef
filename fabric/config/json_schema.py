"""JSON Schema of `fabric.yaml` and of a tenant file, generated from the specs.  [pure]

The generated files are committed under `schemas/` so editors can complete and check fields
(`# yaml-language-server: $schema=...`); a test fails when they drift from the models.
"""

from __future__ import annotations

import json
from typing import Any

from fabric.config.specs import ProjectSpec, TenantFileSpec

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILES = {"fabric.schema.json": ProjectSpec, "tenant.schema.json": TenantFileSpec}
TITLES = {
    "fabric.schema.json": "fabric project file (fabric.yaml), format v1",
    "tenant.schema.json": "fabric tenant file (tenants/<slug>/*.yaml), format v1",
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema document, deterministic for a given set of models."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in SCHEMA_FILES.items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        out[name] = {"$schema": SCHEMA_DRAFT, "title": TITLES[name], **schema}
    return out


def render_schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
