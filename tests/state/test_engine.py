"""Engines and server-level helpers, on the test server (embedded or FABRIC_TEST_DATABASE_URL)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, make_url, text

from fabric.errors import StateError
from fabric.state.engine import create_database, drop_database, make_engine, psycopg_url


def database_exists(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        return found.scalar() is not None


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgres_urls_get_the_psycopg_driver(scheme: str):
    url = psycopg_url(f"{scheme}://u:p@h:5432/d")
    assert url.render_as_string(hide_password=False) == "postgresql+psycopg://u:p@h:5432/d"


@pytest.mark.parametrize("url", ["mysql://u:p@h/d", "postgresql+psycopg2://u:p@h/d"])
def test_other_databases_and_drivers_are_refused(url: str):
    with pytest.raises(StateError, match="psycopg 3"):
        psycopg_url(url)


def test_an_unparsable_url_is_refused_without_echoing_it():
    with pytest.raises(StateError) as err:
        psycopg_url("not a url with s3cret")
    assert "s3cret" not in str(err.value)


def test_engine_connections_carry_the_application_name(pg_url: str):
    engine = make_engine(pg_url, application_name="fabric-probe")
    try:
        with engine.connect() as conn:
            name = conn.execute(text("SELECT current_setting('application_name')")).scalar_one()
    finally:
        engine.dispose()
    assert name == "fabric-probe"


def test_create_database_is_idempotent_and_drop_removes_it(pg_server_url: str, engine: Engine):
    name = "fabric_test_idempotent_" + make_url(str(engine.url)).database[-8:]

    first = create_database(pg_server_url, name)
    second = create_database(pg_server_url, name)
    try:
        assert first == second
        assert make_url(first).database == name
        assert database_exists(engine, name)
    finally:
        drop_database(pg_server_url, name)
    drop_database(pg_server_url, name)  # absent: still fine
    assert not database_exists(engine, name)


def test_database_names_postgres_would_truncate_are_refused(pg_server_url: str):
    with pytest.raises(ValueError, match="63 bytes"):
        create_database(pg_server_url, "x" * 64)


def test_make_database_gives_a_fresh_database_each_time(make_database):
    first, second = make_database(), make_database()
    assert make_url(first).database != make_url(second).database
    engine = make_engine(second)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert count == 0


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_its_own_empty_schema(engine: Engine, db_schema: str, run: int):
    # Both runs create the same table: this passes only if the schemas are distinct and fresh.
    with engine.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{db_schema}".items (id int)'))
        tables = conn.execute(
            text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": db_schema}
        ).scalar_one()
    assert tables == 1
