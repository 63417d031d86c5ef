"""Parsed YAML files -> validated specs, with pydantic's errors turned into diagnostics.  [pure]

Each resource is validated on its own, so one broken resource never hides the problems of
another, and every error is mapped back to the line of the field it is about.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from fabric.addresses import NAME, SECTIONS, Address, Kind
from fabric.config.specs import FILE_SPECS, SECTION_SPECS, MovedSpec, ProjectSpec, TenantSpec
from fabric.config.yaml_source import ParsedYaml
from fabric.diagnostics import Diagnostic, did_you_mean, error

TENANT_SECTIONS = ("tenant", *SECTIONS, "moved")
_ADAPTERS = {section: TypeAdapter(spec) for section, spec in SECTION_SPECS.items()}
_MOVED_ADAPTER = TypeAdapter(MovedSpec)
_TENANT_ADAPTER = TypeAdapter(TenantSpec)
_PROJECT_ADAPTER = TypeAdapter(ProjectSpec)


@dataclass(frozen=True, slots=True)
class ValidSpec:
    """One resource that passed validation, with where it came from."""

    address: Address
    spec: Any
    file: ParsedYaml
    loc: tuple[str | int, ...]
    """Location of the resource's mapping inside its file, e.g. ("pipelines", "orders")."""


@dataclass(frozen=True, slots=True)
class BrokenSpec:
    """A resource that exists but failed validation, with its data as written.

    References to it are not reported as unknown, and its own references are still checked
    where the fields that hold them are usable (checks.check_broken_references).
    """

    address: Address
    data: Any
    file: ParsedYaml
    loc: tuple[str | int, ...]


def validate_project(parsed: ParsedYaml) -> tuple[ProjectSpec | None, list[Diagnostic]]:
    data = {} if parsed.data is None else parsed.data
    if not isinstance(data, dict):
        return None, [_not_a_mapping(parsed, (), "fabric.yaml")]
    try:
        return _PROJECT_ADAPTER.validate_python(data), []
    except ValidationError as exc:
        return None, errors_to_diagnostics(exc, parsed, (), ProjectSpec, data, None)


def validate_tenant_file(
    parsed: ParsedYaml, slug: str
) -> tuple[list[ValidSpec], list[BrokenSpec], list[Diagnostic]]:
    """Every section of one tenant file; the `tenant:` section is returned as kind TENANT.

    Also returns the resources that exist but failed validation, so references to them are
    not reported a second time as unknown, and their own references are still checked.
    """
    found: list[ValidSpec] = []
    broken: list[BrokenSpec] = []
    diagnostics: list[Diagnostic] = []
    data = parsed.data
    if data is None:
        return found, broken, diagnostics
    if not isinstance(data, dict):
        return found, broken, [_not_a_mapping(parsed, (), f"tenant {slug}")]
    for section, body in data.items():
        if section not in TENANT_SECTIONS:
            diagnostics.append(
                error(
                    "unknown-section",
                    "Unknown section",
                    f"{parsed.path} has a top-level section {section!r} that fabric does not know.",
                    hint=did_you_mean(str(section), TENANT_SECTIONS),
                    span=parsed.locate((section,), key=True),
                    address=Address.of_tenant(slug),
                )
            )
            # What a misspelt section (`connection:`) declares exists: references to it are
            # not reported a second time.
            close = difflib.get_close_matches(str(section), SECTIONS, n=1)
            if close and isinstance(body, dict):
                kind = SECTIONS[close[0]]
                broken += [
                    BrokenSpec(Address(slug, kind, n), data, parsed, (section, n))
                    for n, data in body.items()
                    if isinstance(n, str)
                ]
            continue
        if section == "tenant":
            address = Address.of_tenant(slug)
            try:
                found.append(
                    ValidSpec(address, _TENANT_ADAPTER.validate_python(body), parsed, ("tenant",))
                )
            except ValidationError as exc:
                diagnostics += errors_to_diagnostics(
                    exc, parsed, ("tenant",), TenantSpec, body, address
                )
                broken.append(BrokenSpec(address, body, parsed, ("tenant",)))
            continue
        if body is None:
            continue
        if section == "moved":
            found += _moved(parsed, slug, body, diagnostics)
            continue
        if not isinstance(body, dict):
            diagnostics.append(_not_a_mapping(parsed, (section,), f"section {section!r}"))
            continue
        kind = SECTIONS[section]
        adapter = _ADAPTERS[section]
        for name, spec_data in body.items():
            if not isinstance(name, str) or not NAME.fullmatch(name):
                diagnostics.append(
                    error(
                        "bad-name",
                        "Invalid resource name",
                        f"{name!r} in {section} of tenant {slug} is not a valid name.",
                        hint="Names start with a lowercase letter and hold only a-z, 0-9 and _ "
                        "(at most 63 characters).",
                        span=parsed.locate((section, name), key=True),
                        address=Address.of_tenant(slug),
                    )
                )
                continue
            address = Address(slug, kind, name)
            try:
                spec = adapter.validate_python(spec_data)
            except ValidationError as exc:
                diagnostics += errors_to_diagnostics(
                    exc, parsed, (section, name), SECTION_SPECS[section], spec_data, address
                )
                broken.append(BrokenSpec(address, spec_data, parsed, (section, name)))
                continue
            found.append(ValidSpec(address, spec, parsed, (section, name)))
    return found, broken, diagnostics


