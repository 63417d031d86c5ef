"""Which tenants `plan --changed-since` plans, from the changed paths alone."""

from __future__ import annotations

from fabric.config.changes import ChangedTenants, changed_tenants


def test_files_in_tenant_folders_change_those_tenants_only() -> None:
    got = changed_tenants(
        [
            "tenants/acme/pipelines.yaml",
            "tenants/acme/models/daily.sql",
            "tenants/globex/deep/er/x.yaml",
        ]
    )
    assert got == ChangedTenants(False, frozenset({"acme", "globex"}), ())


def test_a_shared_file_changes_every_tenant_and_says_which() -> None:
    got = changed_tenants(["tenants/acme/tenant.yaml", "fabric.yaml", "README.md"])
    assert got.every
    assert got.tenants == {"acme"}
    assert got.shared == ("README.md", "fabric.yaml")


def test_a_file_directly_under_tenants_is_shared() -> None:
    """A stray file breaks validation of the whole repository, so nothing is skipped."""
    assert changed_tenants(["tenants/stray.yaml"]).every


def test_hidden_entries_under_tenants_are_ignored_as_discovery_ignores_them() -> None:
    got = changed_tenants(["tenants/.gitkeep", "tenants/.hidden/x.yaml"])
    assert got == ChangedTenants(False, frozenset(), ())


def test_nothing_changed_plans_nothing() -> None:
    assert changed_tenants([]) == ChangedTenants(False, frozenset(), ())
