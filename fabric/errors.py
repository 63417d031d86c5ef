"""Errors fabric raises on purpose.

FabricError
├── ConfigError                 the repository is invalid; .diagnostics
├── PlanError
│   ├── StalePlanError          objects changed since the plan was made; .changed
│   └── UnsafePlanError         deletes without --allow-delete, protected resources; .diagnostics
├── StateError                  the control plane cannot be reached or used
│   ├── LockTimeoutError        .tenant, .holder, .since
│   └── EmbeddedDatabaseError   the embedded PostgreSQL cannot start; .home, .detail, .hint
└── NodeError                   a DAG node failed; .address
    ├── TransientNodeError      retry per policy (connection reset, deadlock, timeout)
    └── TerminalNodeError       never retry (bad SQL, schema contract violation)

The CLI prints a FabricError without a traceback; any other exception is a bug and keeps its
traceback. Every error keeps its data in attributes, so callers and tests never parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fabric.addresses import Address
    from fabric.diagnostics import Diagnostic

__all__ = [
    "ConfigError",
    "EmbeddedDatabaseError",
    "FabricError",
    "LockTimeoutError",
    "NodeError",
    "PlanError",
    "StalePlanError",
    "StateError",
    "TerminalNodeError",
    "TransientNodeError",
    "UnsafePlanError",
]


def _shown(items: Sequence[object], limit: int = 5) -> str:
    text = ", ".join(map(str, items[:limit]))
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


class FabricError(Exception):
    """Root of every error fabric raises on purpose."""


class ConfigError(FabricError):
    """The repository is invalid; every problem found is in `diagnostics`."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        count = len(self.diagnostics)
        super().__init__(f"The repository has {count} problem{'s' if count != 1 else ''}.")


class PlanError(FabricError):
    """A plan cannot be made or applied."""


class StalePlanError(PlanError):
    """Objects the plan read or changes moved after it was made; apply refuses it."""

    def __init__(self, changed: Sequence[Address]) -> None:
        self.changed: tuple[Address, ...] = tuple(changed)
        super().__init__(
            f"The plan is stale: {_shown(self.changed)} changed after it was made. "
            "Run `fabric plan` again."
        )


class UnsafePlanError(PlanError):
    """The plan would delete without permission or touch protected resources."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        count = len(self.diagnostics)
        super().__init__(
            f"The plan is unsafe to apply ({count} problem{'s' if count != 1 else ''})."
        )


class StateError(FabricError):
    """The control plane cannot be reached or used."""


class LockTimeoutError(StateError):
    """Another apply (or run) held a lock longer than we were willing to wait."""

    def __init__(
        self,
        tenant: str | None,
        *,
        holder: str | None = None,
        since: datetime | None = None,
    ) -> None:
        self.tenant = tenant
        self.holder = holder
        self.since = since
        what = f"tenant {tenant!r}" if tenant else "the control plane"
        by = f" held by {holder}" if holder else ""
        when = f" since {since.isoformat(timespec='seconds')}" if since else ""
        super().__init__(
            f"Timed out waiting for the lock on {what}{by}{when}. "
            "Wait for that operation to finish, then try again."
        )


class EmbeddedDatabaseError(StateError):
    """The embedded PostgreSQL (used when FABRIC_DATABASE_URL is unset) cannot start or be used."""

    def __init__(self, home: Path, detail: str, *, hint: str | None = None) -> None:
        self.home = home
        self.detail = detail
        self.hint = hint
        message = f"Cannot use the embedded PostgreSQL in {home}: {detail}"
        if hint:
            message += f"\n{hint}"
        super().__init__(message)


class NodeError(FabricError):
    """A DAG node (pipeline or transformation) failed."""

    retryable: bool = False
    """Whether running the node again could help; fixed per subclass."""

    def __init__(self, address: Address, detail: str) -> None:
        self.address = address
        self.detail = detail
        super().__init__(f"{address} failed: {detail}")


class TransientNodeError(NodeError):
    """A failure that may pass (connection reset, deadlock, timeout): retry per policy."""

    retryable = True


class TerminalNodeError(NodeError):
    """A failure that will repeat (bad SQL, schema contract violation): never retry."""
