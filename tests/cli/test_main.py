"""The `fabric` group: commands registered from one list, read through fabric.api, and every
`fabric ...` command a hint, error or docstring in fabric/ suggests really exists."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click

import fabric
from fabric.cli.commands import COMMANDS
from fabric.cli.main import cli

ROOT = Path(fabric.__file__).parent
CLI = ROOT / "cli"


def test_every_command_is_registered_from_the_one_list():
    defined = []
    for path in sorted((CLI / "commands").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                call = deco.func if isinstance(deco, ast.Call) else deco
                text = ast.unparse(call)
                if text in ("click.command", "click.group"):
                    defined.append(node.name)
                assert not text.startswith("cli."), f"{path.name}: {text} registers elsewhere"
    top = {c.callback.__name__ for c in COMMANDS if c.callback is not None}
    assert sorted(top) == sorted(defined)
    assert sorted(cli.commands) == sorted(c.name for c in COMMANDS)
    for path in CLI.rglob("*.py"):
        if path.name != "main.py":
            assert "add_command" not in path.read_text(), path


def test_the_cli_reads_the_database_only_through_the_api():
    forbidden = ("fabric.state", "fabric.runner", "sqlalchemy", "psycopg")
    for path in CLI.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                bad = [f for f in forbidden if name == f or name.startswith(f + ".")]
                assert not bad, f"{path.relative_to(ROOT)} imports {name}"


def suggested_commands() -> dict[str, set[str]]:
    """`fabric ...` in backticks anywhere in fabric/, and example lines in messages."""
    found: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line in path.read_text().splitlines():
            for match in re.finditer(r"`(?:uv run )?fabric ([^`]+)`", line):
                found.setdefault(match.group(1), set()).add(rel)
        for text in _strings(ast.parse(path.read_text())):
            for line in text.splitlines():
                # An example line in a message: indented, or after a colon ("... set: fabric x").
                m = re.search(r"(?:^\s{2,}|:\s+)(?:uv run )?fabric ([a-z-][^`#]*)$", line)
                if m:
                    found.setdefault(m.group(1).strip().rstrip(").,"), set()).add(rel)
    return found


def _strings(tree: ast.AST) -> list[str]:
    """Every string literal but docstrings; an f-string as one string with `{X}` for values."""
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for n in ast.walk(tree):
        body = getattr(n, "body", None)
        if isinstance(body, list):
            parts |= {id(b.value) for b in body if isinstance(b, ast.Expr)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            out.append(
                "".join(v.value if isinstance(v, ast.Constant) else "{X}" for v in node.values)
            )
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts
        ):
            out.append(node.value)
    return out


def resolves(suggestion: str) -> str | None:
    """None when the suggestion names a registered command and only its options; else why not."""
    text = re.sub(r"\{[^}]*\}", "X", suggestion).replace("...", "")
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        return f"cannot be split: {exc}"
    command: click.Command = cli
    names: list[str] = []
    while tokens and isinstance(command, click.Group) and not tokens[0].startswith("-"):
        alternatives = tokens[0].split("|")
        if not all(a in command.commands for a in alternatives):
            if isinstance(command, click.Group) and command.invoke_without_command and names:
                break  # a group that is also a command: `fabric runs REPO`
            if not names:
                return f"`fabric {tokens[0]}` is no command"
            return f"`fabric {' '.join(names)}` has no subcommand {tokens[0]!r}"
        names.append(tokens.pop(0))
        command = command.commands[alternatives[0]]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
    if command is cli:
        options |= {"--version"}
    for token in tokens:
        if token.startswith("-") and token.split("=")[0] not in options:
            return f"`fabric {' '.join(names)}` has no option {token.split('=')[0]}"
    return None


def test_every_fabric_command_suggested_in_the_source_exists():
    found = suggested_commands()
    assert len(found) > 20  # the scan finds them
    assert "secrets set {X} NAME" in found  # message lines too, not only backticks
    wrong = {s: (why, sorted(found[s])) for s in found if (why := resolves(s))}
    assert not wrong, wrong


def test_the_check_itself_catches_what_does_not_exist():
    assert resolves("initialise") == "`fabric initialise` is no command"
    assert resolves("runs --frmat json") == "`fabric runs` has no option --frmat"
    assert resolves("server restart") == "`fabric server` has no subcommand 'restart'"
    assert resolves("runs show 3 --tenant acme --repo example-repo") is None
    assert resolves("run -s orders --tenant acme") is None
