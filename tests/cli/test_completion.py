"""Shell completion (click's, plus tenant names) and the pre-commit hook fabric ships."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from fabric import api

ROOT = Path(__file__).resolve().parents[2]


def complete(words: str, cwd: Path) -> list[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")},
        "_FABRIC_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    done = subprocess.run(
        [sys.executable, "-c", "from fabric.cli.main import main; main()"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return [v for line in done.stdout.splitlines() if (v := line.partition(",")[2])]


def test_tenant_options_and_arguments_complete_the_repositorys_tenant_folders(tmp_path):
    api.init_repository(tmp_path, tenant="acme")
    api.new_tenant(tmp_path, "beta")
    (tmp_path / "tenants" / ".hidden").mkdir()
    assert complete("fabric plan --tenant ", tmp_path) == ["acme", "beta"]
    assert complete("fabric run --tenant b", tmp_path / "tenants") == ["beta"]
    assert complete("fabric secrets set a", tmp_path) == ["acme"]
    assert complete("fabric init --tenant ", tmp_path) == []  # a new name: nothing to offer
    assert "watch" in complete("fabric wa", tmp_path)


def test_bash_source_prints_the_completion_script(tmp_path):
    env = {**os.environ, "_FABRIC_COMPLETE": "bash_source"}
    done = subprocess.run(
        [sys.executable, "-c", "from fabric.cli.main import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "_fabric_completion()" in done.stdout


def test_the_pre_commit_hook_runs_fabric_validate_on_fabric_files():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "fabric-validate" and hook["entry"] == "fabric validate"
    assert hook["pass_filenames"] is False  # validate checks the whole repository at once
    files = re.compile(hook["files"])
    for path in ("fabric.yaml", "tenants/acme/pipelines.yaml", "tenants/acme/models/m.sql"):
        assert files.search(path), path
    for path in ("README.md", "data/acme/orders.csv", "bench/x.yaml"):
        assert not files.search(path), path
