"""Ownership end to end: a real git repository, commits by different authors, `fabric apply` as
a real process against a real control plane, and the audit log of who changed what.

The author is the HEAD commit's (as CI applies a merge); the control plane's members decide,
never the branch's YAML.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT_ADMIN = "Rita Root <root@platform.example>"
OLGA = "Olga Owner <olga@acme.example>"
ADAM = "Adam Admin <adam@acme.example>"
EDDIE = "Eddie Editor <eddie@acme.example>"
MALLORY = "Mallory <mallory@elsewhere.example>"
GINA = "Gina <gina@globex.example>"

FABRIC_YAML = """\
format_version: 1
name: owned
admins: [platform]
groups:
  platform: {members: [root@platform.example], team: "@owned/platform"}
"""
ACME_TENANT = """\
tenant:
  display_name: Acme
  warehouse: dwh
  members:
    - {who: Olga@Acme.example, role: owner}
    - {who: adam@acme.example, role: admin}
    - {who: eddie@acme.example, role: editor}
connections:
  dwh:
    type: postgres
    direction: destination
    host: 127.0.0.1
    database: dwh
    password: ${env:ACME_DWH_PASSWORD}
  shop: {type: postgres, direction: source, host: 127.0.0.1, database: shop}
  legacy: {type: postgres, direction: source, host: 127.0.0.1, database: legacy}
"""
ACME_PIPELINES = """\
pipelines:
  orders:
    source: shop
    dataset: acme_raw
    mode: single_table
    table: orders
"""
GLOBEX_TENANT = """\
tenant:
  display_name: Globex
  warehouse: dwh
  members:
    - {who: gina@globex.example, role: owner}
connections:
  dwh:
    type: postgres
    direction: destination
    host: 127.0.0.1
    database: globex
    password: ${env:GLOBEX_DWH_PASSWORD}
"""


class Repo:
    """A git checkout whose commits carry the given authors."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        root.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
        )
        return done.stdout.strip()

    def commit(self, author: str, message: str, files: dict[str, str | None]) -> str:
        for rel, body in files.items():
            path = self.root / rel
            if body is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(body))
        self.git("add", "-A")
        self.git("commit", "-q", "--author", author, "-m", message)
        return self.git("rev-parse", "HEAD")

    def fabric(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fabric", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=180,
        )


@pytest.fixture
def repo(tmp_path: Path, make_database) -> Repo:
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "ACME_DWH_PASSWORD": "dwh-secret-never-shown",
        "GLOBEX_DWH_PASSWORD": "dwh-secret-never-shown",
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_COMMITTER_NAME": "CI",
        "GIT_COMMITTER_EMAIL": "ci@platform.example",
    }
    (tmp_path / "home").mkdir()
    return Repo(tmp_path / "repo", env)


