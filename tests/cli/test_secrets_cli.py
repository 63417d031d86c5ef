"""`fabric secrets`: values come from stdin or a hidden prompt and never appear in any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import ProgrammingError

from fabric.cli.commands import secrets as secrets_cli
from fabric.cli.commands.secrets import secrets_group
from fabric.state import migrate, tables
from fabric.state.engine import make_engine
from fabric.state.secrets import SecretBox, read_secret

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
VALUE = "Tr0ub4dor&3-never-print-me"
ADMIN = "ops@acme.example"
"""acme's admin: setting a secret needs an admin of the tenant (see tests/test_ownership.py)."""


@pytest.fixture
def control_plane(make_database: Callable[[], str]) -> Iterator[tuple[str, Engine]]:
    """(URL, engine) of a fresh control plane holding one applied tenant, `acme`."""
    url = make_database()
    engine = make_engine(url, application_name="fabric-tests")
    with engine.begin() as conn:
        # NOTE: see tests/state/test_secrets.py: a brand-new database needs the schema first.
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {tables.SHARED_SCHEMA}"))
        migrate.upgrade_shared(conn)
        tenant_id = conn.execute(
            text(
                "INSERT INTO fabric.tenants (slug, spec, fingerprint, content_md5) "
                "VALUES ('acme', CAST(:spec AS jsonb), 'fp', 'md5') RETURNING id"
            ),
            {"spec": json.dumps({"members": [{"who": ADMIN, "role": "admin"}]})},
        ).scalar_one()
        schema = tables.tenant_schema_name(tenant_id)
        _create_tenant_schema(conn, schema)
        conn.execute(
            text("UPDATE fabric.tenants SET schema_name = :s WHERE id = :id"),
            {"s": schema, "id": tenant_id},
        )
    yield url, engine
    engine.dispose()


def _create_tenant_schema(conn: Connection, schema: str) -> None:
    try:
        with conn.begin_nested():
            migrate.create_tenant_schemas(conn, [schema])
    except ProgrammingError:  # see tests/state/test_secrets.py::create_tenant_schema
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        migrate.upgrade_tenant(conn, schema)


def stored(engine: Engine, name: str, keys: list[str]) -> str:
    with engine.connect() as conn:
        schema = conn.execute(
            text("SELECT schema_name FROM fabric.tenants WHERE slug = 'acme'")
        ).scalar_one()
        return read_secret(conn, SecretBox(keys), "acme", schema, name)


def run(
    url: str, args: list[str], *, input: str | None = None, keys: str = NEW_KEY, **kw: object
) -> Result:
    env = {"FABRIC_DATABASE_URL": url, "FABRIC_SECRET_KEYS": keys, "FABRIC_HOME": None}
    if args[0] == "set":
        args = [*args, "--author", ADMIN]
    return CliRunner().invoke(secrets_group, args, input=input, env=env, **kw)  # type: ignore[arg-type]


def everything_printed(result: Result) -> str:
    return result.stdout + result.stderr + (repr(result.exception) if result.exception else "")


def test_set_reads_the_value_from_stdin_and_never_prints_it(control_plane):
    url, engine = control_plane
    result = run(url, ["set", "acme", "dwh_password"], input=VALUE + "\n")
    assert result.exit_code == 0, everything_printed(result)
    assert "Stored secret 'dwh_password' for tenant acme." in result.stdout
    assert VALUE not in everything_printed(result)
    assert stored(engine, "dwh_password", [NEW_KEY]) == VALUE


def test_only_one_trailing_newline_is_stripped(control_plane):
    url, engine = control_plane
    assert run(url, ["set", "acme", "pem"], input=" line 1\nline 2\n\n").exit_code == 0
    assert stored(engine, "pem", [NEW_KEY]) == " line 1\nline 2\n"
    assert run(url, ["set", "acme", "crlf"], input="v\r\n").exit_code == 0
    assert stored(engine, "crlf", [NEW_KEY]) == "v"


def test_an_empty_value_is_refused(control_plane):
    url, engine = control_plane
    result = run(url, ["set", "acme", "pw"], input="\n")
    assert result.exit_code == 1
    assert "empty" in result.stderr
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT schema_name FROM fabric.tenants")).scalar_one()
        assert conn.execute(text(f'SELECT count(*) FROM "{schema}".secrets')).scalar() == 0


def test_on_a_terminal_the_value_is_prompted_for_twice_without_echo(control_plane, monkeypatch):
    url, engine = control_plane

    monkeypatch.setattr(secrets_cli, "_stdin_is_terminal", lambda: True)
    result = run(url, ["set", "acme", "pw"], input=f"{VALUE}\n{VALUE}\n")
    assert result.exit_code == 0, everything_printed(result)
    assert "Value of pw" in result.output and "Repeat for confirmation" in result.output
    assert VALUE not in everything_printed(result)
    assert stored(engine, "pw", [NEW_KEY]) == VALUE


