"""Test a tenant's applied connections: open each one, report ok or the server's error.  [shell]

What `fabric connections test` runs. Per connection type:

- postgres, mysql, mssql, sqlite: SQLAlchemy connect, `SELECT 1`, the server's version;
  a PostgreSQL session is pinned (fabric.runner.sessions: search_path pg_catalog, the
  settings' timeouts) and, given a ReachScope, asked in one more query what the login can
  reach beyond its tenant (fabric.runner.reach): the check's `warning`;
- rest_api: an HTTP GET (the first plain GET resource, else the base URL) with the
  connection's auth and headers; any status below 500 is ok, except 401/403;
- filesystem: list the bucket URL with the file glob (local folders directly, cloud URLs
  through fsspec) and count the matching files.

Invariants:
- Connections come from the control plane (what was applied) and are decrypted here with the
  secret box; the YAML is never read.
- No secret leaves this module: every message goes through `redact` with the connection's
  secret values and the forms drivers echo them in (URL-encoded, libpq-quoted, basic-auth).
- A check never raises: library exceptions stop here and become a failed ConnectionCheck
  (STYLE rule 13).
- Checks run concurrently, each bounded by its timeout: the driver's own timeouts first, then
  a deadline here, after which the check is reported as timed out and abandoned.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from fabric.config.destinations import filesystem_target
from fabric.domain.runs import ResolvedConnection, SessionLimits
from fabric.errors import FabricError, SecretDecryptError, SecretNotFoundError
from fabric.runner.credentials import resolve_connection
from fabric.runner.failures import describe, redact
from fabric.runner.local_files import LocalPathError, inside, source_folder, tenant_root
from fabric.runner.reach import Reach, ReachScope, reach_warning
from fabric.runner.sessions import with_session_options

if TYPE_CHECKING:
    from fabric.domain.runs import StoredConnection
    from fabric.state.applied import AppliedTenant
    from fabric.state.secrets import SecretBox

__all__ = [
    "DEFAULT_TIMEOUT",
    "ConnectionCheck",
    "UnknownConnectionError",
    "check_connections",
    "check_reach",
    "probe_reach",
    "selected_connections",
]

DEFAULT_TIMEOUT = 10.0
"""Seconds one check may take (connect, query or request)."""
MAX_WORKERS = 8
"""Checks running at once; connections are independent, but a tenant may have many."""
GRACE_SECONDS = 1.0
"""Extra time a check gets past its timeout before it is abandoned: drivers round timeouts up
to whole seconds, and their own message says more than ours."""
MAX_DETAIL = 600
"""Characters of a server's message kept in a detail."""
APPLICATION_NAME = "fabric connections test"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionCheck:
    """The outcome of testing one connection; holds no secret."""

    name: str
    type: str
    direction: str
    ok: bool
    detail: str
    """Ok: what answered (server version, round trip, files found). Failed: the server's or
    the library's message, redacted, on one line."""
    seconds: float
    """Wall time of the check (the deadline, for a check that was abandoned)."""
    warning: str | None = None
    """What the login can reach beyond its tenant (fabric.runner.reach), when asked; no
    secret."""


class UnknownConnectionError(FabricError):
    """Connections named on the command line that the tenant has not applied."""

    def __init__(self, tenant: str, names: Sequence[str], known: Sequence[str]) -> None:
        self.tenant = tenant
        self.names: tuple[str, ...] = tuple(names)
        self.known: tuple[str, ...] = tuple(known)
        from fabric.diagnostics import did_you_mean

        listed = ", ".join(repr(n) for n in self.names)
        hint = did_you_mean(self.names[0], self.known) if len(self.names) == 1 else None
        if hint is None:
            hint = f"Applied: {', '.join(self.known)}." if self.known else "It has none."
        super().__init__(f"Tenant {tenant!r} has no applied connection {listed}. {hint}")


EMPTY_ENVIRON: Mapping[str, str] = MappingProxyType({})


class _Failed(Exception):
    """A check's expected failure; its message is the detail (redacted by the caller)."""


# ---------------------------------------------------------------------------------------------
# entry points


