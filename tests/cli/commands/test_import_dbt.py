"""`fabric import dbt` as a user runs it: what it writes, refuses and prints, and that the
imported tenant validates."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fabric import api
from fabric.cli.main import cli
from tests.cli.conftest import base_env, run_fabric, write_repo


def fabric(*args: str, cwd: Path) -> Result:
    """`fabric ARGS` run in this process from folder `cwd` (output: stdout and stderr)."""
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(here)


PLAIN = {
    "dbt_project.yml": """\
        name: plain
        config-version: 2
        profile: plain
        models:
          plain:
            marts:
              +schema: marts
              +materialized: table
        """,
    "models/staging/sources.yml": """\
        version: 2
        sources:
          - name: erp
            schema: public
            tables: [{name: orders}, {name: customers}]
        """,
    "models/staging/stg_orders.sql": """\
        {{ config(materialized='view', tags=['nightly']) }}
        select id, customer_id, status from {{ source('erp', 'orders') }}
        """,
    "models/marts/order_counts.sql": """\
        select status, count(*) as n from {{ ref('stg_orders') }} group by status
        """,
    "models/marts/schema.yml": """\
        version: 2
        models:
          - name: order_counts
            columns:
              - name: status
                data_tests: [unique, not_null]
        """,
}


@pytest.fixture
def dbt_project(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "dbt", PLAIN)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(
        tmp_path / "repo", {"fabric.yaml": "format_version: 1\nownership: {enforce: false}\n"}
    )


def test_import_writes_a_tenant_that_validates(dbt_project: Path, repo: Path):
    done = run_fabric(
        "import", "dbt", str(dbt_project), "--tenant", "plain", cwd=repo, env=base_env()
    )
    assert done.returncode == 0, done.stderr
    assert "Wrote 6 files for tenant plain from dbt project plain:" in done.stdout
    assert "  tenants/plain/models/marts/order_counts.sql" in done.stdout
    assert "  PLAIN_WAREHOUSE_PASSWORD  password of the warehouse" in done.stdout
    assert "Everything was translated." in done.stdout
    assert "fabric deps" not in done.stdout  # no packages: nothing to install
    result = api.validate(repo)
    assert result.ok, [str(d) for d in result.load.diagnostics]
    sql = (repo / "tenants/plain/models/staging/stg_orders.sql").read_text()
    assert sql.splitlines()[1].startswith("select id")  # the config line is blanked, not removed

    again = fabric("import", "dbt", str(dbt_project), "--tenant", "plain", cwd=repo)
    assert again.exit_code == 1
    assert "tenants/plain exists already; pass --force" in again.output
    assert "Traceback" not in again.output
    (repo / "tenants/plain/stale.yaml").write_text("oops: 1\n")
    forced = fabric("import", "dbt", str(dbt_project), "--tenant", "plain", "--force", cwd=repo)
    assert forced.exit_code == 0, forced.output
    assert not (repo / "tenants/plain/stale.yaml").exists()  # the folder is replaced


def test_dry_run_writes_nothing_and_strict_fails_on_anything_untranslated(
    dbt_project: Path, repo: Path
):
    (dbt_project / "models/py_model.py").write_text("def model(dbt, session): ...\n")
    dry = fabric(
        "import",
        "dbt",
        str(dbt_project),
        "--tenant",
        "plain",
        "--dry-run",
        "--strict",
        "--into",
        str(repo),
        cwd=dbt_project,
    )
    assert dry.exit_code == 1
    assert "Would write 6 files" in dry.output
    assert (
        "Not translated (1):\n  models/py_model.py: python model py_model: fabric runs SQL "
        "models only" in dry.output
    )
    assert not (repo / "tenants").exists()
    loose = fabric(
        "import", "dbt", str(dbt_project), "--tenant", "plain", "--into", str(repo), cwd=dbt_project
    )
    assert loose.exit_code == 0  # without --strict, the list is printed and the import done


def test_into_a_new_folder_makes_it_a_repository(dbt_project: Path, tmp_path: Path):
    new = tmp_path / "new-repo"
    result = api.import_dbt(dbt_project, "plain", into=new)
    assert result.written[:3] == (
        "fabric.yaml",
        "schemas/fabric.schema.json",
        "schemas/tenant.schema.json",
    )
    assert api.validate(new).ok


def test_warehouse_names_a_managed_warehouse_instead_of_credentials(dbt_project: Path, repo: Path):
    (repo / "fabric.yaml").write_text(
        textwrap.dedent("""\
            format_version: 1
            ownership: {enforce: false}
            warehouses:
              dwh:
                host: dwh.internal
                database: analytics
                admin: {username: fabric_admin, password: "${env:DWH_ADMIN_PASSWORD}"}
                manage_roles: true
            """)
    )
    done = fabric(
        "import", "dbt", str(dbt_project), "--tenant", "plain", "--warehouse", "dwh", cwd=repo
    )
    assert done.exit_code == 0, done.output
    assert "PLAIN_WAREHOUSE" not in done.output  # the warehouse's login is fabric's to make
    connections = (repo / "tenants/plain/connections.yaml").read_text()
    assert "  warehouse:\n    type: postgres\n    direction: destination\n    warehouse: dwh\n" in (
        connections
    )
    result = api.validate(repo)
    assert result.ok, [str(d) for d in result.load.diagnostics]


def test_a_tenant_slug_cannot_write_outside_its_own_folder(dbt_project: Path, repo: Path):
    (repo / "tenants/globex").mkdir(parents=True)
    (repo / "tenants/globex/tenant.yaml").write_text("tenant: {display_name: G}\n")
    for slug in ("../globex", "globex/x", "a/../../b", "Globex", "..", "/tmp/x"):
        done = fabric("import", "dbt", str(dbt_project), "--tenant", slug, "--force", cwd=repo)
        assert done.exit_code == 1, slug
        assert "is not a tenant slug" in done.output, slug
    assert (repo / "tenants/globex/tenant.yaml").read_text() == "tenant: {display_name: G}\n"
    assert sorted(p.name for p in (repo / "tenants").iterdir()) == ["globex"]


def test_links_out_of_the_project_are_neither_read_nor_imported(dbt_project: Path, repo: Path):
    write_repo(repo, {"tenants/globex/models/secret.sql": "select 'globex only' as s\n"})
    (dbt_project / "models/marts/stolen.sql").symlink_to(repo / "tenants/globex/models/secret.sql")
    (dbt_project / "seeds").mkdir()
    (dbt_project / "seeds/theirs").symlink_to(repo / "tenants/globex", target_is_directory=True)
    done = fabric("import", "dbt", str(dbt_project), "--tenant", "plain", cwd=repo)
    assert done.exit_code == 0, done.output
    assert "models/marts/stolen.sql: linked file: it points outside the project folder" in (
        done.output
    )
    assert "seeds/theirs: linked folder: links are not followed" in done.output
    imported = [p for p in (repo / "tenants/plain").rglob("*") if p.is_file()]
    assert all("globex only" not in p.read_text() for p in imported)
    assert not (repo / "tenants/plain/models/marts/stolen.sql").exists()


def test_a_linked_tenant_folder_is_never_written_through(
    dbt_project: Path, repo: Path, tmp_path: Path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "tenants").mkdir()
    (repo / "tenants/plain").symlink_to(outside, target_is_directory=True)
    done = fabric("import", "dbt", str(dbt_project), "--tenant", "plain", "--force", cwd=repo)
    assert done.exit_code == 1
    assert "is a link" in done.output
    assert list(outside.iterdir()) == []


def test_validate_reports_an_imported_read_of_another_tenants_variable(
    dbt_project: Path, repo: Path
):
    write_repo(repo, {"tenants/globex/tenant.yaml": "tenant: {display_name: Globex}\n"})
    (dbt_project / "models/marts/leak.sql").write_text(
        textwrap.dedent("""\
            select '{{ env_var('GLOBEX_TOKEN') }}' as token
            """)
    )
    done = fabric("import", "dbt", str(dbt_project), "--tenant", "plain", cwd=repo)
    assert done.exit_code == 0, done.output
    assert "models/marts/leak.sql:1: env_var('GLOBEX_TOKEN'): tenant plain may read only" in (
        done.output
    )
    result = api.validate(repo)
    assert not result.ok
    shown = [str(d) for d in result.load.diagnostics]
    assert any("GLOBEX_TOKEN" in d and "leak.sql" in d for d in shown), shown