def _moved(parsed: ParsedYaml, slug: str, body: Any, diagnostics: list[Diagnostic]) -> list:
    """The entries of a `moved:` list, each as a ValidSpec of its `to` address (a MovedSpec);
    config/moves.py checks them against the tenant's resources."""
    if not isinstance(body, list):
        diagnostics.append(
            error(
                "wrong-type",
                "Wrong type",
                f"section 'moved' in {parsed.path} must be a list of {{from: ADDRESS, to: "
                "ADDRESS}} entries.",
                hint="Write `moved: [{from: acme.pipeline.orders, to: acme.pipeline.orders_v2}]`.",
                span=parsed.locate(("moved",)),
                address=Address.of_tenant(slug),
            )
        )
        return []
    found = []
    for i, entry in enumerate(body):
        try:
            spec = _MOVED_ADAPTER.validate_python(entry)
        except ValidationError as exc:
            diagnostics += errors_to_diagnostics(
                exc, parsed, ("moved", i), MovedSpec, entry, Address.of_tenant(slug)
            )
            continue
        found.append(ValidSpec(Address.parse(spec.to), spec, parsed, ("moved", i)))
    return found


def validate_records(records: Sequence[tuple[Address, Any]], where: str) -> list[Diagnostic]:
    """The rules of `validate_tenant_file`, applied to stored-form records (a saved plan's
    targets): each record is validated as if its tenant's YAML declared it.

    `where` names the records' origin in messages (the plan file's path). Dependencies are
    not declared in YAML; their ends must be addresses of the same tenant.
    """
    by_tenant: dict[str, dict[str, Any]] = {}
    problems: list[Diagnostic] = []
    for address, spec in records:
        data = by_tenant.setdefault(address.tenant, {})
        body = dict(spec) if isinstance(spec, dict) else spec
        if address.kind is Kind.TENANT:
            data["tenant"] = body
        elif address.kind is Kind.DEPENDENCY:
            problems += _check_edge(address, body, where)
        elif address.kind.value in ("role", "schema", "grant"):
            # Warehouse records are not YAML; apply checks each against the tenant's own role
            # (fabric.state.warehouse) and quotes every name as an identifier.
            continue
        elif address.kind in FILE_SPECS:
            # dbt files are discovered, not YAML: their record must have the stored shape.
            try:
                FILE_SPECS[address.kind].model_validate(body)
            except ValidationError:
                problems.append(
                    error(
                        "wrong-type",
                        "Wrong type",
                        f"{address}: the record in {where} is not a stored {address.kind}.",
                        hint="Make the plan again with `fabric plan --out`.",
                        address=address,
                    )
                )
            continue
        else:
            section = next(name for name, kind in SECTIONS.items() if kind is address.kind)
            # A transformation's (snapshot's) record carries its sql_file's text as `sql` too.
            if (
                address.kind in (Kind.TRANSFORMATION, Kind.SNAPSHOT)
                and isinstance(body, dict)
                and body.get("sql_file")
            ):
                body.pop("sql", None)
            data.setdefault(section, {})[address.name] = body
    for slug, data in sorted(by_tenant.items()):
        parsed = ParsedYaml(path=where, data=data, root=None, diagnostics=())
        problems += validate_tenant_file(parsed, slug)[2]
    return problems


def _check_edge(address: Address, spec: Any, where: str) -> list[Diagnostic]:
    try:
        ends = [Address.parse(str(spec[end])) for end in ("upstream", "downstream")]
        if all(e.tenant == address.tenant for e in ends):
            return []
    except (KeyError, TypeError, ValueError):
        pass
    return [
        error(
            "bad-name",
            "Invalid resource name",
            f"{address}: the dependency's ends are not addresses of tenant {address.tenant}.",
            hint="Make the plan again with `fabric plan --out`.",
            address=address,
        )
    ]


