"""`load_repository(..., cache=LoadCache())`: the same result as a fresh load, after any edit.

`fabric watch` reloads after every save; the cache skips parsing and resolving what did not
change, and must never make a reload disagree with a fresh load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fabric.config.loader import LoadCache, load_repository

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "example-repo", tmp_path / "repo")
    return tmp_path / "repo"


def same(a, b) -> None:
    assert a.diagnostics == b.diagnostics
    assert a.desired == b.desired
    assert a.tenant_digests == b.tenant_digests
    assert a.files == b.files and a.tenants == b.tenants


def test_a_reload_with_nothing_changed_parses_nothing_and_equals_a_fresh_load(repo):
    cache = LoadCache()
    first = load_repository(repo, cache=cache)
    assert first.ok and cache.hits == 0
    again = load_repository(repo, cache=cache)
    assert cache.hits == first.files - 1  # every tenant file; fabric.yaml is not cached
    same(again, load_repository(repo))


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        ("tenants/acme/pipelines.yaml", "dataset: acme_raw", "dataset: acme_raw_v2"),
        ("tenants/acme/pipelines.yaml", "source: shop_db", "source: shop"),  # an error
        ("tenants/acme/pipelines.yaml", "pipelines:", "pipelines: [\n"),  # half-written
        ("tenants/acme/models/customer_totals.sql", "select", "select 1 as one,"),
        ("fabric.yaml", "timezone: UTC", "timezone: Europe/Berlin"),
    ],
)
def test_after_an_edit_a_cached_reload_equals_a_fresh_load(repo, path, old, new):
    cache = LoadCache()
    load_repository(repo, cache=cache)
    file = repo / path
    assert old in file.read_text()
    file.write_text(file.read_text().replace(old, new, 1))
    same(load_repository(repo, cache=cache), load_repository(repo))
    file.write_text(file.read_text().replace(new, old, 1))  # and back
    same(load_repository(repo, cache=cache), load_repository(repo))


def test_a_sql_file_that_appears_later_is_read_again(repo):
    tx = repo / "tenants/acme/transformations.yaml"
    tx.write_text(
        tx.read_text() + "\n  extra:\n    sql_file: models/extra.sql\n    schema: acme_marts\n"
    )
    cache = LoadCache()
    before = load_repository(repo, cache=cache)
    assert not before.ok and "does not exist" in str(before.diagnostics)
    (repo / "tenants/acme/models/extra.sql").write_text("select 1 as x\n")
    after = load_repository(repo, cache=cache)
    same(after, load_repository(repo))
    assert after.ok


def test_removed_files_and_tenants_leave_the_cache(repo):
    cache = LoadCache()
    load_repository(repo, cache=cache)
    shutil.rmtree(repo / "tenants" / "globex")
    load_repository(repo, cache=cache)
    assert "globex" not in cache.tenants
    assert not any(path.startswith("tenants/globex/") for path, _, _ in cache.files)


def test_a_reload_told_which_tenants_changed_reads_only_those_and_equals_a_fresh_load(repo):
    cache = LoadCache()
    load_repository(repo, cache=cache)
    pipelines = repo / "tenants/acme/pipelines.yaml"
    pipelines.write_text(pipelines.read_text().replace("dataset: acme_raw", "dataset: acme_v2", 1))
    shutil.rmtree(repo / "tenants/initech")
    reloaded = load_repository(repo, cache=cache, changed={"acme", "initech"})
    same(reloaded, load_repository(repo))
    assert "initech" not in reloaded.tenants


def test_a_tenant_not_named_as_changed_is_taken_from_the_cache(repo):
    """The contract of `changed`: files of tenants it does not name are not read again."""
    cache = LoadCache()
    first = load_repository(repo, cache=cache)
    pipelines = repo / "tenants/globex/pipelines.yaml"
    pipelines.write_text(pipelines.read_text() + "\n")
    reloaded = load_repository(repo, cache=cache, changed={"acme"})
    assert reloaded.tenant_digests == first.tenant_digests
