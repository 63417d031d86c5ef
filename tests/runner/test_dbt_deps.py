"""`fabric deps`: packages that cannot be installed are named in a clear error, and a local
package's path cannot leave the repository (validate refuses it; deps re-checks symlinks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from fabric import api
from fabric.config.loader import load_repository
from fabric.errors import ConfigError, FabricError

TENANT = """\
tenant:
  display_name: Acme
  packages: {packages}
"""


def _repo(tmp_path: Path, packages: str, project: str = "format_version: 1\n") -> Path:
    root = tmp_path / "repo"
    (root / "tenants" / "acme").mkdir(parents=True, exist_ok=True)
    (root / "fabric.yaml").write_text(project)
    (root / "tenants/acme/tenant.yaml").write_text(TENANT.format(packages=packages))
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    return {"FABRIC_HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "")}


@pytest.mark.parametrize("url", ["file:///nonexistent", "http://127.0.0.1:9/x.git"])
def test_an_unreachable_git_package_is_named_without_a_traceback(tmp_path, url):
    root = _repo(tmp_path, f"[{{git: '{url}', revision: v1}}]")
    with pytest.raises(FabricError) as caught:
        api.deps(root, environ=_env(tmp_path))
    message = str(caught.value)
    assert f"package git {url} could not be installed" in message
    assert "Traceback" not in message and "fabric deps" in message
    # What deps wrote for the tenant's project: the package, as dbt reads it.
    written = tmp_path / "home/work/acme/dbt/packages.yml"
    assert yaml.safe_load(written.read_text()) == {"packages": [{"git": url, "revision": "v1"}]}


def test_local_package_paths_stay_in_the_repository(tmp_path):
    root = _repo(
        tmp_path,
        "[{local: ../outside}, {local: /etc}, {local: tenants/globex/pkg}, "
        "{local: tenants/acme/pkg}]",
        "format_version: 1\ndbt:\n  packages:\n    - local: tenants/acme/pkg\n"
        "    - {package: dbt-labs/dbt_utils, version: '>=1.0.0'}\n",
    )
    (root / "tenants/globex").mkdir()
    (root / "tenants/globex/tenant.yaml").write_text("tenant: {display_name: Globex}\n")
    found = sorted(
        (d.code, d.span.path, d.span.line)
        for d in load_repository(root).diagnostics
        if d.severity == "error"
    )
    assert found == [
        ("bad-package-path", "fabric.yaml", 4),  # shared code inside a tenant's folder
        ("bad-package-path", "tenants/acme/tenant.yaml", 3),
        ("bad-package-path", "tenants/acme/tenant.yaml", 3),
        ("bad-package-path", "tenants/acme/tenant.yaml", 3),
    ]
    with pytest.raises(ConfigError):
        api.deps(root, environ=_env(tmp_path))


def test_a_symlinked_local_package_leading_out_is_refused_by_deps(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "dbt_project.yml").write_text("name: evil\nversion: '1.0'\nconfig-version: 2\n")
    root = _repo(tmp_path, "[{local: packages/pkg}]")
    (root / "packages").mkdir()
    os.symlink(outside, root / "packages/pkg")
    with pytest.raises(FabricError, match="points outside the repository"):
        api.deps(root, environ=_env(tmp_path))
