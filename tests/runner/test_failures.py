"""One classifier and one redactor for dlt, dbt and connection probes (pure)."""

from __future__ import annotations

import psycopg
import pytest

from fabric.domain.runs import FailureKind
from fabric.errors import FabricError
from fabric.runner.failures import classify, describe, kind_of_message, redact


class Wrapper(Exception):
    """Stands for a library's wrapping exception (dlt's PipelineStepFailed and the like)."""

    def __init__(self, message: str, inner: BaseException) -> None:
        super().__init__(message)
        self.exception = inner


def with_sqlstate(state: str, message: str) -> psycopg.Error:
    exc = psycopg.OperationalError(message)
    exc.sqlstate = state  # type: ignore[misc]
    return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (with_sqlstate("28P01", 'password authentication failed for user "x"'), "terminal"),
        (with_sqlstate("42P01", 'relation "orders" does not exist'), "terminal"),
        (with_sqlstate("40P01", "deadlock detected"), "transient"),
        (with_sqlstate("08006", "server closed the connection unexpectedly"), "transient"),
        (ConnectionResetError("connection reset by peer"), "transient"),
        (TimeoutError("read timed out"), "transient"),
        (FabricError("the pipeline has no destination"), "terminal"),
        (ValueError("unexpected"), "terminal"),
    ],
)
def test_the_kind_decides_retries_whatever_the_library(exc, kind):
    assert classify(exc).kind is FailureKind(kind)
    assert classify(Wrapper("step failed", exc)).kind is FailureKind(kind)  # through a wrapper


def test_a_terminal_wording_wins_over_a_transient_one():
    exc = ConnectionError("could not connect: password authentication failed")
    assert classify(exc).kind is FailureKind.TERMINAL


def test_dbt_messages_are_classified_by_the_same_rules():
    assert kind_of_message("could not connect to server: Connection refused") == "transient"
    assert kind_of_message('column "amout" does not exist') == "terminal"
    assert kind_of_message(None) == "terminal"


def test_the_message_is_the_innermost_words_without_a_traceback():
    inner = with_sqlstate("42703", 'column "amout" does not exist')
    failure = classify(Wrapper("load step failed", inner))
    assert failure.message == 'OperationalError: column "amout" does not exist'
    traceback = 'Traceback (most recent call last):\n  File "x"\nValueError: bad thing'
    assert describe(RuntimeError(traceback)) == "ValueError: bad thing"


def test_redact_hides_every_form_a_library_echoes_a_secret_in():
    secret = "p@ss w'rd\\"
    echoes = [
        f"password={secret}",
        "postgresql://u:p%40ss%20w%27rd%5C@h/db",
        "p%40ss+w%27rd%5C",
        repr(secret),
        "p@ss w\\'rd\\\\",  # libpq's conninfo quoting
    ]
    for echo in echoes:
        assert "***" in redact(echo, [secret]), echo
        assert "p@ss" not in redact(echo, [secret]) and "p%40ss" not in redact(echo, [secret])
    assert redact("nothing here", ["", "ab"]) == "nothing here"  # short values are not secrets