def check_connections(
    applied_tenant: AppliedTenant,
    names: Sequence[str] = (),
    *,
    box: SecretBox | None,
    repo_root: str | Path,
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] = EMPTY_ENVIRON,
    stored_secrets: Collection[str] = (),
    max_workers: int = MAX_WORKERS,
    managed: Mapping[str, ResolvedConnection] = EMPTY_ENVIRON,  # type: ignore[assignment]
    session: SessionLimits | None = None,
    reach: ReachScope | None = None,
) -> list[ConnectionCheck]:
    """Open each connection (all, or `names`) concurrently; one result per connection, by name.

    Args:
        box: decrypts secret fields; None is fine when no chosen connection has one.
        repo_root: what relative paths (a sqlite file, a local folder) are relative to.
        timeout: seconds per check; a check still running `GRACE_SECONDS` later is reported
            as timed out.
        environ: for `${env:X}` in connection fields (the caller's environment, explicitly).
        stored_secrets: names in the tenant's secret store, to tell "never set" from "set
            after the last apply" when a `${secret:X}` has no value.
        managed: connections to managed warehouses, already resolved to the tenant's role.
        session: timeouts of the PostgreSQL sessions opened (default SessionLimits()).
        reach: what a PostgreSQL login is checked against (None: not checked).

    Raises:
        UnknownConnectionError: a name the tenant has not applied.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    chosen = selected_connections(applied_tenant, names)
    tenant = applied_tenant.tenant.slug
    root = Path(repo_root)
    probe = _Probe(timeout, session or SessionLimits(), reach)
    tasks = [
        _bind(
            stored,
            tenant,
            box,
            root,
            probe,
            environ,
            frozenset(stored_secrets),
            managed.get(stored.address.name),
        )
        for stored in chosen
    ]
    timed_out = [_timed_out(stored, timeout) for stored in chosen]
    return _run_bounded(tasks, timed_out, workers=max_workers, limit=timeout + GRACE_SECONDS)


def check_reach(
    targets: Sequence[tuple[AppliedTenant, str, ReachScope]],
    *,
    box: SecretBox | None,
    repo_root: str | Path,
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] = EMPTY_ENVIRON,
    session: SessionLimits | None = None,
    max_workers: int = MAX_WORKERS,
) -> list[tuple[str, ConnectionCheck]]:
    """Check (tenant's applied connection `name`, against its scope) for every target, side by
    side across tenants, all within one deadline; (tenant, check) in the targets' order. What
    `fabric apply` runs for the connections it changed."""
    root = Path(repo_root)
    limits = session or SessionLimits()
    tasks, timed_out, tenants = [], [], []
    for applied, name, scope in targets:
        stored = applied.connections[name]
        tenant = applied.tenant.slug
        probe = _Probe(timeout, limits, scope)
        tasks.append(_bind(stored, tenant, box, root, probe, environ, frozenset()))
        timed_out.append(_timed_out(stored, timeout))
        tenants.append(tenant)
    checks = _run_bounded(tasks, timed_out, workers=max_workers, limit=timeout + GRACE_SECONDS)
    return list(zip(tenants, checks, strict=True))


def selected_connections(applied: AppliedTenant, names: Sequence[str]) -> list[StoredConnection]:
    known = sorted(applied.connections)
    missing = [n for n in dict.fromkeys(names) if n not in applied.connections]
    if missing:
        raise UnknownConnectionError(applied.tenant.slug, missing, known)
    wanted = sorted(set(names)) if names else known
    return [applied.connections[n] for n in wanted]


@dataclass(frozen=True, slots=True)
class _Probe:
    """How each connection is checked."""

    timeout: float
    session: SessionLimits
    reach: ReachScope | None


def _bind(
    stored: StoredConnection,
    tenant: str,
    box: SecretBox | None,
    root: Path,
    probe: _Probe,
    environ: Mapping[str, str],
    stored_secrets: frozenset[str],
    resolved: ResolvedConnection | None = None,
) -> Callable[[], ConnectionCheck]:
    return lambda: _check_one(stored, tenant, box, root, probe, environ, stored_secrets, resolved)


def _timed_out(stored: StoredConnection, timeout: float) -> ConnectionCheck:
    return ConnectionCheck(
        name=stored.address.name,
        type=str(stored.spec.get("type")),
        direction=_direction(stored.spec),
        ok=False,
        detail=f"timed out: no answer within {_seconds(timeout)}",
        seconds=round(timeout + GRACE_SECONDS, 3),
    )


def _direction(spec: Mapping[str, Any]) -> str:
    return str(spec.get("direction") or "source")


def _seconds(value: float) -> str:
    return f"{value:g}s"


# ---------------------------------------------------------------------------------------------
# running checks side by side


def _run_bounded(
    tasks: Sequence[Callable[[], ConnectionCheck]],
    on_timeout: Sequence[ConnectionCheck],
    *,
    workers: int,
    limit: float,
) -> list[ConnectionCheck]:
    """Run `tasks` at most `workers` at a time; a task running longer than `limit` seconds
    gets its `on_timeout` result and loses its slot. Results come back in the tasks' order.

    NOTE: not concurrent.futures.ThreadPoolExecutor: its threads are joined when the
    interpreter exits, so a driver call stuck past its own timeout would keep `fabric` from
    exiting after it printed the report. These threads are daemons; an abandoned one dies
    with the process.
    """
    results: dict[int, ConnectionCheck] = {}
    started: dict[int, float] = {}
    pending = deque(range(len(tasks)))
    bugs: list[BaseException] = []
    done = threading.Condition()

    def run(index: int) -> None:
        try:
            result = tasks[index]()
        except BaseException as exc:  # a bug, not a failed check: re-raised below
            with done:
                bugs.append(exc)
                done.notify_all()
            return
        with done:
            results.setdefault(index, result)
            done.notify_all()

    with done:
        while len(results) < len(tasks):
            if bugs:
                raise bugs[0]
            running = [i for i in started if i not in results]
            while pending and len(running) < max(1, workers):
                index = pending.popleft()
                started[index] = time.monotonic()
                running.append(index)
                threading.Thread(
                    target=run, args=(index,), name=f"fabric-check-{index}", daemon=True
                ).start()
            now = time.monotonic()
            for index in running:
                if now - started[index] >= limit:
                    results[index] = on_timeout[index]
            waits = [started[i] + limit - now for i in running if i not in results]
            if waits:
                done.wait(timeout=max(0.01, min(waits)))
    return [results[i] for i in range(len(tasks))]


# ---------------------------------------------------------------------------------------------
# one connection


def _check_one(
    stored: StoredConnection,
    tenant: str,
    box: SecretBox | None,
    root: Path,
    probe: _Probe,
    environ: Mapping[str, str],
    stored_secrets: frozenset[str],
    managed: ResolvedConnection | None = None,
) -> ConnectionCheck:
    started = time.perf_counter()
    timeout = probe.timeout
    kind = str(stored.spec.get("type"))
    secrets: tuple[str, ...] = ()
    warning: str | None = None
    try:
        if stored.spec.get("warehouse") and managed is None:
            raise _Failed(
                "its managed warehouse role is not set up (no stored password): run fabric apply"
            )
        resolved = managed or _resolve(stored, tenant, box, environ, stored_secrets)
        secrets = _secret_forms(resolved, root)
        match kind:
            case "postgres" | "mysql" | "mssql" | "sqlite":
                detail, reach = _check_sql(resolved, root, probe, tenant)
                if reach is not None:
                    warning = reach_warning(stored.address.name, reach)
            case "rest_api":
                detail = _check_rest_api(resolved, timeout)
            case "filesystem":
                detail = _check_filesystem(resolved, root, timeout, tenant)
            case _:
                raise _Failed(f"fabric cannot test connections of type {kind!r}")
        ok = True
    except (_Failed, LocalPathError) as exc:
        ok, detail = False, str(exc)
    except Exception as exc:  # library errors stop here (rule 13); the message is redacted
        ok, detail = False, describe(exc)
    return ConnectionCheck(
        name=stored.address.name,
        type=kind,
        direction=_direction(stored.spec),
        ok=ok,
        detail=_one_line(redact(detail, secrets)),
        seconds=round(time.perf_counter() - started, 3),
        warning=redact(warning, secrets) if warning else None,
    )


def _resolve(
    stored: StoredConnection,
    tenant: str,
    box: SecretBox | None,
    environ: Mapping[str, str],
    stored_secrets: frozenset[str],
) -> ResolvedConnection:
    if box is None and any(e.get("ct") is not None for e in stored.secrets.values()):
        raise _Failed("its secret fields cannot be decrypted: no secret keys were given")
    try:
        return resolve_connection(stored, box, environ)
    except SecretNotFoundError as exc:
        if exc.tenant == "(environment)":
            raise _Failed(
                f"environment variable {exc.name} is not set (the connection's "
                f"${{env:{exc.name}}} needs it)"
            ) from None
        if exc.name in stored_secrets:
            raise _Failed(
                f"secret {exc.name} was stored after the last apply: run `fabric apply` so "
                "the connection uses it"
            ) from None
        raise _Failed(
            f"secret {exc.name} is not set: fabric secrets set {tenant} {exc.name}"
        ) from None
    except SecretDecryptError as exc:
        raise _Failed(str(exc)) from None


def _secret_forms(conn: ResolvedConnection, root: Path) -> tuple[str, ...]:
    """The secret values and the other forms a driver may echo them in."""
    forms = set(conn.secret_values)  # `redact` adds each value's escaped and encoded forms
    spec = conn.spec
    if conn.type in ("postgres", "mysql", "mssql") and conn.secret_values:
        try:
            url = _sql_url(conn, root)
        except Exception:
            url = None
        if url is not None and url.password:
            password = str(url.password)
            forms.add(password)
            rendered = url.render_as_string(hide_password=False)
            forms.add(rendered)
            # SQLAlchemy's own escaping of the password inside a rendered URL.
            if match := re.search(r"^[^:]+://[^:@/]*:(.*)@[^@]*$", rendered):
                forms.add(match.group(1))
    auth = spec.get("auth") or {}
    if conn.type == "rest_api" and auth.get("type") == "http_basic":
        pair = f"{auth.get('username', '')}:{auth.get('password', '')}"
        forms.add(base64.b64encode(pair.encode()).decode())
    return tuple(f for f in forms if f)


# ---------------------------------------------------------------------------------------------
# SQL databases

_VERSION_SQL = {
    "postgresql": ("PostgreSQL", "SELECT current_setting('server_version')"),
    "mysql": ("MySQL", "SELECT VERSION()"),
    "mssql": ("SQL Server", "SELECT CAST(SERVERPROPERTY('ProductVersion') AS VARCHAR(128))"),
    "sqlite": ("SQLite", "SELECT sqlite_version()"),
}


def _sql_url(conn: ResolvedConnection, root: Path, tenant: str | None = None) -> Any:
    from fabric.runner.credentials import sqlalchemy_url

    return sqlalchemy_url(conn, root, tenant=tenant)


def _check_sql(
    conn: ResolvedConnection, root: Path, probe: _Probe, tenant: str
) -> tuple[str, Reach | None]:
    """(ok detail, what the login reaches: PostgreSQL with a scope only, else None)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import NoSuchModuleError
    from sqlalchemy.pool import NullPool

    timeout = probe.timeout
    url = _sql_url(conn, root, tenant)  # a sqlite file: only in the tenant's data folder
    backend = url.get_backend_name()
    if backend == "sqlite":
        missing = _missing_sqlite_file(conn, Path(url.database or ""))
        if missing is not None:
            return missing, None
    if url.drivername == "mssql+pyodbc":
        _require_odbc_driver(url.query.get("driver"))
    args = _connect_args(backend, url.query, timeout)
    if backend == "postgresql":
        args["options"] = with_session_options(url.query.get("options"), None, probe.session)
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=args)
    except (ImportError, NoSuchModuleError) as exc:
        raise _Failed(
            f"driver not available: {url.drivername} cannot be loaded here ({exc})"
        ) from None
    product, version_sql = _VERSION_SQL.get(backend, (backend, None))
    try:
        with _timeout_noted(timeout), engine.connect() as db:
            started = time.perf_counter()
            db.execute(text("SELECT 1")).scalar_one()
            round_trip = time.perf_counter() - started
            version = str(db.execute(text(version_sql)).scalar()) if version_sql else "?"
            tables = None
            if backend == "sqlite":
                # Reads the file's header: fails on a file that is not an SQLite database.
                tables = db.execute(
                    text("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
                ).scalar_one()
            reach = (
                probe_reach(db, probe.reach)
                if backend == "postgresql" and probe.reach is not None
                else None
            )
    finally:
        engine.dispose()
    if backend == "mysql" and "mariadb" in version.lower():
        product, version = "MariaDB", version.split("-")[0]
    detail = f"{product} {version}; SELECT 1 in {round_trip * 1000:.1f} ms"
    if tables is not None:
        detail += f"; {tables} table{'s' if tables != 1 else ''}"
    return detail, reach


_REACH_SQL = """
SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),
       ARRAY(SELECT n.nspname::text FROM pg_namespace n
             WHERE n.nspname = ANY(CAST(:schemas AS text[]))
               AND has_schema_privilege(n.oid, 'USAGE')
             ORDER BY 1),
       pg_postmaster_start_time() = CAST(:control_started AS timestamptz)
       AND EXISTS (SELECT 1 FROM pg_database d
                   WHERE d.datname = :control_db AND has_database_privilege(d.oid, 'CONNECT'))
"""


def probe_reach(db: Any, scope: ReachScope) -> Reach:
    """What the session's login can reach beyond its tenant, in one query (`db`: a SQLAlchemy
    connection opened with the tenant's credentials)."""
    from sqlalchemy import text

    superuser, schemas, control = db.execute(
        text(_REACH_SQL),
        {
            "schemas": list(scope.other_schemas),
            "control_db": scope.control_database,
            "control_started": scope.control_started,
        },
    ).one()
    return Reach(
        superuser=bool(superuser),
        schemas=tuple(schemas or ()),
        control_database=scope.control_database if control else None,
    )


@contextlib.contextmanager
def _timeout_noted(timeout: float) -> Iterator[None]:
    """Say how long was waited when a driver gives up with a bare "timeout expired"."""
    try:
        yield
    except Exception as exc:
        message = describe(exc)
        cause = getattr(exc, "orig", None) or exc
        if "timeout" in type(cause).__name__.lower() or "timed out" in message.lower():
            raise _Failed(f"{message} (no answer within {_seconds(timeout)})") from None
        raise


def _connect_args(backend: str, query: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Driver timeouts, unless the connection's own options set them."""
    whole = max(1, math.ceil(timeout))
    match backend:
        case "postgresql":  # psycopg: libpq parameters
            args: dict[str, Any] = {"connect_timeout": whole, "application_name": APPLICATION_NAME}
        case "mysql":  # pymysql: the handshake is read under read_timeout
            args = {"connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout}
        case "mssql":  # pyodbc: the login timeout
            args = {"timeout": whole}
        case "sqlite":  # how long to wait for another writer's lock
            args = {"timeout": timeout}
        case _:
            args = {}
    return {k: v for k, v in args.items() if k not in query}


def _missing_sqlite_file(conn: ResolvedConnection, path: Path) -> str | None:
    """None when the file exists; for a destination that will create it, the ok detail.

    Connecting would create a missing file, so a test must look first.
    """
    if path.is_file():
        return None
    if path.exists():
        raise _Failed(f"{path} is not a file")
    if _direction(conn.spec) == "source":
        raise _Failed(f"database file {path} does not exist")
    parent = _nearest_existing(path.parent)
    if not os.access(parent, os.W_OK):
        raise _Failed(f"database file {path} does not exist and {parent} is not writable")
    return f"database file {path} does not exist yet; the first load will create it"


def _require_odbc_driver(driver: str | None) -> None:
    try:
        import pyodbc  # type: ignore[import-not-found]
    except ImportError:
        raise _Failed(
            "driver not available: the pyodbc package is not installed here (SQL Server "
            f"needs pyodbc and the ODBC driver {driver!r})"
        ) from None
    installed = pyodbc.drivers()
    if driver and driver not in installed:
        shown = ", ".join(repr(d) for d in installed) or "none"
        raise _Failed(
            f"driver not available: the ODBC driver {driver!r} is not installed here "
            f"(installed: {shown})"
        )


# ---------------------------------------------------------------------------------------------
# REST APIs


def _probe_target(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL and query to GET: the first GET resource without path placeholders (so the
    auth is tried on an endpoint that exists), else the base URL."""
    base = str(spec["base_url"])
    for resource in spec.get("resources") or ():
        path = str(resource.get("path", ""))
        if resource.get("method", "GET") == "GET" and "{" not in path:
            if urlsplit(path).scheme:
                return path, dict(resource.get("params") or {})
            return f"{base.rstrip('/')}/{path.lstrip('/')}", dict(resource.get("params") or {})
    return base, {}


def _check_rest_api(conn: ResolvedConnection, timeout: float) -> str:
    import requests

    spec = conn.spec
    url, params = _probe_target(spec)
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    cookies: dict[str, str] = {}
    basic: tuple[str, str] | None = None
    auth = spec.get("auth") or {}
    match auth.get("type"):
        case None:
            pass
        case "bearer":
            headers["Authorization"] = f"Bearer {auth['token']}"
        case "api_key":
            name, key = str(auth.get("name") or "Authorization"), str(auth["api_key"])
            match auth.get("location", "header"):
                case "query":
                    params[name] = key
                case "cookie":
                    cookies[name] = key
                case _:
                    headers[name] = key
        case "http_basic":
            basic = (str(auth["username"]), str(auth["password"]))
        case other:
            raise _Failed(f"fabric cannot test auth of type {other!r}")
    shown = _without_query(url)
    started = time.perf_counter()
    try:
        with (
            requests.Session() as session,
            session.get(
                url,
                params=params,
                headers=headers,
                cookies=cookies,
                auth=basic,
                timeout=(timeout, timeout),
                stream=True,  # the status is enough; never download a large body
            ) as response,
        ):
            status, reason = response.status_code, response.reason or ""
    except requests.exceptions.ConnectTimeout:
        raise _Failed(f"GET {shown}: could not connect within {_seconds(timeout)}") from None
    except requests.exceptions.ReadTimeout:
        raise _Failed(f"GET {shown}: no response within {_seconds(timeout)}") from None
    except requests.exceptions.RequestException as exc:
        raise _Failed(f"GET {shown}: {_root_reason(exc)}") from None
    elapsed = (time.perf_counter() - started) * 1000
    answer = f"HTTP {status} {reason}".rstrip()
    if status in (401, 403):
        raise _Failed(f"authentication rejected: {answer} from GET {shown}")
    if status >= 500:
        raise _Failed(f"server error: {answer} from GET {shown}")
    return f"{answer} from GET {shown} in {elapsed:.0f} ms"


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]  # never show user:password@
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _root_reason(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without object reprs."""
    reason: BaseException = exc
    for _ in range(10):
        inner = getattr(reason, "reason", None)
        if not isinstance(inner, BaseException) and reason.args:
            inner = reason.args[0] if isinstance(reason.args[0], BaseException) else None
        if not isinstance(inner, BaseException) or inner is reason:
            break
        reason = inner
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>:?\s*", "", str(reason))
    return text or type(reason).__name__


# ---------------------------------------------------------------------------------------------
# files


def _check_filesystem(conn: ResolvedConnection, root: Path, timeout: float, tenant: str) -> str:
    spec = conn.spec
    url = str(spec["bucket_url"])
    pattern = str(spec.get("file_glob") or "*")
    destination = _direction(spec) == "destination"
    local = _local_path(url, root, tenant, pattern, destination=destination)
    if local is not None:
        own = tenant_root(Path(os.path.realpath(root)), tenant)
        return _check_local(local, pattern, destination=destination, own=own)
    return _check_remote(url, pattern, spec.get("credentials") or {}, timeout)


def _local_path(
    url: str, root: Path, tenant: str, pattern: str, *, destination: bool
) -> Path | None:
    """The real folder of a local bucket URL (in the tenant's data folder), or None for a
    remote URL; a path the tenant may not read or write is a LocalPathError (the rules of
    fabric.config.destinations, symlinks followed)."""
    if destination:
        real = Path(os.path.realpath(root))
        target, problem = filesystem_target(url, tenant, real.as_posix())
        if target is None:
            raise LocalPathError(f"tenant {tenant} may not write to bucket_url {url!r}: {problem}")
        if target.kind != "local":
            return None
        return inside(tenant_root(real, tenant), real / target.path, target.path)
    _, folder = source_folder(url, tenant, root, pattern)
    return folder


def _check_local(folder: Path, pattern: str, *, destination: bool, own: Path) -> str:
    if not folder.exists():
        if not destination:
            raise _Failed(f"folder {folder} does not exist")
        parent = _nearest_existing(folder)
        if not os.access(parent, os.W_OK):
            raise _Failed(f"folder {folder} does not exist and {parent} is not writable")
        return f"folder {folder} does not exist yet; the first load will create it"
    if not folder.is_dir():
        raise _Failed(f"{folder} is not a folder")
    if destination and not os.access(folder, os.W_OK):
        raise _Failed(f"folder {folder} is not writable")
    matched = [p for p in folder.glob(pattern) if p.is_file()]
    for path in matched:  # a link in the folder must not lead out of the tenant's folder
        inside(own, path, path.relative_to(folder).as_posix())
    count = len(matched)
    return f"{_files(count)} match {pattern!r} in {folder}"


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _files(count: int) -> str:
    return f"{count} file{'s' if count != 1 else ''}" if count else "no files"


# dlt's credential names (what a connection's `credentials:` holds) -> fsspec's arguments.
_S3_OPTIONS = {
    "aws_access_key_id": "key",
    "aws_secret_access_key": "secret",
    "aws_session_token": "token",
    "profile_name": "profile",
    "endpoint_url": "endpoint_url",
}
_AZURE_OPTIONS = {
    "azure_storage_account_name": "account_name",
    "azure_storage_account_key": "account_key",
    "azure_storage_sas_token": "sas_token",
    "azure_client_id": "client_id",
    "azure_client_secret": "client_secret",
    "azure_tenant_id": "tenant_id",
}
_CREDENTIAL_HINTS = {
    "s3": "aws_access_key_id and aws_secret_access_key",
    "gs": "project_id, client_email and private_key",
    "gcs": "project_id, client_email and private_key",
    "az": "azure_storage_account_name and azure_storage_account_key",
    "abfs": "azure_storage_account_name and azure_storage_account_key",
    "abfss": "azure_storage_account_name and azure_storage_account_key",
}


def _fsspec_options(
    protocol: str, credentials: Mapping[str, Any], timeout: float
) -> dict[str, Any]:
    creds = {str(k): v for k, v in credentials.items()}
    if protocol in ("s3", "s3a"):
        options: dict[str, Any] = {_S3_OPTIONS.get(k, k): v for k, v in creds.items()}
        if region := options.pop("region_name", None):
            options["client_kwargs"] = {"region_name": region}
        options["config_kwargs"] = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": 1},
        }
        return options
    if protocol in ("az", "abfs", "abfss"):
        return {_AZURE_OPTIONS.get(k, k): v for k, v in creds.items()}
    if protocol in ("gs", "gcs") and {"client_email", "private_key"} <= set(creds):
        token = {"type": "service_account", **creds}
        return {"project": creds.get("project_id"), "token": token}
    return creds


def _check_remote(url: str, pattern: str, credentials: Mapping[str, Any], timeout: float) -> str:
    import fsspec

    protocol = urlsplit(url).scheme.lower()
    try:
        fs_class = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise _Failed(f"protocol {protocol}:// is not supported (unknown to fsspec)") from None
    except ImportError as exc:
        raise _Failed(
            f"protocol {protocol}:// is not supported here: a package it needs is not "
            f"installed ({exc})"
        ) from None
    base = str(fs_class._strip_protocol(url)).rstrip("/")
    try:
        fs = fs_class(skip_instance_cache=True, **_fsspec_options(protocol, credentials, timeout))
        found = fs.glob(f"{base}/{pattern}", detail=True)
        count = sum(1 for info in found.values() if info.get("type") != "directory")
        if not count and not fs.exists(base):
            raise _Failed(f"{url} does not exist")
    except _Failed:
        raise
    except Exception as exc:
        raise _Failed(_remote_error(exc, protocol, url)) from None
    return f"{_files(count)} match {pattern!r} in {url}"


def _remote_error(exc: BaseException, protocol: str, url: str) -> str:
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError") or (
        name == "ValueError" and "credential" in str(exc).lower()
    ):
        needed = _CREDENTIAL_HINTS.get(protocol, "the protocol's credentials")
        return (
            f"missing credentials for {protocol}://: set {needed} under the connection's "
            "credentials"
        )
    if isinstance(exc, PermissionError) or name == "AccessDenied":
        return f"access denied to {url}: {describe(exc)}"
    if isinstance(exc, FileNotFoundError):
        return f"{url} does not exist"
    return describe(exc)


# ---------------------------------------------------------------------------------------------
# messages


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."
