"""dbt's error text -> the line a person needs first, at the place they wrote it.  [pure]

dbt reports a failed model as `Database Error in model stg_events (models/stg_events.sql)`,
then the database's own message, then PostgreSQL's `LINE 3: ...` with a caret, numbered in the
statement dbt sent (the compiled SQL inside dbt's `create ... as (` wrapper). The headline
built here is the database's message, prefixed with the line of the transformation's own SQL
(its `sql_file`, or the line inside its `sql:`) that the compiled line came from:

    tenants/acme/models/stg_events.sql:3: column "amout" does not exist

Compilation errors (Jinja) already carry the line of the model's SQL (`line 3`).
"""

from __future__ import annotations

import difflib
import re

_HEADER = re.compile(
    r"^(?:Database|Compilation|Runtime|Parsing|Dependency|Internal) Error(?: in .*)?:?$"
)
_NOISE = re.compile(r"^(?:compiled code at |LINE \d+:|HINT:|\^|line \d+$)")
_PG_LINE = re.compile(r"^(\s*)LINE (\d+): (.*)$")
_JINJA_LINE = re.compile(r"^\s*line (\d+)\s*$")
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def headline(message: str, sql: str | None = None, where: str | None = None) -> str:
    """The first meaningful line of a dbt error, with the SQL line it is about when known.

    Args:
        message: dbt's error text (secrets already redacted).
        sql: the transformation's SQL as written (before Jinja), to map the position onto.
        where: the file that SQL is in (`tenants/acme/models/x.sql`); None for an inline
            `sql:`, whose line is then given as `SQL line N`.
    """
    lines = [line.strip() for line in message.splitlines()]
    first = next(
        (line for line in lines if line and not _HEADER.match(line) and not _NOISE.match(line)),
        lines[0] if lines else "",
    )
    line = source_line(message, sql) if sql else None
    if line is None:
        return first
    return f"{where}:{line}: {first}" if where else f"SQL line {line}: {first}"


def source_line(message: str, sql: str) -> int | None:
    """The 1-based line of `sql` (as written) that the error's position points at, if any."""
    lines = message.splitlines()
    for i, text in enumerate(lines):
        jinja = _JINJA_LINE.match(text)
        if jinja and i > 0 and "Compilation Error" in message:
            number = int(jinja.group(1))
            return number if 1 <= number <= sql.count("\n") + 1 else None
        pg = _PG_LINE.match(text)
        if pg is None:
            continue
        echoed = pg.group(3)
        token = None
        if i + 1 < len(lines) and "^" in lines[i + 1]:
            caret = lines[i + 1].index("^") - (len(pg.group(1)) + len(f"LINE {pg.group(2)}: "))
            word = _WORD.match(echoed[caret:]) if 0 <= caret < len(echoed) else None
            token = word.group() if word else None
        return _best_match(echoed, token, sql)
    return None


def _best_match(echoed: str, token: str | None, sql: str) -> int | None:
    """The line of `sql` that compiles to the echoed line: the one that holds the token at the
    caret and, among those, reads most like it once its Jinja is left out."""
    echoed = echoed.strip().strip(".").strip()
    best: tuple[float, int] | None = None
    for number, raw in enumerate(sql.splitlines(), start=1):
        if token is not None and not re.search(rf"\b{re.escape(token)}\b", raw):
            continue
        skeleton = _JINJA.sub(" ", raw).strip()
        if not skeleton:
            continue
        score = difflib.SequenceMatcher(None, skeleton, echoed).ratio()
        if best is None or score > best[0]:
            best = (score, number)
    if best is None or (token is None and best[0] < 0.6):
        return None
    return best[1]
