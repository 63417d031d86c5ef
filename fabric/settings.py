"""Process settings from the environment; the only module that reads `os.environ`.

Everything else receives a `Settings` value, so tests build one from a plain mapping instead of
patching the environment.

Variables:
- FABRIC_DATABASE_URL: the control plane's PostgreSQL; unset means the embedded server.
- FABRIC_HOME: folder for local state (the embedded server); default `.fabric/` beside
  `fabric.yaml`. A relative path is relative to the current directory.
- FABRIC_SECRET_KEYS: comma-separated Fernet keys; the first encrypts, all decrypt (rotation).
- FABRIC_WAREHOUSE_STATEMENT_TIMEOUT, FABRIC_WAREHOUSE_LOCK_TIMEOUT: seconds (default 3600 and
  300; 0 = fabric sets none) for every session opened with a tenant's credentials on a
  warehouse or SQL source (fabric.runner.sessions).

An empty value counts as unset, because CI systems often define variables as empty strings.

The processes that run tenants' code (workers, a dbt invocation) see an environment built from
scratch (`worker_environment`, `only_environment`): the few variables Python, dbt and dlt need,
never fabric's settings, keys or another tenant's values. `only_environment` is the one function
in fabric that writes `os.environ`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Settings",
    "base_environment",
    "load_settings",
    "only_environment",
    "process_environ",
    "worker_environment",
]

PASSED_THROUGH = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR"}
)
"""What a process running tenants' code keeps of the runner's environment (plus `LC_*`): what
Python, dbt and dlt need to find programs, decode text, tell the time and trust certificates.
None of it is a credential, a fabric setting or a tenant's value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What fabric reads from the environment, parsed once at the edge."""

    database_url: str | None = None
    """FABRIC_DATABASE_URL; None means "start or reuse the embedded PostgreSQL"."""
    home: Path | None = None
    """FABRIC_HOME; None means `<repository root>/.fabric`."""
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    """FABRIC_SECRET_KEYS in the given order; never shown in repr."""
    warehouse_statement_timeout: int = 3600
    """FABRIC_WAREHOUSE_STATEMENT_TIMEOUT: seconds one statement of a tenant's session may run
    (dlt loads, dbt models, SQL sources, probes); 0 = fabric sets none."""
    warehouse_lock_timeout: int = 300
    """FABRIC_WAREHOUSE_LOCK_TIMEOUT: seconds one statement may wait for a lock; 0 = none."""

    def __repr__(self) -> str:
        url = _redact_password(self.database_url) if self.database_url else None
        keys = f"<{len(self.secret_keys)} keys>"
        return (
            f"Settings(database_url={url!r}, home={self.home!r}, secret_keys={keys}, "
            f"warehouse_statement_timeout={self.warehouse_statement_timeout}, "
            f"warehouse_lock_timeout={self.warehouse_lock_timeout})"
        )


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Read fabric's variables from `environ` (the process environment by default)."""
    home = environ.get("FABRIC_HOME") or None
    keys = environ.get("FABRIC_SECRET_KEYS", "")
    return Settings(
        database_url=environ.get("FABRIC_DATABASE_URL") or None,
        home=Path(home).expanduser() if home else None,
        secret_keys=tuple(key.strip() for key in keys.split(",") if key.strip()),
        warehouse_statement_timeout=_seconds(environ, "FABRIC_WAREHOUSE_STATEMENT_TIMEOUT", 3600),
        warehouse_lock_timeout=_seconds(environ, "FABRIC_WAREHOUSE_LOCK_TIMEOUT", 300),
    )


def _seconds(environ: Mapping[str, str], name: str, default: int) -> int:
    """A whole number of seconds (0 = none); SettingsError naming the variable otherwise."""
    from fabric.errors import SettingsError

    text = (environ.get(name) or "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) > 7 * 24 * 3600:
        raise SettingsError(
            name,
            f"{name}={text!r} is not a number of seconds; set a whole number from 0 (none) to "
            f"604800 (a week), e.g. {name}={default}.",
        )
    return int(text)


def process_environ() -> dict[str, str]:
    """A copy of the process environment, for the `${env:NAME}` references a command resolves.

    Commands take it once, at the edge, and pass it down explicitly.
    """
    return dict(os.environ)


def base_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables of `environ` (the process environment by default) that a process running
    tenants' code may see: PASSED_THROUGH and the locale's `LC_*`, nothing else."""
    return {
        name: value
        for name, value in environ.items()
        if name in PASSED_THROUGH or name.startswith("LC_")
    }


def worker_environment(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """The whole environment of a tenant's worker process: `base` (see base_environment) with
    HOME and TMPDIR in the tenant's own folder, so dlt's `~/.dlt`, libpq's `~/.pgpass` and
    temporary files are the tenant's, never the runner's or another tenant's."""
    return {**base_environment(base), "HOME": str(home), "TMPDIR": str(home / "tmp")}


@contextlib.contextmanager
def only_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Make `values` the whole process environment for the block; restore it after.

    Used where tenants' code runs or is forked from: a worker's life, a dbt invocation (dbt's
    `env_var()` reads the process environment and nothing else), the start of the forkserver
    workers fork from (so not even `/proc/<worker>/environ` holds the runner's settings).
    Not thread-safe: call it where no other thread reads the environment meanwhile.
    """
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _redact_password(url: str) -> str:
    """`url` with its password replaced by `***`, so settings can be logged safely."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