def test_setting_the_same_value_again_says_nothing_changed(control_plane):
    url, _ = control_plane
    run(url, ["set", "acme", "pw"], input=VALUE)
    result = run(url, ["set", "acme", "pw"], input=VALUE)
    assert result.exit_code == 0 and "nothing changed" in result.stdout


def test_list_shows_names_and_times_never_values(control_plane):
    url, _ = control_plane
    run(url, ["set", "acme", "dwh_password"], input=VALUE)
    run(url, ["set", "acme", "api_token"], input=VALUE + "x")
    result = run(url, ["list", "acme"])
    assert result.exit_code == 0, everything_printed(result)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "UPDATED"]
    assert [line.split()[0] for line in lines[1:]] == ["api_token", "dwh_password"]
    assert VALUE not in everything_printed(result)


def test_an_unapplied_tenants_secret_waits_for_its_first_apply(control_plane):
    url, _ = control_plane
    result = run(url, ["set", "globex", "pw"], input=VALUE)
    assert result.exit_code == 0, everything_printed(result)
    assert "not applied yet" in result.stdout and "first `fabric apply` binds it" in result.stdout
    assert VALUE not in everything_printed(result)
    listed = run(url, ["list", "globex"])
    assert listed.exit_code == 0 and "pw" in listed.stdout and VALUE not in listed.stdout


def test_a_tenant_that_is_not_applied_and_has_no_pending_secret_says_to_run_apply(control_plane):
    url, _ = control_plane
    result = run(url, ["list", "initech"])
    assert result.exit_code == 1
    assert "initech" in result.stderr and "fabric apply" in result.stderr


def test_a_malformed_key_is_reported_without_echoing_it_or_the_value(control_plane):
    url, _ = control_plane
    bad = "this-is-not-a-key-but-secret-text"
    result = run(url, ["set", "acme", "pw"], input=VALUE, keys=f"{NEW_KEY},{bad}")
    assert result.exit_code == 1
    assert "Key 2 of 2 in FABRIC_SECRET_KEYS is not a Fernet key" in result.stderr
    printed = everything_printed(result)
    assert bad not in printed and NEW_KEY not in printed and VALUE not in printed


def test_rotate_moves_values_to_the_newest_key_and_reports_counts(control_plane):
    url, engine = control_plane
    run(url, ["set", "acme", "pw"], input=VALUE, keys=OLD_KEY)
    result = run(url, ["rotate"], keys=f"{NEW_KEY},{OLD_KEY}")
    assert result.exit_code == 0, everything_printed(result)
    assert "Rotated 1 secret value(s) to the newest key; 0 already used it; 0 failed." in (
        result.stdout
    )
    assert stored(engine, "pw", [NEW_KEY]) == VALUE  # the old key is no longer needed
    again = run(url, ["rotate"], keys=f"{NEW_KEY},{OLD_KEY}")
    assert "Rotated 0 secret value(s) to the newest key; 1 already used it" in again.stdout
    assert VALUE not in everything_printed(result) + everything_printed(again)


def test_rotate_fails_naming_values_it_cannot_decrypt(control_plane):
    url, _ = control_plane
    run(url, ["set", "acme", "pw"], input=VALUE, keys=OLD_KEY)
    result = run(url, ["rotate"], keys=NEW_KEY)  # the old key was dropped too early
    assert result.exit_code == 1
    assert "acme.secret.pw" in result.stderr and "add the old key back" in result.stderr
    assert VALUE not in everything_printed(result)


def test_keygen_prints_a_usable_key_and_a_hint_on_ordering():
    result = CliRunner().invoke(secrets_group, ["keygen"])
    assert result.exit_code == 0
    key = result.stdout.strip()
    Fernet(key)  # a valid key, alone on stdout so `$(fabric secrets keygen)` works
    assert "newest first" in result.stderr


def test_python_dash_m_fabric_secrets_set_reads_stdin(control_plane, tmp_path: Path):
    url, engine = control_plane
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env |= {"FABRIC_DATABASE_URL": url, "FABRIC_SECRET_KEYS": f"{NEW_KEY},{OLD_KEY}"}
    argv = [sys.executable, "-m", "fabric", "secrets", "set", "acme", "dwh_password"]
    argv += ["--author", ADMIN]
    proc = subprocess.run(
        argv, input=VALUE, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert VALUE not in proc.stdout + proc.stderr
    assert VALUE not in json.dumps(argv)
    assert stored(engine, "dwh_password", [NEW_KEY]) == VALUE

    listed = subprocess.run(
        [sys.executable, "-m", "fabric", "secrets", "list", "acme"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "dwh_password" in listed.stdout and VALUE not in listed.stdout + listed.stderr
