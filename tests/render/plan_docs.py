"""Plan documents built by hand for the renderer tests, and the golden-file check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"
SECRET = "hunter2-s3cr3t"


def field(name: str, before: Any = None, after: Any = None) -> dict[str, Any]:
    return {"name": name, "sensitive": False, "before": before, "after": after}


def secret(name: str) -> dict[str, Any]:
    return {"name": name, "sensitive": True}


def change(
    address: str,
    action: str = "create",
    *fields: dict[str, Any],
    reason: str | None = None,
    protected: bool = False,
) -> dict[str, Any]:
    tenant, _, rest = address.partition(".")
    return {
        "address": address,
        "tenant": tenant,
        "kind": rest.partition(".")[0] or "tenant",
        "action": action,
        "reason": reason,
        "protected": protected,
        "fields": list(fields),
        "target": None,
    }


def doc(*changes: dict[str, Any], tenants=None, warnings=(), notes=()) -> dict[str, Any]:
    summary = {a: sum(c["action"] == a for c in changes) for a in ("create", "update", "delete")}
    return {
        "format_version": 1,
        "kind": "fabric-plan",
        "plan_hash": "0" * 64,
        "created_at": "2024-05-01T12:00:00+00:00",
        "source_hash": "1" * 64,
        "repo": "example-repo",
        "tenants": list(tenants or sorted({c["tenant"] for c in changes})),
        "summary": summary,
        "changes": list(changes),
        "warnings": list(warnings),
        "notes": list(notes),
        "read_set": {},
    }


def golden_doc() -> dict[str, Any]:
    return json.loads((GOLDEN / "plan.json").read_text())


def assert_golden(name: str, actual: str) -> None:
    """Compare with golden/NAME; FABRIC_REGENERATE_GOLDEN=1 rewrites it instead."""
    path = GOLDEN / name
    if os.environ.get("FABRIC_REGENERATE_GOLDEN"):
        path.write_text(actual)
    assert actual == path.read_text(), f"{name} differs; see the test module's docstring"
