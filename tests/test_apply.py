"""plan + apply against a real PostgreSQL control plane (one fresh database per test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from fabric import api
from fabric.addresses import Address
from fabric.apply import ApplyOptions
from fabric.errors import (
    LockTimeoutError,
    MissingSecretError,
    PlanError,
    StalePlanError,
    TenantNotAppliedError,
    UnsafePlanError,
)
from fabric.plan import steps
from fabric.plan.diff import DRIFT, Action
from fabric.plan.safety import SafetyOptions
from fabric.state.engine import make_engine
from fabric.state.locks import LockNamespace, tenant_lock_key

KEY = Fernet.generate_key().decode()
DWH_PASSWORD = "dwh-Pa55word-never-shown"
SHOP_PASSWORD = "shop-Pa55word-never-shown"

FABRIC_YAML = "format_version: 1\nname: test\nownership: {enforce: false}\n"
ACME = {
    "tenants/acme/tenant.yaml": """
        tenant:
          display_name: Acme
          warehouse: dwh
        connections:
          dwh:
            type: postgres
            direction: destination
            host: 127.0.0.1
            database: dwh
            username: loader
            password: ${env:ACME_DWH_PASSWORD}
          shop:
            type: postgres
            direction: source
            host: 127.0.0.1
            database: shop
            password: ${secret:shop_password}
        """,
    "tenants/acme/pipelines.yaml": """
        pipelines:
          orders:
            source: shop
            dataset: acme_raw
            mode: single_table
            table: orders
            write_disposition: merge
            primary_key: [id]
            tags: [nightly]
        transformations:
          totals:
            schema: acme_marts
            materialized: table
            sql: select count(*) as n from {{ source('orders', 'orders') }}
        schedules:
          nightly:
            cron: "0 2 * * *"
            targets: ["tag:nightly+"]
        """,
}
GLOBEX = {
    "tenants/globex/tenant.yaml": """
        tenant:
          display_name: Globex
          warehouse: dwh
        connections:
          dwh:
            type: postgres
            direction: destination
            host: 127.0.0.1
            database: globex_dwh
            password: ${env:GLOBEX_DWH_PASSWORD}
        """,
}


@pytest.fixture
def cp_url(make_database) -> str:
    """A fresh, empty control-plane database."""
    return make_database()


@pytest.fixture
def env(cp_url: str) -> dict[str, str]:
    return {
        "FABRIC_DATABASE_URL": cp_url,
        "FABRIC_SECRET_KEYS": KEY,
        "ACME_DWH_PASSWORD": DWH_PASSWORD,
        "GLOBEX_DWH_PASSWORD": DWH_PASSWORD,
        "SHARED_DWH_PASSWORD": DWH_PASSWORD,
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
    }


@pytest.fixture
def repo(tmp_path: Path):
    root = tmp_path / "repo"

    def write(files: dict[str, str | None]) -> Path:
        for rel, body in files.items():
            path = root / rel
            if body is None:
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(body))
        return root

    write({"fabric.yaml": FABRIC_YAML})
    return write


def do_apply(root: Path, env: dict[str, str], **safety) -> api.ApplyResult:
    plan = api.plan(root, environ=env).plan
    return api.apply(
        plan, repo=root, environ=env, options=ApplyOptions(safety=SafetyOptions(**safety))
    )


def actions(root: Path, env: dict[str, str]) -> dict[str, str]:
    return {str(c.address): c.action.value for c in api.plan(root, environ=env).plan.changes}


def sql(url: str, statement: str, **params):
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


def test_first_apply_creates_everything_and_replanning_shows_no_changes(repo, env, cp_url):
    root = repo(ACME)
    planned = actions(root, env)
    assert set(planned.values()) == {"create"}
    assert {"acme", "acme.connection.dwh", "acme.pipeline.orders"} <= set(planned)
    assert "acme.dependency.pipeline.orders->transformation.totals" in planned
    result = do_apply(root, env)
    assert result.counts["create"] == len(planned)
    assert actions(root, env) == {}
    (schema,) = sql(cp_url, "SELECT schema_name FROM fabric.tenants WHERE slug = 'acme'")[0]
    rows = sql(cp_url, f"SELECT name FROM {schema}.pipelines WHERE deleted_at IS NULL")
    assert rows == [("orders",)]


def test_changed_field_is_an_update_then_no_change(repo, env):
    root = repo(ACME)
    do_apply(root, env)
    repo(
        {
            "tenants/acme/pipelines.yaml": ACME["tenants/acme/pipelines.yaml"].replace(
                "acme_raw", "acme_raw2"
            )
        }
    )
    changes = api.plan(root, environ=env).plan.changes
    (change,) = [c for c in changes if str(c.address) == "acme.pipeline.orders"]
    assert change.action is Action.UPDATE
    assert [(f.name, f.before, f.after) for f in change.fields] == [
        ("dataset", "acme_raw", "acme_raw2")
    ]
    do_apply(root, env)
    assert actions(root, env) == {}


def test_hand_edit_in_the_database_is_drift_to_revert(repo, env, cp_url):
    root = repo(ACME)
    do_apply(root, env)
    schema = sql(cp_url, "SELECT schema_name FROM fabric.tenants WHERE slug = 'acme'")[0][0]
    sql(
        cp_url,
        f"UPDATE {schema}.pipelines SET spec = jsonb_set(spec, '{{dataset}}', '\"hand\"') "
        "WHERE name = 'orders'",
    )
    (change,) = api.plan(root, environ=env).plan.changes
    assert change.reason == DRIFT
    assert [(f.name, f.before, f.after) for f in change.fields] == [("dataset", "hand", "acme_raw")]
    do_apply(root, env)
    assert actions(root, env) == {}


def test_deletes_need_allow_delete(repo, env):
    root = repo(ACME)
    do_apply(root, env)
    body = ACME["tenants/acme/pipelines.yaml"]
    repo({"tenants/acme/pipelines.yaml": body.split("        schedules:")[0]})
    assert actions(root, env)["acme.schedule.nightly"] == "delete"
    with pytest.raises(UnsafePlanError, match="--allow-delete"):
        do_apply(root, env)
    do_apply(root, env, allow_delete=True)
    assert actions(root, env) == {}


def test_protected_resource_stays_protected_after_its_yaml_is_removed(repo, env):
    body = ACME["tenants/acme/pipelines.yaml"]
    protected = body.replace("tags: [nightly]", "tags: [nightly]\n            protect: true")
    root = repo({**ACME, "tenants/acme/pipelines.yaml": protected})
    do_apply(root, env)
    # Remove the pipelines file's resources (the protected pipeline among them).
    repo({"tenants/acme/pipelines.yaml": "pipelines: {}\n"})
    with pytest.raises(UnsafePlanError, match="protected"):
        do_apply(root, env, allow_delete=True)
    # Unprotect first (a plain update), then delete: two steps.
    repo({"tenants/acme/pipelines.yaml": protected.replace("protect: true", "protect: false")})
    do_apply(root, env)
    repo({"tenants/acme/pipelines.yaml": "pipelines: {}\n"})
    do_apply(root, env, allow_delete=True)
    assert actions(root, env) == {}


def test_vanished_tenant_needs_its_name(repo, env):
    root = repo({**ACME, **GLOBEX})
    do_apply(root, env)
    repo({"tenants/globex/tenant.yaml": None})
    assert actions(root, env) == {"globex": "delete", "globex.connection.dwh": "delete"}
    with pytest.raises(UnsafePlanError, match="allow-delete-tenant"):
        do_apply(root, env, allow_delete=True)
    do_apply(root, env, allow_delete=True, allow_delete_tenants=frozenset({"globex"}))
    assert actions(root, env) == {}


def test_stale_plan_is_refused_naming_what_moved_but_not_for_other_tenants(repo, env, cp_url):
    root = repo({**ACME, **GLOBEX})
    do_apply(root, env)
    repo(
        {
            "tenants/acme/pipelines.yaml": ACME["tenants/acme/pipelines.yaml"].replace(
                "acme_raw", "acme_v2"
            )
        }
    )
    stale = api.plan(root, environ=env).plan
    # An unrelated tenant changes: the acme plan is still good...
    schema_g = sql(cp_url, "SELECT schema_name FROM fabric.tenants WHERE slug='globex'")[0][0]
    sql(cp_url, f"UPDATE {schema_g}.connections SET spec = spec || '{{\"port\": 1}}'")
    # ...but a hand edit of an acme object it read makes it stale.
    schema = sql(cp_url, "SELECT schema_name FROM fabric.tenants WHERE slug='acme'")[0][0]
    sql(cp_url, f"UPDATE {schema}.schedules SET spec = spec || '{{\"active\": false}}'")
    with pytest.raises(StalePlanError) as err:
        api.apply(stale, repo=root, environ=env, options=ApplyOptions())
    assert err.value.changed == (Address.parse("acme.schedule.nightly"),)
    fresh = api.plan(root, environ=env, tenants=["acme"]).plan
    api.apply(fresh, repo=root, environ=env, options=ApplyOptions())


def test_plan_made_from_other_files_is_refused(repo, env):
    root = repo(ACME)
    plan = api.plan(root, environ=env).plan
    repo({"tenants/acme/pipelines.yaml": ACME["tenants/acme/pipelines.yaml"] + "\n# edited\n"})
    with pytest.raises(PlanError, match="different files"):
        api.check_plan_source(plan, root)


def test_missing_env_secret_at_apply_names_the_variable(repo, env):
    root = repo(ACME)
    plan = api.plan(root, environ=env).plan
    env.pop("ACME_DWH_PASSWORD")
    with pytest.raises(MissingSecretError, match="ACME_DWH_PASSWORD"):
        api.apply(plan, repo=root, environ=env, options=ApplyOptions())


def test_changed_secret_shows_as_sensitive_change(repo, env):
    root = repo(ACME)
    do_apply(root, env)
    env["ACME_DWH_PASSWORD"] = "another-value"
    (change,) = api.plan(root, environ=env).plan.changes
    assert str(change.address) == "acme.connection.dwh"
    assert [(f.name, f.sensitive) for f in change.fields] == [("password", True)]


def test_second_apply_of_the_same_tenant_times_out_naming_the_holder(repo, env, cp_url):
    root = repo(ACME)
    plan = api.plan(root, environ=env).plan
    holder = make_engine(cp_url, application_name="holder-under-test")
    with holder.connect() as conn, conn.begin():
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :k)"),
            {"ns": LockNamespace.APPLY, "k": tenant_lock_key("acme")},
        )
        with pytest.raises(LockTimeoutError) as err:
            api.apply(plan, repo=root, environ=env, options=ApplyOptions(lock_timeout=0.5))
        assert "holder-under-test" in str(err.value) and err.value.since is not None
        # Another tenant is not blocked by acme's lock.
        globex = repo(GLOBEX)
        other = api.plan(globex, environ=env, tenants=["globex"]).plan
        api.apply(other, repo=globex, environ=env, options=ApplyOptions(lock_timeout=0.5))
    holder.dispose()
    api.apply(plan, repo=root, environ=env, options=ApplyOptions(lock_timeout=5))


def _cli(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        **kw,
    )


def test_concurrent_applies_from_two_processes_lose_nothing(repo, env, cp_url):
    root = repo({**ACME, **GLOBEX})
    args = ["apply", str(root), "--auto-approve", "--lock-timeout", "60"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fabric", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    # One applies; the other either found nothing left to do or refused its stale plan.
    assert codes[0] == 0, outs
    assert all("Traceback" not in o + e for o, e in outs)
    if codes[1] != 0:
        assert any("stale" in e for _, e in outs), outs
    assert actions(root, env) == {}
    assert sql(cp_url, "SELECT count(*) FROM fabric.tenants")[0][0] == 2


def test_sigkill_in_the_middle_of_a_large_apply_leaves_state_as_before(repo, env, cp_url):
    # a variable fabric.yaml shares with every tenant (each may name only its own otherwise)
    files = {"fabric.yaml": FABRIC_YAML + "env: [SHARED_DWH_PASSWORD]\n"}
    for t in range(150):
        files[f"tenants/t{t:03d}/tenant.yaml"] = (
            "tenant: {display_name: T, warehouse: dwh}\n"
            "connections:\n  dwh: {type: postgres, direction: destination, host: h, "
            f"database: d{t}, password: '${{env:SHARED_DWH_PASSWORD}}'}}\n"
            "pipelines:\n"
            + "".join(
                f"  p{i}: {{source: dwh, dataset: t{t:03d}_raw, mode: single_table, table: x}}\n"
                for i in range(0)
            )
        )
    root = repo(files)
    plan_file = root / "plan.json"
    done = _cli(["plan", str(root), "--out", str(plan_file)], env)
    assert done.returncode == 0, done.stderr
    before = sql(cp_url, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant_%'")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fabric", "apply", str(plan_file), "--auto-approve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it once its transaction has written something (a tenant schema exists in it).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        busy = sql(
            cp_url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'fabric apply%' "
            "AND state = 'active' AND datname = current_database()",
        )[0][0]
        if busy:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The server notices the dead client and rolls its transaction back.
    deadline = time.monotonic() + 30
    while sql(
        cp_url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'fabric apply%' "
        "AND datname = current_database()",
    )[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Nothing is registered (provisioned schemas, if any, are invisible to plan and run).
    exists = sql(cp_url, "SELECT to_regclass('fabric.tenants') IS NOT NULL")[0][0]
    if exists:
        assert sql(cp_url, "SELECT count(*) FROM fabric.tenants")[0][0] == 0
    # And the same plan file still applies cleanly afterwards, dropping what the dead one left.
    done = _cli(["apply", str(plan_file), "--auto-approve"], env)
    assert done.returncode == 0, done.stderr
    assert unregistered(cp_url) == 0
    after = sql(cp_url, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant_%'")
    assert after[0][0] == before[0][0] + 150


def test_secrets_never_appear_in_any_output(repo, env, tmp_path):
    root = repo(ACME)
    plan_file = tmp_path / "plan.json"
    outputs = []
    for args in (
        ["plan", str(root)],
        ["plan", str(root), "--format", "json"],
        ["plan", str(root), "--format", "markdown"],
        ["plan", str(root), "--out", str(plan_file)],
        ["apply", str(plan_file), "--auto-approve"],
    ):
        done = _cli(args, env)
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
    done = _cli(["secrets", "set", "acme", "shop_password"], env, input=SHOP_PASSWORD)
    assert done.returncode == 0, done.stderr
    outputs += [done.stdout, done.stderr]
    env["ACME_DWH_PASSWORD"] = DWH_PASSWORD + "-rotated"
    for args in (
        ["plan", str(root)],
        ["plan", str(root), "--format", "json"],
        ["apply", str(root), "--auto-approve"],
        ["history", str(root)],
    ):
        done = _cli(args, env)
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
    outputs.append(plan_file.read_text())
    blob = "\n".join(outputs)
    assert "(sensitive value changed)" in blob
    for secret in (DWH_PASSWORD, SHOP_PASSWORD, KEY):
        assert secret not in blob


def test_history_records_commit_author_and_counts(repo, env):
    root = repo(ACME)
    plan = api.plan(root, environ=env).plan
    options = ApplyOptions(git_commit="abc123", author="Ana <ana@acme.example>")
    result = api.apply(plan, repo=root, environ=env, options=options)
    done = _cli(["history", str(root)], env)
    assert done.returncode == 0, done.stderr
    assert "abc123" in done.stdout and "Ana" in done.stdout and "success" in done.stdout
    assert result.apply_id == 1


def test_export_round_trip_plans_no_changes(repo, env, tmp_path):
    sql_file = {
        "tenants/acme/models/big.sql": "select 1 as one\nfrom {{ ref('totals') }}\n",
        "tenants/acme/more.yaml": """
            transformations:
              big:
                sql_file: models/big.sql
                schema: acme_marts
                materialized: incremental
                unique_key: [one]
                tests:
                  one: [not_null, {accepted_values: [1]}]
            """,
    }
    root = repo({**ACME, **GLOBEX, **sql_file})
    do_apply(root, env)
    out = tmp_path / "exported"
    api.export(root, out, environ=env)
    assert (out / "tenants/acme/models/big.sql").read_text() == sql_file[
        "tenants/acme/models/big.sql"
    ]
    assert actions(out, env) == {}
    done = _cli(["validate", str(out)], env)
    assert done.returncode == 0, done.stdout


def test_detailed_exitcode_is_2_with_changes_and_0_without(repo, env):
    root = repo(ACME)
    assert _cli(["plan", str(root), "--detailed-exitcode"], env).returncode == 2
    assert _cli(["apply", str(root), "--auto-approve"], env).returncode == 0
    done = _cli(["plan", str(root), "--detailed-exitcode"], env)
    assert done.returncode == 0, done.stderr
    assert "No changes" in done.stdout


def test_fingerprints_survive_rotation_and_removing_the_old_key(repo, env, cp_url):
    names = [f"pw_{i}" for i in range(6)]
    connections = "".join(
        f"""
          src_{name}:
            type: postgres
            direction: source
            host: 127.0.0.1
            database: shop
            password: ${{secret:{name}}}
        """
        for name in names
    )
    root = repo(
        {
            **ACME,
            "tenants/acme/more.yaml": "connections:"
            + textwrap.indent(textwrap.dedent(connections), "  "),
        }
    )
    do_apply(root, env)
    for name in names:
        done = _cli(["secrets", "set", "acme", name, "--repo", str(root)], env, input=f"v-{name}")
        assert done.returncode == 0, done.stderr
    do_apply(root, env)
    assert actions(root, env) == {}

    new_key = Fernet.generate_key().decode()
    rotating = {**env, "FABRIC_SECRET_KEYS": f"{new_key},{KEY}"}
    done = _cli(["secrets", "rotate", "--repo", str(root)], rotating)
    assert done.returncode == 0, done.stderr
    only_new = {**env, "FABRIC_SECRET_KEYS": new_key}

    assert actions(root, only_new) == {}  # was: every secret "sensitive value changed"
    env_changed = {**only_new, "ACME_DWH_PASSWORD": "changed"}
    assert actions(root, env_changed) == {"acme.connection.dwh": "update"}


def _tamper(doc: dict) -> dict:
    """What a reader of the plan file (holding no secret key) does: edit a target, then
    recompute every unkeyed hash the file carries."""
    from fabric.plan.fingerprint import record_fingerprint
    from fabric.plan.plan import plan_of_document

    (target,) = [c["target"] for c in doc["changes"] if c["address"] == "acme"]
    target["spec"]["warehouse"] = "nonexistent; drop"
    fps = dict(sorted(target["secret_fingerprints"].items()))
    target["fingerprint"] = record_fingerprint(target["spec"], fps, target["protect"])
    doc["plan_hash"] = plan_of_document(doc).plan_hash
    return doc


def tenant_rows(cp_url: str) -> list:
    return sql(cp_url, "SELECT slug, spec::text, fingerprint FROM fabric.tenants ORDER BY slug")


def test_an_edited_plan_file_with_recomputed_hashes_is_refused(repo, env, cp_url, tmp_path):
    import json

    root = repo({**ACME, **GLOBEX})
    do_apply(root, env)
    repo({"tenants/acme/tenant.yaml": ACME["tenants/acme/tenant.yaml"].replace("Acme", "Acme Co")})
    before = tenant_rows(cp_url)
    plan_file = tmp_path / "plan.json"
    done = _cli(["plan", str(root), "--out", str(plan_file)], env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(plan_file.read_text())
    assert doc["signature"]

    plan_file.write_text(json.dumps(_tamper(doc)))
    done = _cli(["apply", str(plan_file), "--auto-approve"], env)

    assert done.returncode == 1
    assert "signature that does not match" in done.stderr
    assert "Traceback" not in done.stderr
    assert tenant_rows(cp_url) == before  # the control plane is unchanged

    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    plan_file.write_text(json.dumps(unsigned))
    done = _cli(["apply", str(plan_file), "--auto-approve"], env)
    assert done.returncode == 1 and "has no signature" in done.stderr
    assert tenant_rows(cp_url) == before


def test_a_signed_plan_whose_records_fail_validation_is_refused(repo, env, cp_url, tmp_path):
    """Re-validation on apply, even with a valid signature (say, made by a leaked key)."""
    import json

    from fabric.plan.plan import signing_payload
    from fabric.settings import load_settings
    from fabric.state.secrets import load_secret_box

    root = repo({**ACME})
    plan_file = tmp_path / "plan.json"
    assert _cli(["plan", str(root), "--out", str(plan_file)], env).returncode == 0
    doc = _tamper(json.loads(plan_file.read_text()))
    doc["signature"] = load_secret_box(load_settings(env), None).sign(signing_payload(doc))
    plan_file.write_text(json.dumps(doc))

    with pytest.raises(PlanError, match="fail validation") as err:
        api.read_plan_file(plan_file, environ=env)
    assert "nonexistent; drop" in str(err.value) or "acme" in str(err.value)
    assert sql(cp_url, "SELECT to_regclass('fabric.tenants') IS NOT NULL")[0][0] in (False, None)
    good = tmp_path / "good.json"
    assert _cli(["plan", str(root), "--out", str(good)], env).returncode == 0
    assert api.read_plan_file(good, environ=env).has_changes


def test_apply_checks_a_bounded_number_of_changed_logins_and_names_the_rest(repo, env):
    """What each changed PostgreSQL login reaches is asked after the commit (test_probes.py has
    the warnings themselves); an apply creating many asks REACH_MAX_PROBES of them, under one
    deadline, and says which tenants' others to test. Unchanged ones are not asked again."""
    count = api.REACH_MAX_PROBES + 3
    lines = "".join(
        f"  c{i:02}: {{type: postgres, direction: source, host: 127.0.0.1, port: 1, "
        f"database: d, password: '${{env:ACME_DWH_PASSWORD}}'}}\n"
        for i in range(count)
    )
    root = repo({"tenants/acme/tenant.yaml": "tenant: {display_name: A}\nconnections:\n" + lines})
    result = do_apply(root, env)
    unchecked = [w for w in result.warnings if "could not be checked" in w]
    assert len(unchecked) == api.REACH_MAX_PROBES
    assert all(w.startswith("acme: connection c") for w in unchecked)
    assert result.warnings[-1].startswith("3 more changed connection(s) were not checked")
    assert "fabric connections test --tenant NAME` for acme" in result.warnings[-1]
    assert DWH_PASSWORD not in repr(result.warnings)
    assert do_apply(root, env).warnings == ()


