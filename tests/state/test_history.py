"""The audit log in the control plane: each apply's changes, field by field, read in bulk."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import event

from fabric.addresses import Address
from fabric.plan.diff import Action, Change, FieldChange
from fabric.state.engine import make_engine
from fabric.state.history import (
    read_audit,
    read_history,
    read_members,
    record_apply,
    record_changes,
)
from fabric.state.migrate import upgrade_shared


def _apply(conn, author: str, changes: list[Change]) -> int:
    apply_id = record_apply(
        conn,
        started_at=dt.datetime.now(dt.UTC),
        outcome="success",
        plan_hash="p",
        source_hash="s",
        tenants=sorted({c.address.tenant for c in changes}),
        counts={},
        git_commit="c0ffee",
        author=author,
        client="test",
    )
    record_changes(conn, apply_id, changes)
    return apply_id


def test_history_and_its_changes_are_read_in_two_queries_whatever_their_number(make_database):
    engine = make_engine(make_database())
    try:
        with engine.begin() as conn:
            upgrade_shared(conn)
            for i in range(12):
                _apply(
                    conn,
                    f"dev{i}@acme.example",
                    [
                        Change(
                            address=Address.parse("acme.pipeline.orders"),
                            action=Action.UPDATE,
                            fields=(FieldChange(name="batch_size", before=i, after=i + 1),),
                        ),
                        Change(
                            address=Address.parse("acme.connection.dwh"),
                            action=Action.UPDATE,
                            fields=(FieldChange(name="password", sensitive=True),),
                        ),
                        Change(address=Address.parse("globex.pipeline.x"), action=Action.DELETE),
                    ],
                )
        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        with engine.connect() as conn:
            applies = read_history(conn, limit=50, resource="acme.pipeline.orders")
            audit = read_audit(conn, [a.id for a in applies], address="acme.pipeline.orders")
        assert len(statements) == 2
        assert [a.author for a in applies][:2] == ["dev11@acme.example", "dev10@acme.example"]
        (newest,) = audit[applies[0].id]
        assert newest.fields == ({"name": "batch_size", "before": 11, "after": 12},)
        with engine.connect() as conn:
            by_tenant = read_audit(conn, [applies[0].id], tenant="acme")
        assert [e.address for e in by_tenant[applies[0].id]] == [
            "acme.pipeline.orders",
            "acme.connection.dwh",
        ]
        assert by_tenant[applies[0].id][1].fields == ({"name": "password", "sensitive": True},)
    finally:
        engine.dispose()


def test_members_are_read_as_stored_for_live_tenants_only(make_database):
    engine = make_engine(make_database())
    try:
        with engine.begin() as conn:
            upgrade_shared(conn)
            conn.exec_driver_sql(
                "INSERT INTO fabric.tenants (slug, spec, fingerprint, content_md5, deleted_at) "
                """VALUES ('acme', '{"members": [{"who": "a@x", "role": "owner"}]}', 'f', 'm', """
                "NULL), ('gone', "
                """'{"members": [{"who": "b@x", "role": "owner"}]}', 'f', 'm', now()), """
                """('bare', '{"display_name": "Bare"}', 'f', 'm', NULL)"""
            )
        with engine.connect() as conn:
            members = read_members(conn, ["acme", "gone", "bare", "never"])
        assert members == {"acme": (("a@x", "owner"),), "bare": ()}
    finally:
        engine.dispose()
