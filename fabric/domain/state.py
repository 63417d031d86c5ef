"""The desired state: what the repository declares, resolved and checked.  [pure]

Resources keep the spec exactly as validated, with references already resolved to their
effective values (a pipeline's destination defaults to the tenant's warehouse, a schedule's
timezone to the project's), plus where they were declared so later steps can point at them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from fabric.addresses import Address, Kind
from fabric.config.specs import (
    ConnectionSpec,
    MacroSpec,
    PipelineSpec,
    ProjectSpec,
    ScheduleSpec,
    SeedSpec,
    SingularTestSpec,
    SnapshotSpec,
    TenantSpec,
    TransformationSpec,
)
from fabric.diagnostics import SourceSpan

S = TypeVar("S")
EMPTY: Mapping[str, object] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Declared(Generic[S]):
    """A resource as declared: its address, its validated spec and where it was written."""

    address: Address
    spec: S
    span: SourceSpan
    written: Mapping[str, Any] | None = None
    """The resource as its YAML wrote it (JSON-safe), kept for `fabric export`."""


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Dependency:
    """An edge upstream -> downstream between two DAG nodes of one tenant."""

    upstream: Address
    downstream: Address
    origin: Literal["depends_on", "ref", "source"] = field(compare=False)


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Move:
    """A rename: the object stored at `old` is declared at `new` now (same tenant and kind),
    from a `moved:` entry or a `renamed_from:` field (config/moves.py)."""

    new: Address
    old: Address
    span: SourceSpan = field(compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantState:
    """One tenant's declared resources, keyed by name within each kind."""

    slug: str
    spec: TenantSpec
    span: SourceSpan
    connections: Mapping[str, Declared[ConnectionSpec]]
    pipelines: Mapping[str, Declared[PipelineSpec]]
    transformations: Mapping[str, Declared[TransformationSpec]]
    schedules: Mapping[str, Declared[ScheduleSpec]]
    sql: Mapping[str, str]
    """Transformation name -> its SQL text (inline, or read from `sql_file`)."""
    dependencies: tuple[Dependency, ...]
    moves: tuple[Move, ...] = ()
    """Renames declared in YAML; plan turns each into an update of the stored object."""
    written: Mapping[str, Any] | None = None
    """The `tenant:` section as its YAML wrote it (JSON-safe), kept for `fabric export`."""
    snapshots: Mapping[str, Declared[SnapshotSpec]] = field(default_factory=_empty)
    snapshot_sql: Mapping[str, str] = field(default_factory=_empty)
    """Snapshot name -> its select (inline, or read from `sql_file`)."""
    macros: Mapping[str, Declared[MacroSpec]] = field(default_factory=lambda: EMPTY)
    """Macro files of the tenant's dbt project: its own `macros/` and the project's shared
    ones (`project__<stem>`)."""
    seeds: Mapping[str, Declared[SeedSpec]] = field(default_factory=lambda: EMPTY)
    """CSV files of the tenant's `seeds/` folder, with their `seeds:` configuration."""
    tests: Mapping[str, Declared[SingularTestSpec]] = field(default_factory=lambda: EMPTY)
    """Singular tests: `.sql` files of the tenant's `tests/` folder."""

    def resources(self) -> Iterator[Declared[object]]:
        for section in (
            self.connections,
            self.pipelines,
            self.transformations,
            self.schedules,
            self.snapshots,
            self.macros,
            self.seeds,
            self.tests,
        ):
            yield from section.values()

    def count(self, kind: Kind) -> int:
        return len(self.section(kind))

    def section(self, kind: Kind) -> Mapping[str, Declared[object]]:
        return {
            Kind.CONNECTION: self.connections,
            Kind.PIPELINE: self.pipelines,
            Kind.TRANSFORMATION: self.transformations,
            Kind.SCHEDULE: self.schedules,
            Kind.SNAPSHOT: self.snapshots,
            Kind.MACRO: self.macros,
            Kind.SEED: self.seeds,
            Kind.TEST: self.tests,
        }[kind]


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredState:
    """Everything a repository declares; what `plan` diffs against the control plane."""

    project: ProjectSpec
    tenants: Mapping[str, TenantState]
    source_hash: str
    """sha256 over every file the state was loaded from (paths and contents)."""
    files: int = 0
