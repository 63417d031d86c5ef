"""SQLAlchemy engines and server-level helpers for the control plane and its sibling databases.

fabric talks to PostgreSQL through SQLAlchemy 2 with the psycopg 3 driver only. URLs written
without a driver (`postgresql://`, `postgres://`) are given the psycopg driver, because
SQLAlchemy's default for them is psycopg2, which fabric does not support.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import datetime

from sqlalchemy import URL, Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from fabric.errors import StateError

DatabaseError = DBAPIError
"""What a failed statement raises (SQLAlchemy's DBAPIError), for shell code outside state/."""

__all__ = [
    "DatabaseError",
    "client_name",
    "create_database",
    "drop_database",
    "make_control_plane_engine",
    "make_engine",
    "psycopg_url",
    "shown_url",
]

DRIVER = "postgresql+psycopg"
# NOTE: PostgreSQL silently truncates longer identifiers, which would make the "exists?" check
# of create_database look for a name that was never created.
MAX_IDENTIFIER_BYTES = 63
_DUPLICATE_DATABASE = {"42P04", "23505"}  # duplicate_database; unique_violation on a racing create


def psycopg_url(url: str | URL) -> URL:
    """Parse a PostgreSQL URL and make it use the psycopg 3 driver.

    Raises:
        StateError: the URL cannot be parsed or names another database or driver.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        # NOTE: the text may hold a password, so it is not repeated in the message.
        raise StateError(
            "The database URL cannot be parsed; expected postgresql+psycopg://user:password@host"
            ":port/database."
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername=DRIVER)
    if parsed.drivername != DRIVER:
        raise StateError(
            f"The database URL uses {parsed.drivername!r}; fabric needs PostgreSQL through "
            f"psycopg 3: write it as {DRIVER}://user:password@host:port/database."
        )
    return parsed


def shown_url(url: str | URL, *, drop_password: bool = False) -> str:
    """`url` as it may be shown to people: the password masked (`***`), or left out."""
    parsed = make_url(url) if isinstance(url, str) else url
    if drop_password:
        parsed = URL.create(
            parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database
        )
        return parsed.render_as_string()
    return parsed.render_as_string(hide_password=True)


def client_name(command: str = "apply") -> str:
    """What other sessions see as this session's application_name (names a lock holder)."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"fabric {command} {user}@{socket.gethostname()} pid {os.getpid()}"[:63]


def make_engine(url: str | URL, application_name: str = "fabric") -> Engine:
    """An engine on `url` whose connections show `application_name` in pg_stat_activity.

    pool_pre_ping makes a long-running process (scheduler, worker) survive a server restart.
    """
    return create_engine(
        psycopg_url(url),
        pool_pre_ping=True,
        connect_args={"application_name": application_name, "connect_timeout": 10},
    )


def make_control_plane_engine(url: str | URL, application_name: str = "fabric") -> Engine:
    """`make_engine` whose failure to connect is a ControlPlaneUnreachableError (a message for
    people, naming the server without its password), not a driver traceback.

    Only failures to open a connection are translated; errors of statements keep their type.
    """
    from sqlalchemy import event

    from fabric.errors import ControlPlaneUnreachableError

    engine = make_engine(url, application_name)
    shown = shown_url(engine.url, drop_password=True)

    @event.listens_for(engine, "handle_error")
    def _unreachable(ctx) -> None:  # sqlalchemy.engine.ExceptionContext
        if (
            ctx.connection is None
            and ctx.is_disconnect is not None
            and ctx.sqlalchemy_exception is not None
        ):
            first = str(ctx.original_exception).strip().splitlines()[0]
            raise ControlPlaneUnreachableError(shown, first) from None

    return engine


def create_database(url: str | URL, name: str) -> str:
    """Create database `name` on the server `url` points at, unless it exists; return its URL.

    `url` may name any existing database on that server (the maintenance database `postgres`
    is the usual choice). Safe to call concurrently: a create that loses the race is fine.
    """
    server = psycopg_url(url)
    _check_name(name)
    admin = create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not exists:
                try:
                    conn.exec_driver_sql(f"CREATE DATABASE {_quote(admin, name)}")
                except DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) not in _DUPLICATE_DATABASE:
                        raise
    finally:
        admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str | URL, name: str) -> None:
    """Drop database `name` on the server `url` points at, if it exists, closing its sessions."""
    _check_name(name)
    admin = create_engine(psycopg_url(url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {_quote(admin, name)} WITH (FORCE)")
    finally:
        admin.dispose()


def _check_name(name: str) -> None:
    if not name or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"{name!r} is not a usable database name: it must have 1 to "
            f"{MAX_IDENTIFIER_BYTES} bytes."
        )


def _quote(engine: Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote_identifier(name)


def server_identity(conn: Connection) -> tuple[str, datetime]:
    """(database name, server start time) of a session: two sessions with the same start time
    are on the same PostgreSQL server (what fabric.runner.reach compares a tenant's login
    with, to tell whether it can reach the control plane's database)."""
    name, started = conn.execute(
        text("SELECT current_database(), pg_postmaster_start_time()")
    ).one()
    return str(name), started