def _not_a_mapping(parsed: ParsedYaml, loc: tuple[str | int, ...], what: str) -> Diagnostic:
    return error(
        "wrong-type",
        "Wrong type",
        f"{what} in {parsed.path} must be a mapping of names to values.",
        hint="Write `key: value` pairs here.",
        span=parsed.locate(loc),
    )


_SUMMARIES = {
    "extra_forbidden": ("unknown-field", "Unknown field"),
    "missing": ("missing-field", "Missing field"),
    "literal_secret": ("literal-secret", "Secret written as a literal"),
    "unsafe_identifier": ("unsafe-identifier", "Unsafe identifier"),
    "bad_reference": ("bad-name", "Invalid resource name"),
    "bad_name": ("bad-name", "Invalid resource name"),
    "bad_address": ("bad-address", "Invalid address"),
    "bad_tag": ("bad-tag", "Invalid tag"),
    "unknown_test": ("unknown-test", "Unknown test"),
    "test_argument": ("unknown-field", "Unknown field"),
    "union_tag_invalid": ("unknown-type", "Unknown type"),
    "union_tag_not_found": ("missing-field", "Missing field"),
    "literal_error": ("invalid-value", "Invalid value"),
    "enum": ("invalid-value", "Invalid value"),
}


def errors_to_diagnostics(
    exc: ValidationError,
    parsed: ParsedYaml,
    base: tuple[str | int, ...],
    spec_type: Any,
    data: Any,
    address: Address | None,
) -> list[Diagnostic]:
    """Map pydantic errors onto file positions; never echo the input (it may be a secret)."""
    out: list[Diagnostic] = []
    subject = str(address) if address else parsed.path
    errors = _one_error_per_fault(exc, data)
    # A misspelt field (`datset`) is reported once, as unknown with a did-you-mean, not also
    # as its correct spelling missing.
    misspelt = {
        (loc[:-1], close[0])
        for err, loc in errors
        if err["type"] == "extra_forbidden"
        and (
            close := difflib.get_close_matches(
                str(loc[-1]), _allowed_fields(spec_type, data, loc), n=1
            )
        )
    }
    for err, loc in errors:
        kind = err["type"]
        if kind == "missing" and loc and (loc[:-1], loc[-1]) in misspelt:
            continue
        field = ".".join(str(p) for p in loc) or "(root)"
        code, summary = _SUMMARIES.get(kind, ("wrong-type", "Wrong type"))
        hint: str | None = None
        span = parsed.locate((*base, *loc), key=err["loc"][-1:] == ("[key]",))
        if kind == "extra_forbidden":
            detail = f"{subject} has no field {field!r}."
            allowed = _allowed_fields(spec_type, data, loc)
            hint = did_you_mean(str(loc[-1]), allowed) if allowed else None
            span = parsed.locate((*base, *loc), key=True)
        elif kind in ("missing", "union_tag_not_found"):
            missing = err.get("ctx", {}).get("discriminator", "").strip("'") or field
            if kind == "union_tag_not_found":
                field = ".".join(str(p) for p in (*loc, missing))
            detail = f"{subject} needs field {field!r}."
            hint = "Add it; see schemas/tenant.schema.json for the fields of each kind."
            # Where the mapping that lacks the field is named, e.g. the resource's name.
            owner = loc[:-1] if kind == "missing" else loc
            span = parsed.locate((*base, *owner), key=True)
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
            where = ".".join(str(p) for p in (*loc, "type")) if loc else "type"
            detail = f"{subject}: {where} {ctx.get('tag')!r} is not one of {', '.join(tags)}."
            hint = did_you_mean(str(ctx.get("tag")), tags)
            span = parsed.locate((*base, *loc, "type"))
        elif kind in _NOT_A_MAPPING:
            where = f": field {field!r}" if loc else ""
            detail = f"{subject}{where} must be a mapping of names to values."
            hint = "Write `key: value` pairs here."
        else:
            detail = f"{subject}: field {field!r}: {err['msg']}."
            if kind == "literal_secret":
                hint = (
                    "Store it with `fabric secrets set` and write ${secret:NAME}, "
                    "or use ${env:NAME}."
                )
            elif kind == "literal_error":
                expected = str(err.get("ctx", {}).get("expected", ""))
                options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",")]
                value = _value_at(data, loc)
                hint = did_you_mean(str(value), options) if isinstance(value, str) else None
            elif kind == "unsafe_identifier":
                hint = (
                    "Identifiers become SQL names: letters, digits and _, starting with a letter."
                )
        out.append(error(code, summary, detail, hint=hint, span=span, address=address))
    return out


