"""Renames: `moved:` entries and `renamed_from:` fields -> checked Moves.  [pure]

A move says "the object stored at OLD is declared at NEW now"; plan then updates the stored
object in place (same row: its run history, dlt state and secrets stay) instead of deleting it
and creating another. Like Terraform's `moved` block: same tenant and kind only, and a move
from something the control plane does not hold is ignored with a note (plan's job: it alone
knows the stored state). What only the YAML can tell is checked here, every fault at once:

- the new name must be declared (else there is nothing to move to);
- the old name must not be declared any more (else both would exist);
- one move per old name and per new name, and no chains (a -> b, b -> c: write a -> c) or
  cycles (a -> b, b -> a).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fabric.addresses import Address, Kind
from fabric.config.sections import ValidSpec
from fabric.config.specs import MovedSpec
from fabric.diagnostics import Diagnostic, SourceSpan, error
from fabric.domain.state import Move

MOVABLE = (Kind.CONNECTION, Kind.PIPELINE, Kind.TRANSFORMATION)


def _span(vs: ValidSpec, field: str) -> SourceSpan:
    return vs.file.locate((*vs.loc, field))


def tenant_moves(
    slug: str, moved: Iterable[ValidSpec], by_kind: Mapping[Kind, Mapping[str, ValidSpec]]
) -> tuple[tuple[Move, ...], list[Diagnostic]]:
    """The tenant's checked moves (sorted), and a diagnostic per faulty one."""
    diags: list[Diagnostic] = []
    candidates: list[Move] = []
    for vs in moved:
        spec: MovedSpec = vs.spec
        old, new = Address.parse(spec.from_), Address.parse(spec.to)
        span = _span(vs, "from")
        if old.tenant != slug or new.tenant != slug:
            diags.append(
                error(
                    "bad-move",
                    "Move across tenants",
                    f"moved: {old} -> {new} is declared in tenant {slug}; a move stays in the "
                    "tenant whose folder declares it.",
                    hint=f"Write addresses of tenant {slug} on both sides, or move the entry.",
                    span=span,
                    address=Address.of_tenant(slug),
                )
            )
            continue
        if old.kind is not new.kind:
            diags.append(
                error(
                    "bad-move",
                    "Move across kinds",
                    f"moved: {old} -> {new} changes the kind ({old.kind} -> {new.kind}).",
                    hint="A move keeps the kind; a new kind of object is a delete and a create.",
                    span=span,
                    address=new,
                )
            )
            continue
        candidates.append(Move(new=new, old=old, span=span))
    for kind in MOVABLE:
        for vs in by_kind.get(kind, {}).values():
            old_name = getattr(vs.spec, "renamed_from", None)
            if old_name:
                candidates.append(
                    Move(
                        new=vs.address,
                        old=Address(slug, kind, old_name),
                        span=_span(vs, "renamed_from"),
                    )
                )
    declared = {vs.address for kind in MOVABLE for vs in by_kind.get(kind, {}).values()}
    return _checked(candidates, declared, diags)


def _checked(
    candidates: list[Move], declared: set[Address], diags: list[Diagnostic]
) -> tuple[tuple[Move, ...], list[Diagnostic]]:
    unique: list[Move] = []
    by_old: dict[Address, Move] = {}
    by_new: dict[Address, Move] = {}
    for m in candidates:
        if m.old == m.new:
            diags.append(_fault(m, f"{m.new} is moved to itself.", "Remove the entry."))
            continue
        first = by_old.get(m.old) or by_new.get(m.new)
        if first is not None:
            if (first.old, first.new) == (m.old, m.new):
                continue  # said twice (a moved: entry and renamed_from): one move
            diags.append(
                _fault(
                    m,
                    f"{m.old} -> {m.new} conflicts with {first.old} -> {first.new} "
                    f"(at {first.span}): an object moves once, and one object moves to a name.",
                    "Keep one of the two.",
                )
            )
            continue
        by_old[m.old], by_new[m.new] = m, m
        unique.append(m)
    ok: list[Move] = []
    for m in unique:
        if m.new in by_old:
            nxt = by_old[m.new]
            if nxt.new == m.old:
                detail, hint = "make a cycle", "Remove one of them."
            else:
                detail = "make a chain"
                hint = f"Write one move {m.old} -> {nxt.new} instead (fabric does not chain moves)."
            diags.append(
                _fault(m, f"{m.old} -> {m.new} and {nxt.old} -> {nxt.new} {detail}.", hint)
            )
            continue
        if m.old in by_new:
            continue  # the other half of a chain or cycle, reported on its partner
        if m.new not in declared:
            diags.append(
                _fault(
                    m,
                    f"{m.old} is moved to {m.new}, which is not declared.",
                    f"Declare {m.new.kind} {m.new.name!r}, or fix the name in the move.",
                )
            )
            continue
        if m.old in declared:
            diags.append(
                _fault(
                    m,
                    f"{m.old} is moved to {m.new}, but {m.old} is still declared.",
                    "Remove the old declaration (the move renames it), or remove the move.",
                )
            )
            continue
        ok.append(m)
    return tuple(sorted(ok)), diags


def _fault(m: Move, detail: str, hint: str) -> Diagnostic:
    return error("bad-move", "Invalid move", detail, hint=hint, span=m.span, address=m.new)


def moves_by_new(tenants: Iterable[Any]) -> dict[Address, Address]:
    """new address -> old address, over every tenant's moves."""
    return {m.new: m.old for t in tenants for m in t.moves}
