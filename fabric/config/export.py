"""Stored records -> the files of a repository that declares exactly them.  [pure]

Used by `fabric export`: planning the written repository against the same control plane
shows no changes. A resource is written as its YAML spelled it when apply stored that spelling
(`written`: defaults written out, shorthands, omitted fields stay as they were) and that
spelling still means the stored spec; otherwise its spec is written without its defaults, and
without the values resolution
fills in (a pipeline's destination and a transformation's warehouse when they are the tenant's
warehouse, a schedule's timezone when it is the project's); SQL that came from a `sql_file` goes
back into that file, multi-line text is written as `|` literal blocks; dependencies are not
written (they come from depends_on and refs). fabric.yaml is written as the last apply
recorded it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import TypeAdapter

from fabric.addresses import Address, Kind
from fabric.config.specs import SECTION_SPECS, ProjectSpec, SeedConfig, TenantSpec

SCHEMA_COMMENT = "# yaml-language-server: $schema={}\n"
SECTION_FILES = {
    Kind.CONNECTION: ("connections", "connections.yaml"),
    Kind.PIPELINE: ("pipelines", "pipelines.yaml"),
    Kind.TRANSFORMATION: ("transformations", "transformations.yaml"),
    Kind.SCHEDULE: ("schedules", "schedules.yaml"),
    Kind.SNAPSHOT: ("snapshots", "snapshots.yaml"),
}
_ADAPTERS = {section: TypeAdapter(spec) for section, spec in SECTION_SPECS.items()}


def _minimal(adapter: TypeAdapter[Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    model = adapter.validate_python(dict(spec))
    return adapter.dump_python(model, mode="json", by_alias=True, exclude_defaults=True)


class _Dumper(yaml.SafeDumper):
    """Multi-line text (SQL, descriptions) as `|` literal blocks, as people write it."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: Mapping[str, Any]) -> str:
    return yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


_BUILT_IN_TRANSFORMATION = {"materialized": "view", "tests_severity": "error", "tags": []}


def _resolved_defaults(
    kind: Kind, tenant: Mapping[str, Any], timezone: str, project_tx: Mapping[str, Any]
) -> dict[str, Any]:
    """Fields resolution fills in when they are left out: written back, they would be noise.
    `project_tx` is fabric.yaml's `defaults.transformations`."""
    warehouse = tenant.get("warehouse")
    match kind:
        case Kind.PIPELINE:
            return {"destination": warehouse}
        case Kind.TRANSFORMATION:
            tenant_tx = (tenant.get("defaults") or {}).get("transformations") or {}
            filled: dict[str, Any] = {"warehouse": warehouse}
            for key in ("schema", "materialized", "tests_severity", "tags"):
                for source in (tenant_tx, project_tx, _BUILT_IN_TRANSFORMATION):
                    if source.get(key) is not None:
                        filled[key] = source[key]
                        break
            return filled
        case Kind.SNAPSHOT:
            return {"warehouse": warehouse}
        case Kind.SCHEDULE:
            return {"timezone": timezone}
    return {}


def _canonical(
    kind: Kind,
    data: Mapping[str, Any],
    tenant: Mapping[str, Any],
    timezone: str,
    project_tx: Mapping[str, Any],
) -> dict[str, Any] | None:
    """What a resource means, whatever its spelling: validated, defaults and resolved values
    left out (None when `data` is not a valid spec of `kind`)."""
    section, _ = SECTION_FILES[kind]
    body = {k: v for k, v in data.items() if k not in ("protect", "renamed_from")}
    if kind is Kind.TRANSFORMATION and body.get("sql_file"):
        body.pop("sql", None)
    try:
        minimal = _minimal(_ADAPTERS[section], body)
    except ValueError:
        return None
    for key, value in _resolved_defaults(kind, tenant, timezone, project_tx).items():
        if value is not None and minimal.get(key) == value:
            del minimal[key]
    return minimal


