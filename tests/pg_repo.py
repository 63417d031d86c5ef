"""A one-tenant repository on real databases, for tests that run fabric end to end: acme with a
PostgreSQL warehouse and source whose passwords are stored fabric secrets.

Shared so run tests set up the control plane, keys and secrets the same way (and one place
knows that the embedded server checks passwords while a trust server accepts any).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy.engine import URL

from fabric import api
from fabric.apply import ApplyOptions
from fabric.settings import load_settings
from fabric.state.engine import make_engine
from fabric.state.secrets import load_secret_box, set_secret, tenant_schema

CONNECTIONS = """\
connections:
  dwh:
    type: postgres
    direction: destination
    host: {wh.host}
    port: {wh.port}
    database: {wh.database}
    username: {wh.username}
    password: ${{secret:dwh_password}}
  src:
    type: postgres
    direction: source
    host: {src.host}
    port: {src.port}
    database: {src.database}
    username: {src.username}
    password: ${{secret:src_password}}
"""
"""acme's `dwh` and `src` connections; format with `wh=` and `src=` (SQLAlchemy URLs)."""


def control_plane_env(
    tmp_path: Path, make_database: Callable[[], str], *, keys: int = 1, **extra: str
) -> dict[str, str]:
    """The environment of a fabric command: its own control-plane database, `keys` fresh keys
    and home, and `extra` variables; nothing else of the test process leaks in."""
    return {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": ",".join(Fernet.generate_key().decode() for _ in range(keys)),
        "FABRIC_HOME": str(tmp_path / "home"),
        "PATH": os.environ.get("PATH", ""),
        **extra,
    }


def server_passwords(warehouse: URL, source: URL) -> dict[str, str]:
    """The values of acme's secrets: the servers' own passwords (the embedded server checks
    them; under trust authentication any value does, so a distinctive one that tests can look
    for in output)."""
    return {
        "dwh_password": warehouse.password or f"dwh-pw-{secrets.token_hex(8)}",
        "src_password": source.password or f"src-pw-{secrets.token_hex(8)}",
    }


def apply_with_secrets(root: Path, env: Mapping[str, str], values: Mapping[str, str]) -> None:
    """Apply, store acme's secrets, apply again (which binds the connections to their values)."""
    env = dict(env)
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    box = load_secret_box(load_settings(env), None)
    with engine.begin() as conn:
        schema = tenant_schema(conn, "acme")
        for name, value in values.items():
            set_secret(conn, box, "acme", schema, name, value)
    engine.dispose()
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())
