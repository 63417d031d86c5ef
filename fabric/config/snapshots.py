"""The `snapshots:` section: checks and resolution of dbt snapshots.  [pure]

A snapshot is declared like a transformation (SQL inline or in a file, a schema the tenant
owns, its warehouse) plus how dbt tells a changed row: `strategy: timestamp` needs
`updated_at`, `strategy: check` needs `check_cols`. Its SQL's refs and sources become DAG edges
(resolve.py), and `ref('<snapshot>')` from a model reads its history table.

Everything dbt would take from a `config()` call lives in the YAML, so the plan shows it; the
generated project wraps the SQL in `{% snapshot %}` itself, so the SQL may not open or close
snapshot blocks of its own (another block would be a snapshot the YAML never declared).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fabric.addresses import Kind
from fabric.config import checks
from fabric.config.sections import ValidSpec
from fabric.config.specs import WAREHOUSE_TYPES, SnapshotSpec
from fabric.config.sql_refs import sql_config_keys
from fabric.diagnostics import Diagnostic, SourceSpan, error

_BLOCK_TAG = re.compile(r"\{%-?\s*(end)?(snapshot|macro|test|materialization)\b")


def _at(vs: ValidSpec, *field: str | int, key: bool = False) -> SourceSpan:
    return vs.file.locate((*vs.loc, *field), key=key)


def resolve_snapshots(
    ctx: checks.TenantContext,
    read_sql: Any,
    sql_span: Callable[[ValidSpec, int], SourceSpan],
    diags: list[Diagnostic],
) -> tuple[dict[str, SnapshotSpec], dict[str, str]]:
    """(name -> resolved spec where it changed, name -> SQL text) of the tenant's snapshots.

    `read_sql` reads a tenant-relative sql_file (resolve.ReadSql); `sql_span` maps a line of
    a resource's SQL to its file position (resolve._sql_span)."""
    resolved: dict[str, SnapshotSpec] = {}
    texts: dict[str, str] = {}
    transformations = ctx.by_kind[Kind.TRANSFORMATION]
    for name, vs in ctx.by_kind[Kind.SNAPSHOT].items():
        spec: SnapshotSpec = vs.spec
        if name in transformations:
            diags.append(
                error(
                    "duplicate-resource",
                    "Snapshot and transformation share a name",
                    f"{vs.address} has the name of {transformations[name].address} "
                    f"(declared at {_at(transformations[name], key=True)}); "
                    f"ref({name!r}) could not tell them apart.",
                    hint="Rename the snapshot, e.g. " + name + "_history.",
                    span=_at(vs, key=True),
                    address=vs.address,
                )
            )
        _check_strategy(vs, spec, diags)
        updates: dict[str, Any] = {}
        warehouse = spec.warehouse or ctx.tenant.warehouse
        if warehouse is None:
            diags.append(
                error(
                    "missing-field",
                    "Missing field",
                    f"{vs.address} has no warehouse and tenant {ctx.slug} has no default "
                    "warehouse.",
                    hint="Set `warehouse:` on the snapshot or on the tenant.",
                    span=_at(vs, key=True),
                    address=vs.address,
                )
            )
        elif spec.warehouse is None:
            updates["warehouse"] = warehouse
        else:
            checks._connection_ref(
                ctx,
                vs,
                "warehouse",
                warehouse,
                direction="destination",
                types=WAREHOUSE_TYPES,
                role="snapshot's warehouse",
                diags=diags,
            )
        if updates:
            resolved[name] = spec.model_copy(update=updates)
        text = _sql_text(vs, spec, read_sql, diags)
        if text is not None:
            texts[name] = text
            _check_sql(vs, text, sql_span, diags)
    return resolved, texts


def _check_strategy(vs: ValidSpec, spec: SnapshotSpec, diags: list[Diagnostic]) -> None:
    needs = {"timestamp": "updated_at", "check": "check_cols"}
    wanted = needs[spec.strategy]
    if getattr(spec, wanted) is None:
        example = "updated_at: updated_at" if wanted == "updated_at" else "check_cols: [status]"
        diags.append(
            error(
                "missing-field",
                "Missing field",
                f"{vs.address}: strategy {spec.strategy} needs field {wanted!r}.",
                hint=f"Add `{example}` (or `check_cols: all`)."
                if wanted == "check_cols"
                else f"Add `{example}`, the column holding each row's last change.",
                span=_at(vs, "strategy"),
                address=vs.address,
            )
        )
    other = needs["check" if spec.strategy == "timestamp" else "timestamp"]
    if getattr(spec, other) is not None:
        diags.append(
            error(
                "field-not-for-mode",
                "Field not used by this strategy",
                f"{vs.address}: {other!r} applies only to strategy "
                f"{'check' if other == 'check_cols' else 'timestamp'}.",
                hint=f"Remove {other} or change the strategy.",
                span=_at(vs, other, key=True),
                address=vs.address,
            )
        )


def _sql_text(
    vs: ValidSpec, spec: SnapshotSpec, read_sql: Any, diags: list[Diagnostic]
) -> str | None:
    if (spec.sql is None) == (spec.sql_file is None):
        diags.append(
            error(
                "sql-xor-sql-file",
                "SQL missing or given twice",
                f"{vs.address} must set exactly one of 'sql' and 'sql_file'.",
                hint="Write the select inline under `sql:` or put it in a file named by "
                "`sql_file:` (e.g. snapshots/" + vs.address.name + ".sql).",
                span=_at(vs, key=True),
                address=vs.address,
            )
        )
        return None
    if spec.sql is not None:
        return spec.sql
    text, problem = read_sql(spec.sql_file)
    if text is None:
        diags.append(
            error(
                "bad-sql-file",
                "SQL file not usable",
                f"{vs.address}: sql_file {spec.sql_file!r} {problem}.",
                hint="Point sql_file at a .sql file inside the tenant's folder, "
                "e.g. snapshots/" + vs.address.name + ".sql.",
                span=_at(vs, "sql_file"),
                address=vs.address,
            )
        )
    return text


def _check_sql(
    vs: ValidSpec,
    sql: str,
    sql_span: Callable[[ValidSpec, int], SourceSpan],
    diags: list[Diagnostic],
) -> None:
    for found in sql_config_keys(sql):
        diags.append(
            error(
                "sql-config-override",
                "config() in a snapshot",
                f"{vs.address}: a config() call on SQL line {found.line} would override the "
                "snapshot's YAML.",
                hint="Remove config() and set the snapshot's fields (schema, unique_key, "
                "strategy, ...) in the YAML.",
                span=sql_span(vs, found.line),
                address=vs.address,
            )
        )
    for match in _BLOCK_TAG.finditer(sql):
        line = sql.count("\n", 0, match.start()) + 1
        diags.append(
            error(
                "snapshot-block",
                "Block tag in a snapshot's SQL",
                f"{vs.address}: SQL line {line} opens or closes a {match.group(2)} block; "
                "fabric wraps the select in its snapshot block itself.",
                hint="Write only the select; declare other snapshots under `snapshots:` and "
                "macros in the tenant's macros/ folder.",
                span=sql_span(vs, line),
                address=vs.address,
            )
        )
