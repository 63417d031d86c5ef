"""Plan document -> Terraform-like text for a terminal.  [pure]

The renderer only formats `fabric.plan.plan.to_document()` output; it decides nothing. It reads
each change's address, action, reason, `protected` flag and fields, never `target` (the full
record apply writes), and never a value of a field marked `sensitive`, so it cannot leak one.

    Tenant acme: 1 to add, 1 to change, 1 to destroy

      + acme.pipeline.orders
          + dataset = "acme_raw"
      ~ acme.connection.shop_db  # drift: changed outside git
          ~ host:     "shop.old" -> "shop.acme.internal"
          ~ password: (sensitive value changed)
      - acme.schedule.nightly  # removed from git
          ! protected: apply will refuse to delete it

    Plan: 1 to add, 1 to change, 1 to destroy.

`change_lines` and the helpers around it are shared with `plan_markdown`, so both formats show
the same lines.
"""

from __future__ import annotations

import difflib
import json
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SYMBOL = {"create": "+", "update": "~", "delete": "-"}
NO_CHANGES = "No changes. The control plane matches the repository."
GREEN, YELLOW, RED = "\033[32m", "\033[33m", "\033[31m"
BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"
COLOR = {"+": GREEN, "~": YELLOW, "-": RED, "!": BOLD + RED}

MAX_ALIGN = 32
"""Field names longer than this do not widen the alignment of the others."""
MAX_FIRST_LINE = 60
"""Characters of a multi-line value's first line shown on a create."""
MAX_DIFF_LINES = 20
"""Lines of a multi-line value's unified diff shown on an update."""


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a change: `symbol` is "+", "~", "-", "!" or "" (none)."""

    level: int
    """0 = the resource, 1 = one of its fields, 2 = a line of a multi-line value's diff."""
    symbol: str
    text: str
    comment: str = ""


# -- values -----------------------------------------------------------------------------------


def clean(text: str) -> str:
    """`text` with control, format and line-separator characters escaped (tabs kept).

    Values come from tenants' YAML; an escape sequence or a bidi override in one must neither
    drive the terminal nor hide what a plan does.
    """
    if text.isprintable():
        return text
    return "".join(
        f"\\u{ord(ch):04x}"
        if ch != "\t" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        else ch
        for ch in text
    )


