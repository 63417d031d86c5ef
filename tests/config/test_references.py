"""Which tenant owns an environment variable name, and what a tenant may name.  [pure]"""

from __future__ import annotations

import pytest

from fabric.config.references import env_name_problem, env_owner, env_prefix


def test_prefix_is_the_slug_upper_cased() -> None:
    assert env_prefix("acme") == "ACME_"
    assert env_prefix("acme_eu") == "ACME_EU_"
    assert env_prefix("acme-eu") == "ACME_EU_"


@pytest.mark.parametrize(
    ("name", "slugs", "owner"),
    [
        ("ACME_EU_X", {"acme", "acme_eu"}, "acme_eu"),
        ("ACME_EU_X", {"acme"}, "acme"),
        ("ACME_EUROPE", {"acme", "acme_eu"}, "acme"),
        ("ACME_X", {"acme_eu"}, None),
        ("acme_x", {"acme"}, None),
        ("ACME", {"acme"}, None),
    ],
)
def test_the_longest_matching_prefix_owns_a_name(name: str, slugs: set[str], owner: str | None):
    assert env_owner(name, slugs) == owner


def test_a_tenant_names_its_own_and_shared_variables_only() -> None:
    slugs = {"acme", "acme_eu", "globex"}
    assert env_name_problem("ACME_TOKEN", "acme", slugs, ()) is None
    assert env_name_problem("DEMO_PG_PORT", "globex", slugs, ("DEMO_PG_PORT",)) is None
    assert "tenant acme_eu" in env_name_problem("ACME_EU_TOKEN", "acme", slugs, ())
    assert "tenant globex" in env_name_problem("GLOBEX_TOKEN", "acme", slugs, ())
    assert "nor shared" in env_name_problem("PG_PORT", "acme", slugs, ())
    shared = ("FABRIC_SECRET_KEYS",)  # shared by mistake: still fabric's own
    assert "fabric's own" in env_name_problem("FABRIC_SECRET_KEYS", "acme", slugs, shared)
    assert "fabric's own" in env_name_problem("DBT_ENV_SECRET_X", "acme", slugs, ())