_NOT_A_MAPPING = frozenset({"model_type", "model_attributes_type", "dict_type"})


def _one_error_per_fault(
    exc: ValidationError, data: Any
) -> list[tuple[dict[str, Any], tuple[str | int, ...]]]:
    """pydantic's errors with their loc in the data, one per fault.

    A union reports one error per member (`value: {x: 1}` is not a bool, an int, ...): a
    member's specific complaint wins (an unsafe identifier rather than "not a tuple"), else the
    type mismatches become one error. A length error after failed items is dropped too.
    """
    by_loc: dict[tuple[str | int, ...], list[dict[str, Any]]] = {}
    for err in exc.errors(include_url=False, include_input=False):
        last_is_key = err["type"] in ("extra_forbidden", "missing")
        by_loc.setdefault(_data_loc(data, err["loc"], last_is_key=last_is_key), []).append(err)
    out: list[tuple[dict[str, Any], tuple[str | int, ...]]] = []
    for loc, errs in by_loc.items():
        if any(e["type"] in ("too_short", "too_long") for e in errs) and any(
            other[: len(loc)] == loc and len(other) > len(loc) for other in by_loc
        ):
            errs = [e for e in errs if e["type"] not in ("too_short", "too_long")]
        if len(errs) > 1:
            specific = [e for e in errs if not e["type"].endswith("_type")]
            if specific:
                errs = specific
            else:
                expected = [e["msg"].removeprefix("Input should be ") for e in errs]
                expected = list(dict.fromkeys(expected))
                msg = ", ".join(expected[:-1]) + " or " if len(expected) > 1 else ""
                msg = f"Input should be {msg}{expected[-1]}"
                errs = [{"type": "union_types", "loc": errs[0]["loc"], "msg": msg}]
        out += [(e, loc) for e in errs]
    return out


def _data_loc(data: Any, loc: Sequence[str | int], *, last_is_key: bool) -> tuple[str | int, ...]:
    """Drop pydantic's own loc parts (union tags, validator names) that are not in the data."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        is_last = i == len(loc) - 1
        if _is_shorthand(node, part):  # `{not_null: {config: ...}}`: step into the one key
            ((key, node),) = node.items()
            out.append(key)
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif is_last and last_is_key and isinstance(node, dict):
            out.append(part)
    return tuple(out)


def _is_one_key(node: Any, key: str | int) -> bool:
    return isinstance(node, dict) and len(node) == 1 and key in node


def _is_shorthand(node: Any, part: str | int) -> bool:
    """A one-key mapping whose value holds `part`: a test written as `{name: {arguments}}`,
    which the spec normalises to `{test: name, arguments}`."""
    if not isinstance(node, dict) or len(node) != 1 or part in node:
        return False
    (value,) = node.values()
    return isinstance(value, dict) and part in value


def _value_at(data: Any, loc: Sequence[str | int]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _allowed_fields(spec_type: Any, data: Any, loc: Sequence[str | int]) -> list[str]:
    """Field names (as written in YAML) of the model that holds the unknown key at `loc`."""
    tp, node = spec_type, data
    for part in loc[:-1]:
        model = _model_of(tp, node)
        fields = _aliases(model) if model is not None and isinstance(node, dict) else {}
        # The shorthand's key (`not_null`) keeps the model: its value holds the fields.
        shorthand = model is not None and part not in fields and _is_one_key(node, part)
        if not shorthand:
            tp = fields[part] if part in fields else _item_type(tp)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return []
    model = _model_of(tp, node)
    return list(_aliases(model)) if model else []


def _aliases(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _unwrap(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(tp) for t in _unwrap(arg)]
    return [tp]


def _model_of(tp: Any, node: Any) -> type[BaseModel] | None:
    models = [t for t in _unwrap(tp) if isinstance(t, type) and issubclass(t, BaseModel)]
    if len(models) > 1 and isinstance(node, dict):
        for model in models:
            type_field = model.model_fields.get("type")
            if type_field and node.get("type") in typing.get_args(type_field.annotation):
                return model
    return models[0] if models else None


def _item_type(tp: Any) -> Any:
    for t in _unwrap(tp):
        args = [a for a in typing.get_args(t) if a is not Ellipsis]
        if typing.get_origin(t) in (dict, tuple, list) and args:
            return args[-1]
    return None


def kind_of_section(section: str) -> Kind:
    return SECTIONS[section]