def _as_written(
    address: Address,
    spec: Mapping[str, Any],
    protect: bool,
    written: Mapping[str, Any] | None,
    tenant: Mapping[str, Any],
    timezone: str,
    project_tx: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The stored spelling of a resource, if it still says exactly what is stored."""
    if written is None or bool(written.get("protect", False)) != protect:
        return None
    if address.kind is Kind.TENANT:
        try:
            same = TenantSpec.model_validate(dict(written)) == TenantSpec.model_validate(dict(spec))
        except ValueError:
            return None
        return dict(written) if same else None
    mine = _canonical(address.kind, written, tenant, timezone, project_tx)
    if mine is None or mine != _canonical(address.kind, spec, tenant, timezone, project_tx):
        return None
    return dict(written)


def _is_own_file(path: str, tenant: str, shared: bool) -> bool:
    """A stored file path is written back only inside its tenant's folder (a shared macro:
    inside the repository, outside tenants/): a tampered record never writes elsewhere."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return False
    if shared:
        return parts[0] != "tenants"
    return parts[:2] == ["tenants", tenant] and len(parts) > 2


def export_files(
    records: Mapping[Address, tuple[Mapping[str, Any], bool]],
    *,
    project: Mapping[str, Any] | None = None,
    schema_dir: str = "schemas",
    written: Mapping[Address, Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """{repository-relative path: text} for every tenant in `records`.

    `project` is fabric.yaml as the last apply recorded it (None before any apply recorded
    one: then only the format version is written). `written` holds the stored spellings.
    """
    written = written or {}
    spec_project = ProjectSpec.model_validate(dict(project or {}))
    # The recorded project holds the fields its file set (a default written out stays written).
    body = spec_project.model_dump(mode="json", by_alias=True, exclude_unset=True)
    body.pop("format_version", None)
    files: dict[str, str] = {
        "fabric.yaml": SCHEMA_COMMENT.format(f"{schema_dir}/fabric.schema.json")
        + _dump({"format_version": spec_project.format_version, **body})
    }
    tenant_schema = f"../../{schema_dir}/tenant.schema.json"
    project_tx = spec_project.defaults.transformations.model_dump(mode="json", by_alias=True)
    tenant_specs = {a.tenant: spec for a, (spec, _) in records.items() if a.kind is Kind.TENANT}
    sections: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for address in sorted(records):
        spec, protect = records[address]
        folder = f"tenants/{address.tenant}"
        tenant_spec = tenant_specs.get(address.tenant, {})
        timezone = spec_project.defaults.timezone
        spelled = _as_written(
            address, spec, protect, written.get(address), tenant_spec, timezone, project_tx
        )
        if address.kind is Kind.TENANT:
            tenant = TenantSpec.model_validate(dict(spec))
            body = tenant.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            body = spelled if spelled is not None else body
            files[f"{folder}/tenant.yaml"] = SCHEMA_COMMENT.format(tenant_schema) + _dump(
                {"tenant": body}
            )
            continue
        if address.kind is Kind.MACRO:
            path = str(spec.get("file") or "")
            if _is_own_file(path, address.tenant, bool(spec.get("shared"))):
                files[path] = str(spec.get("sql") or "")
            continue
        if address.kind is Kind.SEED:
            path = str(spec.get("file") or "")
            if _is_own_file(path, address.tenant, False):
                files[path] = str(spec.get("csv") or "")
            config = SeedConfig.model_validate(
                {k: v for k, v in spec.items() if k in SeedConfig.model_fields or k == "schema"}
            )
            body = config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            sections[address.tenant]["seeds"][address.name] = body
            continue
        if address.kind not in SECTION_FILES:
            continue  # dependencies are derived, never written
        section, _ = SECTION_FILES[address.kind]
        spec = dict(spec)
        if address.kind in (Kind.TRANSFORMATION, Kind.SNAPSHOT) and spec.get("sql_file"):
            files[f"{folder}/{spec['sql_file']}"] = spec.pop("sql") or ""
        if spelled is not None:
            sections[address.tenant][section][address.name] = spelled
            continue
        body = _minimal(_ADAPTERS[section], spec)
        defaults = _resolved_defaults(address.kind, tenant_spec, timezone, project_tx)
        for key, value in defaults.items():
            if value is not None and body.get(key) == value:
                del body[key]
        if protect:
            body["protect"] = True
        sections[address.tenant][section][address.name] = body
    for slug, by_section in sections.items():
        for kind, (section, filename) in {
            **SECTION_FILES,
            Kind.SEED: ("seeds", "seeds.yaml"),
        }.items():
            if by_section.get(section):
                files[f"tenants/{slug}/{filename}"] = SCHEMA_COMMENT.format(tenant_schema) + _dump(
                    {section: by_section[section]}
                )
            del kind
    return files