def literal(value: Any) -> str:
    """A JSON-ish one-line literal: strings quoted, null, true, lists and objects inline."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = json.dumps(str(value), ensure_ascii=False)
    return clean(text)


def _lines_of(value: Any) -> list[str] | None:
    """The lines of a multi-line string; None for anything shown on one line."""
    if isinstance(value, str):
        lines = value.splitlines()
        if len(lines) > 1:
            return lines
    return None


def _n_lines(n: int) -> str:
    return f"{n} line" if n == 1 else f"{n} lines"


def compact(value: Any) -> str:
    """`literal(value)`, but a multi-line string as its first non-blank line and its size."""
    lines = _lines_of(value)
    if lines is None:
        return literal(value)
    first = next((line.strip() for line in lines if line.strip()), "")
    if len(first) > MAX_FIRST_LINE:
        first = first[: MAX_FIRST_LINE - 1].rstrip()
    return f"{literal(first)} … ({_n_lines(len(lines))})"


def _text_diff(before: list[str], after: list[str]) -> Iterator[Line]:
    diff = list(difflib.unified_diff(before, after, lineterm="", n=1))[2:]  # no ---/+++ lines
    if not diff:
        yield Line(2, "", "(only line endings differ)")
    for row in diff[:MAX_DIFF_LINES]:
        if row.startswith("@@"):
            yield Line(2, "", row)
        else:
            symbol = {"+": "+", "-": "-"}.get(row[:1], "")
            yield Line(2, symbol, clean(row[1:]))
    if len(diff) > MAX_DIFF_LINES:
        yield Line(2, "", f"… {len(diff) - MAX_DIFF_LINES} more diff lines")


# -- changes ----------------------------------------------------------------------------------


def _width(fields: Sequence[Mapping[str, Any]], extra: int) -> int:
    names = [len(clean(str(f["name"]))) + extra for f in fields]
    return max((n for n in names if n <= MAX_ALIGN + extra), default=0)


def _created_field(field: Mapping[str, Any], width: int) -> Line:
    name = clean(str(field["name"])).ljust(width)
    if field.get("sensitive"):
        return Line(1, "+", f"{name} = (sensitive value)")
    return Line(1, "+", f"{name} = {compact(field.get('after'))}")


def _updated_field(field: Mapping[str, Any], width: int) -> Iterator[Line]:
    name = (clean(str(field["name"])) + ":").ljust(width)
    if field.get("sensitive"):
        yield Line(1, "~", f"{name} (sensitive value changed)")
        return
    before, after = field.get("before"), field.get("after")
    old, new = _lines_of(before), _lines_of(after)
    if (old or new) and isinstance(before, str) and isinstance(after, str):
        sizes = f"({_n_lines(len(old or [before]))} -> {_n_lines(len(new or [after]))})"
        yield Line(1, "~", f"{name} {sizes}")
        yield from _text_diff(old or [before], new or [after])
        return
    symbol = "+" if before is None else "-" if after is None else "~"
    yield Line(1, symbol, f"{name} {compact(before)} -> {compact(after)}")


def change_lines(change: Mapping[str, Any]) -> list[Line]:
    """The lines of one change: its address, then its fields (never its target)."""
    action = change["action"]
    head = clean(str(change["address"]))
    if change.get("moved_from"):
        head += f" (moved from {clean(str(change['moved_from']))})"
    lines = [Line(0, SYMBOL[action], head, clean(change.get("reason") or ""))]
    fields = change.get("fields") or ()
    if action == "create":
        width = _width(fields, 0)
        lines += [_created_field(f, width) for f in fields]
    elif action == "update":
        width = _width(fields, 1)
        for f in fields:
            lines += _updated_field(f, width)
    if action == "delete" and change.get("protected"):
        lines.append(Line(1, "!", "protected: apply will refuse to delete it"))
    return lines


def by_tenant(doc: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Changes grouped by tenant, tenants in the document's order; each group keeps its order."""
    groups: dict[str, list[Mapping[str, Any]]] = {t: [] for t in doc.get("tenants") or ()}
    for change in doc.get("changes") or ():
        groups.setdefault(change["tenant"], []).append(change)
    return {tenant: changes for tenant, changes in groups.items() if changes}


def counts(changes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out = dict.fromkeys(SYMBOL, 0)
    for change in changes:
        out[change["action"]] += 1
    return out


def totals(counted: Mapping[str, int]) -> str:
    return (
        f"{counted.get('create', 0)} to add, {counted.get('update', 0)} to change, "
        f"{counted.get('delete', 0)} to destroy"
    )


def summary_line(doc: Mapping[str, Any]) -> str:
    """`Plan: 3 to add, 1 to change, 0 to destroy.`, or the no-changes sentence."""
    if not doc.get("changes"):
        return NO_CHANGES
    return f"Plan: {totals(doc.get('summary') or counts(doc['changes']))}."


# -- text -------------------------------------------------------------------------------------


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color and code else text


def text_line(line: Line, *, color: bool = False) -> str:
    indent = "  " + "    " * line.level
    symbol = _paint(line.symbol, COLOR.get(line.symbol, ""), color) if line.symbol else " "
    text = _paint(line.text, BOLD, color) if line.level == 0 else line.text
    comment = _paint(f"  # {line.comment}", DIM, color) if line.comment else ""
    return f"{indent}{symbol} {text}{comment}".rstrip()


def render_plan_text(doc: Mapping[str, Any], *, color: bool = False) -> str:
    """A plan document as Terraform-like text; ANSI colour only when `color`."""
    out: list[str] = []
    groups = by_tenant(doc)
    if groups:
        out.append("Fabric will perform the following actions:")
    for tenant, changes in groups.items():
        out += ["", _paint(f"Tenant {clean(tenant)}: {totals(counts(changes))}", BOLD, color)]
        for change in changes:
            out.append("")
            out += [text_line(line, color=color) for line in change_lines(change)]
    if out:
        out.append("")
    out.append(summary_line(doc))
    warnings = [clean(str(w)) for w in doc.get("warnings") or ()]
    if warnings:
        out += ["", _paint("Warning:", BOLD + YELLOW, color) + " apply would refuse this plan:"]
        out += [f"  * {w}" for w in warnings]
    notes = [clean(str(n)) for n in doc.get("notes") or ()]
    if notes:
        out += ["", _paint("Note:", BOLD, color)]
        out += [f"  * {n}" for n in notes]
    return "\n".join(out) + "\n"