def applied(repo: Repo, *extra: str) -> subprocess.CompletedProcess[str]:
    done = repo.fabric("apply", "--auto-approve", *extra)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_the_control_planes_members_decide_who_may_apply(repo: Repo) -> None:
    first = repo.commit(
        ROOT_ADMIN,
        "platform: acme and globex",
        {
            "fabric.yaml": FABRIC_YAML,
            "tenants/acme/tenant.yaml": ACME_TENANT,
            "tenants/acme/pipelines.yaml": ACME_PIPELINES,
            "tenants/globex/tenant.yaml": GLOBEX_TENANT,
        },
    )
    done = applied(repo)
    assert done.returncode == 0, done.stdout + done.stderr

    # A non-member's branch is refused, naming the role needed, before anything is written.
    repo.git("checkout", "-q", "-b", "mallory")
    repo.commit(
        MALLORY,
        "bigger batches",
        {"tenants/acme/pipelines.yaml": ACME_PIPELINES + "    batch_size: 10\n"},
    )
    planned = repo.fabric("plan", "--author", "mallory@elsewhere.example")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("Apply would refuse 1 change(s) by mallory@elsewhere")
    assert "Who may approve (owners, admins):" in planned.stdout
    assert "acme: Olga@Acme.example, adam@acme.example, platform (project admin)" in planned.stdout
    refused = applied(repo)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert (
        "acme.pipeline.orders: Mallory <mallory@elsewhere.example> is not a member; this "
        "change needs editor or above" in refused.stderr
    )
    # A saved plan file is judged the same way.
    assert repo.fabric("plan", "--out", "mallory.plan").returncode == 0
    from_file = repo.fabric("apply", "mallory.plan", "--auto-approve")
    assert from_file.returncode == 3 and "is not a member" in from_file.stderr
    (repo.root / "mallory.plan").unlink()

    # The editor's own change passes: the commit's author is checked and recorded.
    repo.git("checkout", "-q", "main")
    edit = repo.commit(
        EDDIE,
        "bigger batches",
        {"tenants/acme/pipelines.yaml": ACME_PIPELINES + "    batch_size: 500\n"},
    )
    done = applied(repo)
    assert done.returncode == 0, done.stdout + done.stderr

    # An editor deleting a connection is refused; an admin's apply of the same change passes.
    repo.git("checkout", "-q", "-b", "drop-legacy")
    without_legacy = ACME_TENANT.replace(
        "  legacy: {type: postgres, direction: source, host: 127.0.0.1, database: legacy}\n", ""
    )
    repo.commit(EDDIE, "drop legacy", {"tenants/acme/tenant.yaml": without_legacy})
    refused = applied(repo, "--allow-delete")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert (
        "acme.connection.legacy: Eddie Editor <eddie@acme.example> is an editor; this change "
        "needs admin or above; may approve: Olga@Acme.example, adam@acme.example" in refused.stderr
    )
    by_admin = applied(repo, "--allow-delete", "--author", "ADAM@acme.example")
    assert by_admin.returncode == 0, by_admin.stdout + by_admin.stderr

    # The last owner cannot be removed: a validation error at the file and line.
    no_owner = without_legacy.replace("    - {who: Olga@Acme.example, role: owner}\n", "")
    repo.commit(OLGA, "olga leaves", {"tenants/acme/tenant.yaml": no_owner})
    invalid = applied(repo)
    assert invalid.returncode == 1
    assert "tenants/acme/tenant.yaml:5:5: error: Tenant without an owner" in invalid.stderr
    assert "last owner cannot be removed" in invalid.stderr
    repo.git("reset", "-q", "--hard", "HEAD~1")

    # An acme editor cannot grant themselves rights over globex: globex's current owners decide.
    grab = GLOBEX_TENANT.replace(
        "    - {who: gina@globex.example, role: owner}\n",
        "    - {who: gina@globex.example, role: owner}\n"
        "    - {who: eddie@acme.example, role: owner}\n",
    )
    repo.commit(EDDIE, "co-own globex", {"tenants/globex/tenant.yaml": grab})
    refused = applied(repo, "--tenant", "globex")
    assert refused.returncode == 3
    assert (
        "globex: Eddie Editor <eddie@acme.example> is not a member; this change needs owner"
        in refused.stderr
    )
    repo.git("reset", "-q", "--hard", "HEAD~1")
    # ...nor make themselves a project admin in fabric.yaml: the recorded admins decide.
    repo.commit(
        EDDIE,
        "me too",
        {
            "fabric.yaml": FABRIC_YAML.replace(
                "[root@platform.example]", "[root@platform.example, eddie@acme.example]"
            ),
            "tenants/acme/pipelines.yaml": ACME_PIPELINES + "    batch_size: 600\n",
        },
    )
    refused = applied(repo)
    assert refused.returncode == 3
    assert (
        "fabric.yaml: Eddie Editor <eddie@acme.example> is not a project admin; this change "
        "needs a project admin; may approve: platform (project admin)" in refused.stderr
    )
    assert "acme.pipeline.orders" not in refused.stderr  # that part is an editor's to make
    repo.git("reset", "-q", "--hard", "HEAD~1")

    # The audit log: who changed the field, when, from which commit, before and after.
    log = repo.fabric("history", "--resource", "acme.pipeline.orders")
    assert log.returncode == 0, log.stderr
    lines = log.stdout.splitlines()
    assert "Eddie Editor <eddie@acme.example>" in lines[1] and edit[:8] in lines[1]
    assert "~ acme.pipeline.orders (update)" in lines[2]
    assert "batch_size: null -> 500" in lines[3]
    assert first[:8] in log.stdout and "+ acme.pipeline.orders (create)" in log.stdout
    assert "Mallory" not in log.stdout
    secrets = repo.fabric("history", "--tenant", "acme")
    assert "password: (sensitive value changed)" in secrets.stdout
    assert "dwh-secret-never-shown" not in secrets.stdout + secrets.stderr


