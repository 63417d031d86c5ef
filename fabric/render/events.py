"""One line per event for long-running processes (scheduler, worker).  [pure]

`text`: `2026-10-25T00:30:02Z fired tenant=acme schedule=nightly ...`, greppable by key;
`json`: one JSON object per line (`{"ts": ..., "event": ..., ...}`) for log shippers.
Values are what the caller put in the event: never a secret (runs carry selections and ids).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    return value


def event_line(at: datetime, event: str, fields: Mapping[str, Any], fmt: LogFormat) -> str:
    """The event as one line (no newline at the end)."""
    values = {k: _value(v) for k, v in fields.items() if v is not None}
    if fmt == "json":
        return json.dumps({"ts": _value(at), "event": event, **values}, default=str)
    parts = [str(_value(at)), event]
    for key, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key}={json.dumps(text) if (' ' in text or not text) else text}")
    return " ".join(parts)
