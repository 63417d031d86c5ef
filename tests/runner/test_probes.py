"""`fabric connections test` against real services.

The control plane, a source database with a role of its own and a wrong-password case run on
the test PostgreSQL server; MySQL cases on the MariaDB at 127.0.0.1:3306 (root, no password;
skipped only when it cannot be reached); a sqlite file, a local HTTP server checking a bearer
token and a local folder stand for the other types. Every test checks that no secret appears.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import URL, make_url, text

from fabric import api
from fabric.apply import ApplyOptions
from fabric.cli.commands.connections import connections_group
from fabric.domain.runs import ResolvedConnection
from fabric.errors import TenantNotAppliedError
from fabric.render import probes as render_probes
from fabric.runner import probes as cc
from fabric.runner.failures import redact
from fabric.settings import load_settings
from fabric.state.engine import make_engine
from fabric.state.secrets import load_secret_box, set_secret, tenant_schema

KEY = Fernet.generate_key().decode()
TOKEN = f"tok-{secrets.token_hex(8)}-never-shown"
PG_PASSWORD = f"Ck-{secrets.token_hex(6)}-p@ss:w/rd 'q'"
WRONG_PASSWORD = f"Wrong-{secrets.token_hex(6)}-p@ss"
API_KEY = f"key-{secrets.token_hex(8)}-never-shown"
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
SHARED_ENV = (
    "PG_PASSWORD",
    "PG_WRONG_PASSWORD",
    "API_TOKEN",
    "API_KEY",
    "API_KEY_NEWLINE",
    "WRONG_TOKEN",
    "EMPTY",
    "S3_ENDPOINT",
    "LOOT_DB",
    "LOOT_FOLDER",
)
"""Variables the tests' repositories share with every tenant in fabric.yaml's `env:` (a
tenant names only its own ACME_* variables and these)."""


# ---------------------------------------------------------------------------------------------
# services


@pytest.fixture
def pg_source(make_database) -> Iterator[dict[str, object]]:
    """A database on the test server and a login role with a distinctive password; dropped after."""
    url = make_url(make_database())
    role = f"fabric_ck_{secrets.token_hex(4)}"
    admin = make_engine(url)
    quoted = PG_PASSWORD.replace("'", "''")
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{quoted}'"))
    yield {"host": url.host, "port": url.port, "database": url.database, "username": role}
    with admin.begin() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
            {"r": role},
        )
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
    admin.dispose()


@pytest.fixture
def mysql_database() -> Iterator[str]:
    pymysql = pytest.importorskip("pymysql")
    try:
        conn = pymysql.connect(**MYSQL, connect_timeout=3, autocommit=True)
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB at 127.0.0.1:3306 (root, no password) is unreachable: {exc}")
    name = f"fabric_ck_{secrets.token_hex(4)}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


class _Api(BaseHTTPRequestHandler):
    """`/api/items` wants `Authorization: Bearer TOKEN`; `/api/keyed` wants `?key=API_KEY`;
    `/api/boom` fails; `/api/slow` trickles its status line, a byte at a time, forever; any
    other path is a 404."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/api/slow":
            try:
                for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                return
        if parts.path == "/api/boom":
            return self._answer(503, b'{"error": "down"}')
        if parts.path == "/api/keyed":
            good = parse_qs(parts.query).get("key") == [API_KEY]
            return self._answer(200 if good else 403, b"{}")
        if parts.path != "/api/items":
            return self._answer(404, b"{}")
        good = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        self._answer(200 if good else 401, b'{"data": []}' if good else b'{"error": "no"}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def http_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel completes the handshake) and never
    says a word: what a hung server or a firewall that swallows packets looks like."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# ---------------------------------------------------------------------------------------------
# the repository and the control plane


@pytest.fixture
def env(make_database) -> dict[str, str]:
    return {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": KEY,
        "PG_PASSWORD": PG_PASSWORD,
        "PG_WRONG_PASSWORD": WRONG_PASSWORD,
        "API_TOKEN": TOKEN,
        "API_KEY": API_KEY,
        "WRONG_TOKEN": "wrong-token-never-shown",
        "EMPTY": "",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }


@pytest.fixture
def make_repo(tmp_path: Path):
    def write(connections: str, files: dict[str, str] | None = None) -> Path:
        root = tmp_path / "repo"
        body = "tenant:\n  display_name: Acme\nconnections:\n" + textwrap.indent(
            textwrap.dedent(connections), "  "
        )
        for rel, content in {
            "fabric.yaml": (
                f"format_version: 1\nname: test\nenv: [{', '.join(SHARED_ENV)}]\n"
                "ownership: {enforce: false}\n"
            ),
            "tenants/acme/tenant.yaml": body,
            **(files or {}),
        }.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(content)
        return root

    return write


def apply(root: Path, env: dict[str, str]) -> None:
    load = api.validate(root).load
    assert load.ok, [d.to_document() for d in load.diagnostics]
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())


