"""Settings come from an explicit mapping, so these tests never touch the real environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.errors import SettingsError
from fabric.settings import Settings, load_settings


def test_nothing_set_means_embedded_database_default_home_and_no_keys():
    assert load_settings({}) == Settings(database_url=None, home=None, secret_keys=())


def test_each_variable_is_read():
    settings = load_settings(
        {
            "FABRIC_DATABASE_URL": "postgresql+psycopg://fabric@db:5432/control",
            "FABRIC_HOME": "/var/lib/fabric",
            "FABRIC_SECRET_KEYS": "k1",
        }
    )
    assert settings.database_url == "postgresql+psycopg://fabric@db:5432/control"
    assert settings.home == Path("/var/lib/fabric")
    assert settings.secret_keys == ("k1",)


def test_empty_values_count_as_unset():
    environ = {"FABRIC_DATABASE_URL": "", "FABRIC_HOME": "", "FABRIC_SECRET_KEYS": ""}
    assert load_settings(environ) == Settings()


def test_secret_keys_keep_their_order_and_drop_blanks_and_spaces():
    settings = load_settings({"FABRIC_SECRET_KEYS": " new , old,, "})
    assert settings.secret_keys == ("new", "old")


def test_home_expands_the_user_folder():
    assert load_settings({"FABRIC_HOME": "~/fabric"}).home == Path.home() / "fabric"


def test_other_variables_are_ignored():
    assert load_settings({"DATABASE_URL": "postgresql://x/y", "HOME": "/root"}) == Settings()


def test_repr_shows_neither_keys_nor_passwords():
    settings = Settings(
        database_url="postgresql://fabric:hunter2@db:5432/control", secret_keys=("k3y",)
    )
    shown = repr(settings)
    assert "hunter2" not in shown and "k3y" not in shown
    assert "postgresql://fabric:***@db:5432/control" in shown


def test_warehouse_timeouts_default_and_are_read_in_seconds():
    assert load_settings({}).warehouse_statement_timeout == 3600
    assert load_settings({}).warehouse_lock_timeout == 300
    settings = load_settings(
        {"FABRIC_WAREHOUSE_STATEMENT_TIMEOUT": "60", "FABRIC_WAREHOUSE_LOCK_TIMEOUT": "0"}
    )
    assert (settings.warehouse_statement_timeout, settings.warehouse_lock_timeout) == (60, 0)


@pytest.mark.parametrize("value", ["1h", "-5", "1.5", "999999999"])
def test_a_bad_warehouse_timeout_names_the_variable(value: str):
    with pytest.raises(SettingsError) as err:
        load_settings({"FABRIC_WAREHOUSE_LOCK_TIMEOUT": value})
    assert err.value.name == "FABRIC_WAREHOUSE_LOCK_TIMEOUT"
    assert "whole number" in str(err.value)
