"""README.md's examples of fabric output are what fabric prints.

Every ```console block is a claim: each `$ fabric ...` line is run from a folder holding a copy
of example-repo and the README's own `broken-repo` (its ```yaml blocks that start with
`# broken-repo/...`), and its output must match the lines below it exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def console_examples() -> list[tuple[str, str]]:
    """(command, expected output) for every `$ ` line of every ```console block."""
    examples = []
    for lang, body in BLOCK.findall(README):
        if lang != "console":
            continue
        for chunk in re.split(r"^\$ ", body, flags=re.MULTILINE)[1:]:
            command, _, output = chunk.partition("\n")
            examples.append((command.strip(), output.rstrip("\n")))
    return examples


def build_examples_folder(folder: Path) -> Path:
    shutil.copytree(
        ROOT / "example-repo",
        folder / "example-repo",
        ignore=shutil.ignore_patterns(".fabric", "data", "__pycache__"),
    )
    for lang, body in BLOCK.findall(README):
        first, _, rest = body.partition("\n")
        if lang == "yaml" and first.startswith("# broken-repo/"):
            path = folder / first.removeprefix("# ").strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rest)
    return folder


def test_every_console_example_in_the_readme_is_what_fabric_prints(tmp_path: Path):
    examples = console_examples()
    commands = [c for c, _ in examples]
    assert "fabric validate example-repo" in commands
    assert "fabric validate broken-repo" in commands
    assert "fabric validate broken-repo --format json" in commands
    folder = build_examples_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    for command, expected in examples:
        args = shlex.split(command)
        assert args[0] == "fabric", command
        done = subprocess.run(
            [sys.executable, "-m", "fabric", *args[1:]],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        printed = "\n".join(line.rstrip() for line in done.stdout.rstrip("\n").splitlines())
        assert printed == expected, f"README's `{command}` differs:\n{printed}"
        assert "Traceback" not in done.stderr
