"""The embedded PostgreSQL: started once per home, reused after, reachable by socket and TCP.

These tests start real servers in temporary folders (about half a second each) and stop them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from fabric.errors import EmbeddedDatabaseError, StateError
from fabric.settings import Settings
from fabric.state.embedded import (
    CONTROL_PLANE_DATABASE,
    EmbeddedServer,
    control_plane_url,
    ensure_server,
    fabric_home,
    stop_server,
)
from fabric.state.engine import make_engine


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[list[Path]]:
    """Homes a test starts servers in; every server is stopped after the test."""
    used: list[Path] = []
    yield used
    for home in used:
        stop_server(home)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One server shared by the read-only tests of this module."""
    home = tmp_path_factory.mktemp("shared") / ".fabric"
    yield ensure_server(home)
    stop_server(home)


def query(url: str, sql: str) -> object:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


def test_first_call_starts_the_server_and_the_next_reuses_it(server: EmbeddedServer):
    again = ensure_server(server.home)

    assert server.started is True
    assert again.started is False
    assert (again.pid, again.port, again.password) == (server.pid, server.port, server.password)


def test_home_is_git_ignored_entirely(server: EmbeddedServer):
    lines = (server.home / ".gitignore").read_text().splitlines()
    assert "*" in lines


def test_socket_url_works_with_sqlalchemy(server: EmbeddedServer):
    assert query(server.url(), "SELECT current_user") == "postgres"


def test_tcp_url_reaches_the_server_on_localhost(server: EmbeddedServer):
    assert query(server.tcp_url(), "SELECT host(inet_server_addr())") == "127.0.0.1"
    assert server.tcp_url(driver=None).startswith("postgresql://postgres:")


def test_tcp_connections_need_the_password(server: EmbeddedServer):
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres")


def test_server_secrets_file_is_private(server: EmbeddedServer):
    assert (server.home / "server.json").stat().st_mode & 0o077 == 0


def test_concurrent_starts_agree_on_one_server_that_outlives_them(tmp_path: Path, homes):
    home = tmp_path / ".fabric"
    homes.append(home)
    script = (
        "import json, sys; from pathlib import Path\n"
        "from fabric.state.embedded import ensure_server\n"
        "s = ensure_server(Path(sys.argv[1])); print(json.dumps([s.pid, s.started]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(home)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]

    assert {pid for pid, _ in results} == {results[0][0]}
    assert sorted(started for _, started in results) == [False, True]
    after = ensure_server(home)  # both processes have exited; the server has not
    assert (after.pid, after.started) == (results[0][0], False)


def test_a_stopped_server_restarts_with_its_data_and_port(tmp_path: Path, homes):
    home = tmp_path / ".fabric"
    homes.append(home)
    first = ensure_server(home)
    engine = make_engine(first.url())
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (id int)"))
    engine.dispose()

    assert stop_server(home) is True
    assert stop_server(home) is False
    second = ensure_server(home)

    assert second.started is True
    assert second.pid != first.pid
    assert second.port == first.port
    assert query(second.url(), "SELECT count(*) FROM kept") == 0


def test_a_stale_pid_file_naming_another_live_process_neither_blocks_nor_signals_it(
    tmp_path: Path, homes
):
    # After a crash or a container restart, the old postmaster's pid may belong to anything.
    home = tmp_path / ".fabric"
    homes.append(home)
    crashed = ensure_server(home)
    stop_server(home)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lines = [str(bystander.pid), str(crashed.pgdata), "0", str(crashed.port)]
        lines += [str(crashed.socket_dir), "127.0.0.1", "0 0", "ready"]
        (crashed.pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
        (crashed.socket_dir / f".s.PGSQL.{crashed.port}.lock").write_text(f"{bystander.pid}\n")

        restarted = ensure_server(home)

        assert restarted.started is True
        assert restarted.pid != bystander.pid
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_server_without_a_server_is_a_no_op(tmp_path: Path):
    assert stop_server(tmp_path / "nothing-here") is False
    assert not (tmp_path / "nothing-here").exists()


def test_an_unusable_home_is_an_error_naming_the_folder(tmp_path: Path):
    (tmp_path / "a-file").write_text("")
    home = tmp_path / "a-file" / ".fabric"

    with pytest.raises(EmbeddedDatabaseError) as err:
        ensure_server(home)

    assert isinstance(err.value, StateError)
    assert err.value.home == home.resolve()
    assert str(home) in str(err.value)
    assert "FABRIC_HOME" in str(err.value)


def test_fabric_home_defaults_to_dot_fabric_in_the_repository(tmp_path: Path):
    assert fabric_home(tmp_path, Settings()) == (tmp_path / ".fabric").resolve()


def test_fabric_home_setting_overrides_the_default(tmp_path: Path):
    elsewhere = tmp_path / "state"
    assert fabric_home(tmp_path / "repo", Settings(home=elsewhere)) == elsewhere.resolve()


def test_database_url_setting_wins_and_starts_nothing(tmp_path: Path):
    settings = Settings(database_url="postgresql://u:p@db.example:5432/control")

    url = control_plane_url(tmp_path, settings)

    assert url == "postgresql+psycopg://u:p@db.example:5432/control"
    assert not (tmp_path / ".fabric").exists()


def test_control_plane_defaults_to_the_fabric_database_of_the_embedded_server(
    tmp_path: Path, server: EmbeddedServer
):
    settings = Settings(home=server.home)  # reuse the module's server instead of a new one

    url = control_plane_url(tmp_path, settings)

    assert query(url, "SELECT current_database()") == CONTROL_PLANE_DATABASE
    assert control_plane_url(tmp_path, settings) == url
    assert not (tmp_path / ".fabric").exists()
