"""The cross-tenant matrix (issue 8): every way tenant acme tries to reach globex's data, the
control plane, fabric's settings and keys, or files outside its work folder, on a real
PostgreSQL warehouse whose roles fabric manages.

Two layers are tried. What a tenant can write in its files is refused by `validate` (first
table). What validation would refuse anyway is then forced into the control plane's stored
records (the way a bug or a compromised repository would hand it to the runner), and the
warehouse and the run environment must still say no (second table). The test prints the
matrix, attempt by attempt, and requires every outcome to be a denial.
"""

from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url

from fabric import api
from fabric.addresses import Address
from fabric.domain.runs import NodeStatus
from tests.runner.test_managed_runs import (  # noqa: F401 - `repo` is a fixture
    _conninfo,
    repo,
    run,
    tamper,
)

# (label, file to write into acme's folder, diagnostic code validate must report)
WRITTEN = [
    (
        "env_var of fabric's secret keys",
        "transformations:\n  probe:\n    sql: select '{{ env_var(\"FABRIC_SECRET_KEYS\") }}' as k\n"
        "    schema: acme_marts\n",
        "undeclared-env-var",
    ),
    ("env: list names globex's variable", None, "foreign-env"),
    (
        "${env:} of globex's variable in a connection",
        "connections:\n  stolen:\n    type: postgres\n    direction: source\n    host: h\n"
        "    database: d\n    password: ${env:GLOBEX_DWH_PASSWORD}\n",
        "foreign-env",
    ),
    (
        "${env:} of the control plane's URL",
        "connections:\n  cp:\n    type: postgres\n    direction: source\n"
        "    url: ${env:FABRIC_DATABASE_URL}\n",
        "reserved-env",
    ),
    (
        "a model writing globex's schema",
        "transformations:\n  grab:\n    sql: select 1 as n\n    schema: globex_marts\n",
        "schema-conflict",
    ),
    (
        "a file source outside data/acme/",
        "connections:\n  files:\n    type: filesystem\n    bucket_url: data/globex\n"
        "pipelines:\n  grab:\n    source: files\n    dataset: acme_grab\n    mode: files\n"
        "    file_glob: '*.csv'\n    format: csv\n",
        "unsafe-local-path",
    ),
]

# (label, SQL acme's model `who` is made to run past validation)
FORCED_SQL = [
    ("read globex's table", "select n from globex_marts.totals"),
    ("read a server file", "select pg_read_file('/etc/passwd') as f"),
    ("list the server's data folder", "select pg_ls_dir('.') as f"),
    ("read the server's settings file path", "select current_setting('config_file') as f"),
    ("read role passwords", "select rolpassword from pg_authid"),
    ("become globex's role", "select 1 as n from (select set_config('role', '{globex}', false)) s"),
    ("read fabric's keys with env_var", "select '{{ env_var(\"FABRIC_SECRET_KEYS\") }}' as k"),
]


def _denied(error: str) -> bool:
    lowered = error.lower()
    return any(
        marker in lowered
        for marker in (
            "permission denied",
            "must be superuser",
            "not allowed",
            "env var required but not provided",  # dbt: not in the run's environment at all
        )
    )


def test_every_cross_tenant_attempt_is_denied(repo, capsys):  # noqa: F811 - the fixture
    root, env, url = repo
    assert run(root, env, "acme").ok and run(root, env, "globex").ok
    matrix: list[tuple[str, str, str]] = []

    # 1. What a tenant writes: refused by validate, at the file and line.
    tenant_dir = root / "tenants" / "acme"
    original = (tenant_dir / "tenant.yaml").read_text()
    for label, text, code in WRITTEN:
        if text is None:  # an `env:` list in acme's own tenant.yaml
            body = original.replace(
                "  warehouse: dwh\n", "  warehouse: dwh\n  env: [GLOBEX_TOKEN]\n"
            )
            assert body != original
            (tenant_dir / "tenant.yaml").write_text(body)
            extra = None
        else:
            extra = tenant_dir / "attack.yaml"
            extra.write_text(text)
        try:
            codes = {d.code for d in api.validate(root).load.diagnostics if d.severity == "error"}
        finally:
            (tenant_dir / "tenant.yaml").write_text(original)
            if extra is not None:
                extra.unlink()
        matrix.append(("validate", label, "denied" if code in codes else f"allowed {codes}"))
    assert api.validate(root).ok

    # 2. Forced past validation: the warehouse and the run environment say no.
    with psycopg.connect(_conninfo(make_url(url)), autocommit=True) as conn:
        (globex_role,) = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE '%globex_loader'"
        ).fetchone()
    who = Address.parse("acme.transformation.who")
    for label, sql in FORCED_SQL:
        tamper(env, "acme", "transformations", "who", "sql", sql.replace("{globex}", globex_role))
        result = run(root, env, "acme", "transformation:who")
        error = result.errors.get(who, "")
        ok = result.nodes.get(who) is NodeStatus.FAILED and _denied(error)
        matrix.append(("run", label, "denied" if ok else f"allowed: {error or 'succeeded'}"))
    tamper(env, "acme", "pipelines", "orders", "dataset", "globex_marts")
    result = run(root, env, "acme", "pipeline:orders")
    orders = Address.parse("acme.pipeline.orders")
    ok = result.nodes.get(orders) is NodeStatus.FAILED and _denied(result.errors.get(orders, ""))
    matrix.append(("run", "load into globex's schema", "denied" if ok else "allowed"))

    # 3. The tenant's login itself, used directly (as if its password had leaked).
    control = make_url(env["FABRIC_DATABASE_URL"])
    with psycopg.connect(_conninfo(make_url(url)), autocommit=True) as conn:
        (acme_role,) = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE '%acme_loader'"
        ).fetchone()
        conn.execute(f"ALTER ROLE \"{acme_role}\" PASSWORD 'leaked-for-the-test'")
    leaked = {"user": acme_role, "password": "leaked-for-the-test", "host": control.host}
    for label, dbname, sql in [
        ("read the control plane's tenants", control.database, "SELECT * FROM fabric.tenants"),
        ("read the control plane's queue", control.database, "SELECT * FROM procrastinate_jobs"),
        ("read globex's raw data", make_url(url).database, "SELECT * FROM globex_marts.totals"),
        ("create in the public schema", make_url(url).database, "CREATE TABLE public.x (i int)"),
    ]:
        try:
            with psycopg.connect(
                **leaked, port=control.port, dbname=dbname, autocommit=True
            ) as conn:
                conn.execute(sql)
            outcome = "allowed"
        except psycopg.Error as exc:
            outcome = "denied" if _denied(str(exc)) else f"failed otherwise: {exc}"
        matrix.append(("login", label, outcome))

    with capsys.disabled():
        print("\ncross-tenant matrix (acme against globex, the control plane, fabric):")
        for layer, label, outcome in matrix:
            print(f"  {layer:8} {label:45} {outcome}")
    assert [m for m in matrix if m[2] != "denied"] == []
    assert len(matrix) == len(WRITTEN) + len(FORCED_SQL) + 1 + 4
