"""Renames in YAML: `moved:` entries and `renamed_from:` fields, checked.  [pure]"""

from __future__ import annotations

from fabric.addresses import Address
from fabric.config.loader import load_repository

PIPELINE = """\
pipelines:
  orders_v2:
    source: shop_db
    dataset: acme_raw
    mode: single_table
    table: orders
"""


def load(make_repo, extra: str, pipelines: str = PIPELINE):
    return load_repository(make_repo({"tenants/acme/p.yaml": pipelines + extra}))


def faults(result) -> list[str]:
    return [
        f"{d.span.line}: {d.detail} {d.hint}" for d in result.diagnostics if d.code == "bad-move"
    ]


def test_moved_entry_and_renamed_from_become_moves(make_repo):
    result = load(
        make_repo, "moved:\n  - {from: acme.pipeline.orders, to: acme.pipeline.orders_v2}\n"
    )
    assert result.ok, result.diagnostics
    (move,) = result.desired.tenants["acme"].moves
    assert (move.old, move.new) == (
        Address.parse("acme.pipeline.orders"),
        Address.parse("acme.pipeline.orders_v2"),
    )
    assert move.span.path.endswith("p.yaml") and move.span.line == 8

    renamed = PIPELINE + "    renamed_from: orders\n"
    result = load(make_repo, "", renamed)
    assert result.ok, result.diagnostics
    (again,) = result.desired.tenants["acme"].moves
    assert (again.old, again.new) == (move.old, move.new)
    # renamed_from is not part of the stored object: removing it later changes nothing
    from fabric.plan.records import desired_records

    record = desired_records(result.desired)[move.new]
    assert "renamed_from" not in record.spec


def test_bad_moves_are_all_reported_with_their_lines(make_repo):
    result = load(
        make_repo,
        "moved:\n"
        "  - {from: acme.pipeline.a, to: acme.pipeline.nowhere}\n"  # line 8: to undeclared
        "  - {from: acme.pipeline.orders_v2, to: acme.pipeline.orders_v2}\n"  # 9: itself
        "  - {from: acme.connection.shop_db, to: acme.pipeline.orders_v2}\n"  # 10: kind
        "  - {from: globex.pipeline.x, to: acme.pipeline.orders_v2}\n"  # 11: tenant
        "  - {from: acme.pipeline.b, to: acme.pipeline.c}\n"  # 12: chain b -> c -> orders_v2
        "  - {from: acme.pipeline.c, to: acme.pipeline.orders_v2}\n"  # 13
        "  - {from: acme.pipeline.x, to: acme.pipeline.y}\n"  # 14: cycle
        "  - {from: acme.pipeline.y, to: acme.pipeline.x}\n"  # 15
        "  - {from: acme.connection.dwh, to: acme.connection.shop_db}\n"  # 16: old declared
        "  - {from: acme.schedule.a, to: acme.schedule.b}\n",  # 17: not movable
    )
    assert not result.ok
    found = faults(result)
    assert found[0].startswith("8: acme.pipeline.a is moved to acme.pipeline.nowhere, which is")
    assert any(f.startswith("9: acme.pipeline.orders_v2 is moved to itself") for f in found)
    assert any(f.startswith("10: ") and "changes the kind" in f for f in found)
    assert any(f.startswith("11: ") and "stays in the tenant" in f for f in found)
    assert any(
        f.startswith("12: acme.pipeline.b -> acme.pipeline.c and acme.pipeline.c -> ")
        and "make a chain" in f
        and "Write one move acme.pipeline.b -> acme.pipeline.orders_v2" in f
        for f in found
    )
    assert sum("make a cycle" in f for f in found) == 2
    assert any(f.startswith("16: ") and "acme.connection.dwh is still declared" in f for f in found)
    bad_address = [d for d in result.diagnostics if d.code == "bad-address"]
    assert [d.span.line for d in bad_address] == [17, 17]


def test_a_move_cannot_reach_into_another_tenant(make_repo):
    """A hostile tenant cannot claim another tenant's object (and its history) by a move."""
    files = {
        "tenants/globex/tenant.yaml": "tenant: {display_name: Globex}\n",
        "tenants/globex/m.yaml": (
            "moved:\n  - {from: acme.pipeline.orders, to: globex.pipeline.x}\n"
        ),
    }
    result = load_repository(make_repo(files))
    (fault,) = faults(result)
    assert "is declared in tenant globex" in fault
    assert result.desired is None or not result.desired.tenants["globex"].moves
