"""The filesystem-destination folder rule: pure, no files touched."""

from __future__ import annotations

import pytest

from fabric.config.destinations import (
    FolderTarget,
    filesystem_target,
    glob_problem,
    source_target,
    sqlite_target,
)

ROOT = "/srv/fabric/repo"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("data/acme", FolderTarget(kind="local", path="data/acme")),
        ("./data/acme/lake/", FolderTarget(kind="local", path="data/acme/lake")),
        ("data//acme/./lake", FolderTarget(kind="local", path="data/acme/lake")),
        (f"{ROOT}/data/acme/lake", FolderTarget(kind="local", path="data/acme/lake")),
        (f"file://{ROOT}/data/acme/lake", FolderTarget(kind="local", path="data/acme/lake")),
        (f"file://localhost{ROOT}/data/acme/x", FolderTarget(kind="local", path="data/acme/x")),
        (
            "file:///srv/fabric/repo/data/acme/a%20b",
            FolderTarget(kind="local", path="data/acme/a b"),
        ),
        ("s3://acme-lake/archive", FolderTarget(kind="cloud", path="s3://acme-lake/archive")),
        ("gs://acme-lake", FolderTarget(kind="cloud", path="gs://acme-lake")),
        ("az://container/x", FolderTarget(kind="cloud", path="az://container/x")),
    ],
)
def test_the_tenants_own_folder_and_cloud_buckets_are_accepted(url, expected):
    assert filesystem_target(url, "acme", ROOT) == (expected, None)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "empty"),
        ("data/acme/../globex", "`..`"),
        ("data/acme/lake/../../acme/x", "`..`"),
        ("file:///srv/fabric/repo/data/acme/../../../../etc", "`..`"),
        ("file:///etc", "/etc is outside the repository"),
        ("/srv/fabric/repo-other/data/acme", "outside the repository"),
        (f"{ROOT}/tenants/acme", "outside tenant acme's folder"),
        ("data/globex/lake", "outside tenant acme's folder data/acme/"),
        ("data/acme_eu", "outside tenant acme's folder"),
        ("data", "outside tenant acme's folder"),
        (".fabric/work/acme", "outside tenant acme's folder"),
        ("file://etc/passwd", "names host 'etc'"),
        ("file:relative/path", "absolute path"),
        ("~/lake", "`~`"),
        ("memory://lake", "scheme memory://"),
        ("sftp://host/x", "scheme sftp://"),
        ("s3:///no-bucket", "needs a bucket"),
        ("simplecache::s3://b/x", "chained"),
    ],
)
def test_everything_else_is_refused_with_the_reason(url, why):
    target, problem = filesystem_target(url, "acme", ROOT)
    assert target is None and problem is not None and why in problem


def test_without_the_repository_root_an_absolute_path_is_refused():
    assert filesystem_target(f"{ROOT}/data/acme", "acme")[0] is None
    assert filesystem_target("data/acme", "acme")[0] is not None


# -- local sources: the same folder rule (a tenant reads only its own files) ------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (".fabric", "outside tenant acme's folder"),  # the embedded default's secret.key
        ("file:///srv/fabric/repo/.fabric", "outside tenant acme's folder"),
        ("data/globex/drops", "outside tenant acme's folder"),
        ("tenants/globex", "outside tenant acme's folder"),
        ("/etc", "outside the repository"),
        ("data/acme/../../.fabric", "`..`"),
        ("simplecache::file:///etc", "chained"),
        ("memory://x", "scheme memory://"),
        ("", "empty"),
    ],
)
def test_a_source_folder_outside_the_tenants_data_folder_is_refused(url, why):
    target, problem = source_target(url, "acme", ROOT)
    assert target is None and problem is not None and why in problem


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("data/acme/drops", "local"),
        (f"file://{ROOT}/data/acme/drops", "local"),
        ("s3://bucket/drops", "cloud"),
        ("https://example.com/exports", "cloud"),
        ("az://container/x", "cloud"),
    ],
)
def test_the_tenants_own_source_folder_and_remote_urls_are_accepted(url, kind):
    target, problem = source_target(url, "acme", ROOT)
    assert problem is None and target is not None and target.kind == kind


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/acme/erp.sqlite", ("data/acme/erp.sqlite", None)),
        (f"{ROOT}/data/acme/erp.sqlite", ("data/acme/erp.sqlite", None)),
    ],
)
def test_a_sqlite_file_in_the_tenants_folder_is_accepted(path, expected):
    assert sqlite_target(path, "acme", ROOT) == expected


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (".fabric/secret.key", "outside tenant acme's folder"),
        ("data/globex/erp.sqlite", "outside tenant acme's folder"),
        ("/etc/passwd", "outside the repository"),
        ("data/acme/../globex/erp.sqlite", "`..`"),
        ("file:///srv/fabric/repo/data/acme/x.sqlite", "not a URL"),
    ],
)
def test_a_sqlite_file_elsewhere_is_refused(path, why):
    target, problem = sqlite_target(path, "acme", ROOT)
    assert target is None and problem is not None and why in problem


@pytest.mark.parametrize(
    ("glob", "ok"),
    [
        ("*.csv", True),
        ("orders/**/*.csv", True),
        ("../*", False),
        ("a/../../b", False),
        ("/etc/*", False),
        ("~/x", False),
    ],
)
def test_a_file_glob_cannot_leave_its_folder(glob, ok):
    assert (glob_problem(glob) is None) == ok
