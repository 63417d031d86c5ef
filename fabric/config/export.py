"""Stored records -> the files of a repository that declares exactly them.  [pure]

Used by `fabric export`: planning the written repository against the same control plane
shows no changes. Specs are written without their defaults; SQL that came from a `sql_file`
goes back into that file; dependencies are not written (they come from depends_on and refs).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import TypeAdapter

from fabric.addresses import Address, Kind
from fabric.config.specs import SECTION_SPECS, TenantSpec

SCHEMA_COMMENT = "# yaml-language-server: $schema={}\n"
SECTION_FILES = {
    Kind.CONNECTION: ("connections", "connections.yaml"),
    Kind.PIPELINE: ("pipelines", "pipelines.yaml"),
    Kind.TRANSFORMATION: ("transformations", "transformations.yaml"),
    Kind.SCHEDULE: ("schedules", "schedules.yaml"),
}
_ADAPTERS = {section: TypeAdapter(spec) for section, spec in SECTION_SPECS.items()}


def _minimal(adapter: TypeAdapter[Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    model = adapter.validate_python(dict(spec))
    return adapter.dump_python(model, mode="json", by_alias=True, exclude_defaults=True)


def _dump(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=100)


def export_files(
    records: Mapping[Address, tuple[Mapping[str, Any], bool]],
    *,
    project_name: str | None = None,
    schema_dir: str = "schemas",
) -> dict[str, str]:
    """{repository-relative path: text} for every tenant in `records`."""
    files: dict[str, str] = {
        "fabric.yaml": SCHEMA_COMMENT.format(f"{schema_dir}/fabric.schema.json")
        + _dump({"format_version": 1, **({"name": project_name} if project_name else {})})
    }
    tenant_schema = f"../../{schema_dir}/tenant.schema.json"
    sections: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for address in sorted(records):
        spec, protect = records[address]
        folder = f"tenants/{address.tenant}"
        if address.kind is Kind.TENANT:
            tenant = TenantSpec.model_validate(dict(spec))
            body = tenant.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            files[f"{folder}/tenant.yaml"] = SCHEMA_COMMENT.format(tenant_schema) + _dump(
                {"tenant": body}
            )
            continue
        if address.kind not in SECTION_FILES:
            continue  # dependencies are derived, never written
        section, _ = SECTION_FILES[address.kind]
        spec = dict(spec)
        if address.kind is Kind.TRANSFORMATION and spec.get("sql_file"):
            files[f"{folder}/{spec['sql_file']}"] = spec.pop("sql") or ""
        body = _minimal(_ADAPTERS[section], spec)
        if protect:
            body["protect"] = True
        sections[address.tenant][section][address.name] = body
    for slug, by_section in sections.items():
        for kind, (section, filename) in SECTION_FILES.items():
            if by_section.get(section):
                files[f"tenants/{slug}/{filename}"] = SCHEMA_COMMENT.format(tenant_schema) + _dump(
                    {section: by_section[section]}
                )
            del kind
    return files