def test_with_no_author_known_apply_refuses_unless_the_project_opts_out(repo: Repo) -> None:
    files = {
        "fabric.yaml": FABRIC_YAML,
        "tenants/acme/tenant.yaml": ACME_TENANT,
        "tenants/acme/pipelines.yaml": ACME_PIPELINES,
    }
    for rel, body in files.items():  # not committed: no git author to default to
        (repo.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo.root / rel).write_text(body)
    refused = applied(repo)
    assert refused.returncode == 3
    assert "no author is known" in refused.stderr and "enforce: false" in refused.stderr
    (repo.root / "fabric.yaml").write_text(FABRIC_YAML + "ownership: {enforce: false}\n")
    assert applied(repo).returncode == 0


def test_codeowners_follows_the_owners_and_admins_and_check_finds_it_stale(repo: Repo) -> None:
    repo.commit(
        ROOT_ADMIN,
        "start",
        {
            "fabric.yaml": FABRIC_YAML,
            "tenants/acme/tenant.yaml": ACME_TENANT,
            "tenants/acme/pipelines.yaml": ACME_PIPELINES,
            "tenants/globex/tenant.yaml": GLOBEX_TENANT,
        },
    )
    missing = repo.fabric("codeowners", "--check")
    assert missing.returncode == 1 and "is missing" in missing.stderr
    assert repo.fabric("codeowners").returncode == 0
    written = (repo.root / ".github" / "CODEOWNERS").read_text()
    assert written.splitlines()[3:] == [
        "* @owned/platform",
        "/tenants/acme/ Olga@Acme.example adam@acme.example @owned/platform",
        "/tenants/globex/ gina@globex.example @owned/platform",
    ]
    assert repo.fabric("codeowners", "--check").returncode == 0
    (repo.root / "tenants/globex/tenant.yaml").write_text(
        GLOBEX_TENANT.replace("gina@globex.example", "gus@globex.example")
    )
    stale = repo.fabric("codeowners", "--check")
    assert stale.returncode == 1 and "is stale" in stale.stderr


def test_setting_a_secret_needs_an_admin_of_the_tenant(repo: Repo) -> None:
    repo.commit(
        ROOT_ADMIN,
        "start",
        {
            "fabric.yaml": FABRIC_YAML,
            "tenants/acme/tenant.yaml": ACME_TENANT,
            "tenants/acme/pipelines.yaml": ACME_PIPELINES,
            "tenants/globex/tenant.yaml": GLOBEX_TENANT,
        },
    )
    assert applied(repo).returncode == 0

    def set_as(author: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fabric", "secrets", "set", "acme", "token", "--author", author],
            input="s3cret-value",
            capture_output=True,
            text=True,
            env=repo.env,
            cwd=repo.root,
            timeout=120,
        )

    by_editor = set_as("eddie@acme.example")
    assert by_editor.returncode == 3, by_editor.stdout + by_editor.stderr
    assert "acme secret token: eddie@acme.example is an editor" in by_editor.stderr
    by_other_tenant = set_as("gina@globex.example")
    assert by_other_tenant.returncode == 3 and "is not a member" in by_other_tenant.stderr
    assert "s3cret-value" not in by_editor.stderr + by_other_tenant.stderr
    by_admin = set_as("adam@acme.example")
    assert by_admin.returncode == 0, by_admin.stdout + by_admin.stderr
    listed = repo.fabric("secrets", "list", "acme")
    assert "token" in listed.stdout


def _seed(path: Path, first: int, last: int) -> None:
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, updated_at TEXT)")
        db.executemany(
            "INSERT INTO orders VALUES (?, ?)",
            [(i, f"2024-01-01T00:{i:02}:00") for i in range(first, last + 1)],
        )
    db.close()


