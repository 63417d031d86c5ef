"""Database fixtures: a real PostgreSQL for shell tests, isolated per session and per test.

The server is FABRIC_TEST_DATABASE_URL when set (any database on it; e.g.
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`), else fabric's own embedded server,
kept in the pytest cache folder (its data is reused; starting it takes about a second).
Sessions share it while they overlap (each holds a shared lock on a file beside it); the last
one out stops it, so nothing is left running. Each pytest-xdist worker has its own.

Isolation:
- the session creates its own database `fabric_test_<random>` and drops it at the end, so
  concurrent sessions (two terminals, CI jobs sharing a server) never meet;
- `db_schema` gives each test a fresh schema and drops it afterwards, so tests run in any order;
- `make_database` gives a test whole databases (a demo warehouse, a source), dropped afterwards.

Only objects created here are dropped; nothing else on the server is touched.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from fabric.state.embedded import ensure_server, stop_server
from fabric.state.engine import create_database, drop_database, make_engine, psycopg_url


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def _embedded_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    **options: Any,
) -> Iterator[str]:
    """An embedded server kept in the pytest cache folder `name`, shared by overlapping
    sessions; the last session out stops it.

    Each pytest-xdist worker has a server of its own (`name-gw0`, ...): two workers on one
    server wait on each other's CREATE and DROP DATABASE (measured: 9 min for the suite on one
    shared server, 7 min on one server each)."""
    if worker := os.environ.get("PYTEST_XDIST_WORKER"):
        name = f"{name}-{worker}"
    cache = getattr(request.config, "cache", None)  # absent under `-p no:cacheprovider`
    if cache is not None:
        home = Path(cache.mkdir(name))
        with open(home.parent / f"{name}.sessions", "a") as sessions:
            fcntl.flock(sessions, fcntl.LOCK_SH)  # this session uses the server
            server = ensure_server(home, **options)
            yield server.tcp_url()
            fcntl.flock(sessions, fcntl.LOCK_UN)
            try:  # the last session out stops it: leave nothing running
                fcntl.flock(sessions, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another session still uses it; it stops it when it ends
            stop_server(server.home)
        return
    home = tmp_path_factory.mktemp(name)  # nothing to reuse it: stop it after
    yield ensure_server(home, **options).tcp_url()
    stop_server(home)


@pytest.fixture(scope="session")
def pg_server_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """URL of a database on the test server, to create other databases from.

    The embedded server is reached over TCP, like FABRIC_TEST_DATABASE_URL usually is, so tools
    that cannot use a unix socket (connectorx, dlt) work with every fixture URL.
    """
    if url := os.environ.get("FABRIC_TEST_DATABASE_URL"):
        yield psycopg_url(url).render_as_string(hide_password=False)
        return
    yield from _embedded_server(request, tmp_path_factory, "fabric-postgres")


@pytest.fixture(scope="session")
def stock_pg_server_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Like pg_server_url, on a server with PostgreSQL's default settings, as a managed server
    has them: above all `max_locks_per_transaction` 64 (fabric's embedded server raises it).

    FABRIC_TEST_STOCK_DATABASE_URL names one; else a second embedded server is started with the
    defaults. Tests check the setting, so a wrong server cannot make them pass.
    """
    if url := os.environ.get("FABRIC_TEST_STOCK_DATABASE_URL"):
        yield psycopg_url(url).render_as_string(hide_password=False)
        return
    yield from _embedded_server(
        request, tmp_path_factory, "fabric-postgres-stock", max_locks_per_transaction=None
    )


@pytest.fixture
def stock_database(stock_pg_server_url: str) -> Iterator[str]:
    """A fresh database on the stock server (see stock_pg_server_url), dropped after the test."""
    name = _unique("fabric_test_stock")
    url = create_database(stock_pg_server_url, name)
    yield url
    drop_database(stock_pg_server_url, name)


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """URL of a database created for this test session (`fabric_test_<random>`), dropped after."""
    name = _unique("fabric_test")
    url = create_database(pg_server_url, name)
    yield url
    drop_database(pg_server_url, name)


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[Engine]:
    """SQLAlchemy engine (psycopg 3) on the session database."""
    engine = make_engine(pg_url, application_name="fabric-tests")
    yield engine
    engine.dispose()


@pytest.fixture
def db_schema(engine: Engine) -> Iterator[str]:
    """Name of a schema created for this test alone and dropped (with its contents) after it.

    Use it as `Table(..., schema=db_schema)`, or set
    `engine.execution_options(schema_translate_map={None: db_schema})`.
    """
    name = _unique("test")
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    yield name
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture
def make_database(pg_server_url: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh databases on the test server; returns each one's URL; drops them after."""
    created: list[str] = []

    def make() -> str:
        name = _unique("fabric_test_db")
        created.append(name)
        return create_database(pg_server_url, name)

    yield make
    for name in created:
        drop_database(pg_server_url, name)
