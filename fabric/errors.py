"""Errors fabric raises on purpose.

FabricError
├── ConfigError                 the repository is invalid; .diagnostics
├── SettingsError               a FABRIC_* variable has a value fabric cannot use; .name
├── PlanError
│   ├── StalePlanError          objects changed since the plan was made; .changed
│   ├── UnsafePlanError         deletes without --allow-delete, protected resources; .reasons
│   └── UnauthorizedError       the author may not make some changes; .refusals (exit code 3)
│   └── ApplyTooLargeError      changes more existing tenants than one atomic switch can lock;
│                               .tenants, .tables, .fits, .server
├── StateError                  the control plane cannot be reached or used
│   ├── LockTimeoutError        .tenant, .holder, .since
│   ├── EmbeddedDatabaseError   the embedded PostgreSQL cannot start; .home, .detail, .hint
│   ├── TenantNotAppliedError   the tenant has no schema in the control plane yet; .tenant
│   └── ControlPlaneUnreachableError  the server refused or timed out a connection; .url
├── SecretError                 a secret cannot be stored, found or decrypted
│   ├── SecretKeyError          FABRIC_SECRET_KEYS is missing or malformed; .position, .source
│   ├── SecretDecryptError      wrong binding (copied value) or no key decrypts it; .binding,
│   │                           .copied, .unbound, .key_count, .source
│   ├── SecretNotFoundError     `${secret:NAME}` was never set; .tenant, .name
│   └── MissingSecretError      `${env:NAME}` variables unset at apply time; .missing
└── NodeError                   a DAG node failed; .address
    ├── TransientNodeError      retry per policy (connection reset, deadlock, timeout)
    └── TerminalNodeError       never retry (bad SQL, schema contract violation)

The CLI prints a FabricError without a traceback; any other exception is a bug and keeps its
traceback. Every error keeps its data in attributes, so callers and tests never parse messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fabric.addresses import Address
    from fabric.diagnostics import Diagnostic

__all__ = [
    "ApplyTooLargeError",
    "ConfigError",
    "ControlPlaneUnreachableError",
    "EmbeddedDatabaseError",
    "FabricError",
    "LockTimeoutError",
    "MissingSecretError",
    "NodeError",
    "PlanError",
    "SecretDecryptError",
    "SecretError",
    "SecretKeyError",
    "SecretNotFoundError",
    "SettingsError",
    "StalePlanError",
    "StateError",
    "TenantNotAppliedError",
    "TerminalNodeError",
    "TransientNodeError",
    "UnauthorizedError",
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


class SettingsError(FabricError):
    """A FABRIC_* environment variable has a value fabric cannot use; `name` is the variable."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


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

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons: tuple[str, ...] = tuple(reasons)
        listed = "\n".join(f"  - {r}" for r in self.reasons)
        super().__init__(f"Refusing to apply this plan:\n{listed}")


class UnauthorizedError(PlanError):
    """The author may not make some of the plan's changes (tenant members, project admins)."""

    exit_code = 3
    """Distinct from 1 (invalid repository, other errors), so CI can tell a refusal apart."""

    def __init__(self, refusals: Sequence[object], author: str | None) -> None:
        self.refusals: tuple[object, ...] = tuple(refusals)
        self.author = author
        shown = list(self.refusals[:50])
        listed = "\n".join(f"  - {r}" for r in shown)
        more = len(self.refusals) - len(shown)
        if more:
            listed += f"\n  ... and {more} more"
        who = author or "an unknown author"
        super().__init__(
            f"Refusing to apply: {who} may not make {len(self.refusals)} of the plan's "
            f"changes:\n{listed}\nAsk someone listed as able to approve to apply it, or to "
            "give you the role in tenant.yaml (the control plane's members decide)."
        )


class LockedByPullRequestError(PlanError):
    """Tenants the plan changes are held by another pull request (`fabric plan --lock-for`)."""

    exit_code = 4
    """Distinct from 1 (errors) and 3 (refused author): CI can say "wait for the other PR"."""

    def __init__(self, held: Sequence[object], action: str) -> None:
        self.held: tuple[object, ...] = tuple(held)
        listed = "\n".join(f"  - {lock.describe()}" for lock in self.held)  # type: ignore
        super().__init__(
            f"Refusing to {action}: another pull request holds tenants this plan changes:\n"
            f"{listed}\nWait until it is merged and applied (its apply releases the lock), "
            "or ask its author or a project admin to `fabric unlock PR`."
        )