def test_a_renamed_pipeline_keeps_its_history_and_cursor_and_a_lock_names_its_holder(
    repo: Repo, make_database
) -> None:
    """Issue 11's end to end, continued: pull-request locks and a rename, on real commits."""
    from sqlalchemy import make_url, text

    from fabric import api
    from fabric.state.engine import make_engine

    warehouse = make_url(make_database())
    repo.env["ACME_WAREHOUSE_PASSWORD"] = warehouse.password or ""
    tenant = f"""\
        tenant:
          display_name: Acme
          warehouse: dwh
          members:
            - {{who: olga@acme.example, role: owner}}
            - {{who: eddie@acme.example, role: editor}}
        connections:
          shop: {{type: sqlite, direction: source, path: data/acme/shop.db}}
          dwh:
            type: postgres
            direction: destination
            host: {warehouse.host}
            port: {warehouse.port}
            database: {warehouse.database}
            username: {warehouse.username}
            password: ${{env:ACME_WAREHOUSE_PASSWORD}}
        """
    pipeline = """\
        pipelines:
          {name}:
            source: shop
            dataset: acme_raw
            mode: single_table
            table: orders
            incremental: {{cursor: updated_at}}
        {extra}"""
    _seed(repo.root / "data/acme/shop.db", 1, 5)
    (repo.root / ".gitignore").write_text("data/\n")
    repo.commit(
        ROOT_ADMIN,
        "acme with a pipeline",
        {
            "fabric.yaml": FABRIC_YAML,
            "tenants/acme/tenant.yaml": tenant,
            "tenants/acme/pipelines.yaml": pipeline.format(name="orders", extra=""),
        },
    )
    assert applied(repo).returncode == 0
    ran = repo.fabric("run", "orders", "--tenant", "acme")
    assert ran.returncode == 0, ran.stdout + ran.stderr

    # Pull request 1 (Eddie) renames the pipeline and holds acme with its plan.
    repo.git("checkout", "-q", "-b", "rename")
    renamed = pipeline.format(name="orders_v2", extra="    renamed_from: orders\n")
    repo.commit(EDDIE, "orders -> orders_v2", {"tenants/acme/pipelines.yaml": renamed})
    planned = repo.fabric("plan", "--lock-for", "1", "--out", "../pr1.plan")
    assert planned.returncode == 0, planned.stderr
    assert "~ acme.pipeline.orders_v2 (moved from acme.pipeline.orders)" in planned.stdout
    assert "Pull request 1 holds acme until its plan is applied." in planned.stdout
    assert "- acme.pipeline.orders" not in planned.stdout  # no delete, no --allow-delete

    # Pull request 2 (Olga) also changes acme: its plan names the holder and exits 4.
    repo.git("checkout", "-q", "main")
    repo.git("checkout", "-q", "-b", "retries")
    retried = pipeline.format(name="orders", extra="    retries: 3\n")
    repo.commit(OLGA, "retries", {"tenants/acme/pipelines.yaml": retried})
    second = repo.fabric("plan", "--lock-for", "2")
    assert second.returncode == 4, second.stdout + second.stderr
    assert (
        "tenant acme is locked by pull request 1 (Eddie Editor <eddie@acme.example>) since"
        in second.stderr
    )

    # Pull request 1 merges; CI applies its saved plan, which releases its lock.
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--ff-only", "rename")
    done = repo.fabric("apply", "../pr1.plan", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert api.pr_locks(repo.root, environ=repo.env) == []

    # The renamed pipeline kept its run history and its incremental cursor.
    (node,) = api.tenant_status(repo.root, "acme", environ=repo.env)
    assert node.node == "acme.pipeline.orders_v2"
    assert (node.last.status, dict(node.last.rows_loaded)) == ("success", {"orders": 5})
    _seed(repo.root / "data/acme/shop.db", 6, 8)
    ran = repo.fabric("run", "orders_v2", "--tenant", "acme")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (node,) = api.tenant_status(repo.root, "acme", environ=repo.env)
    assert dict(node.last.rows_loaded) == {"orders": 3}  # 6..8 only
    engine = make_engine(warehouse.render_as_string(hide_password=False))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*), count(DISTINCT id) FROM acme_raw.orders"))
        assert rows.one() == (8, 8)
    engine.dispose()
