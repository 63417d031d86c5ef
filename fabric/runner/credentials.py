"""Decrypt a node's connections, build URLs.  [shell]

This is the only place (with fabric/state/secrets.py) that turns ciphertexts into plaintext
credentials. It runs where the secret keys are (the runner, `fabric connections test`,
`fabric compile`); workers receive resolved connections and never hold a key. Nothing here logs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from fabric.config.references import REFERENCE
from fabric.domain.runs import ResolvedConnection, StoredConnection
from fabric.errors import SecretNotFoundError

if TYPE_CHECKING:
    from sqlalchemy import URL

    from fabric.state.secrets import SecretBox


def resolve_connection(
    stored: StoredConnection,
    box: SecretBox | None,
    environ: Mapping[str, str],
) -> ResolvedConnection:
    """Decrypt every secret field into place and interpolate `${env:X}` in the other fields.

    `environ` is the caller's environment, passed explicitly (see fabric.settings): this module
    never reads the process's own.
    """
    env = environ
    spec: dict[str, Any] = copy.deepcopy(dict(stored.spec))
    values: list[str] = []
    for path, entry in sorted(stored.secrets.items()):
        if entry.get("ct") is None:
            ref = str(entry.get("ref", ""))
            name = ref.removeprefix("${secret:").removesuffix("}")
            raise SecretNotFoundError(stored.address.tenant, name)
        if box is None:
            raise RuntimeError("a secret box is needed to decrypt connection secrets")
        value = box.decrypt(f"{stored.address}#{path}", entry["ct"])
        _set_path(spec, path, value)
        values.append(value)
    spec = _interpolate(spec, env, skip=set(stored.secrets))
    return ResolvedConnection(
        stored.address.name, str(spec.get("type")), spec, tuple(v for v in values if v)
    )


def managed_connection(
    stored: StoredConnection,
    warehouse: Mapping[str, Any],
    role: str,
    password: str,
    environ: Mapping[str, str],
) -> ResolvedConnection:
    """A connection to a managed warehouse (`warehouse: dwh`): host, port and database from
    fabric.yaml's `warehouses:`, logging in as the tenant's own role. The admin login of the
    warehouse is never part of it."""
    spec: dict[str, Any] = {
        k: v for k, v in stored.spec.items() if k not in ("warehouse", "username", "password")
    }
    spec.update(
        host=warehouse["host"],
        port=warehouse.get("port") or 5432,
        database=warehouse["database"],
        username=role,
    )
    spec = _interpolate(spec, environ, skip=set())
    spec["password"] = password
    return ResolvedConnection(stored.address.name, "postgres", spec, (password,))


def _set_path(target: dict[str, Any], path: str, value: str) -> None:
    parts = path.split(".")
    node: Any = target
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def _interpolate(value: Any, env: Mapping[str, str], skip: set[str], path: str = "") -> Any:
    """`${env:X}` inside non-secret strings (e.g. a host) is read from the worker's env."""
    if isinstance(value, dict):
        return {
            k: _interpolate(v, env, skip, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, env, skip, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str) and path not in skip and "${env:" in value:

        def sub(match: re.Match[str]) -> str:
            if match.group(1) != "env":
                return match.group(0)
            if match.group(2) not in env:
                raise SecretNotFoundError("(environment)", match.group(2))
            return env[match.group(2)]

        return REFERENCE.sub(sub, value)
    return value


DRIVERS = {"postgres": "postgresql+psycopg", "mysql": "mysql+pymysql", "mssql": "mssql+pyodbc"}
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306, "mssql": 1433}


def sqlalchemy_url(
    conn: ResolvedConnection, repo_root: str | Path = ".", *, tenant: str | None = None
) -> URL:
    """The SQLAlchemy URL of a SQL connection (postgres, mysql, mssql, sqlite).

    A sqlite file must lie in `tenant`'s data folder (fabric.runner.local_files), and a `url`
    must name the connection's own database type: a postgres connection whose url is
    `sqlite:///...` would open any file of this machine.

    Raises:
        LocalPathError: the sqlite file or the url's type is not allowed for this tenant.
    """
    from sqlalchemy.engine import URL, make_url

    from fabric.runner.local_files import LocalPathError, sqlite_file

    spec = conn.spec
    if conn.type == "sqlite":
        if tenant is None:
            raise LocalPathError("a sqlite connection is opened only for its tenant")
        return URL.create(
            "sqlite", database=str(sqlite_file(spec["path"], tenant, Path(repo_root)))
        )
    if spec.get("url"):
        url = make_url(spec["url"])
        expected = DRIVERS.get(conn.type, "").split("+")[0]
        if url.get_backend_name() not in (
            expected,
            "postgres" if expected == "postgresql" else expected,
        ):
            raise LocalPathError(
                f"connection {conn.name!r} is of type {conn.type} but its url names a "
                f"{url.get_backend_name()} database; give a {expected} url"
            )
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername=DRIVERS["postgres"])
        return url
    query: dict[str, str] = {k: str(v) for k, v in (spec.get("options") or {}).items()}
    if conn.type == "mssql":
        query.setdefault("driver", spec.get("driver") or "ODBC Driver 18 for SQL Server")
    return URL.create(
        DRIVERS[conn.type],
        username=spec.get("username"),
        password=spec.get("password"),
        host=spec.get("host"),
        port=int(spec.get("port") or DEFAULT_PORTS[conn.type]),
        database=spec.get("database"),
        query=query,
    )


def url_text(url: URL) -> str:
    """`url` as text, password included, with spaces in its query written `%20`.

    NOTE: SQLAlchemy writes a space in a query value as `+`, which libpq's URIs (dlt's ADBC
    copy) and connectorx read literally: `options=-c+search_path%3D...` fails to connect
    ("unrecognized configuration parameter "+search_path""). A `+` of the value itself is
    written `%2B`, so every `+` of the rendered query is a space.
    """
    text = url.render_as_string(hide_password=False)
    base, sep, query = text.partition("?")
    return base + sep + query.replace("+", "%20")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value (and its URL-encoded forms) in `text` with ***."""
    for value in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        for form in {value, quote(value, safe=""), quote_plus(value)}:
            text = text.replace(form, "***")
    return text
