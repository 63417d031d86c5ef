"""Which planned changes destroy something, and what happens to the warehouse data.  [pure]

Reads plan-document changes (mappings, as `to_document` writes them), so every renderer asks
the same question the same way. fabric has no "replace" action (a resource keeps its row and is
updated in place; a rename is a move, see config/moves.py), so what destroys data is:

- a delete (the declared object goes; its warehouse tables are not dropped by fabric);
- an update that makes the next run or build throw rows away: a pipeline switching to
  `write_disposition: replace`, or a transformation leaving `materialized: table|incremental`
  (dbt drops the relation and builds it again; an incremental model's history is rebuilt from
  its sources, so rows the sources no longer have are gone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_KEPT = {
    "pipeline": "its tables stay in the warehouse (dataset {dataset}); drop them by hand",
    "transformation": "its relation {schema}.{name} stays in the warehouse; drop it by hand",
}


def data_fate(kind: str, name: str, spec: Mapping[str, Any] | None) -> str | None:
    """What a delete does to warehouse data, said plainly; None for kinds that hold none.

    fabric never drops a deleted pipeline's or transformation's tables: runs stop updating
    them and they stay where they are until someone drops them.
    """
    template = _KEPT.get(kind)
    if template is None:
        return None
    spec = spec or {}
    if not spec.get("dataset") and not spec.get("schema"):
        return "its tables stay in the warehouse; drop them by hand"
    return template.format(dataset=spec.get("dataset"), schema=spec.get("schema"), name=name)


def _field(change: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for f in change.get("fields") or ():
        if f.get("name") == name and not f.get("sensitive"):
            return f
    return None


def data_loss(change: Mapping[str, Any]) -> str | None:
    """Why an update throws warehouse rows away, or None (creates, deletes, harmless updates)."""
    if change.get("action") != "update":
        return None
    kind = change.get("kind")
    if kind == "pipeline":
        f = _field(change, "write_disposition")
        if f and f.get("after") == "replace" and f.get("before") != "replace":
            return "becomes `write_disposition: replace`: its next run overwrites its tables"
    if kind == "transformation":
        f = _field(change, "materialized")
        before = f.get("before") if f else None
        if f and before in ("table", "incremental") and f.get("after") != before:
            what = (
                "its accumulated rows are rebuilt from its sources"
                if before == "incremental"
                else "dbt drops the table and rebuilds it"
            )
            return f"`materialized: {before}` becomes `{f.get('after')}`: {what}"
    return None


def is_destructive(change: Mapping[str, Any]) -> bool:
    return change.get("action") == "delete" or data_loss(change) is not None
