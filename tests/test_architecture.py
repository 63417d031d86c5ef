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
    "config/destinations",
    "config/sql_refs",
    "config/json_schema",
    "config/export",
    "config/changes",
    "dbt_import/jinja",
    "dbt_import/project",
    "dbt_import/data_tests",
    "dbt_import/translate",
    "dbt_import/report",
    "domain",
    "graph",
    "plan",
    "render",
    "runner/dbt_project",
    "runner/dbt_errors",
    "runner/failures",
    "runner/sessions",
    "scheduling",
    "schedule/fire_times",
    "schedule/tick",
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
    "fabric.runner.driver",
    "fabric.runner.probes",
    "fabric.runner.credentials",
    "fabric.runner.dlt_node",
    "fabric.runner.dbt_node",
    "fabric.planning",
    "fabric.apply",
}


def imported_modules(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Every module `path` imports; `from fabric import x` counts as `fabric.x`.

    `runtime_only` leaves out imports under `if TYPE_CHECKING:` (annotations only).
    """
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for n in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "fabric" or node.module.startswith("fabric."):
                names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


LAYERS = [
    # lowest first: a module may import its own layer and the ones before it, never later ones
    (
        "fabric.addresses",
        "fabric.errors",
        "fabric.diagnostics",
        "fabric.domain",
        "fabric.clock",
        "fabric.config.specs",  # the YAML contract the domain values are made of
        "fabric.config.references",
    ),
    (
        "fabric.config",
        "fabric.plan",
        "fabric.graph",
        "fabric.render",
        "fabric.scheduling",
        "fabric.schedule",
        "fabric.settings",
    ),
    ("fabric.state",),
    ("fabric.runner", "fabric.planning", "fabric.apply"),
    ("fabric.api", "fabric.demo"),
    ("fabric.cli", "fabric.__main__"),
]


def _layer(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def test_nothing_imports_upward():
    """The layer order above; e.g. graph/ and state/ never import the runner."""
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        here = _layer(_module_name(path))
        if here is None:
            continue
        for module in imported_modules(path, runtime_only=True):
            there = _layer(module)
            if there is not None and there > here:
                bad.append(f"{_module_name(path)} imports {module}")
    assert not bad, bad


DATABASE_LIBRARIES = {"sqlalchemy", "psycopg", "alembic"}
WAREHOUSE_ACCESS = {
    # the runner reaches tenants' warehouses and sources, not the control plane's tables
    "fabric.runner.credentials",
    "fabric.runner.dlt_node",
    "fabric.runner.dlt_sources",
    "fabric.runner.dlt_destinations",
    "fabric.runner.probes",
    "fabric.runner.freshness",
    "fabric.demo",
}


def test_database_libraries_only_in_state_and_warehouse_access():
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        if module.startswith("fabric.state") or any(
            module == w or module.startswith(w + ".") for w in WAREHOUSE_ACCESS
        ):
            continue
        used = {
            m
            for m in imported_modules(path, runtime_only=True)
            if m.split(".")[0] in DATABASE_LIBRARIES
        }
        assert not used, f"{module} imports {sorted(used)}: go through fabric.state"


def _environ_uses(tree: ast.AST) -> tuple[bool, bool]:
    """(reads, writes) of `os.environ` / `os.getenv` in code (docstrings do not count)."""
    reads = writes = False
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            reads = True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if (
                node.func.attr in ("update", "pop", "clear", "setdefault", "__setitem__")
                and isinstance(target, ast.Attribute)
                and target.attr == "environ"
            ):
                writes = True
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Store | ast.Del)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "environ"
        ):
            writes = True
    return reads, writes


def test_only_settings_reads_and_writes_the_environment():
    """Writing is settings.only_environment alone: the processes that run tenants' code (a
    worker for its whole life, the forkserver it forks from, a dbt invocation) get an
    environment built from scratch, and one function that swaps the whole environment is
    easier to audit than variables set here and there (the dbt invocation used to set its own)."""
    readers, writers = set(), set()
    for path in sorted(ROOT.rglob("*.py")):
        reads, writes = _environ_uses(ast.parse(path.read_text()))
        if reads:
            readers.add(_module_name(path))
        if writes:
            writers.add(_module_name(path))
    assert readers <= {"fabric.settings"}, readers
    assert writers == {"fabric.settings"}, writers


def test_pure_modules_import_nothing_with_side_effects():
    for entry in PURE:
        single = ROOT / f"{entry}.py"
        paths = [single] if single.exists() else sorted((ROOT / entry).rglob("*.py"))
        assert paths, f"{entry} names no module"
        for path in paths:
            bad = {
                m
                for m in imported_modules(path, runtime_only=True)
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
    (root / "fabric.yaml").write_text("format_version: 1\nownership: {enforce: false}\n")
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
