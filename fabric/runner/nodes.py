"""Values that cross the process boundary between the runner and its workers.  [pure]

A worker receives a NodeSpec (everything needed to run one node, secrets still encrypted) and
returns a NodeResult. Library objects (dlt's, dbt's) never cross this boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fabric.addresses import Address


class NodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


FINISHED = frozenset(
    {NodeStatus.SUCCESS, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
)


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredConnection:
    """A connection as applied: its spec and its encrypted secret fields."""

    address: Address
    spec: Mapping[str, Any]
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Field path -> {"ref": "${secret:X}", "ct": Fernet token or None, "fp": ...}."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """One node to run, as the worker needs it."""

    address: Address
    kind: str
    """"pipeline", "transformation", or "noop" (a test-only node that sleeps and may fail)."""
    spec: Mapping[str, Any]
    connections: Mapping[str, StoredConnection] = field(default_factory=dict)
    """The connections the node uses, by name (source, destination, warehouse)."""
    run_id: int = 0
    attempt: int = 1
    control_plane_url: str = ""
    """For the per-pipeline advisory lock a load holds while it runs."""
    workdir: str = ""
    """The tenant's work folder (dlt pipelines dir, dbt project)."""
    repo_root: str = ""
    """Relative paths in specs (a sqlite file, a local folder) are relative to this."""
    secret_home: str | None = None
    """Where the embedded default keeps its key file (None: FABRIC_SECRET_KEYS only)."""
    full_refresh: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Environment the node needs from the runner's (the `${env:NAME}` its connections use,
    FABRIC_SECRET_KEYS): workers are long-lived, so they get it with each node, not at start."""
    tests_only: bool = False
    """Transformations: run the model's tests only (`fabric test`)."""
    project: Mapping[str, Any] = field(default_factory=dict)
    """Transformations: the tenant's whole applied project, which dbt needs to resolve refs
    and sources: {"tenant": slug, "transformations": {name: spec}, "pipelines": {name: spec},
    "connections": {name: StoredConnection}}."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TestResult:
    """One data test a node ran (dbt's generic tests of a transformation)."""

    __test__ = False  # not a pytest class

    name: str
    status: str
    """dbt's test status: pass | fail | warn | error | skipped."""
    failures: int | None = None
    """Rows that failed the test (dbt's failures count); None when it did not run."""
    message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeResult:
    address: Address
    status: NodeStatus
    rows_loaded: Mapping[str, int] = field(default_factory=dict)
    """Rows loaded per destination table (pipelines) or affected (models)."""
    error: str | None = None
    """One paragraph, no secrets; `timeout: ...`, `crashed: ...` prefixes for those cases."""
    retryable: bool = False
    """Whether a retry could help (a connection reset, a deadlock), per the error's class."""
    log_tail: str = ""
    duration_seconds: float = 0.0
    tests: tuple[TestResult, ...] = ()
    """The node's data tests, by name (empty: it has none, or none ran)."""

    @classmethod
    def succeeded(cls, address: Address, **kw: Any) -> NodeResult:
        return cls(address=address, status=NodeStatus.SUCCESS, **kw)

    @classmethod
    def failed(cls, address: Address, error: str, **kw: Any) -> NodeResult:
        return cls(address=address, status=NodeStatus.FAILED, error=error, **kw)
