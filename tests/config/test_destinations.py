"""The filesystem-destination folder rule: pure, no files touched."""

from __future__ import annotations

import pytest

from fabric.config.destinations import FolderTarget, filesystem_target

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
