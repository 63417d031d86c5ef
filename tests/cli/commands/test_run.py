"""`fabric run` and `test` selectors (positional, -s/--select); `runs` and `status` JSON."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet

from tests.cli.conftest import base_env, run_fabric


@pytest.fixture
def applied(small_repo: Path, make_database) -> tuple[Path, dict[str, str]]:
    env = base_env(
        FABRIC_DATABASE_URL=make_database(),
        FABRIC_SECRET_KEYS=Fernet.generate_key().decode(),
    )
    done = run_fabric("apply", "--auto-approve", cwd=small_repo, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return small_repo, env


def test_select_joins_positional_selectors_as_dbt_users_type_it(applied, tmp_path):
    repo, env = applied
    for args in (
        ["run", "-s", "nosuch", "--tenant", "acme"],
        ["run", "orders", "--select", "orders nosuch", "--tenant", "acme"],
        ["test", "-s", "nosuch", "--tenant", "acme"],
    ):
        done = run_fabric(*args, cwd=repo, env=env)
        assert done.returncode == 1, (args, done.stderr)
        assert "selector 'nosuch' matches no node" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    # REPO comes first among a variadic command's positionals, from any folder.
    done = run_fabric("run", str(repo), "-s", "nosuch", "--tenant", "acme", cwd=tmp_path, env=env)
    assert done.returncode == 1 and "'nosuch' matches no node" in done.stderr, done.stderr


def test_runs_and_status_print_a_stable_json_document(applied):
    repo, env = applied
    empty = run_fabric("runs", "--format", "json", cwd=repo, env=env)
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == {"format_version": 1, "kind": "fabric-runs", "runs": []}

    before = dt.datetime.now(dt.UTC)
    done = run_fabric("run", "-s", "orders", "--tenant", "acme", cwd=repo, env=env)
    assert done.returncode == 1, done.stdout + done.stderr  # the source file does not exist

    doc = json.loads(run_fabric("runs", "--format", "json", cwd=repo, env=env).stdout)
    assert doc["format_version"] == 1 and doc["kind"] == "fabric-runs"
    (run,) = doc["runs"]
    assert {k: run[k] for k in ("tenant", "id", "status", "trigger", "selection")} == {
        "tenant": "acme",
        "id": 1,
        "status": "failed",
        "trigger": "manual",
        "selection": ["orders"],
    }
    started = dt.datetime.fromisoformat(run["started_at"])
    finished = dt.datetime.fromisoformat(run["finished_at"])
    assert before - dt.timedelta(seconds=5) <= started <= finished
    assert run["seconds"] == pytest.approx((finished - started).total_seconds(), abs=0.01)
    assert set(run) == {
        *("tenant", "id", "status", "trigger", "who", "selection"),
        *("started_at", "finished_at", "seconds", "error"),
    }

    status = run_fabric("status", "--tenant", "acme", "--format", "json", cwd=repo, env=env)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["format_version"] == 1 and doc["kind"] == "fabric-status"
    assert doc["tenant"] == "acme"
    (node,) = doc["nodes"]
    assert node["node"] == "acme.pipeline.orders"
    assert node["last_run"]["status"] == "failed" and node["last_run"]["error"]
    assert node["last_run"]["rows_loaded"] == {}
    nxt = node["next_run"]
    assert nxt["schedule"] == "nightly" and nxt["timezone"] == "Europe/Berlin"
    at = dt.datetime.fromisoformat(nxt["at"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (at.hour, at.minute) == (2, 0) and at > before

    text = run_fabric("status", "--tenant", "acme", cwd=repo, env=env).stdout
    assert "acme.pipeline.orders  failed" in text and "(nightly)" in text
    assert at.strftime("%Y-%m-%d 02:00 %Z") in text