# --- applies at scale on a stock PostgreSQL (max_locks_per_transaction 64) --------------------


def many_tenants(count: int, prefix: str = "t", pipelines: int = 1) -> dict[str, str]:
    files = {}
    for t in range(count):
        slug = f"{prefix}{t:03d}"
        files[f"tenants/{slug}/tenant.yaml"] = (
            "tenant: {display_name: T, warehouse: dwh}\n"
            "connections:\n  dwh: {type: postgres, direction: destination, host: h, "
            f"database: d{t}}}\n"
            "  src: {type: postgres, direction: source, host: h, database: s}\n"
            "pipelines:\n"
            + "".join(
                f"  p{i}: {{source: src, dataset: {slug}_raw, mode: single_table, table: x}}\n"
                for i in range(pipelines)
            )
        )
    return files


def unregistered(url: str) -> int:
    return sql(
        url,
        "SELECT count(*) FROM pg_namespace n WHERE nspname ~ '^tenant_[0-9]+$' AND NOT EXISTS "
        "(SELECT 1 FROM fabric.tenants t WHERE t.schema_name = n.nspname)",
    )[0][0]


@pytest.fixture
def stock_env(env: dict[str, str], stock_database: str) -> dict[str, str]:
    assert sql(stock_database, "SELECT current_setting('max_locks_per_transaction')") == [("64",)]
    return {**env, "FABRIC_DATABASE_URL": stock_database}


