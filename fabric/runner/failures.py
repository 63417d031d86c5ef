"""One place that says what went wrong and whether a retry could help.  [pure]

dlt loads, dbt invocations and connection probes all fail through libraries that wrap the
database's own words in layers of their own. This module peels those layers, decides the
FailureKind (executors act on the kind, never on wording) and redacts secrets, the same way for
all three.

Order of the transient/terminal decision: a terminal type or wording (bad password, missing
table, contract violation, 4xx) wins; then the first SQLSTATE in the chain; then exception types
(connection errors, timeouts, dlt's transient exceptions); then the wording.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from fabric.domain.runs import FailureKind
from fabric.errors import FabricError

__all__ = ["Failure", "classify", "describe", "kind_of_message", "one_paragraph", "redact"]

_TRANSIENT_SQLSTATES = ("08", "40001", "40P01", "53", "57P01", "57P02", "57P03", "57014", "55P03")
_TRANSIENT_WORDS = re.compile(
    r"connection (refused|reset|timed out|closed|lost)|server closed the connection|"
    r"could not connect|timeout expired|timed out|deadlock detected|could not serialize|"
    r"broken pipe|terminating connection|too many connections|temporarily unavailable|"
    r"the database system is (starting up|shutting down|in recovery)|ssl syscall error|"
    r"\b(429|502|503|504)\b",
    re.IGNORECASE,
)
_TERMINAL_WORDS = re.compile(
    r"password authentication failed|authentication failed|permission denied|"
    r"does not exist|access denied|syntax error|\b(400|401|403|404|422)\b",
    re.IGNORECASE,
)
_TERMINAL_TYPES = {"DataValidationError", "DestinationTerminalException", "PanicException"}
_TRANSIENT_TYPES = {
    "DestinationTransientException",
    "DestinationConnectionError",
    "DatabaseTransientException",
    "LoadClientJobRetry",
}
_WRAPPERS = {
    "PipelineStepFailed",
    "ResourceExtractionError",
    "ExtractorException",
    "NormalizeJobFailed",
    "LoadClientJobFailed",
    "LoadClientJobRetry",
    "LoadClientJobTerminalRetry",
    "ResourceNameMissing",
    "PipeGenException",
}


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    message: str
    """One paragraph, the innermost library's words; not yet redacted."""


def classify(exc: BaseException) -> Failure:
    """What a load or probe raised, as a kind and one paragraph; no traceback."""
    if isinstance(exc, FabricError) or type(exc).__name__ == "ConfigurationError":
        return Failure(FailureKind.TERMINAL, one_paragraph(str(exc)))
    step = getattr(exc, "step", None)
    causes = list(_causes(exc))
    prefix = f"{step} step failed: " if step else ""
    contract = next((c for c in causes if type(c).__name__ == "DataValidationError"), None)
    if contract is not None:
        return Failure(FailureKind.TERMINAL, prefix + _contract_message(contract))
    root = _root_cause(causes)
    detail = one_paragraph(describe(root))
    what = type(root).__name__
    message = f"{prefix}{what}: {detail}" if detail else f"{prefix}{what}"
    return Failure(_kind(causes), message)


def kind_of_message(message: str | None) -> FailureKind:
    """The kind of a failure known only by its text (dbt reports errors as messages)."""
    if message and not _TERMINAL_WORDS.search(message) and _TRANSIENT_WORDS.search(message):
        return FailureKind.TRANSIENT
    return FailureKind.TERMINAL


def describe(exc: BaseException) -> str:
    """A library exception as the server's or driver's own words, without wrapping."""
    from_driver = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError
    if isinstance(from_driver, BaseException):
        exc = from_driver
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return f"{args[1]} (error {args[0]})"  # pymysql, pyodbc: (code, message)
    text = str(exc).strip()
    # dlt's job failures embed the job's whole traceback: keep what the database said.
    if "Traceback (most recent call last)" in text:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "\t"))]
        lines = [ln for ln in lines if not ln.startswith(("Traceback", "The above exception"))]
        text = lines[-1] if lines else text
    return text or type(exc).__name__


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value, and each form a library may echo it in, with ***."""
    forms = {form for value in secrets if value for form in _forms(value)}
    for form in sorted((f for f in forms if len(f) >= 3), key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def one_paragraph(text: str, limit: int = 800) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _forms(value: str) -> set[str]:
    return {
        value,
        value.strip(),  # the stray whitespace a copy-paste or `echo` leaves around it
        quote(value, safe=""),
        quote(value, safe=" +"),  # SQLAlchemy's escaping inside a rendered URL
        quote_plus(value),
        value.replace("\\", "\\\\").replace("'", "\\'"),  # libpq's conninfo quoting
        repr(value)[1:-1],  # requests shows a bad header value with repr()
        json.dumps(value)[1:-1],
    }


def _kind(causes: list[BaseException]) -> FailureKind:
    text = " ".join(str(c) for c in causes)
    if any(type(c).__name__ in _TERMINAL_TYPES for c in causes) or _TERMINAL_WORDS.search(text):
        return FailureKind.TERMINAL
    for cause in causes:
        if state := _sqlstate(cause):
            transient = state.startswith(_TRANSIENT_SQLSTATES)
            return FailureKind.TRANSIENT if transient else FailureKind.TERMINAL
    for cause in causes:
        if isinstance(cause, ConnectionError | TimeoutError):
            return FailureKind.TRANSIENT
        if type(cause).__name__ in _TRANSIENT_TYPES:
            return FailureKind.TRANSIENT
    return FailureKind.TRANSIENT if _TRANSIENT_WORDS.search(text) else FailureKind.TERMINAL


def _sqlstate(exc: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        value = getattr(exc, attr, None)
        if isinstance(value, str):
            return value
    orig = getattr(exc, "orig", None)
    return _sqlstate(orig) if isinstance(orig, BaseException) and orig is not exc else None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps: dlt's `.exception`, then __cause__/__context__ chains."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for attr in ("exception", "job_exception", "orig"):
            inner = getattr(current, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        if current.__cause__ is not None:
            todo.append(current.__cause__)
        elif current.__context__ is not None and not current.__suppress_context__:
            todo.append(current.__context__)


def _root_cause(causes: list[BaseException]) -> BaseException:
    """The innermost exception that is not one of dlt's wrappers."""
    for cause in reversed(causes):
        if type(cause).__name__ not in _WRAPPERS:
            return cause
    return causes[-1]


def _contract_message(exc: Any) -> str:
    table = getattr(exc, "table_name", None)
    column = getattr(exc, "column_name", None)
    entity = getattr(exc, "schema_entity", None)
    mode = getattr(exc, "contract_mode", None)
    if entity == "tables":
        what = f"new table {table!r} is not allowed"
    elif entity == "columns":
        what = f"table {table!r} got a new column {column!r}"
    else:
        what = f"column {column!r} of table {table!r} changed its data type"
    return (
        f"schema contract violation: {what}, but the contract on {entity} is {mode}. "
        "Change the source back, or relax `schema_contract` in the pipeline."
    )
