"""Deletion safety: what apply refuses, decided from the plan's changes alone.  [pure]"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fabric.addresses import Kind
from fabric.plan.diff import Action, Change


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetyOptions:
    allow_delete: bool = False
    max_deletes: int = 10
    allow_delete_tenants: frozenset[str] = frozenset()


def _shown(items: list[str], limit: int = 5) -> str:
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def unsafe_reasons(changes: Iterable[Change], options: SafetyOptions) -> tuple[str, ...]:
    """One message per rule the plan breaks; empty when apply may go ahead.

    Dependencies are edges derived from depends_on and SQL refs, not resources a user
    manages, so removing one needs no permission (unless its tenant is being removed).
    """
    deletes = [c for c in changes if c.action is Action.DELETE]
    reasons: list[str] = []
    protected = [str(c.address) for c in deletes if c.protected]
    if protected:
        reasons.append(
            f"{_shown(protected)} {'is' if len(protected) == 1 else 'are'} protected: set "
            "`protect: false` and apply first, then remove it (two steps)."
        )
    vanished = sorted({c.address.tenant for c in deletes if c.address.kind is Kind.TENANT})
    refused_tenants = [t for t in vanished if t not in options.allow_delete_tenants]
    if refused_tenants:
        reasons.append(
            f"tenant {_shown(refused_tenants)} would be deleted with all its resources: name "
            "it in --allow-delete-tenant to confirm."
        )
    # Revoking a grant (a share removed, or one made by hand) drops no data: like dependencies,
    # it needs no permission unless its tenant is being removed.
    managed = [
        c
        for c in deletes
        if c.address.kind not in (Kind.DEPENDENCY, Kind.GRANT) or c.address.tenant in vanished
    ]
    # The plan's "N to destroy" counts every delete; say how the numbers meet.
    free = len(deletes) - len(managed)
    besides = (
        f" (of the plan's {len(deletes)} to destroy; the other {free} are dependency edges or "
        "grants, which hold no data and need no permission)"
        if free
        else ""
    )
    if managed and not options.allow_delete:
        names = _shown([str(c.address) for c in managed])
        reasons.append(
            f"the plan deletes {len(managed)} resource(s) ({names}){besides}: "
            "pass --allow-delete (or set apply.allow_delete in fabric.yaml)."
        )
    if len(managed) > options.max_deletes:
        reasons.append(
            f"the plan deletes {len(managed)} resources{besides}, more than --max-deletes "
            f"{options.max_deletes}: raise the limit if this is intended."
        )
    return tuple(reasons)
