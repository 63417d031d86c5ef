"""Run, node and failure values: what crosses the boundary between runner and workers.  [pure]

A worker receives a NodeSpec (everything needed to run one node) and returns a NodeResult.
Library objects (dlt's, dbt's) never cross this boundary. The graph, the state readers, the
executors and the renderers all speak these values, so they live in the domain, below all of
them.

Times of a node, defined once (every display derives from these):
- `queued_at`: when the runner handed the node to a worker (a batch's members share it);
- `started_at` / `finished_at`: when the node's own work began and ended, as the worker saw it
  (for a dbt model run in a batch: dbt's own timing of that model and its tests);
- `seconds`: finished_at - started_at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
    QUEUED = "queued"
    """A queue run waiting for an active run that shares its nodes (one active run per node)."""
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FailureKind(StrEnum):
    """Why a node did not succeed: a closed set, decided where the failure is seen.

    Executors act on the kind only (never on the wording of an error): see `is_retryable`.
    """

    TRANSIENT = "transient"
    """The outside world hiccuped (a dropped connection, a deadlock, a 5xx): a retry may pass."""
    TERMINAL = "terminal"
    """The node itself is wrong (bad password, bad SQL, a contract violation): never retried."""
    TIMEOUT = "timeout"
    """The node ran past its `timeout_seconds` and was killed."""
    CRASHED = "crashed"
    """The worker process died under the node (a segfault, the OOM killer, SIGKILL)."""
    WORKER_LOST = "worker_lost"
    """The worker stopped reporting (a lost machine); decided by whoever noticed."""
    CANCELLED = "cancelled"
    """Someone stopped the run."""
    UPSTREAM_FAILED = "upstream_failed"
    """Never ran: something it depends on did not succeed."""

    @property
    def is_retryable(self) -> bool:
        return self in RETRYABLE


RETRYABLE = frozenset({FailureKind.TRANSIENT, FailureKind.TIMEOUT, FailureKind.CRASHED})


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredConnection:
    """A connection as applied: its spec and its encrypted secret fields."""

    address: Address
    spec: Mapping[str, Any]
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Field path -> {"ref": "${secret:X}", "ct": Fernet token or None, "fp": ...}."""


@dataclass(frozen=True, slots=True)
class ResolvedConnection:
    """A connection with its secrets decrypted and `${env:X}` interpolated: `spec` has them in
    place. Built by the runner for the node that uses it; `secret_values` are what every message
    of that node is redacted with."""

    name: str
    type: str
    spec: Mapping[str, Any] = field(repr=False)
    secret_values: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        return f"ResolvedConnection({self.name!r}, {self.type!r}, <secrets hidden>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLimits:
    """Timeouts of a warehouse or source session, in seconds; 0 = not set by fabric."""

    statement_timeout: int = 3600
    """FABRIC_WAREHOUSE_STATEMENT_TIMEOUT: the longest one statement may run."""
    lock_timeout: int = 300
    """FABRIC_WAREHOUSE_LOCK_TIMEOUT: the longest one statement may wait for a lock."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """One node to run, as the worker needs it."""

    address: Address
    kind: str
    """"pipeline" or "transformation"."""
    spec: Mapping[str, Any]
    connections: Mapping[str, ResolvedConnection] = field(default_factory=dict, repr=False)
    """The connections the node uses, by name (source, destination, warehouse), resolved by the
    runner: a worker never holds secret keys, and reads nothing from its own environment."""
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The variables the tenant declared in `env:` (values from the runner's environment): all
    a model's `env_var()` may read besides the profile's own."""
    run_id: int = 0
    attempt: int = 1
    control_plane_url: str = field(default="", repr=False)
    """For the per-pipeline advisory lock a load holds while it runs."""
    workdir: str = ""
    """The tenant's work folder (dlt pipelines dir, dbt project)."""
    repo_root: str = ""
    """Relative paths in specs (a sqlite file, a local folder) are relative to this."""
    full_refresh: bool = False
    state_name: str = ""
    """Pipelines: the dlt pipeline's name within the tenant when not the node's name (a renamed
    pipeline keeps its first name, so its dlt state and incremental cursor stay)."""
    tests_only: bool = False
    """Transformations: run the model's tests only (`fabric test`)."""
    session: SessionLimits = field(default_factory=SessionLimits)
    """The timeouts of the node's warehouse and source sessions (fabric.runner.sessions)."""
    project: Mapping[str, Any] = field(default_factory=dict)
    """Transformations: the tenant's whole applied project, which dbt needs to resolve refs
    and sources: {"tenant": slug, "transformations": {name: spec}, "pipelines": {name: spec},
    "connections": {name: StoredConnection}} (specs only: secrets stay encrypted)."""

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Every secret of the node's connections: what its messages are redacted with."""
        return tuple(v for c in self.connections.values() for v in c.secret_values)


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
    failure: FailureKind | None = None
    """Set when status is FAILED (or CANCELLED / SKIPPED): why, as a closed kind."""
    rows_loaded: Mapping[str, int] = field(default_factory=dict)
    """Rows loaded per destination table (pipelines) or affected (models)."""
    error: str | None = None
    """What went wrong, first line first (the database's own words where there are some); no
    secrets."""
    log_tail: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    """When the node's own work began and ended (UTC); see the module docstring."""
    tests: tuple[TestResult, ...] = ()
    """The node's data tests, by name (empty: it has none, or none ran)."""

    @property
    def seconds(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return max(0.0, (self.finished_at - self.started_at).total_seconds())

    @property
    def retryable(self) -> bool:
        return self.failure is not None and self.failure.is_retryable

    @classmethod
    def succeeded(cls, address: Address, **kw: Any) -> NodeResult:
        return cls(address=address, status=NodeStatus.SUCCESS, **kw)

    @classmethod
    def failed(
        cls, address: Address, error: str, failure: FailureKind = FailureKind.TERMINAL, **kw: Any
    ) -> NodeResult:
        return cls(address=address, status=NodeStatus.FAILED, error=error, failure=failure, **kw)
