"""Every broken repository under tests/corpus/ is rejected with the right diagnostics.

Each case is a folder holding a tiny repository (fabric.yaml + tenants/...) with one fault
(`many_faults` holds ten) and an `expect.yaml`:

    description: what is wrong
    generate: big_file        # optional: files made at test time (see GENERATORS)
    secret: hunter2           # optional: a literal that must appear in no output
    diagnostics:              # every diagnostic the validator must report, and no other
      - {code: unknown-field, file: tenants/acme/pipelines.yaml, line: 4, contains: dataset}

`line` is left out where no position is meaningful (where an alias bomb runs out of budget);
`contains` is a substring of the diagnostic's detail or hint. The loader must report exactly
these diagnostics and no desired state; the CLI must exit 1 without a traceback in both
output formats.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fabric.config.loader import load_repository
from fabric.config.yaml_source import MAX_FILE_BYTES
from fabric.diagnostics import Diagnostic

MAIN = Path(__file__).resolve().parents[2]
CORPUS = MAIN / "tests" / "corpus"


@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    description: str
    expected: tuple[dict[str, Any], ...]
    generate: str | None = None
    secret: str | None = None


def _load_cases() -> list[Case]:
    cases = []
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        doc = yaml.safe_load((folder / "expect.yaml").read_text(encoding="utf-8"))
        cases.append(
            Case(
                name=folder.name,
                folder=folder,
                description=doc["description"],
                expected=tuple(doc["diagnostics"]),
                generate=doc.get("generate"),
                secret=doc.get("secret"),
            )
        )
    return cases


def _symlink(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError) as exc:  # e.g. Windows without the privilege
        pytest.skip(f"cannot create a symlink here: {exc}")


def _big_file(repo: Path) -> None:
    """A tenant file just over the size limit (too big to keep in git)."""
    line = "# " + "x" * 77 + "\n"
    text = line * (MAX_FILE_BYTES // len(line) + 2) + "pipelines: {}\n"
    (repo / "tenants" / "acme" / "big.yaml").write_text(text)


def _symlink_out(repo: Path) -> None:
    """tenants/acme/models/totals.sql -> a file outside the tenant's folder."""
    _symlink(repo / "outside.sql", repo / "tenants" / "acme" / "models" / "totals.sql")


def _symlink_loop(repo: Path) -> None:
    """tenants/acme/models/totals.sql -> loop.sql -> totals.sql."""
    models = repo / "tenants" / "acme" / "models"
    _symlink(models / "loop.sql", models / "totals.sql")
    _symlink(models / "totals.sql", models / "loop.sql")


GENERATORS: dict[str, Callable[[Path], None]] = {
    "big_file": _big_file,
    "symlink_out": _symlink_out,
    "symlink_loop": _symlink_loop,
}
CASES = _load_cases()


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture
def case_repo(case: Case, tmp_path: Path) -> Path:
    """A fresh copy of the case's repository, with its generated files added."""
    repo = tmp_path / case.name
    shutil.copytree(case.folder, repo, ignore=shutil.ignore_patterns("expect.yaml"))
    if case.generate:
        GENERATORS[case.generate](repo)
    return repo


def _matches(expected: dict[str, Any], d: Diagnostic) -> bool:
    if d.code != expected["code"] or d.span is None or d.span.path != expected["file"]:
        return False
    if "line" in expected and d.span.line != expected["line"]:
        return False
    return expected.get("contains", "") in f"{d.detail}\n{d.hint or ''}"


def _show(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic]) -> str:
    return "\n".join(f"  {d.span}: {d.code}: {d.detail} | hint: {d.hint}" for d in diagnostics)


def test_the_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 40
    for case in CASES:
        assert case.description and case.expected, case.name
        assert case.generate is None or case.generate in GENERATORS, case.name
        for expected in case.expected:
            assert set(expected) <= {"code", "file", "line", "contains"}, case.name
            assert {"code", "file"} <= set(expected), case.name
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert not [c.name for c in CASES if f"`{c.name}`" not in readme], "add them to README.md"
    many = next(c for c in CASES if c.name == "many_faults")
    assert len({e["code"] for e in many.expected}) >= 10
    assert len({e["file"] for e in many.expected}) >= 3


def test_loader_reports_exactly_the_expected_diagnostics(case: Case, case_repo: Path) -> None:
    result = load_repository(case_repo)

    assert result.desired is None
    got = _show(result.diagnostics)
    for expected in case.expected:
        assert any(_matches(expected, d) for d in result.diagnostics), (
            f"{case.name}: missing {expected}\ngot:\n{got}"
        )
    unexpected = [d for d in result.diagnostics if not any(_matches(e, d) for e in case.expected)]
    assert not unexpected, f"{case.name}: unexpected diagnostics:\n{_show(unexpected)}"
    if case.secret:
        assert case.secret not in repr(result.diagnostics)


def test_cli_rejects_the_case_without_a_traceback(case: Case, case_repo: Path) -> None:
    # Both formats at once: the two interpreters start in parallel.
    runs = {
        fmt: subprocess.Popen(
            [sys.executable, "-m", "fabric", "validate", str(case_repo), "--format", fmt],
            cwd=MAIN,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        for fmt in ("json", "text")
    }
    outputs = {fmt: (*proc.communicate(timeout=60), proc.returncode) for fmt, proc in runs.items()}

    for fmt, (out, err, code) in outputs.items():
        assert code == 1, f"{case.name} ({fmt}): exit {code}\n{out}\n{err}"
        assert "Traceback" not in out + err, f"{case.name} ({fmt}):\n{out}\n{err}"
        if case.secret:
            assert case.secret not in out + err, f"{case.name} ({fmt}) echoes the secret"

    doc = json.loads(outputs["json"][0])
    assert doc["valid"] is False
    assert doc["errors"] == len(doc["diagnostics"]) > 0
    for expected in case.expected:
        assert any(
            d["code"] == expected["code"]
            and d["file"] == expected["file"]
            and d["line"] == expected.get("line", d["line"])
            for d in doc["diagnostics"]
        ), f"{case.name}: {expected} not in the JSON output"

    text = outputs["text"][0]
    assert f"{doc['errors']} error(s)." in text
    for expected in case.expected:
        line = expected.get("line")
        where = f"{expected['file']}:{line}:" if line else expected["file"]
        assert where in text, f"{case.name}: {where} not in the text output"
