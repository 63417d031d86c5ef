"""`freshness:` on a pipeline: rules that need more than the field's own shape.  [pure]"""

from __future__ import annotations

from fabric.addresses import Kind
from fabric.config import checks
from fabric.diagnostics import Diagnostic, error
from fabric.domain.freshness import after_seconds


def check_freshness(ctx: checks.TenantContext, diags: list[Diagnostic]) -> None:
    """At least one threshold, warn_after below error_after, and tables in a warehouse."""
    for vs in ctx.by_kind[Kind.PIPELINE].values():
        freshness = vs.spec.freshness
        if freshness is None:
            continue
        where = vs.file.locate((*vs.loc, "freshness"), key=True)
        warn = after_seconds(freshness.warn_after and freshness.warn_after.model_dump())
        fail = after_seconds(freshness.error_after and freshness.error_after.model_dump())
        if warn is None and fail is None:
            diags.append(
                error(
                    "missing-field",
                    "Missing field",
                    f"{vs.address}: freshness needs warn_after, error_after or both.",
                    hint="e.g. freshness: {warn_after: {count: 12, period: hour}, "
                    "error_after: {count: 1, period: day}}",
                    span=where,
                    address=vs.address,
                )
            )
        elif warn is not None and fail is not None and warn >= fail:
            diags.append(
                error(
                    "invalid-value",
                    "Invalid value",
                    f"{vs.address}: freshness warn_after is not shorter than error_after, so "
                    "it could never warn.",
                    hint="Make warn_after the shorter age.",
                    span=vs.file.locate((*vs.loc, "freshness", "warn_after"), key=True),
                    address=vs.address,
                )
            )
        if checks.writes_files(ctx, vs):
            diags.append(
                error(
                    "field-not-for-mode",
                    "Freshness of files",
                    f"{vs.address} writes files, not warehouse tables whose load time "
                    "fabric could read.",
                    hint="Remove freshness from this pipeline.",
                    span=where,
                    address=vs.address,
                )
            )
