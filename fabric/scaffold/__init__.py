"""What `fabric init` and `fabric tenant new` write: file texts, by repository-relative path.

The texts come from the templates beside this module (package data), filled in with the
project's name and the tenant's slug; writing them is the caller's business (fabric.api), so
the result here is a plain `{path: text}` mapping that tests can read without a file system.

Invariants:
- The repository `repository_files` describes validates, plans and applies as it is: its only
  secret is `${secret:WAREHOUSE_URL}` (an unset secret is a plan note, never an error).
- Every YAML file starts with a `# yaml-language-server: $schema=...` comment whose path
  resolves inside the new repository: the schemas are part of what is written.
- The CI templates are the ones kept in example-repo (a test compares them).
"""

from __future__ import annotations

import re
from importlib.resources import files
from types import MappingProxyType
from typing import Final

from fabric.addresses import TENANT_SLUG
from fabric.errors import FabricError

__all__ = [
    "CI_FILES",
    "InvalidSlugError",
    "check_slug",
    "ci_files",
    "display_name",
    "repository_files",
    "tenant_files",
]

CI_FILES: Final = MappingProxyType(
    {".github/workflows/fabric.yml": "ci/github.yml", ".gitlab-ci.yml": "ci/gitlab.yml"}
)
"""Repository path -> template, for the CI templates."""


class InvalidSlugError(FabricError, ValueError):
    """A tenant name that cannot be a slug (a folder name under tenants/)."""


def _template(name: str) -> str:
    return (files(__package__) / "templates" / name).read_text(encoding="utf-8")


def check_slug(slug: str) -> str:
    """`slug` when it is a valid tenant slug; raises InvalidSlugError saying what one is."""
    if not TENANT_SLUG.fullmatch(slug):
        suggestion = re.sub(r"[^a-z0-9_]+", "_", slug.lower()).strip("_")
        suggestion = re.sub(r"^[^a-z]+", "", suggestion)[:40]
        hint = f" (e.g. {suggestion!r})" if suggestion and TENANT_SLUG.fullmatch(suggestion) else ""
        raise InvalidSlugError(
            f"{slug!r} is not a tenant slug: use a lowercase letter, then lowercase letters, "
            f"digits or _, at most 40 characters{hint}."
        )
    return slug


def display_name(slug: str) -> str:
    return slug.replace("_", " ").title()


def ci_files() -> dict[str, str]:
    """The CI templates: GitHub Actions workflow and GitLab CI file."""
    return {path: _template(template) for path, template in CI_FILES.items()}


def tenant_files(slug: str, *, display: str | None = None) -> dict[str, str]:
    """A new, empty tenant: one commented tenant.yaml (what `fabric tenant new` writes)."""
    check_slug(slug)
    text = _template("tenant_new.yaml").format(
        slug=slug, display_name=display or display_name(slug)
    )
    return {f"tenants/{slug}/tenant.yaml": text}


def repository_files(project: str, slug: str, *, schemas: dict[str, str]) -> dict[str, str]:
    """A whole new repository with one tenant holding one of each resource.

    `schemas` is `{file name: JSON text}` of the JSON Schemas, written under `schemas/`.
    """
    check_slug(slug)
    fill = {"project": project, "slug": slug, "display_name": display_name(slug)}
    tenant = f"tenants/{slug}"
    out = {
        "fabric.yaml": _template("fabric.yaml").format(**fill),
        "README.md": _template("README.md").format(**fill),
        ".gitignore": _template("gitignore"),
        f"{tenant}/tenant.yaml": _template("tenant.yaml").format(**fill),
        f"{tenant}/pipelines.yaml": _template("pipelines.yaml").format(**fill),
        f"{tenant}/transformations.yaml": _template("transformations.yaml").format(**fill),
        f"{tenant}/models/order_totals.sql": _template("order_totals.sql"),
        f"{tenant}/schedules.yaml": _template("schedules.yaml").format(**fill),
        f"data/{slug}/orders.csv": _template("orders.csv"),
        **{f"schemas/{name}": text for name, text in schemas.items()},
        **ci_files(),
    }
    return dict(sorted(out.items()))
