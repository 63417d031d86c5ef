"""What checking the author costs on a big plan: 1,000 tenants x 50 changes.

`fabric apply` (and `fabric plan --author`) judge every change of the plan against the stored
members; this measures that pure step on a 50,000-change plan, against the cost of merely
walking the plan's changes once (the ratio is what the check adds per change).

    uv run python bench/authorize_scale.py
"""

from __future__ import annotations

import time
from types import MappingProxyType

from fabric.addresses import Address
from fabric.plan.authorize import Governance, authorize
from fabric.plan.diff import Action, Change, Target

TENANTS = 1_000
PER_TENANT = 50
KINDS = ("pipeline", "transformation", "schedule", "connection")


def plan_changes() -> list[Change]:
    target = Target(
        spec=MappingProxyType({}),
        secret_refs=MappingProxyType({}),
        secret_fps=MappingProxyType({}),
        protect=False,
        fingerprint="x",
    )
    return [
        Change(
            address=Address.parse(f"t{t:04d}.{KINDS[i % len(KINDS)]}.r{i}"),
            action=Action.UPDATE,
            target=target,
        )
        for t in range(TENANTS)
        for i in range(PER_TENANT)
    ]


def best_of(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    changes = plan_changes()
    governance = Governance(
        admins=("platform",), groups={"platform": tuple(f"p{i}@p.example" for i in range(20))}
    )
    stored = {
        f"t{t:04d}": (
            (f"owner{t}@t.example", "owner"),
            (f"admin{t}@t.example", "admin"),
            ("editor@t.example", "editor"),
            ("viewer@t.example", "viewer"),
            ("platform", "viewer"),
        )
        for t in range(TENANTS)
    }
    walk = best_of(lambda: [c.address.tenant for c in changes])
    editor = best_of(
        lambda: authorize(
            changes, stored_members=stored, governance=governance, author="editor@t.example"
        )
    )
    refused = authorize(
        changes, stored_members=stored, governance=governance, author="editor@t.example"
    )
    outsider = best_of(
        lambda: authorize(
            changes, stored_members=stored, governance=governance, author="x@elsewhere.example"
        )
    )
    admin = best_of(
        lambda: authorize(
            changes, stored_members=stored, governance=governance, author="p3@p.example"
        )
    )
    n = len(changes)
    print(f"{n:,} changes over {TENANTS:,} tenants (best of 5)")
    print(f"  walk the changes once:        {walk * 1000:8.1f} ms")
    print(
        f"  authorize an editor:          {editor * 1000:8.1f} ms  "
        f"({editor / walk:.1f}x the walk; {editor / n * 1e6:.2f} us/change; "
        f"{len(refused):,} refusals)"
    )
    print(f"  authorize a non-member:       {outsider * 1000:8.1f} ms  ({outsider / walk:.1f}x)")
    print(f"  authorize a project admin:    {admin * 1000:8.3f} ms  (decided once, per plan)")


if __name__ == "__main__":
    main()
