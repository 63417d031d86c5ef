"""Fixtures for the dlt node tests: secret boxes, source and warehouse databases, a MariaDB
database, and a local paginated HTTP API."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography.fernet import Fernet

from fabric.state.secrets import SecretBox

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


@pytest.fixture
def fernet_key() -> bytes:
    return Fernet.generate_key()


@pytest.fixture
def box(fernet_key: bytes) -> SecretBox:
    return SecretBox([fernet_key])


@pytest.fixture
def source_url(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture
def warehouse_url(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture
def mysql_database() -> Iterator[dict[str, Any]]:
    """A fresh database on the local MariaDB (root, no password), dropped after the test:
    pymysql.connect() arguments, `database` included."""
    pymysql = pytest.importorskip("pymysql")
    try:
        conn = pymysql.connect(**MARIADB, autocommit=True, connect_timeout=3)
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"no MariaDB/MySQL on 127.0.0.1:3306: {exc}")
    name = f"fabric_test_{secrets.token_hex(4)}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    yield {**MARIADB, "database": name}
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


class ApiServer:
    """A paginated JSON API on 127.0.0.1: GET /items?page=N -> {"data": [...], "next": url}."""

    def __init__(self, items: list[dict[str, Any]], page_size: int) -> None:
        self.items = items
        self.page_size = page_size
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                server.requests.append((self.path, dict(self.headers)))
                if url.path != "/items":
                    self.send_error(404)
                    return
                page = int(parse_qs(url.query).get("page", ["1"])[0])
                start = (page - 1) * server.page_size
                chunk = server.items[start : start + server.page_size]
                more = start + server.page_size < len(server.items)
                body = {
                    "data": chunk,
                    "next": f"{server.base_url}/items?page={page + 1}" if more else None,
                }
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    items = [
        {"id": i, "name": f"item {i}", "kind": "even" if i % 2 == 0 else "odd"}
        for i in range(1, 24)
    ]
    with ApiServer(items, page_size=5) as server:
        yield server