def test_first_apply_of_300_tenants_succeeds_on_a_stock_server(repo, stock_env, stock_database):
    # One transaction of old held every new schema's ~75 locks: 300 tenants need ~22,000, the
    # stock lock table holds ~6,400 (it failed with "out of shared memory" near 130).
    root = repo(many_tenants(300))
    result = do_apply(root, stock_env)
    assert result.counts["create"] == 300 * 4
    assert actions(root, stock_env) == {}
    assert sql(stock_database, "SELECT count(*) FROM fabric.tenants")[0][0] == 300
    assert unregistered(stock_database) == 0
    (applies,) = sql(stock_database, "SELECT count(*) FROM fabric.applies")[0]
    assert applies == 1


def test_a_provisional_schema_is_invisible_to_plan_status_and_run(repo, stock_env, stock_database):
    root = repo(ACME)
    do_apply(root, stock_env)
    root = repo(many_tenants(45, prefix="n"))  # 3 batches on a stock server
    seen: dict[str, object] = {}

    def at_switch(step: steps.Step) -> None:
        if not isinstance(step, steps.RegisterTenants):
            return
        seen["provisional"] = unregistered(stock_database)
        seen["plan"] = actions(root, stock_env)
        for probe, call in {
            "status": lambda: api.tenant_status(root, "n000", environ=stock_env),
            "run": lambda: api.run(root, tenants=["n000"], environ=stock_env),
        }.items():
            with pytest.raises(TenantNotAppliedError):
                call()
            seen[probe] = "not applied"
        raise RuntimeError("stop at the switch")

    plan = api.plan(root, environ=stock_env).plan
    with pytest.raises(RuntimeError, match="stop at the switch"):
        api.apply(plan, repo=root, environ=stock_env, options=ApplyOptions(on_step=at_switch))
    assert seen["provisional"] == 45
    assert len(seen["plan"]) == 45 * 4 and set(seen["plan"].values()) == {"create"}
    assert seen["status"] == seen["run"] == "not applied"
    # The failed apply dropped what it had provisioned, and changed nothing else.
    assert unregistered(stock_database) == 0
    assert sql(stock_database, "SELECT slug FROM fabric.tenants") == [("acme",)]
    assert actions(root, stock_env) == seen["plan"]