def store_secret(env: dict[str, str], name: str, value: str) -> None:
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    box = load_secret_box(load_settings(env), None)
    try:
        with engine.begin() as conn:
            set_secret(conn, box, "acme", tenant_schema(conn, "acme"), name, value)
    finally:
        engine.dispose()


def run_checks(root: Path, env: dict[str, str], *names: str, timeout: float = 5.0):
    checks = api.test_connections(root, "acme", names, env, timeout=timeout)
    return {c.name: c for c in checks}


def assert_no_secret(text: str) -> None:
    for value in (PG_PASSWORD, WRONG_PASSWORD, TOKEN, API_KEY, KEY, "wrong-token-never-shown"):
        assert value not in text
        assert value.replace(" ", "%20") not in text


def pg(source: dict[str, object], name: str, password: str, **extra: object) -> str:
    lines = [
        f"{name}:",
        "  type: postgres",
        f"  direction: {extra.pop('direction', 'source')}",
        f"  host: {source['host']}",
        f"  port: {extra.pop('port', source['port'])}",
        f"  database: {source['database']}",
        f"  username: {source['username']}",
        f"  password: {password}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# ok


def test_every_type_answers_ok_with_what_answered(make_repo, env, pg_source, http_api):
    drops = "data/acme/drops"
    connections = (
        pg(pg_source, "shop", "${secret:pg_password}")
        + pg(pg_source, "dwh", "${env:PG_PASSWORD}", direction="destination")
        + textwrap.dedent(
            f"""\
            erp:
              type: sqlite
              direction: source
              path: data/acme/erp.sqlite
            billing:
              type: rest_api
              base_url: {http_api}
              auth: {{type: bearer, token: "${{env:API_TOKEN}}"}}
              headers: {{Accept: application/json}}
              resources:
                - {{name: items, path: items, params: {{per_page: 1}}}}
            drops:
              type: filesystem
              bucket_url: {drops}
              file_glob: "*.csv"
            lake:
              type: filesystem
              direction: destination
              bucket_url: data/acme/lake_not_yet_created
            """
        )
    )
    root = make_repo(connections, {f"{drops}/a.csv": "id\n1\n", f"{drops}/b.csv": "id\n2\n"})
    (root / drops / "notes.txt").write_text("not matched")
    with sqlite3.connect(root / "data/acme/erp.sqlite") as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    apply(root, env)
    store_secret(env, "pg_password", PG_PASSWORD)
    apply(root, env)  # the stored secret reaches the connection row on apply

    checks = run_checks(root, env)

    assert {n: c.ok for n, c in checks.items()} == dict.fromkeys(checks, True), checks
    assert checks["shop"].detail.startswith("PostgreSQL ")
    assert "SELECT 1 in" in checks["shop"].detail
    assert checks["dwh"].direction == "destination"
    assert checks["erp"].detail.startswith("SQLite 3.")
    assert checks["erp"].detail.endswith("; 1 table")
    assert checks["billing"].detail.startswith(f"HTTP 200 OK from GET {http_api}/items in ")
    assert checks["drops"].detail == f"2 files match '*.csv' in {root / drops}"
    assert "does not exist yet" in checks["lake"].detail
    assert not (root / "data/acme/lake_not_yet_created").exists()
    assert all(c.seconds >= 0 for c in checks.values())
    assert_no_secret(repr(checks))


def test_mysql_ok_and_wrong_password(make_repo, env, mysql_database):
    root = make_repo(
        textwrap.dedent(
            f"""\
            inventory:
              type: mysql
              direction: source
              host: 127.0.0.1
              port: 3306
              database: {mysql_database}
              username: root
            wrong:
              type: mysql
              direction: source
              host: 127.0.0.1
              database: {mysql_database}
              username: root
              password: ${{env:PG_WRONG_PASSWORD}}
            """
        )
    )
    apply(root, env)
    checks = run_checks(root, env)
    assert checks["inventory"].ok, checks["inventory"]
    assert checks["inventory"].detail.startswith(("MariaDB ", "MySQL "))
    assert not checks["wrong"].ok
    assert "Access denied for user 'root'" in checks["wrong"].detail
    assert "(error 1045)" in checks["wrong"].detail
    assert_no_secret(repr(checks))


def test_a_missing_sqlite_source_fails_and_is_not_created(make_repo, env):
    root = make_repo(
        "erp:\n  type: sqlite\n  direction: source\n  path: data/acme/missing.sqlite\n"
        "notdb:\n  type: sqlite\n  direction: source\n  path: data/acme/not_a_db.sqlite\n",
        {"data/acme/not_a_db.sqlite": "this is not an SQLite database, just text" * 10},
    )
    apply(root, env)
    checks = run_checks(root, env)
    assert not checks["erp"].ok
    missing = root / "data/acme/missing.sqlite"
    assert checks["erp"].detail == f"database file {missing} does not exist"
    assert not (root / "data/acme/missing.sqlite").exists()
    assert not checks["notdb"].ok
    assert "not a database" in checks["notdb"].detail


# ---------------------------------------------------------------------------------------------
# failures: the server's words, never a secret


def test_wrong_password_fails_with_the_servers_message_and_no_secret(make_repo, env, pg_source):
    root = make_repo(pg(pg_source, "shop", "${env:PG_WRONG_PASSWORD}"))
    apply(root, env)
    (check,) = api.test_connections(root, "acme", (), env, timeout=5)
    assert not check.ok
    assert f'password authentication failed for user "{pg_source["username"]}"' in check.detail
    assert_no_secret(check.detail)

    result = CliRunner().invoke(
        connections_group, ["test", "--tenant", "acme", "--repo", str(root)], env=env
    )
    assert result.exit_code == 1, result.output
    assert "FAIL  shop" in result.output
    assert "password authentication failed" in result.output
    assert "0 ok, 1 failed" in result.output
    assert_no_secret(result.output)


def test_unreachable_ports_fail_within_the_timeout_side_by_side(
    make_repo, env, pg_source, black_hole
):
    refused = closed_port()
    connections = (
        pg(pg_source, "pg_refused", "${env:PG_PASSWORD}", port=refused)
        + pg(pg_source, "pg_silent", "${env:PG_PASSWORD}", port=black_hole)
        + textwrap.dedent(
            f"""\
            my_silent:
              type: mysql
              direction: source
              host: 127.0.0.1
              port: {black_hole}
              database: inventory
              username: root
              password: ${{env:PG_PASSWORD}}
            api_silent:
              type: rest_api
              base_url: http://127.0.0.1:{black_hole}/api
              auth: {{type: bearer, token: "${{env:API_TOKEN}}"}}
              resources: [{{name: items, path: items}}]
            api_refused:
              type: rest_api
              base_url: http://127.0.0.1:{refused}/api
              resources: [{{name: items, path: items}}]
            """
        )
    )
    root = make_repo(connections)
    apply(root, env)
    timeout = 1.5
    started = time.monotonic()
    checks = run_checks(root, env, timeout=timeout)
    elapsed = time.monotonic() - started

    assert not any(c.ok for c in checks.values()), checks
    # Side by side: four silent servers cost one timeout, not four.
    assert elapsed < timeout + cc.GRACE_SECONDS + 2.5, elapsed
    for check in checks.values():
        assert check.seconds <= timeout + cc.GRACE_SECONDS + 0.5, check
    assert "Connection refused" in checks["pg_refused"].detail
    assert "Connection refused" in checks["api_refused"].detail
    assert "timeout" in checks["pg_silent"].detail.lower()
    assert "timed out" in checks["my_silent"].detail.lower()
    assert checks["api_silent"].detail == (
        f"GET http://127.0.0.1:{black_hole}/api/items: no response within 1.5s"
    )
    assert_no_secret(repr(checks))


def test_a_check_that_outlives_its_deadline_is_abandoned(make_repo, env, http_api):
    # The server sends a byte every 0.3 s: no read ever times out, the request never ends.
    root = make_repo(
        f"slow:\n  type: rest_api\n  base_url: {http_api}\n"
        "  resources: [{name: slow, path: slow}]\n"
    )
    apply(root, env)
    started = time.monotonic()
    (check,) = api.test_connections(root, "acme", (), env, timeout=1)
    assert time.monotonic() - started < 1 + cc.GRACE_SECONDS + 1
    assert not check.ok
    assert check.detail == "timed out: no answer within 1s"


def test_unset_secret_is_a_clear_failure(make_repo, env, pg_source):
    root = make_repo(pg(pg_source, "shop", "${secret:shop_password}"))
    apply(root, env)
    (check,) = api.test_connections(root, "acme", ["shop"], env)
    assert not check.ok
    assert check.detail == "secret shop_password is not set: fabric secrets set acme shop_password"

    store_secret(env, "shop_password", PG_PASSWORD)
    (check,) = api.test_connections(root, "acme", ["shop"], env)
    assert check.detail == (
        "secret shop_password was stored after the last apply: run `fabric apply` so the "
        "connection uses it"
    )
    apply(root, env)
    (check,) = api.test_connections(root, "acme", ["shop"], env)
    assert check.ok, check


def test_rest_api_auth_rejected_server_error_and_api_key_in_query(make_repo, env, http_api):
    env = {**env, "API_KEY_NEWLINE": API_KEY + "\n"}  # as `echo $KEY > file` leaves it
    root = make_repo(
        textwrap.dedent(
            f"""\
            wrong_token:
              type: rest_api
              base_url: {http_api}
              auth: {{type: bearer, token: "${{env:WRONG_TOKEN}}"}}
              resources: [{{name: items, path: items}}]
            no_auth:
              type: rest_api
              base_url: {http_api}
              resources: [{{name: missing, path: "missing/{{id}}"}}]
            down:
              type: rest_api
              base_url: {http_api}
              resources: [{{name: boom, path: boom}}]
            keyed:
              type: rest_api
              base_url: {http_api}
              auth: {{type: api_key, name: key, location: query, api_key: "${{env:API_KEY}}"}}
              resources: [{{name: keyed, path: keyed}}]
            key_with_newline:
              type: rest_api
              base_url: {http_api}
              auth: {{type: api_key, name: X-Key, api_key: "${{env:API_KEY_NEWLINE}}"}}
              resources: [{{name: items, path: items}}]
            """
        )
    )
    apply(root, env)
    checks = run_checks(root, env)
    assert checks["wrong_token"].detail == (
        f"authentication rejected: HTTP 401 Unauthorized from GET {http_api}/items"
    )
    # A path with placeholders is not probed: the base URL is (a 404 still proves it answers).
    assert checks["no_auth"].ok
    assert checks["no_auth"].detail.startswith(f"HTTP 404 Not Found from GET {http_api} in ")
    assert checks["down"].detail == (
        f"server error: HTTP 503 Service Unavailable from GET {http_api}/boom"
    )
    assert checks["keyed"].ok, checks["keyed"]
    # requests echoes a bad header value (with repr): the key is redacted in every form.
    bad = checks["key_with_newline"]
    assert not bad.ok
    assert "Invalid leading whitespace, reserved character(s)" in bad.detail
    assert bad.detail.endswith("in header value: '***'")
    assert_no_secret(repr(checks))


def test_http_basic_auth_is_sent(make_repo, env, http_api):
    root = make_repo(
        f"basic:\n  type: rest_api\n  base_url: {http_api}\n"
        "  auth: {type: http_basic, username: ana, password: '${env:API_TOKEN}'}\n"
        "  resources: [{name: items, path: items}]\n"
    )
    apply(root, env)
    (check,) = api.test_connections(root, "acme", (), env)
    # The test server wants a bearer token, so basic auth is rejected: but it was sent.
    assert check.detail.startswith("authentication rejected: HTTP 401")


def test_driver_messages_that_echo_a_dsn_are_redacted(tmp_path):
    password = "p@ss w'rd:/x"
    conn = ResolvedConnection(
        "shop",
        "postgres",
        {"type": "postgres", "host": "h", "username": "u", "password": password},
        (password,),
    )
    forms = cc._secret_forms(conn, tmp_path)
    url = URL.create("postgresql+psycopg", "u", password, "h", 5432)
    echoes = [
        "password='p@ss w\\'rd:/x' host=h",  # libpq conninfo quoting
        url.render_as_string(hide_password=False),  # SQLAlchemy's URL escaping
        "postgresql://u:p%40ss%20w%27rd%3A%2Fx@h",  # fully percent-encoded
        "q=p%40ss+w%27rd%3A%2Fx",  # form-encoded
    ]
    for echo in echoes:
        assert password not in redact(echo, forms)
        assert "***" in redact(echo, forms), echo
    assert "p%40ss" not in redact(" ".join(echoes), forms)


def test_mssql_without_a_driver_is_a_clear_failure(make_repo, env):
    try:
        import pyodbc  # type: ignore[import-not-found]

        if "ODBC Driver 18 for SQL Server" in pyodbc.drivers():
            pytest.skip("an SQL Server ODBC driver is installed here")
    except ImportError:
        pass
    root = make_repo(
        "sqlserver:\n  type: mssql\n  direction: source\n  host: 127.0.0.1\n"
        "  database: erp\n  username: sa\n  password: ${env:PG_PASSWORD}\n"
    )
    apply(root, env)
    (check,) = api.test_connections(root, "acme", (), env)
    assert not check.ok
    assert check.detail.startswith("driver not available: ")
    assert "ODBC Driver 18 for SQL Server" in check.detail
    assert "Traceback" not in check.detail
    assert_no_secret(check.detail)


def test_filesystem_failures_name_the_folder_or_the_missing_piece(make_repo, env, monkeypatch):
    # Whatever AWS set-up this machine has, the S3 cases must see none.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    root = make_repo(
        textwrap.dedent(
            """\
            gone:
              type: filesystem
              bucket_url: data/acme/gone
            absolute:
              type: filesystem
              bucket_url: file://ROOT/data/acme/here
              file_glob: "**/*.jsonl"
            gcs:
              type: filesystem
              bucket_url: gs://fabric-test-bucket/drops
            s3_without_keys:
              type: filesystem
              bucket_url: s3://fabric-test-bucket/drops
              credentials:
                endpoint_url: ${env:S3_ENDPOINT}
            s3_unreachable:
              type: filesystem
              bucket_url: s3://fabric-test-bucket/drops
              credentials:
                aws_access_key_id: ${env:API_TOKEN}
                aws_secret_access_key: ${env:API_KEY}
                endpoint_url: ${env:S3_ENDPOINT}
            """
        ),
        {"data/acme/here/a/1.jsonl": "{}\n", "data/acme/here/2.jsonl": "{}\n"},
    )
    body = (root / "tenants/acme/tenant.yaml").read_text().replace("ROOT", str(root))
    (root / "tenants/acme/tenant.yaml").write_text(body)
    env = {**env, "S3_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    apply(root, env)
    timeout = 10  # roomy: importing s3fs counts against it, slow on a busy machine
    checks = run_checks(root, env, timeout=timeout)
    assert checks["gone"].detail == f"folder {root / 'data/acme/gone'} does not exist"
    assert checks["absolute"].ok
    assert checks["absolute"].detail == f"2 files match '**/*.jsonl' in {root / 'data/acme/here'}"
    if importlib.util.find_spec("gcsfs") is None:
        assert checks["gcs"].detail.startswith(
            "protocol gs:// is not supported here: a package it needs is not installed ("
        )
    if importlib.util.find_spec("s3fs") is not None:
        assert checks["s3_without_keys"].detail == (
            "missing credentials for s3://: set aws_access_key_id and aws_secret_access_key "
            "under the connection's credentials"
        )
        unreachable = checks["s3_unreachable"]
        assert not unreachable.ok
        assert unreachable.detail.startswith("Could not connect to the endpoint URL")
        assert unreachable.seconds <= timeout + cc.GRACE_SECONDS + 0.5
    assert_no_secret(repr(checks))


# ---------------------------------------------------------------------------------------------
# selection and errors


def test_named_connections_only_and_unknown_names_are_an_error(make_repo, env, tmp_path):
    root = make_repo(
        "a:\n  type: sqlite\n  direction: destination\n  path: data/acme/a.sqlite\n"
        "b:\n  type: sqlite\n  direction: destination\n  path: data/acme/b.sqlite\n"
    )
    apply(root, env)
    assert [c.name for c in api.test_connections(root, "acme", ["b"], env)] == ["b"]
    with pytest.raises(cc.UnknownConnectionError, match=r"no applied connection 'bb'.*'b'\?"):
        api.test_connections(root, "acme", ["bb"], env)
    with pytest.raises(TenantNotAppliedError):
        api.test_connections(root, "globex", [], env)

    result = CliRunner().invoke(
        connections_group, ["test", "--tenant", "acme", "--repo", str(root), "zz"], env=env
    )
    assert result.exit_code == 1
    assert "Error: Tenant 'acme' has no applied connection 'zz'. Allowed: a, b." in result.output


def test_cli_json_document(make_repo, env, pg_source):
    root = make_repo(
        pg(pg_source, "bad", "${env:PG_WRONG_PASSWORD}")
        + "lite:\n  type: sqlite\n  direction: destination\n  path: data/acme/lite.sqlite\n"
    )
    apply(root, env)
    args = ["test", "--tenant", "acme", "--repo", str(root), "--format", "json"]
    result = CliRunner().invoke(connections_group, args, env=env)
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["format_version"] == 1
    assert doc["ok"] is False
    assert doc["summary"] == {"tested": 2, "ok": 1, "failed": 1, "warnings": 0}
    assert [(c["name"], c["ok"]) for c in doc["connections"]] == [("bad", False), ("lite", True)]
    assert set(doc["connections"][0]) == {
        "name",
        "type",
        "direction",
        "ok",
        "detail",
        "seconds",
        "warning",
    }
    assert_no_secret(result.output)

    ok = CliRunner().invoke(connections_group, [*args, "lite"], env=env)
    assert ok.exit_code == 0, ok.output


def test_cli_subprocess(make_repo, env, pg_source):
    help_text = subprocess.run(
        [sys.executable, "-m", "fabric", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    if not re.search(r"^\s+connections\s", help_text, re.MULTILINE):
        pytest.skip(
            "`fabric connections` is not registered yet: _register() in fabric/cli/main.py "
            "must import fabric.cli.commands.connections"
        )
    root = make_repo(
        pg(pg_source, "shop", "${env:PG_PASSWORD}")
        + pg(pg_source, "bad", "${env:PG_WRONG_PASSWORD}")
    )
    apply(root, env)
    base = [sys.executable, "-m", "fabric", "connections", "test", "--tenant", "acme"]
    proc = subprocess.run(
        [*base, "--repo", str(root), "--timeout", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "ok    shop" in proc.stdout
    assert "FAIL  bad" in proc.stdout
    assert "1 ok, 1 failed" in proc.stdout
    assert_no_secret(proc.stdout + proc.stderr)

    proc = subprocess.run(
        [*base, "shop", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root / "tenants",  # the repository is found from a folder inside it
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


# ---------------------------------------------------------------------------------------------
# the bounded pool (no services)


def _result(name: str, ok: bool = True) -> cc.ConnectionCheck:
    detail = "answered" if ok else "timed out"
    return cc.ConnectionCheck(
        name=name, type="noop", direction="source", ok=ok, detail=detail, seconds=0.0
    )


def test_a_hung_check_loses_its_slot_and_the_others_still_run():
    release = threading.Event()

    def hung() -> cc.ConnectionCheck:
        release.wait(30)
        return _result("hung")

    tasks = [hung, lambda: _result("a"), lambda: _result("b")]
    on_timeout = [_result(n, ok=False) for n in ("hung", "a", "b")]
    started = time.monotonic()
    out = cc._run_bounded(tasks, on_timeout, workers=1, limit=0.5)
    release.set()
    assert [(c.name, c.ok) for c in out] == [("hung", False), ("a", True), ("b", True)]
    assert time.monotonic() - started < 2


def test_a_bug_in_a_check_is_raised_not_reported_as_a_failure():
    def broken() -> cc.ConnectionCheck:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError, match="a bug"):
        cc._run_bounded([broken], [_result("x", ok=False)], workers=2, limit=5)


# ---------------------------------------------------------------------------------------------
# a hostile tenant: `${env:}` paths pass validation, so the probe applies the folder rule itself


def test_a_local_source_outside_the_tenants_folder_is_refused_not_opened(make_repo, env):
    root = make_repo(
        textwrap.dedent(
            """\
            keyfile:
              type: filesystem
              bucket_url: ${env:LOOT_FOLDER}
              file_glob: "*.key"
            planted:
              type: filesystem
              bucket_url: data/acme/drops
              file_glob: "*.csv"
            theirs:
              type: sqlite
              direction: source
              path: ${env:LOOT_DB}
            linked:
              type: sqlite
              direction: source
              path: data/acme/erp.sqlite
            """
        ),
        {".fabric/secret.key": "not-a-real-key\n", "data/acme/drops/ok.csv": "id\n1\n"},
    )
    (root / "data/globex").mkdir(parents=True)
    with sqlite3.connect(root / "data/globex/erp.sqlite") as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    (root / "data/acme/drops/key.csv").symlink_to(root / ".fabric/secret.key")
    (root / "data/acme/erp.sqlite").symlink_to(root / "data/globex/erp.sqlite")
    env = {**env, "LOOT_FOLDER": ".fabric", "LOOT_DB": "data/globex/erp.sqlite"}
    apply(root, env)

    checks = run_checks(root, env)

    assert not any(c.ok for c in checks.values()), checks
    assert "outside tenant acme's folder data/acme/" in checks["keyfile"].detail
    assert "key.csv resolves to" in checks["planted"].detail
    assert "outside tenant acme's folder data/acme/" in checks["theirs"].detail
    assert "outside the tenant's folder" in checks["linked"].detail


# ---------------------------------------------------------------------------------------------
# what a tenant's login can reach beyond the tenant: warned about, by connections test and apply

GLOBEX = """\
tenant:
  display_name: Globex
  warehouse: dwh
connections:
  dwh: {type: postgres, direction: destination, host: h, database: d, username: g}
  shop: {type: postgres, direction: source, host: h, database: d, username: g}
pipelines:
  orders: {source: shop, dataset: globex_raw, mode: single_table, table: orders}
transformations:
  totals: {sql: select 1 as x, schema: globex_marts}
"""


def test_logins_that_reach_beyond_the_tenant_are_warned_about_by_name(make_repo, env, pg_source):
    """acme's `admin` logs in as the server's superuser, `plain` as a role of its own that is
    granted USAGE on globex's schema: both are warned about, naming what they reach and no
    secret; `plain` alone, once the grant and PUBLIC's CONNECT on the control plane's database
    are revoked, is not. Probing uses acme's own credentials."""
    control = make_url(env["FABRIC_DATABASE_URL"])
    admin = {**pg_source, "username": control.username}
    env = {**env, "ACME_ADMIN_PASSWORD": control.password or ""}
    root = make_repo(
        pg(admin, "admin", "${env:ACME_ADMIN_PASSWORD}", direction="destination")
        + pg(pg_source, "plain", "${env:PG_PASSWORD}")
        + "lite:\n  type: sqlite\n  direction: destination\n  path: data/acme/lite.sqlite\n",
        {"tenants/globex/tenant.yaml": GLOBEX},
    )
    load = api.validate(root).load
    assert load.ok, [d.to_document() for d in load.diagnostics]
    result = api.apply(
        api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions()
    )
    # apply probes the PostgreSQL logins it just created (not sqlite, not globex's unreachable
    # ones, which it reports as unchecked)
    by_connection = {w.split(" ")[2]: w for w in result.warnings if w.startswith("acme:")}
    assert set(by_connection) == {"admin", "plain"}, result.warnings
    assert "superuser" in by_connection["admin"]
    assert f"control plane database {control.database}" in by_connection["plain"]
    assert "superuser" not in by_connection["plain"]
    assert all("could not be checked" in w for w in result.warnings if w.startswith("globex:"))

    source_admin = make_engine(
        make_url(env["FABRIC_DATABASE_URL"]).set(database=str(pg_source["database"]))
    )
    cp_admin = make_engine(env["FABRIC_DATABASE_URL"])
    role = pg_source["username"]
    try:
        with source_admin.begin() as conn:
            conn.execute(text("CREATE SCHEMA globex_raw; CREATE SCHEMA globex_marts"))
            conn.execute(text(f"GRANT USAGE ON SCHEMA globex_raw TO {role}"))
        with cp_admin.begin() as conn:
            conn.execute(text(f'REVOKE CONNECT ON DATABASE "{control.database}" FROM PUBLIC'))
        checks = run_checks(root, env)
        assert checks["plain"].ok and checks["admin"].ok
        assert checks["plain"].warning == (
            "connection plain logs in as a role that can reach other tenants' schemas "
            "globex_raw: give it a login of its own that can use only this tenant's schemas."
        )
        assert "superuser" in checks["admin"].warning
        assert "other tenants' schemas globex_marts, globex_raw" in checks["admin"].warning
        assert checks["lite"].warning is None
        text_report = render_probes.render_text(render_probes.to_document("acme", checks.values()))
        assert "warning: connection plain logs in as a role" in text_report
        assert "2 with warnings." in text_report

        with source_admin.begin() as conn:
            conn.execute(text(f"REVOKE USAGE ON SCHEMA globex_raw FROM {role}"))
        assert run_checks(root, env, "plain")["plain"].warning is None
    finally:
        with cp_admin.begin() as conn:
            conn.execute(text(f'GRANT CONNECT ON DATABASE "{control.database}" TO PUBLIC'))
        source_admin.dispose()
        cp_admin.dispose()
    assert_no_secret(repr(result.warnings) + repr(checks))
    assert control.password is None or control.password not in repr(result.warnings) + repr(checks)
