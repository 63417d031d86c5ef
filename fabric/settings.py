"""Process settings from the environment; the only module that reads `os.environ`.

Everything else receives a `Settings` value, so tests build one from a plain mapping instead of
patching the environment.

Variables:
- FABRIC_DATABASE_URL: the control plane's PostgreSQL; unset means the embedded server.
- FABRIC_HOME: folder for local state (the embedded server); default `.fabric/` beside
  `fabric.yaml`. A relative path is relative to the current directory.
- FABRIC_SECRET_KEYS: comma-separated Fernet keys; the first encrypts, all decrypt (rotation).

An empty value counts as unset, because CI systems often define variables as empty strings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Settings", "load_settings", "process_environ"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What fabric reads from the environment, parsed once at the edge."""

    database_url: str | None = None
    """FABRIC_DATABASE_URL; None means "start or reuse the embedded PostgreSQL"."""
    home: Path | None = None
    """FABRIC_HOME; None means `<repository root>/.fabric`."""
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    """FABRIC_SECRET_KEYS in the given order; never shown in repr."""

    def __repr__(self) -> str:
        url = _redact_password(self.database_url) if self.database_url else None
        keys = f"<{len(self.secret_keys)} keys>"
        return f"Settings(database_url={url!r}, home={self.home!r}, secret_keys={keys})"


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Read fabric's variables from `environ` (the process environment by default)."""
    home = environ.get("FABRIC_HOME") or None
    keys = environ.get("FABRIC_SECRET_KEYS", "")
    return Settings(
        database_url=environ.get("FABRIC_DATABASE_URL") or None,
        home=Path(home).expanduser() if home else None,
        secret_keys=tuple(key.strip() for key in keys.split(",") if key.strip()),
    )


def process_environ() -> dict[str, str]:
    """A copy of the process environment, for the `${env:NAME}` references a command resolves.

    Commands take it once, at the edge, and pass it down explicitly.
    """
    return dict(os.environ)


def _redact_password(url: str) -> str:
    """`url` with its password replaced by `***`, so settings can be logged safely."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
