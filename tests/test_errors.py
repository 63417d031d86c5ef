"""The error tree: every expected failure is a FabricError, with its data in attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fabric import errors
from fabric.addresses import Address
from fabric.errors import (
    EmbeddedDatabaseError,
    FabricError,
    LockTimeoutError,
    StalePlanError,
    StateError,
    TerminalNodeError,
    TransientNodeError,
)


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_fabric_error(name: str):
    assert issubclass(getattr(errors, name), FabricError)


def test_only_transient_node_errors_are_retryable():
    assert TransientNodeError.retryable is True
    assert TerminalNodeError.retryable is False


def test_stale_plan_names_what_changed_and_what_to_do():
    changed = tuple(Address.parse(f"acme.pipeline.p{i}") for i in range(7))
    err = StalePlanError(changed)
    assert err.changed == changed
    assert "acme.pipeline.p0" in str(err) and "and 2 more" in str(err)
    assert "fabric plan" in str(err)


def test_lock_timeout_names_tenant_holder_and_since():
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    err = LockTimeoutError("acme", holder="fabric apply (pid 42)", since=since)
    assert isinstance(err, StateError)
    assert "'acme'" in str(err) and "pid 42" in str(err) and "2026-01-02T03:04:05" in str(err)


def test_embedded_database_error_names_the_folder_and_the_fix():
    err = EmbeddedDatabaseError(Path("/repo/.fabric"), "initdb failed.", hint="Set FABRIC_HOME.")
    assert isinstance(err, StateError)
    assert (err.home, err.detail, err.hint) == (
        Path("/repo/.fabric"),
        "initdb failed.",
        "Set FABRIC_HOME.",
    )
    assert (
        str(err)
        == "Cannot use the embedded PostgreSQL in /repo/.fabric: initdb failed.\nSet FABRIC_HOME."
    )
