"""The functional core stays pure, and the CLI stays fast to start."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import fabric

ROOT = Path(fabric.__file__).parent
PURE = [
    "addresses",
    "diagnostics",
    "errors",
    "config/yaml_source",
    "config/specs",
    "config/sections",
    "config/references",
    "config/resolve",
    "config/checks",
    "config/ownership",
    "config/sql_refs",
    "config/json_schema",
    "config/export",
    "domain",
    "graph",
    "plan",
    "render",
    "runner/nodes",
    "runner/dbt_project",
    "scheduling",
]
SHELL_ONLY = {
    "sqlalchemy",
    "psycopg",
    "dlt",
    "dbt",
    "click",
    "subprocess",
    "watchfiles",
    "os",
    "fabric.state",
    "fabric.cli",
    "fabric.settings",
    "fabric.api",
    "fabric.config.loader",
    "fabric.config.discovery",
    "fabric.runner.local",
    "fabric.runner.worker",
    "fabric.running",
    "fabric.planning",
    "fabric.apply",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_pure_modules_import_nothing_with_side_effects():
    for entry in PURE:
        single = ROOT / f"{entry}.py"
        paths = [single] if single.exists() else sorted((ROOT / entry).rglob("*.py"))
        assert paths, f"{entry} names no module"
        for path in paths:
            bad = {
                m
                for m in imported_modules(path)
                if any(m == s or m.startswith(s + ".") for s in SHELL_ONLY)
            }
            assert not bad, f"{path.relative_to(ROOT)} is [pure] but imports {sorted(bad)}"


def test_only_the_cli_imports_click():
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("cli/"):
            continue
        assert "click" not in imported_modules(path), f"{rel} imports click"


def _modules_loaded_by(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    """Modules `fabric ARGS` imported; `exit=N` is among them, N its exit code."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['fabric', *{args!r}]\n"
        "status = 0\n"
        "try:\n    runpy.run_module('fabric', run_name='__main__')\n"
        "except SystemExit as exc:\n    status = exc.code or 0\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
        "print(f'exit={status}', file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return set(proc.stderr.split())


def test_help_and_validate_do_not_import_dlt_dbt_or_sqlalchemy():
    example = str(ROOT.parent / "example-repo")
    for args in (["--help"], ["validate", example]):
        loaded = _modules_loaded_by(args)
        heavy = {m for m in loaded if m.split(".")[0] in {"dlt", "dbt", "sqlalchemy", "alembic"}}
        assert not heavy, f"fabric {' '.join(args)} imported {sorted(heavy)[:5]}"


def test_read_only_commands_import_neither_dlt_dbt_alembic_nor_what_they_do_not_use(
    tmp_path: Path, make_database
):
    """`runs`, `status` and `plan` are typed often; each heavy package costs every call."""
    from cryptography.fernet import Fernet

    from fabric import api
    from fabric.apply import ApplyOptions

    root = tmp_path / "repo"
    (root / "tenants" / "acme").mkdir(parents=True)
    (root / "fabric.yaml").write_text("format_version: 1\n")
    (root / "tenants" / "acme" / "tenant.yaml").write_text(
        "tenant: {display_name: Acme, warehouse: dwh}\n"
        "connections:\n  dwh: {type: postgres, direction: destination, host: h, database: d}\n"
        "transformations:\n  totals: {schema: marts, sql: select 1 as n}\n"
    )
    env = {
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
    }
    api.apply(api.plan(root, environ=env).plan, repo=root, environ=env, options=ApplyOptions())
    heavy = {"dlt", "dbt", "alembic", "sqlglot", "pyarrow"}
    commands = {
        ("runs", "--repo", str(root)): heavy | {"pydantic", "yaml"},
        ("status", "--tenant", "acme", "--repo", str(root)): heavy | {"pydantic", "yaml"},
        ("plan", str(root), "--detailed-exitcode"): heavy,
    }
    for args, banned in commands.items():
        loaded = _modules_loaded_by(list(args), env)
        assert "exit=0" in loaded, f"fabric {' '.join(args)} failed"
        bad = sorted({m for m in loaded if m.split(".")[0] in banned})
        assert not bad, f"fabric {' '.join(args)} imported {bad[:5]}"
