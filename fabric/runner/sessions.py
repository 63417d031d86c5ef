"""What every PostgreSQL session fabric opens on a tenant's behalf is pinned to.  [pure]

dlt loads, dbt runs, SQL sources and connection probes all open sessions with the tenant's
credentials on a warehouse or source that other tenants may share. Each such session starts
with libpq `options`:

- `search_path=pg_catalog,<schema in use>`: built-ins resolve first, so a function or operator
  someone planted in a schema on the path (`acme_raw.lower(text)`) never shadows one of
  PostgreSQL's (a planted one with *other* argument types can still win: PostgreSQL compares
  candidates by argument types across the whole path, so only the schema in use is on it);
- `statement_timeout` / `lock_timeout` from fabric's settings (FABRIC_WAREHOUSE_*), so one
  statement cannot run, or wait for a lock, for ever. 0 leaves the server's own setting.

Options are appended after the connection's own (`options: {options: ...}`), and PostgreSQL
applies the last `-c` of a name, so a connection cannot undo them at connect time.
"""

from __future__ import annotations

import re

from fabric.domain.runs import SessionLimits

__all__ = ["SessionLimits", "session_options", "with_session_options"]

_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def session_options(schema: str | None, limits: SessionLimits) -> str:
    """libpq `options` pinning search_path to pg_catalog then `schema` (pg_catalog alone when
    None) and setting the timeouts of `limits`.

    Raises:
        ValueError: `schema` is not a plain identifier (every schema fabric uses is one).
    """
    if schema is not None and not _SCHEMA.fullmatch(schema):
        raise ValueError(f"{schema!r} is not a schema name fabric pins a session to")
    if schema is None or schema == "pg_catalog":
        path = "pg_catalog"
    else:
        name = schema if schema == schema.lower() else f'"{schema}"'  # as it was created
        path = f"pg_catalog,{name}"
    parts = [f"-c search_path={path}"]
    if limits.statement_timeout:
        parts.append(f"-c statement_timeout={limits.statement_timeout}s")
    if limits.lock_timeout:
        parts.append(f"-c lock_timeout={limits.lock_timeout}s")
    return " ".join(parts)


def with_session_options(existing: str | None, schema: str | None, limits: SessionLimits) -> str:
    """The connection's own `options` (if any) followed by fabric's, which therefore win."""
    own = session_options(schema, limits)
    return f"{existing.strip()} {own}" if existing and existing.strip() else own
