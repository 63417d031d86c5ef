"""Managed warehouse roles and grants on a real PostgreSQL: plan, apply, drift, shares, delete.

Roles are cluster-wide, so every test gets its own role prefix and drops its roles after.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from fabric import api
from fabric.apply import ApplyOptions
from fabric.errors import UnsafePlanError
from fabric.plan.diff import Action
from fabric.plan.plan import to_document
from fabric.plan.safety import SafetyOptions
from fabric.plan.steps import apply_steps, describe_step
from fabric.plan.warehouse import STRAY_GRANT, WAREHOUSE_DRIFT
from fabric.render.plan_text import render_plan_text

FABRIC_YAML = """
format_version: 1
warehouses:
  dwh:
    host: {host}
    port: {port}
    database: {database}
    admin: {{username: {user}, password: "${{env:DWH_ADMIN_PASSWORD}}"}}
    manage_roles: true
    role_prefix: {prefix}
"""
TENANT = """
tenant:
  display_name: {slug}
  warehouse: dwh
  {share}
connections:
  dwh: {{type: postgres, direction: destination, warehouse: dwh}}
transformations:
  totals:
    sql: select 1 as n
    schema: {slug}_marts
    materialized: table
"""


@dataclass
class Warehouse:
    url: str
    prefix: str
    root: Path
    env: dict[str, str]

    def write(self, slug: str, share: str = "", body: str | None = None) -> None:
        folder = self.root / "tenants" / slug
        folder.mkdir(parents=True, exist_ok=True)
        text = body if body is not None else TENANT.format(slug=slug, share=share)
        (folder / "tenant.yaml").write_text(textwrap.dedent(text))

    def role(self, slug: str) -> str:
        return f"{self.prefix}{slug}_loader"

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def conninfo(self, user: str | None = None, password: str | None = None) -> str:
        u = make_url(self.url)
        return psycopg.conninfo.make_conninfo(
            host=u.host,
            port=u.port,
            dbname=u.database,
            user=user or u.username,
            password=password if user else u.password,
        )

    def plan(self, **kw):
        return api.plan(self.root, environ=self.env, **kw).plan

    def apply(self, **safety) -> api.ApplyResult:
        drop_data = safety.pop("drop_data", False)
        return api.apply(
            self.plan(),
            repo=self.root,
            environ=self.env,
            options=ApplyOptions(safety=SafetyOptions(**safety), drop_data=drop_data),
        )

    def actions(self) -> dict[str, str]:
        return {str(c.address): c.action.value for c in self.plan().changes}

    def password(self, slug: str) -> str:
        from fabric.state.engine import make_engine
        from fabric.state.secrets import read_secret, tenant_schema

        ws = api.workspace(self.root, self.env)
        engine = make_engine(self.env["FABRIC_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                schema = tenant_schema(conn, slug)
                return read_secret(conn, ws.secret_box(), slug, schema, "FABRIC_ROLE_LOADER")
        finally:
            engine.dispose()


def drop_roles(conninfo: str, prefix: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
            )
        ]
        for name in names:
            conn.execute(f'DROP OWNED BY "{name}"')
            conn.execute(f'DROP ROLE "{name}"')


@pytest.fixture
def wh(tmp_path: Path, make_database) -> Iterator[Warehouse]:
    url = make_database()
    u = make_url(url)
    prefix = f"t{secrets.token_hex(3)}_"
    root = tmp_path / "repo"
    root.mkdir()
    (root / "fabric.yaml").write_text(
        textwrap.dedent(FABRIC_YAML).format(
            host=u.host, port=u.port, database=u.database, user=u.username, prefix=prefix
        )
    )
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "FABRIC_HOME": str(tmp_path / "home"),
        "DWH_ADMIN_PASSWORD": u.password or "",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }
    w = Warehouse(url, prefix, root, env)
    yield w
    drop_roles(w.conninfo(), prefix)


def test_plan_shows_roles_schemas_and_shares_and_apply_creates_them(wh: Warehouse):
    wh.write("acme", share="share: [{with: [globex], schemas: [acme_marts]}]")
    wh.write("globex")
    planned = wh.actions()
    assert {
        "acme.role.loader": "create",
        "acme.schema.acme_marts": "create",
        "acme.grant.acme_marts": "create",
        "globex.role.loader": "create",
        "globex.schema.globex_marts": "create",
    }.items() <= planned.items()
    plan = wh.plan()
    text = render_plan_text(to_document(plan))
    assert "acme.grant.acme_marts" in text and wh.env["DWH_ADMIN_PASSWORD"] not in text
    explained = [describe_step(s) for s in apply_steps(plan.changes)]
    assert any(line.startswith("change warehouse dwh") for line in explained)

    wh.apply()
    assert wh.actions() == {}
    roles = wh.sql(
        "SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE starts_with(rolname, %s) "
        "ORDER BY 1",
        (wh.prefix,),
    )
    assert roles == [(wh.role("acme"), True, False), (wh.role("globex"), True, False)]
    owners = dict(
        wh.sql(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
            "WHERE nspname IN ('acme_marts', 'globex_marts')"
        )
    )
    assert owners == {"acme_marts": wh.role("acme"), "globex_marts": wh.role("globex")}
    # the role logs in with the stored password, and sees only what it was given
    with psycopg.connect(wh.conninfo(wh.role("globex"), wh.password("globex"))) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (wh.role("globex"),)
        usable = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(oid, 'USAGE') "
            "AND nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema' ORDER BY 1"
        ).fetchall()
        assert usable == [("acme_marts",), ("globex_marts",)]


def test_hand_made_grant_is_drift_and_the_next_apply_revokes_it(wh: Warehouse):
    wh.write("acme")
    wh.write("globex")
    wh.apply()
    wh.sql(f'GRANT USAGE ON SCHEMA globex_marts TO "{wh.role("acme")}"')
    wh.sql(f'GRANT CREATE ON DATABASE "{make_url(wh.url).database}" TO "{wh.role("acme")}"')
    changes = {str(c.address): c for c in wh.plan().changes}
    grant = changes["globex.grant.globex_marts"]
    assert grant.action is Action.DELETE and grant.reason == STRAY_GRANT
    role = changes["acme.role.loader"]
    assert role.action is Action.UPDATE and role.reason == WAREHOUSE_DRIFT
    fields = {f.name: (f.before, f.after) for f in role.fields}
    assert fields["reads"] == (["globex_marts"], [])
    assert fields["database"] == (["CONNECT", "CREATE", "TEMPORARY"], ["CONNECT", "TEMPORARY"])
    wh.apply()  # revoking a stray grant needs no --allow-delete
    assert wh.actions() == {}
    assert wh.sql(
        "SELECT has_schema_privilege(%s, 'globex_marts', 'USAGE')", (wh.role("acme"),)
    ) == [(False,)]


def test_public_privileges_are_revoked(wh: Warehouse):
    wh.write("acme")
    wh.apply()
    database = make_url(wh.url).database
    assert wh.sql(
        "SELECT count(*) FROM pg_database, aclexplode(datacl) a "
        "WHERE datname = %s AND a.grantee = 0",
        (database,),
    ) == [(0,)]
    wh.sql("GRANT USAGE ON SCHEMA public TO PUBLIC")
    (change,) = wh.plan().changes
    assert str(change.address) == "acme.role.loader"
    assert {f.name: f.before for f in change.fields}["public"] == ["public:USAGE"]
    wh.apply()
    assert wh.actions() == {}


def test_share_is_read_only(wh: Warehouse):
    wh.write("acme", share="share: [{with: [globex], schemas: [acme_marts]}]")
    wh.write("globex")
    wh.apply()
    acme = wh.conninfo(wh.role("acme"), wh.password("acme"))
    globex = wh.conninfo(wh.role("globex"), wh.password("globex"))
    with psycopg.connect(acme, autocommit=True) as conn:
        conn.execute("CREATE TABLE acme_marts.totals AS SELECT 42 AS n")
    with psycopg.connect(globex, autocommit=True) as conn:
        assert conn.execute("SELECT n FROM acme_marts.totals").fetchall() == [(42,)]
        for statement in (
            "INSERT INTO acme_marts.totals VALUES (1)",
            "CREATE TABLE acme_marts.mine (x int)",
            "DROP TABLE acme_marts.totals",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert wh.actions() == {}  # the table made later is covered by the default privileges


def test_removing_a_share_revokes_it(wh: Warehouse):
    wh.write("acme", share="share: [{with: [globex], schemas: [acme_marts]}]")
    wh.write("globex")
    wh.apply()
    wh.write("acme")
    assert wh.actions() == {
        "acme": "update",
        "acme.grant.acme_marts": "delete",
        "globex.role.loader": "update",
    }
    wh.apply()
    assert wh.actions() == {}
    assert wh.sql(
        "SELECT has_schema_privilege(%s, 'acme_marts', 'USAGE')", (wh.role("globex"),)
    ) == [(False,)]


def test_deleting_a_tenant_drops_its_role_and_keeps_its_data(wh: Warehouse):
    wh.write("acme")
    wh.write("globex")
    wh.apply()
    acme = wh.conninfo(wh.role("acme"), wh.password("acme"))
    with psycopg.connect(acme, autocommit=True) as conn:
        conn.execute("CREATE TABLE acme_marts.totals AS SELECT 42 AS n")
    (wh.root / "tenants" / "acme" / "tenant.yaml").unlink()
    (wh.root / "tenants" / "acme").rmdir()
    planned = wh.actions()
    assert planned["acme.role.loader"] == "delete" and planned["acme.schema.acme_marts"] == "delete"
    with pytest.raises(UnsafePlanError):
        wh.apply(allow_delete=True)
    wh.apply(allow_delete=True, allow_delete_tenants=frozenset({"acme"}))
    assert wh.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (wh.role("acme"),)) == []
    assert wh.sql("SELECT n FROM acme_marts.totals") == [(42,)]  # data kept, admin-owned
    assert wh.actions() == {}


def test_deleting_a_tenant_with_drop_data_drops_its_schemas(wh: Warehouse):
    wh.write("acme")
    wh.apply()
    (wh.root / "tenants" / "acme" / "tenant.yaml").unlink()
    (wh.root / "tenants" / "acme").rmdir()
    wh.apply(allow_delete=True, allow_delete_tenants=frozenset({"acme"}), drop_data=True)
    assert wh.sql("SELECT 1 FROM pg_namespace WHERE nspname = 'acme_marts'") == []
    assert wh.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (wh.role("acme"),)) == []


def test_no_password_in_any_output_plan_or_error(wh: Warehouse):
    from click.testing import CliRunner

    from fabric.cli.main import cli as main

    wh.write("acme", share="share: [{with: [globex], schemas: [acme_marts]}]")
    wh.write("globex")
    runner = CliRunner()
    admin = wh.env["DWH_ADMIN_PASSWORD"]
    outputs = []
    for args in (
        ["plan", str(wh.root)],
        ["plan", str(wh.root), "--format", "json"],
        ["plan", str(wh.root), "--explain"],
        ["plan", str(wh.root), "--format", "markdown"],
        ["apply", str(wh.root), "--auto-approve"],
        ["plan", str(wh.root), "--detailed-exitcode"],
        ["history", "--repo", str(wh.root)],
    ):
        result = runner.invoke(main, args, env=wh.env, catch_exceptions=False)
        outputs.append(result.output)
    assert "acme.role.loader" in outputs[0] and "acme.grant.acme_marts" in outputs[0]
    assert "no changes" in outputs[5].lower()
    role_passwords = [wh.password("acme"), wh.password("globex")]
    # a wrong admin password: the error names the warehouse, never the password
    wrong = {**wh.env, "DWH_ADMIN_PASSWORD": "Wr0ng-admin-pw-xyz"}
    result = runner.invoke(main, ["plan", str(wh.root)], env=wrong)
    assert result.exit_code == 1 and "warehouse dwh" in result.output
    outputs.append(result.output)
    unset = {k: v for k, v in wh.env.items() if k != "DWH_ADMIN_PASSWORD"}
    result = runner.invoke(main, ["plan", str(wh.root)], env={**unset, "DWH_ADMIN_PASSWORD": ""})
    assert result.exit_code == 1 and "DWH_ADMIN_PASSWORD" in result.output
    outputs.append(result.output)
    for text in outputs:
        for secret in (admin, "Wr0ng-admin-pw-xyz", *role_passwords):
            assert secret not in text
    # the server's log neither: a role's password reaches it only as a SCRAM verifier
    verifiers = wh.sql(
        "SELECT rolpassword FROM pg_authid WHERE starts_with(rolname, %s)", (wh.prefix,)
    )
    assert all(v.startswith("SCRAM-SHA-256$") for (v,) in verifiers)


def test_connections_test_logs_in_as_the_tenants_role(wh: Warehouse):
    wh.write("acme")
    wh.apply()
    (check,) = api.test_connections(wh.root, "acme", environ=wh.env)
    assert check.ok, check.detail
    assert wh.env["DWH_ADMIN_PASSWORD"] not in check.detail
    assert wh.password("acme") not in check.detail


def test_a_failed_warehouse_step_rolls_back_the_control_plane_and_the_next_apply_converges(
    wh: Warehouse,
):
    from fabric.errors import FabricError
    from fabric.state.engine import make_engine

    wh.write("acme")
    plan = wh.plan()
    wrong = {**wh.env, "DWH_ADMIN_PASSWORD": "not-the-admin-password"}
    with pytest.raises(FabricError) as err:
        api.apply(plan, repo=wh.root, environ=wrong, options=ApplyOptions())
    assert "not-the-admin-password" not in str(err.value)
    engine = make_engine(wh.env["FABRIC_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            from fabric.state.snapshot import read_tenant_rows

            assert read_tenant_rows(conn, ["acme"]) == {}  # nothing half-applied
    finally:
        engine.dispose()
    wh.apply()
    assert wh.actions() == {}


def test_a_role_whose_password_is_not_stored_gets_a_new_one(wh: Warehouse):
    from sqlalchemy import text

    from fabric.state.engine import make_engine
    from fabric.state.secrets import tenant_schema

    wh.write("acme")
    wh.apply()
    old = wh.password("acme")
    engine = make_engine(wh.env["FABRIC_DATABASE_URL"])
    try:  # as if the process died between the warehouse's commit and the control plane's
        with engine.begin() as conn:
            schema = tenant_schema(conn, "acme")
            conn.execute(text(f"DELETE FROM {schema}.secrets WHERE name = 'FABRIC_ROLE_LOADER'"))
    finally:
        engine.dispose()
    (change,) = wh.plan().changes
    assert {f.name: (f.before, f.after) for f in change.fields} == {
        "password": ("not stored", "stored encrypted")
    }
    wh.apply()
    assert wh.actions() == {}
    new = wh.password("acme")
    assert new != old
    with psycopg.connect(wh.conninfo(wh.role("acme"), new)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (wh.role("acme"),)


def test_a_saved_plan_applies_roles_and_grants(wh: Warehouse, tmp_path: Path):
    from click.testing import CliRunner

    from fabric.cli.main import cli

    wh.write("acme", share="share: [{with: [globex], schemas: [acme_marts]}]")
    wh.write("globex")
    out = tmp_path / "plan.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["plan", str(wh.root), "--out", str(out)], env=wh.env)
    assert result.exit_code == 0, result.output
    assert wh.env["DWH_ADMIN_PASSWORD"] not in out.read_text()
    result = runner.invoke(cli, ["apply", str(out), "--auto-approve"], env=wh.env)
    assert result.exit_code == 0, result.output
    assert wh.actions() == {}
    assert wh.sql(
        "SELECT has_schema_privilege(%s, 'acme_marts', 'USAGE')", (wh.role("globex"),)
    ) == [(True,)]
