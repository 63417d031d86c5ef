"""Secrets set before a tenant's first apply (issue 11, item 6): one apply binds them.

They wait in `fabric.pending_secrets`, encrypted and bound to their tenant exactly as in the
tenant's own store; the tenant's first apply moves them there in its transaction.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from fabric import api
from fabric.apply import ApplyOptions
from fabric.errors import SecretDecryptError
from fabric.scaffold import InvalidSlugError
from fabric.settings import load_settings
from fabric.state.engine import make_engine
from fabric.state.secrets import load_secret_box, read_secret, rotate_all, tenant_schema

TENANT = """\
tenant: {{display_name: {slug}, warehouse: dwh}}
connections:
  dwh:
    type: postgres
    direction: destination
    host: 127.0.0.1
    database: {slug}_dwh
    username: loader
    password: ${{secret:dwh_password}}
"""


@pytest.fixture
def setup(tmp_path: Path, make_database):
    root = tmp_path / "repo"
    (root / "tenants" / "acme").mkdir(parents=True)
    (root / "fabric.yaml").write_text("format_version: 1\n")
    (root / "tenants" / "acme" / "tenant.yaml").write_text(TENANT.format(slug="acme"))
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
    }
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    yield root, env, engine
    engine.dispose()


def apply(root, env):
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    return plan


def test_a_secret_set_before_the_first_apply_is_bound_by_that_apply(setup):
    root, env, engine = setup
    result = api.set_secret_result(root, "acme", "dwh_password", "s3cret-value", environ=env)
    assert result.changed and result.pending
    assert [name for name, _ in api.list_secrets(root, "acme", environ=env)] == ["dwh_password"]

    plan = apply(root, env)
    assert not any("not set yet" in note for note in plan.notes)
    assert not api.plan(root, environ=env).plan.has_changes  # one apply: nothing left to bind
    box = load_secret_box(load_settings(env), None)
    with engine.connect() as conn:
        schema = tenant_schema(conn, "acme")
        assert read_secret(conn, box, "acme", schema, "dwh_password") == "s3cret-value"
        ct = conn.execute(text(f'SELECT secrets FROM "{schema}".connections')).scalar_one()
        assert ct["password"]["ct"] and "s3cret-value" not in str(ct)
        assert conn.execute(text("SELECT count(*) FROM fabric.pending_secrets")).scalar_one() == 0
    # once applied, a new value goes to the tenant's own store
    again = api.set_secret_result(root, "acme", "dwh_password", "other", environ=env)
    assert again.changed and not again.pending


def test_another_tenants_pending_secret_is_neither_moved_nor_usable(setup):
    root, env, engine = setup
    api.set_secret(root, "acme", "dwh_password", "acme-value", environ=env)
    api.set_secret(root, "beta", "dwh_password", "beta-value", environ=env)
    apply(root, env)  # only acme is in the repository
    with engine.connect() as conn:
        schema = tenant_schema(conn, "acme")
        names = conn.execute(text(f'SELECT name FROM "{schema}".secrets')).scalars().all()
        pending = conn.execute(text("SELECT tenant_slug FROM fabric.pending_secrets")).all()
    assert names == ["dwh_password"] and pending == [("beta",)]

    # a hostile copy of beta's pending value into gamma's row cannot be decrypted as gamma's
    (root / "tenants" / "gamma").mkdir()
    (root / "tenants" / "gamma" / "tenant.yaml").write_text(TENANT.format(slug="gamma"))
    api.set_secret(root, "gamma", "dwh_password", "gamma-value", environ=env)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE fabric.pending_secrets SET ciphertext = (SELECT ciphertext FROM "
                "fabric.pending_secrets WHERE tenant_slug = 'beta') WHERE tenant_slug = 'gamma'"
            )
        )
    plan = api.plan(root, environ=env).plan
    with pytest.raises(SecretDecryptError):
        api.apply(plan, repo=root, environ=env, options=ApplyOptions())
    with engine.connect() as conn:  # nothing half-applied
        assert (
            conn.execute(
                text("SELECT count(*) FROM fabric.tenants WHERE slug = 'gamma'")
            ).scalar_one()
            == 0
        )


def test_rotation_covers_pending_secrets(setup):
    root, env, engine = setup
    api.set_secret(root, "acme", "dwh_password", "before-rotation", environ=env)
    new_key = Fernet.generate_key().decode()
    both = {**env, "FABRIC_SECRET_KEYS": f"{new_key},{env['FABRIC_SECRET_KEYS']}"}
    result = rotate_all(engine, load_secret_box(load_settings(both), None))
    assert result.per_table.get("fabric.pending_secrets") == 1
    only_new = {**env, "FABRIC_SECRET_KEYS": new_key}  # the old key is gone
    apply(root, only_new)
    box = load_secret_box(load_settings(only_new), None)
    with engine.connect() as conn:
        schema = tenant_schema(conn, "acme")
        assert read_secret(conn, box, "acme", schema, "dwh_password") == "before-rotation"


def test_a_pending_secret_needs_a_valid_tenant_slug(setup):
    root, env, _ = setup
    with pytest.raises(InvalidSlugError):
        api.set_secret(root, "Not-A-Slug", "dwh_password", "x", environ=env)


def test_only_the_new_tenants_declared_admins_may_seed_its_secrets(setup):
    """A pending secret is bound by the tenant's first apply: a stranger who seeded, say, a
    warehouse URL pointing at their own server would receive the tenant's data. So before the
    first apply, the members the tenant's own YAML declares decide (as they do for that apply)."""
    from fabric.errors import UnauthorizedError

    root, env, engine = setup
    body = TENANT.format(slug="acme").replace(
        "warehouse: dwh}", "warehouse: dwh, members: [{who: ana@acme.example, role: owner}]}"
    )
    (root / "tenants" / "acme" / "tenant.yaml").write_text(body)
    with pytest.raises(UnauthorizedError, match=r"mallory@evil\.example"):
        api.set_secret_result(
            root, "acme", "dwh_password", "attacker", environ=env, author="mallory@evil.example"
        )
    result = api.set_secret_result(
        root, "acme", "dwh_password", "s3cret", environ=env, author="Ana@Acme.example"
    )
    assert result.changed and result.pending
    plan = api.plan(root, environ=env).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions(author="ana@acme.example"))
    box = load_secret_box(load_settings(env), None)
    with engine.connect() as conn:
        schema = tenant_schema(conn, "acme")
        assert read_secret(conn, box, "acme", schema, "dwh_password") == "s3cret"