KILL_AT_SWITCH = """
import os, signal, sys
from pathlib import Path
from fabric import api
from fabric.apply import ApplyOptions
from fabric.plan import steps

def at_switch(step):
    if isinstance(step, steps.RegisterTenants):
        os.kill(os.getpid(), signal.SIGKILL)

root = Path(sys.argv[1])
plan = api.plan(root).plan
api.apply(plan, repo=root, options=ApplyOptions(on_step=at_switch))
"""


def test_an_apply_killed_before_its_switch_changes_nothing_and_the_next_cleans_up(
    repo, stock_env, stock_database
):
    root = repo(many_tenants(45))
    before = actions(root, stock_env)
    done = subprocess.run(
        [sys.executable, "-c", KILL_AT_SWITCH, str(root)],
        env=stock_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    # Everything was provisioned; nothing was registered: plan sees the old state.
    assert unregistered(stock_database) == 45
    assert actions(root, stock_env) == before
    # The next apply drops the dead apply's schemas (their token lock died with it) and works.
    result = do_apply(root, stock_env)
    assert result.counts["create"] == 45 * 4
    assert unregistered(stock_database) == 0
    (schemas,) = sql(
        stock_database, "SELECT count(*) FROM pg_namespace WHERE nspname ~ '^tenant_'"
    )[0]
    assert schemas == 45
    assert actions(root, stock_env) == {}
