"""Which tenants a set of changed files touches: the decision behind `plan --changed-since`. [pure]

A file under `tenants/<slug>/` changes that tenant only (a deleted folder is a changed tenant:
its plan deletes it). Anything else in the repository (`fabric.yaml`, a file directly under
`tenants/`, any other file) may change how every tenant resolves, so every tenant is planned.
Hidden entries under `tenants/` are ignored, as discovery ignores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChangedTenants:
    every: bool
    """True when a shared file changed: every tenant must be planned."""
    tenants: frozenset[str]
    """Tenants whose own files changed (also filled when `every` is True)."""
    shared: tuple[str, ...]
    """The changed files outside any tenant folder, sorted (why `every` is True)."""


def changed_tenants(paths: Iterable[str]) -> ChangedTenants:
    """Paths relative to the repository root, with `/` separators."""
    tenants: set[str] = set()
    shared: set[str] = set()
    for path in paths:
        parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
        if not parts:
            continue
        if parts[0] == "tenants" and len(parts) >= 3:
            if not parts[1].startswith("."):
                tenants.add(parts[1])
        elif parts[0] == "tenants" and len(parts) == 2 and parts[1].startswith("."):
            continue
        else:
            shared.add("/".join(parts))
    return ChangedTenants(bool(shared), frozenset(tenants), tuple(sorted(shared)))