class UnlockRefusedError(PlanError):
    """`fabric unlock` by someone who is neither the lock's author nor a project admin."""

    exit_code = 3

    def __init__(self, locks: Sequence[object], who: str | None) -> None:
        self.locks = tuple(locks)
        listed = "\n".join(f"  - {lock.describe()}" for lock in self.locks)  # type: ignore
        super().__init__(
            f"Refusing to unlock: {who or 'an unknown author'} is neither the author of these "
            f"locks nor a project admin:\n{listed}\nAsk the lock's author or a project admin "
            "(fabric.yaml `admins`); pass --author EMAIL if you are one of them."
        )


class ApplyTooLargeError(PlanError):
    """The switch would change more existing tenants' tables than the server's lock table holds
    at once (PostgreSQL locks every table a transaction writes until it commits)."""

    def __init__(self, *, tenants: int, tables: int, fits: int, server: str) -> None:
        self.tenants = tenants
        self.tables = tables
        self.fits = fits
        self.server = server
        super().__init__(
            f"This apply changes {tables} tables of {tenants} existing tenants in one "
            f"transaction, more than this PostgreSQL ({server}) can lock at once: it can change "
            f"about {fits} tenants this way per apply. Apply them in parts of at most {fits} "
            "tenants with `fabric apply --tenant SLUG --tenant ...`, or raise "
            "max_locks_per_transaction on the server. Nothing was changed."
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


class ControlPlaneUnreachableError(StateError):
    """The control plane's server did not accept a connection; .url (without its password)."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        super().__init__(
            f"Cannot connect to the control plane at {url}: {detail}. Check FABRIC_DATABASE_URL "
            "and that the server is running (unset it to use the embedded PostgreSQL)."
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


class TenantNotAppliedError(StateError):
    """The tenant has no live row (or no schema) in the control plane: it was never applied."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__(
            f"Tenant {tenant!r} is not in the control plane; it has never been applied. "
            "Run `fabric apply` first."
        )


class SecretError(FabricError):
    """A secret cannot be stored, found or decrypted. Messages never hold values or tokens."""


class SecretKeyError(SecretError):
    """The encryption keys are missing or malformed; never shows a key."""

    def __init__(self, detail: str, *, position: int | None = None, source: str) -> None:
        self.detail = detail
        self.position = position
        """1-based position of the bad key in FABRIC_SECRET_KEYS; None when not about one key."""
        self.source = source
        """Where the keys came from: "FABRIC_SECRET_KEYS" or the key file's path."""
        super().__init__(detail)


class SecretDecryptError(SecretError):
    """A stored value cannot be decrypted for the row it sits in."""

    def __init__(
        self,
        binding: str,
        *,
        copied: bool = False,
        unbound: bool = False,
        key_count: int,
        source: str,
    ) -> None:
        self.binding = binding
        """Where the value was read: `acme.connection.dwh#password`, `acme.secret.dwh_password`."""
        self.copied = copied
        """A key decrypts the value, but it was encrypted for another row. Which row is never
        said: it may be another tenant's, and naming it would tell this tenant about it."""
        self.unbound = unbound
        """A key decrypts the value, but it carries no binding (not written by fabric)."""
        self.key_count = key_count
        self.source = source
        if copied or unbound:
            why = (
                "belongs to another resource (it was copied between rows)"
                if copied
                else "was not written by fabric (it is bound to no resource)"
            )
            message = (
                f"The secret value stored for {binding} {why}. Store it again for {binding} "
                "(`fabric secrets set` or `fabric apply`)."
            )
        elif source == "FABRIC_SECRET_KEYS":
            keys = f"{key_count} key{'s' if key_count != 1 else ''}"
            message = (
                f"The secret value stored for {binding} cannot be decrypted: none of the {keys} "
                "in FABRIC_SECRET_KEYS can decrypt it. It was encrypted with a key that is no "
                "longer configured; add the old key back (after the newest one)."
            )
        else:
            message = (
                f"The secret value stored for {binding} cannot be decrypted with the key in "
                f"{source}. It was encrypted with another key; set FABRIC_SECRET_KEYS to that "
                "key."
            )
        super().__init__(message)


class SecretNotFoundError(SecretError):
    """`${secret:NAME}` names a secret that was never stored for the tenant."""

    def __init__(self, tenant: str, name: str) -> None:
        self.tenant = tenant
        self.name = name
        super().__init__(
            f"Tenant {tenant!r} has no secret {name!r}. Store it with:\n"
            f"    fabric secrets set {tenant} {name}"
        )


class MissingSecretError(SecretError):
    """`${env:NAME}` references an apply needs, whose variables are not set."""

    def __init__(self, missing: Mapping[str, tuple[str, ...]]) -> None:
        self.missing = dict(missing)
        parts = [
            f"{name} (used by {_shown(list(users), 3)})" for name, users in self.missing.items()
        ]
        super().__init__(
            "Environment variables needed to apply are not set: "
            + "; ".join(parts)
            + ". Set them in the environment of `fabric apply`."
        )
