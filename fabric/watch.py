"""`fabric watch`: re-validate on every save, then show the plan against the control plane.

[shell] The loop is a library function over an iterable of change batches, so the CLI feeds it
watchfiles' `watch()` (which debounces: a burst of saves is one batch) and tests feed it lists,
with no sleeps and no file-system events.

- Reloads go through one LoadCache: after a one-file edit only that file is parsed and only its
  tenant resolved again (see fabric/config/loader.py), so re-validating a 1,000-tenant
  repository takes a fraction of a full validate (bench/watch_revalidate.py).
- The plan after a valid reload covers the tenants whose files changed in the batch (every
  tenant when a shared file changed, and on the first report).
- A half-written file is just invalid YAML: the report lists its diagnostics and the loop waits
  for the next save. A control plane that cannot be reached is a report, not the end.
- Ctrl-C (KeyboardInterrupt) ends the loop cleanly, between or during reloads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fabric.config.changes import changed_tenants
from fabric.config.loader import LoadCache, LoadResult, load_repository
from fabric.errors import FabricError

__all__ = ["WatchReport", "relevant_paths", "watch_repository"]

WATCHED_SUFFIXES = (".yaml", ".yml", ".sql")
PlanFunction = Callable[[LoadResult, tuple[str, ...] | None], object]
"""(valid load, tenants to plan or None for all) -> a Plan; raises FabricError when it cannot."""


@dataclass(frozen=True, slots=True)
class WatchReport:
    """One re-validation (and plan) after a batch of saves."""

    changed: tuple[str, ...]
    """Repository-relative paths that triggered it; empty for the first report."""
    load: LoadResult | None
    """None when the files could not be read (they changed while being read)."""
    plan: object | None = None
    """The Plan of the changed tenants, when the repository is valid and the plan could be made."""
    problem: str | None = None
    """Why there is no plan (or no load), in words for people."""
    seconds: float = 0.0
    """How long the re-validation took (shown, never asserted)."""


def relevant_paths(root: Path, paths: Iterable[str | Path]) -> tuple[str, ...]:
    """The paths of a batch that can change the desired state, relative to `root`, sorted.

    fabric.yaml and YAML/SQL files under tenants/; never fabric's own `.fabric/` or `.git/`
    (runs write there, and watching them would re-validate forever).
    """
    root = root.resolve()
    out: set[str] = set()
    for raw in paths:
        path = Path(raw)
        try:
            rel = (path if path.is_absolute() else root / path).resolve().relative_to(root)
        except ValueError:
            continue
        parts = rel.parts
        if not parts or any(part in (".fabric", ".git") for part in parts):
            continue
        if rel.as_posix() == "fabric.yaml" or (
            parts[0] == "tenants" and rel.suffix in WATCHED_SUFFIXES
        ):
            out.add(rel.as_posix())
        elif parts[0] == "tenants" and len(parts) == 2:  # a tenant folder added or removed
            out.add(rel.as_posix() + "/")
    return tuple(sorted(out))


def watch_repository(
    root: Path,
    batches: Iterable[Iterable[str | Path]],
    *,
    on_report: Callable[[WatchReport], None],
    plan: PlanFunction | None,
    cache: LoadCache | None = None,
) -> int:
    """Report once, then once per batch that touches the repository's YAML or SQL.

    `plan=None` only validates. Returns the number of reports; returns normally on Ctrl-C.
    """
    cache = cache if cache is not None else LoadCache()
    reports = 0
    try:
        on_report(_report(root, (), cache, plan, None))
        reports += 1
        for batch in batches:
            changed = relevant_paths(root, batch)
            if not changed:
                continue
            affected = changed_tenants(changed)
            tenants = None if affected.every else tuple(sorted(affected.tenants))
            on_report(_report(root, changed, cache, plan, tenants))
            reports += 1
    except KeyboardInterrupt:
        pass
    return reports


def _report(
    root: Path,
    changed: tuple[str, ...],
    cache: LoadCache,
    plan: PlanFunction | None,
    tenants: tuple[str, ...] | None,
) -> WatchReport:
    started = time.perf_counter()
    try:
        # `tenants` (None: a shared file changed, or the first load) bounds what is re-read
        load = load_repository(root, cache=cache, changed=tenants)
    except OSError as exc:  # a file vanished or changed between listing and reading it
        return WatchReport(
            changed,
            None,
            problem=f"files changed while being read ({exc}); waiting for the next save",
        )
    seconds = time.perf_counter() - started
    if not load.ok or plan is None:
        return WatchReport(changed, load, seconds=seconds)
    try:
        made = plan(load, tenants)
    except FabricError as exc:
        return WatchReport(changed, load, problem=f"no plan: {exc}", seconds=seconds)
    return WatchReport(changed, load, plan=made, seconds=seconds)
