"""What a tenant's login must not reach, and how the warning says it.  [pure]

The probe itself runs against real PostgreSQL in test_probes.py.
"""

from __future__ import annotations

from fabric.addresses import Address
from fabric.plan.diff import Action, Change, FieldChange, Target
from fabric.runner.reach import (
    Reach,
    connections_to_probe,
    other_tenant_schemas,
    reach_warning,
)


def test_other_tenants_schemas_are_their_datasets_and_transformation_schemas():
    records = {
        "acme": [("pipeline", {"dataset": "acme_raw"}), ("transformation", {"schema": "acme_m"})],
        "globex": [
            ("pipeline", {"dataset": "globex_raw"}),
            ("transformation", {"schema": "globex_marts"}),
            ("connection", {"database": "not_a_schema"}),
            ("schedule", {"cron": "0 * * * *"}),
        ],
    }
    assert other_tenant_schemas("acme", records) == ("globex_marts", "globex_raw")


def test_a_plain_login_gets_no_warning():
    assert reach_warning("dwh", Reach()) is None


def test_the_warning_names_what_the_login_reaches_and_the_fix():
    reach = Reach(superuser=True, schemas=("globex_raw",), control_database="fabric_cp")
    text = reach_warning("dwh", reach)
    assert text is not None and text.startswith("connection dwh logs in as a superuser, which")
    assert "other tenants' schemas globex_raw" in text
    plain = reach_warning("dwh", Reach(schemas=("globex_raw",)))
    assert plain == (
        "connection dwh logs in as a role that can reach other tenants' schemas globex_raw: "
        "give it a login of its own that can use only this tenant's schemas."
    )
    assert "control plane database fabric_cp" in text
    assert "REVOKE CONNECT ON DATABASE fabric_cp FROM PUBLIC" in text


def test_a_long_schema_list_is_cut():
    text = reach_warning("dwh", Reach(schemas=tuple(f"s{i:02}" for i in range(20))))
    assert text is not None and "s07 and 12 more" in text and "s08" not in text


def _change(name: str, action: Action, fields: tuple[str, ...] = (), kind: str = "postgres"):
    target = Target(
        spec={"type": kind}, secret_refs={}, secret_fps={}, protect=False, fingerprint="f"
    )
    return Change(
        address=Address.parse(f"acme.connection.{name}"),
        action=action,
        fields=tuple(FieldChange(name=f) for f in fields),
        target=target,
    )


def test_apply_probes_only_postgres_logins_that_were_created_or_changed():
    changes = [
        _change("new_dwh", Action.CREATE),
        _change("moved", Action.UPDATE, ("host",)),
        _change("rekeyed", Action.UPDATE, ("password",)),
        _change("role", Action.UPDATE, ("options.role",)),
        _change("described", Action.UPDATE, ("description",)),
        _change("api", Action.CREATE, kind="rest_api"),
        Change(address=Address.parse("acme.connection.gone"), action=Action.DELETE),
        Change(address=Address.parse("acme.pipeline.orders"), action=Action.CREATE),
    ]
    assert connections_to_probe(changes) == {"acme": ("moved", "new_dwh", "rekeyed", "role")}
