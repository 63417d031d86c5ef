"""Fixtures for the config tests: small repositories written into tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

PROJECT = "format_version: 1\n"
TENANT = """\
tenant:
  display_name: Acme
  warehouse: dwh
connections:
  shop_db:
    type: postgres
    direction: source
    host: shop.internal
    database: shop
    username: etl
    password: ${env:ACME_SHOP_PASSWORD}
  dwh:
    type: postgres
    direction: destination
    host: dwh.internal
    database: analytics
    username: acme
    password: ${secret:dwh_password}
"""
MakeRepo = Callable[[Mapping[str, str]], Path]


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """Write a repository: fabric.yaml and tenant acme's tenant.yaml, plus `files`.

    `files` maps repo-relative paths to (dedented) text; a path mapped to "" is not written,
    so a test can drop one of the defaults.
    """

    def make(files: Mapping[str, str]) -> Path:
        root = tmp_path / "repo"
        merged = {"fabric.yaml": PROJECT, "tenants/acme/tenant.yaml": TENANT, **files}
        for rel, text in merged.items():
            if text:
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return make
