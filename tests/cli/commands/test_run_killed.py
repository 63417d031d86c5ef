"""`kill -9` of a `fabric run` in the middle of a real load (issue 8, "What it must show").

Before the fix a killed runner left its workers alive, holding the pipeline's load lock and an
open source cursor, and the next run of that pipeline failed for 60 s naming a dead run. Now
the workers die with their runner, the lock ends with their sessions, and the pipeline runs
again at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fabric.state.engine import make_engine
from fabric.state.locks import LockNamespace
from tests.pg_repo import CONNECTIONS, apply_with_secrets, control_plane_env, server_passwords

TENANT = """\
tenant: {{display_name: Acme, warehouse: dwh}}
{connections}pipelines:
  orders: {{source: src, dataset: acme_raw, mode: single_table, table: orders}}
"""

# The source is a view whose rows come slowly while `control.slow` is true: a load reading it
# stays in the middle of its extract, with its source cursor open and its lock held.
SOURCE = """
create table control (slow boolean not null);
insert into control values (true);
create function pace() returns int language plpgsql as $$
begin
  if (select slow from control) then perform pg_sleep(30); end if;
  return 1;
end $$;
create view orders as
  select g as id, 'paid'::text as status from generate_series(1, 5) g where pace() = 1;
"""


@pytest.fixture
def repo(tmp_path: Path, make_database):
    warehouse, source = make_url(make_database()), make_url(make_database())
    root = tmp_path / "repo"
    (root / "tenants" / "acme").mkdir(parents=True)
    (root / "fabric.yaml").write_text("format_version: 1\nownership: {enforce: false}\n")
    tenant = TENANT.format(connections=CONNECTIONS.format(wh=warehouse, src=source))
    (root / "tenants" / "acme" / "tenant.yaml").write_text(tenant)
    env = control_plane_env(tmp_path, make_database)
    src = make_engine(source)
    with src.begin() as conn:
        conn.exec_driver_sql(SOURCE)
    src.dispose()
    apply_with_secrets(root, env, server_passwords(warehouse, source))
    return root, env, source, warehouse


def _fabric_run(root: Path, env: dict[str, str], **popen) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fabric", "run", "--tenant", "acme", "--repo", str(root)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def _poll(check, timeout: float = 60.0, every: float = 0.1):
    """`check()` once it is truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {timeout} s: {check.__doc__}")


def _describe(p: psutil.Process) -> str:
    try:
        return f"pid {p.pid} (parent {p.ppid()}, group {os.getpgid(p.pid)}): {p.cmdline()[:4]}"
    except (psutil.Error, OSError):
        return f"pid {p.pid} (gone)"


def test_a_runner_killed_mid_load_leaves_no_worker_and_no_lock(repo):
    root, env, source, _ = repo
    src = make_engine(source)
    control = make_engine(env["FABRIC_DATABASE_URL"])
    runner = _fabric_run(root, env, start_new_session=True)
    try:

        def extracting() -> bool:
            """the load is reading the slow view"""
            with src.connect() as conn:
                return bool(
                    conn.scalar(
                        text(
                            "select count(*) from pg_stat_activity where state = 'active' "
                            "and query ilike '%orders%' and pid <> pg_backend_pid() "
                            "and datname = current_database()"
                        )
                    )
                )

        _poll(extracting)
        descendants = psutil.Process(runner.pid).children(recursive=True)
        assert descendants, "the runner has no worker"

        def lock_held() -> int:
            with control.connect() as conn:
                return conn.scalar(
                    text(
                        "select count(*) from pg_locks where locktype = 'advisory' "
                        "and granted and classid = :ns"
                    ),
                    {"ns": int(LockNamespace.PIPELINE)},
                )

        assert lock_held() == 1, "the load holds its pipeline lock"

        runner.kill()  # kill -9: no handler of the runner runs
        runner.wait(timeout=10)
        _, alive = psutil.wait_procs(descendants, timeout=10)
        left = [_describe(p) for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert not left, left

        def lock_released() -> bool:
            """the pipeline lock ended with its worker's session"""
            return lock_held() == 0

        _poll(lock_released, timeout=10)

        with src.begin() as conn:  # the source is fast again; the killed query may still sleep
            conn.execute(text("update control set slow = false"))
        again = _fabric_run(root, env)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, out + err
        assert "busy" not in (out + err).lower() and "dead run" not in out + err
    finally:
        if runner.poll() is None:
            runner.kill()
        src.dispose()
        control.dispose()
