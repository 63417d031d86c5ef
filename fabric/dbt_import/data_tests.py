"""dbt's `data_tests:` / `tests:` entries of a properties file -> fabric's per-column `tests:`
entries (the YAML shorthand of fabric/config/specs.py).  [pure]"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

TEST_CONFIG = frozenset({"severity", "where", "error_if", "warn_if", "store_failures"})
"""The per-test config keys fabric carries (TestConfig in fabric/config/specs.py)."""
OTHER_CONFIG = frozenset(
    {"limit", "tags", "enabled", "fail_calc", "store_failures_as", "meta", "alias", "database"}
    | {"schema", "group", "description"}
)
_REF = re.compile(r"""^\s*ref\(\s*['"]([^'"]+)['"]\s*\)\s*$""")


def translate_test(entry: Any, note: Callable[[str, str], None]) -> str | dict[str, Any] | None:
    """One test entry in fabric's shorthand, or None when it cannot be carried; `note(what,
    why)` records what was dropped."""
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, Mapping) or len(entry) != 1:
        note(f"test {entry!r}", "a test is a name or a one-key mapping")
        return None
    ((name, body),) = entry.items()
    name = str(name)
    if body is None:
        return name
    if not isinstance(body, Mapping):
        if name == "accepted_values" and isinstance(body, list):
            return {name: list(body)}
        note(f"test {name}", f"its arguments {body!r} are not a mapping")
        return None
    body = dict(body)
    config = dict(body.pop("config", None) or {})
    arguments = dict(body.pop("arguments", None) or {})
    for key in list(body):
        if key in TEST_CONFIG or key in OTHER_CONFIG:
            config.setdefault(key, body.pop(key))
    if "name" in body:
        note(f"test {name} named {body.pop('name')!r}", "fabric names tests after the column")
    arguments.update(body)
    if config.get("enabled") is False:
        note(f"test {name}", "it is disabled (enabled: false), so it is not imported")
        return None
    kept: dict[str, Any] = {}
    for key, value in config.items():
        if key in TEST_CONFIG:
            kept[key] = value.lower() if key == "severity" and isinstance(value, str) else value
        elif key != "enabled":
            note(
                f"test {name} config {key}", "fabric carries only " + ", ".join(sorted(TEST_CONFIG))
            )
    if name == "accepted_values":
        values = list(arguments.pop("values", None) or ())
        quote = arguments.pop("quote", None)
        if quote is False and not all(isinstance(v, int | float | bool) for v in values):
            note(
                "test accepted_values quote: false",
                "fabric quotes values unless they are all numbers",
            )
        _leftover(name, arguments, note)
        return {name: {"values": values, "config": kept}} if kept else {name: values}
    if name == "relationships":
        to = str(arguments.pop("to", ""))
        match = _REF.match(to)
        out: dict[str, Any] = {"to": match.group(1) if match else to}
        out["field"] = arguments.pop("field", None)
        _leftover(name, arguments, note)
        if kept:
            out["config"] = kept
        return {name: out}
    if name in ("not_null", "unique"):
        _leftover(name, arguments, note)
        return {name: {"config": kept}} if kept else name
    if not arguments and not kept:
        return name
    return {name: {**arguments, **({"config": kept} if kept else {})}}


def _leftover(name: str, arguments: Mapping[str, Any], note: Callable[[str, str], None]) -> None:
    for key in arguments:
        note(f"test {name} argument {key}", "fabric's built-in test takes no such argument")
