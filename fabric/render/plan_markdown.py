"""Plan document -> a pull-request comment in GitHub-flavoured markdown.  [pure]

Layout: title and summary line, a table per tenant, the destructive changes (deletes, and
updates that throw warehouse rows away: plan/destructive.py) called out in a caution block,
apply's refusals in a warning block, then one collapsed `<details>` section per tenant. Inside
a section, one ```` ```diff ```` block per action (creates, changes, destroys), so a block never
mixes markers: only a resource's own line carries its `+`/`~`/`-` in column 0 (where GitHub
colours it); its field lines are plain indented `+`/`~`/`-` lines, as in the terminal. Then
notes and a footer with the plan hash.

The comment is kept under `max_chars` (GitHub refuses comments over 65,536 characters): the
per-tenant sections are cut at a change boundary and a note says how many changes are not
shown and how to see them all; the summary, table and destructive list are never cut.
Everything taken from the document is escaped for where it lands: code fences are longer than
any backtick run inside them, `<summary>` text is HTML-escaped, and prose is escaped outside
its code spans.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fabric.plan.destructive import data_loss
from fabric.render.plan_text import (
    NO_CHANGES,
    SYMBOL,
    Line,
    by_tenant,
    change_lines,
    clean,
    counts,
    summary_line,
)

MAX_TABLE_ROWS = 50
MAX_LISTED_DELETES = 20
MAX_NOTES = 20
TITLE = "## Fabric plan"
_BACKTICKS = re.compile(r"`+")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _longest_backticks(text: str) -> int:
    return max((len(m) for m in _BACKTICKS.findall(text)), default=0)


def code(text: str) -> str:
    """`text` as an inline code span that no backtick inside it can close."""
    text = clean(text).replace("\n", " ")
    ticks = "`" * (_longest_backticks(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _escape(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def prose(text: str) -> str:
    """Document text for a markdown paragraph: one line, markup escaped, code spans kept."""
    text = clean(str(text)).replace("\n", " ").replace("\r", " ")
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(text):
        out += [_escape(text[pos : m.start()]), code(m.group(2))]
        pos = m.end()
    out.append(_escape(text[pos:]))
    return "".join(out)


def markdown_line(line: Line) -> str:
    """A text line for a ```diff block: a resource's symbol in column 0, where GitHub colours
    it; a field's symbol indented under it (plain text to GitHub, as in the terminal)."""
    comment = f"  # {line.comment}" if line.comment else ""
    if line.level == 0:
        return f"{line.symbol or ' '} {line.text}{comment}".rstrip()
    return f"  {'    ' * line.level}{line.symbol or ' '} {line.text}{comment}".rstrip()


def _table(groups: Mapping[str, list[Mapping[str, Any]]]) -> str:
    rows = ["| Tenant | Add | Change | Destroy |", "| :-- | --: | --: | --: |"]
    tenants = list(groups)
    shown, rest = tenants[:MAX_TABLE_ROWS], tenants[MAX_TABLE_ROWS:]
    for tenant in shown:
        c = counts(groups[tenant])
        rows.append(f"| {prose(tenant)} | {c['create']} | {c['update']} | {c['delete']} |")
    if rest:
        c = counts([change for t in rest for change in groups[t]])
        label = f"*{_plural(len(rest), 'more tenant')}*"
        rows.append(f"| {label} | {c['create']} | {c['update']} | {c['delete']} |")
    if len(tenants) > 1:
        c = counts([change for changes in groups.values() for change in changes])
        rows.append(f"| **Total** | {c['create']} | {c['update']} | {c['delete']} |")
    return "\n".join(rows)


def _callout(kind: str, title: str, items: Iterable[str]) -> str:
    return "\n".join([f"> [!{kind}]", f"> **{title}**", *(f"> - {item}" for item in items)])


def _destructive(changes: list[Mapping[str, Any]]) -> str:
    deletes = [c for c in changes if c["action"] == "delete"]
    losses = [(c, data_loss(c)) for c in changes if c["action"] == "update"]
    losses = [(c, why) for c, why in losses if why]
    items = []
    for c in deletes[:MAX_LISTED_DELETES]:
        item = code(str(c["address"]))
        if c.get("reason"):
            item += f" — {prose(c['reason'])}"
        if c.get("protected"):
            item += " — **protected**: apply will refuse to delete it"
        items.append(item)
    if len(deletes) > MAX_LISTED_DELETES:
        items.append(f"… and {len(deletes) - MAX_LISTED_DELETES} more")
    for c, why in losses[:MAX_LISTED_DELETES]:
        items.append(f"{code(str(c['address']))} (changed) — {prose(why)}")
    if len(losses) > MAX_LISTED_DELETES:
        items.append(f"… and {len(losses) - MAX_LISTED_DELETES} more changes that lose data")
    if not items:
        return ""
    parts = []
    if deletes:
        parts.append(f"destroys {_plural(len(deletes), 'resource')}")
    if losses:
        parts.append(f"loses warehouse data in {_plural(len(losses), 'change')}")
    return _callout("CAUTION", f"This plan {' and '.join(parts)}:", items)


def _notes(doc: Mapping[str, Any]) -> str:
    notes = [prose(n) for n in doc.get("notes") or ()]
    if not notes:
        return ""
    items = notes[:MAX_NOTES]
    if len(notes) > MAX_NOTES:
        items.append(f"… and {len(notes) - MAX_NOTES} more")
    return "\n".join(["**Notes**", "", *(f"- {n}" for n in items)])


def _footer(doc: Mapping[str, Any]) -> str:
    parts = [f"plan {code(str(doc.get('plan_hash', '')))}"]
    if doc.get("source_hash"):
        parts.append(f"source {code(str(doc['source_hash'])[:12])}")
    if doc.get("repo"):
        parts.append(f"repo {code(str(doc['repo']))}")
    if doc.get("created_at"):
        parts.append(f"created {prose(doc['created_at'])}")
    return f"<sub>{' · '.join(parts)}</sub>"


def _truncated(n: int) -> str:
    return (
        f"(truncated: {_plural(n, 'more change')} not shown; see them all with `fabric plan` "
        "locally, or `fabric plan --format json`)"
    )


_ACTIONS = tuple(SYMBOL)  # create, update, delete: the order of the blocks in a section


def _section(tenant: str, changes: list[Mapping[str, Any]], blocks: list[tuple[str, str]]) -> str:
    """A tenant's `<details>`: one ```diff block per action, each fenced past its backticks."""
    label = f"{clean(tenant)} — {_plural(len(changes), 'change')}"
    if len(blocks) < len(changes):
        label += f" ({len(blocks)} of {len(changes)} shown)"
    parts = [f"<details><summary>{html.escape(label)}</summary>"]
    for action in _ACTIONS:
        body = "\n\n".join(text for a, text in blocks if a == action)
        if body:
            fence = "`" * max(3, _longest_backticks(body) + 1)
            parts.append(f"{fence}diff\n{body}\n{fence}")
    parts.append("</details>")
    return "\n\n".join(parts)


def _in_order(changes: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(changes, key=lambda c: _ACTIONS.index(c["action"]))  # stable


def _sections(groups: Mapping[str, list[Mapping[str, Any]]], budget: int) -> tuple[list[str], int]:
    """Per-tenant sections that fit in `budget` characters, and how many changes did not."""
    sections: list[str] = []
    used = shown = 0
    total = sum(len(changes) for changes in groups.values())
    for tenant, changes in groups.items():
        blocks: list[tuple[str, str]] = []
        frame = len(_section(tenant, changes, [])) + len(str(len(changes))) + 12
        body = ticks = 0
        for change in _in_order(changes):
            text = "\n".join(markdown_line(line) for line in change_lines(change))
            # up to 3 blocks, each fenced past the longest backtick run in it
            ticks = max(ticks, _longest_backticks(text))
            fences = 3 * (2 * max(3, ticks + 1) + 10)
            if used + frame + fences + body + len(text) + 2 > budget:
                break
            blocks.append((change["action"], text))
            body += len(text) + 2
        if blocks:
            section = _section(tenant, changes, blocks)
            sections.append(section)
            used += len(section) + 2
            shown += len(blocks)
        if len(blocks) < len(changes):
            break
    return sections, total - shown


def _join(parts: Iterable[str]) -> str:
    return "\n\n".join(p for p in parts if p) + "\n"


def render_plan_markdown(doc: Mapping[str, Any], *, max_chars: int = 60000) -> str:
    """A plan document as a pull-request comment of at most `max_chars` characters."""
    warnings = [prose(w) for w in doc.get("warnings") or ()]
    refusals = _callout("WARNING", "Apply would refuse this plan:", warnings) if warnings else ""
    changes = list(doc.get("changes") or ())
    if not changes:
        text = _join([TITLE, NO_CHANGES, refusals, _notes(doc), _footer(doc)])
        return text if len(text) <= max_chars else _join([TITLE, NO_CHANGES])[:max_chars]
    groups = by_tenant(doc)
    head = [TITLE, f"**{summary_line(doc)}**", _table(groups), _destructive(changes), refusals]
    tail = [_notes(doc), _footer(doc)]
    fixed = len(_join(head + tail)) + 2 * 2 + len(_truncated(len(changes)))
    sections, hidden = _sections(groups, max_chars - fixed)
    note = _truncated(hidden) if hidden else ""
    text = _join([*head, *sections, note, *tail])
    if len(text) <= max_chars:
        return text
    # Too many tenants, deletes or warnings for even the head: say so instead of a broken cut.
    short = _join([TITLE, f"**{summary_line(doc)}**", _truncated(len(changes))])
    return short[:max_chars]
