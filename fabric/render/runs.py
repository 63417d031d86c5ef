"""Run records and results as tables.  [pure]"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    body = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row).rstrip() for row in body]
    return "\n".join(lines)


def short(text: str | None, limit: int = 80) -> str:
    if not text:
        return ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def full_errors(errors: Iterable[tuple[str, str | None]], shown: int = 80) -> str:
    """The errors a table cell cut short (`short(error, shown)`), in full, one block per node."""
    blocks = [
        f"{node} error:\n" + "\n".join(f"  {line}" for line in error.strip().splitlines())
        for node, error in errors
        if error and short(error, shown) != error.strip()
    ]
    return "\n\n".join(blocks)


def rows_total(rows: dict[str, int] | None) -> int:
    return sum((rows or {}).values())


TEST_SYMBOL = {"pass": "✓", "warn": "!", "fail": "✗", "error": "✗"}


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def report_tests(nodes: Iterable[tuple[str, str, str | None, Sequence[Any]]]) -> str:
    """`fabric test`'s report: per node (address, status, error, its TestResults) a line, then
    a line per test (`✓ name` / `✗ name: 3 failures`), then the counts of all tests."""
    lines: list[str] = []
    counts: Counter[str] = Counter()
    for address, status, error, tests in nodes:
        counts.update(t.status for t in tests)
        bad = sum(t.status in ("fail", "error") for t in tests)
        if not tests:
            what = "no tests" if status == "success" else short(error) or status
        elif bad:
            what = f"{bad} of {_count(len(tests), 'test')} failed"
        else:
            what = f"{_count(len(tests), 'test')} passed"
        symbol = (
            "-"
            if not tests and status == "success"
            else TEST_SYMBOL.get("pass" if status == "success" else "fail", "?")
        )
        lines.append(f"{symbol} {address}: {what}")
        for t in tests:
            lines.append(f"    {TEST_SYMBOL.get(t.status, '-')} {t.name}{_test_outcome(t)}")
    summary = ", ".join(
        f"{counts[s]} {word}"
        for s, word in (("pass", "passed"), ("warn", "warned"), ("fail", "failed"))
        if counts[s] or s == "pass"
    )
    if counts["error"]:
        summary += f", {counts['error']} errored"
    lines.append(f"Tests: {summary}.")
    return "\n".join(lines)


def _test_outcome(test: Any) -> str:
    if test.status == "pass":
        return ""
    if test.status in ("fail", "warn") and test.failures is not None:
        warned = " (warning)" if test.status == "warn" else ""
        return f": {_count(test.failures, 'failure')}{warned}"
    return f": {test.status}" + (f": {short(test.message)}" if test.message else "")
