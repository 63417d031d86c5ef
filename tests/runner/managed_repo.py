"""A repository with tenants on a warehouse whose roles fabric manages, built once per test
module (module-scoped fixtures of test_dbt_snapshots, test_freshness_check and test_docs)."""

from __future__ import annotations

import os
import secrets
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from fabric import api
from fabric.apply import ApplyOptions
from fabric.state.engine import create_database, drop_database, make_engine
from tests.runner.test_managed_runs import FABRIC_YAML, _conninfo


@dataclass(frozen=True)
class ManagedRepo:
    root: Path
    env: dict[str, str]
    warehouse: str
    """The warehouse's admin URL (password included)."""
    source: str
    """The source database's URL: tenant acme reads it with ${env:ACME_SRC_PASSWORD}."""


def managed_repo(
    pg_server_url: str,
    tmp: Path,
    tenants: Mapping[str, str],
    files: Mapping[str, str],
    source_sql: tuple[str, ...],
) -> Iterator[ManagedRepo]:
    """Write and apply the repository; `{src.host}`, `{src.port}`, `{src.database}` and
    `{src.username}` in `tenants` bodies name the source database; drops the databases and the
    roles after."""
    names = [f"fabric_test_mr_{secrets.token_hex(4)}" for _ in range(3)]
    warehouse, source, control = (make_url(create_database(pg_server_url, n)) for n in names)
    prefix = f"m{secrets.token_hex(3)}_"
    root = tmp / "repo"
    for slug, body in tenants.items():
        (root / "tenants" / slug).mkdir(parents=True)
        (root / "tenants" / slug / "tenant.yaml").write_text(
            textwrap.dedent(_with_source(body, source))
        )
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)
    (root / "fabric.yaml").write_text(FABRIC_YAML.format(wh=warehouse, prefix=prefix))
    env = {
        "FABRIC_DATABASE_URL": _text(control),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp / "home"),
        "DWH_ADMIN_PASSWORD": warehouse.password or "",
        "ACME_SRC_PASSWORD": source.password or "",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }
    src = make_engine(source)
    with src.begin() as conn:
        for statement in source_sql:
            conn.execute(text(statement))
    src.dispose()
    try:
        plan = api.plan(root, environ=env).plan
        api.apply(plan, repo=root, environ=env, options=ApplyOptions())
        yield ManagedRepo(root, env, _text(warehouse), _text(source))
    finally:
        with psycopg.connect(_conninfo(warehouse), autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
            ).fetchall():
                conn.execute(f'DROP OWNED BY "{name}"')
                conn.execute(f'DROP ROLE "{name}"')
        for name in names:
            drop_database(pg_server_url, name)


def _with_source(body: str, source: URL) -> str:
    for key in ("host", "port", "database", "username"):
        body = body.replace(f"{{src.{key}}}", str(getattr(source, key)))
    return body


def _text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def reapply(repo: ManagedRepo) -> None:
    """Apply the repository again (undoes a `tamper` of a stored record)."""
    plan = api.plan(repo.root, environ=repo.env).plan
    api.apply(plan, repo=repo.root, environ=repo.env, options=ApplyOptions())


def run(repo: ManagedRepo, tenant: str, *selectors: str):
    return api.run(repo.root, tenants=[tenant], selectors=selectors, environ=repo.env, workers=1)
