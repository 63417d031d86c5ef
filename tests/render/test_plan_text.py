"""The plan document rendered as Terraform-like text.

Pure tests: documents are built by hand (`doc`, `change`, `field`) or read from
`golden/plan.json`, a representative saved plan. `golden/plan.txt` is the expected rendering of
it; after an intended change to the output, regenerate it (and `golden/plan.md`) with

    FABRIC_REGENERATE_GOLDEN=1 uv run pytest tests/render

and review the diff before committing it.
"""

from __future__ import annotations

import re
from types import MappingProxyType

import pytest
from plan_docs import (
    SECRET,
    assert_golden,
    change,
    doc,
    field,
    golden_doc,
    secret,
)

from fabric.addresses import Address
from fabric.plan.diff import Action, Change, FieldChange, Target
from fabric.plan.plan import Plan, to_document
from fabric.render.plan_markdown import render_plan_markdown
from fabric.render.plan_text import MAX_DIFF_LINES, render_plan_text

ANSI = re.compile(r"\033\[[0-9;]*m")


def test_golden_rendering():
    assert_golden("plan.txt", render_plan_text(golden_doc()))


def test_summary_line_counts_from_the_document():
    text = render_plan_text(
        doc(
            change("acme.pipeline.a"),
            change("acme.pipeline.b"),
            change("acme.pipeline.c"),
            change("acme.pipeline.d", "update", field("retries", 1, 2)),
        )
    )
    assert text.splitlines()[-1] == "Plan: 3 to add, 1 to change, 0 to destroy."


def test_no_changes_says_so_and_still_shows_notes():
    text = render_plan_text(doc(tenants=["acme"], notes=["2 tenants checked"]))
    assert text.splitlines()[0] == "No changes. The control plane matches the repository."
    assert "Plan:" not in text
    assert "2 tenants checked" in text


def test_create_lists_fields_as_aligned_literals():
    text = render_plan_text(
        doc(
            change(
                "acme.pipeline.orders",
                "create",
                field("dataset", after="acme_raw"),
                field("incremental.cursor", after="updated_at"),
                field("primary_key", after=["id"]),
                field("retries", after=2),
                field("active", after=False),
            )
        )
    )
    assert "  + acme.pipeline.orders\n" in text
    assert '      + dataset            = "acme_raw"\n' in text
    assert '      + incremental.cursor = "updated_at"\n' in text
    assert '      + primary_key        = ["id"]\n' in text
    assert "      + retries            = 2\n" in text
    assert "      + active             = false\n" in text


def test_update_shows_old_and_new_value_of_each_changed_field():
    text = render_plan_text(
        doc(
            change(
                "acme.connection.shop_db",
                "update",
                field("host", "old.internal", "new.internal"),
                field("port", None, 5432),
                field("labels.team", "sales", None),
                field("filters", [{"column": "a"}], []),
            )
        )
    )
    assert '      ~ host:        "old.internal" -> "new.internal"\n' in text
    assert "      + port:        null -> 5432\n" in text
    assert '      - labels.team: "sales" -> null\n' in text
    assert '      ~ filters:     [{"column": "a"}] -> []\n' in text


def test_reason_is_a_trailing_comment():
    text = render_plan_text(
        doc(change("acme.pipeline.orders", "update", reason="drift: changed outside git"))
    )
    assert "  ~ acme.pipeline.orders  # drift: changed outside git\n" in text


def test_deletes_show_their_reason_and_flag_protected_ones():
    text = render_plan_text(
        doc(
            change("acme.pipeline.old", "delete", reason="removed from git"),
            change("acme.schedule.nightly", "delete", reason="removed from git", protected=True),
        )
    )
    lines = text.splitlines()
    old = lines.index("  - acme.pipeline.old  # removed from git")
    assert "protected" not in lines[old + 1]
    nightly = lines.index("  - acme.schedule.nightly  # removed from git")
    assert lines[nightly + 1] == "      ! protected: apply will refuse to delete it"
    assert lines[-1] == "Plan: 0 to add, 0 to change, 2 to destroy."


def test_protected_flag_is_only_about_deletes():
    text = render_plan_text(
        doc(change("acme.pipeline.orders", "update", field("retries", 1, 2), protected=True))
    )
    assert "!" not in text


def test_sensitive_values_never_appear_wherever_the_secret_hides():
    created = change(
        "acme.connection.dwh", "create", field("host", after="dwh"), secret("password")
    )
    created["target"] = {
        "spec": {"host": "dwh", "password": SECRET},
        "secret_refs": {"password": SECRET},
        "secret_fingerprints": {"password": SECRET},
        "protect": False,
        "fingerprint": SECRET,
    }
    # A malformed sensitive field that carries values anyway: the flag wins.
    leaky = {"name": "token", "sensitive": True, "before": SECRET, "after": SECRET}
    updated = change("acme.connection.api", "update", secret("password"), leaky)
    updated["target"] = {"spec": {"token": SECRET}}
    document = doc(created, updated)
    document["read_set"] = {SECRET: SECRET}
    for color in (False, True):
        text = render_plan_text(document, color=color)
        assert SECRET not in text
        assert "password = (sensitive value)" in ANSI.sub("", text)
        assert "password: (sensitive value changed)" in ANSI.sub("", text)
        assert "token:    (sensitive value changed)" in ANSI.sub("", text)
    assert SECRET not in render_plan_markdown(document)


def test_real_plan_document_renders_without_its_target():
    """The renderers read what `to_document` writes (and nothing of `target`)."""
    orders = Address.parse("acme.pipeline.orders")
    dwh = Address.parse("acme.connection.dwh")
    target = Target(
        spec=MappingProxyType({"dataset": "acme_raw", "password": SECRET}),
        secret_refs=MappingProxyType({"password": "${secret:dwh_password}"}),
        secret_fps=MappingProxyType({"password": SECRET}),
        protect=False,
        fingerprint="f" * 64,
    )
    plan = Plan(
        source_hash="s" * 64,
        repo="example-repo",
        tenants=("acme",),
        read_set=MappingProxyType({orders: None, dwh: "t"}),
        changes=(
            Change(
                address=dwh,
                action=Action.UPDATE,
                fields=(FieldChange(name="password", sensitive=True),),
                reason="drift: changed outside git",
                target=target,
            ),
            Change(
                address=orders,
                action=Action.CREATE,
                fields=(FieldChange(name="dataset", after="acme_raw"),),
                target=target,
            ),
            Change(
                address=Address.parse("acme.schedule.nightly"),
                action=Action.DELETE,
                reason="removed from git",
                protected=True,
            ),
        ),
        created_at="2024-05-01T12:00:00+00:00",
        warnings=("acme.schedule.nightly is protected",),
    )
    document = to_document(plan)
    text = render_plan_text(document)
    markdown = render_plan_markdown(document)
    for out in (text, markdown):
        assert SECRET not in out
        assert "${secret:dwh_password}" not in out
    assert "  ~ acme.connection.dwh  # drift: changed outside git\n" in text
    assert "      ~ password: (sensitive value changed)\n" in text
    assert '      + dataset = "acme_raw"\n' in text
    assert "      ! protected: apply will refuse to delete it\n" in text
    assert "Plan: 1 to add, 1 to change, 1 to destroy." in text


def test_changes_are_grouped_by_tenant_in_the_documents_order():
    text = render_plan_text(
        doc(
            change("acme.pipeline.a"),
            change("globex.pipeline.b"),
            change("acme.pipeline.c", "delete", reason="removed from git"),
            change("globex.pipeline.d", "delete", reason="removed from git"),
            tenants=["globex", "initech", "acme"],
        )
    )
    headers = [line for line in text.splitlines() if line.startswith("Tenant ")]
    assert headers == [
        "Tenant globex: 1 to add, 0 to change, 1 to destroy",
        "Tenant acme: 1 to add, 0 to change, 1 to destroy",
    ]
    order = [line.split()[1] for line in text.splitlines() if line.startswith("  ")]
    assert order == ["globex.pipeline.b", "globex.pipeline.d", "acme.pipeline.a", "acme.pipeline.c"]


def test_colour_only_when_asked():
    document = doc(
        change("acme.pipeline.a", "create", field("retries", after=1)),
        change("acme.pipeline.b", "update", field("retries", 1, 2)),
        change("acme.pipeline.c", "delete"),
        warnings=["refused"],
    )
    plain = render_plan_text(document)
    coloured = render_plan_text(document, color=True)
    assert "\033" not in plain
    assert "\033[32m+\033[0m" in coloured
    assert "\033[33m~\033[0m" in coloured
    assert "\033[31m-\033[0m" in coloured
    assert ANSI.sub("", coloured) == plain


def test_terminal_control_characters_in_values_are_escaped():
    text = render_plan_text(
        doc(
            change(
                "acme.pipeline.a",
                "create",
                field("labels.x\033[2J", after="\033[31mred\u202e"),
                field("sql", after="select 1\n\033]0;title\007\nfrom t"),
            )
        )
    )
    assert "\033" not in text and "\u202e" not in text and "\007" not in text
    assert '"\\u001b[31mred\\u202e"' in text


def test_multi_line_create_is_shown_compactly():
    sql = "\n-- totals per customer\nselect customer_id, sum(amount)\nfrom orders\ngroup by 1\n"
    text = render_plan_text(doc(change("acme.transformation.t", "create", field("sql", after=sql))))
    assert '      + sql = "-- totals per customer" … (5 lines)\n' in text
    assert "from orders" not in text


def test_multi_line_update_is_a_short_unified_diff():
    before = "\n".join(f"select {i}" for i in range(10))
    after = before.replace("select 4", "select 40")
    text = render_plan_text(
        doc(change("acme.transformation.t", "update", field("sql", before, after)))
    )
    assert (
        "      ~ sql: (10 lines -> 10 lines)\n"
        "            @@ -4,3 +4,3 @@\n"
        "            select 3\n"
        "          - select 4\n"
        "          + select 40\n"
        "            select 5\n"
    ) in text


def test_long_multi_line_diff_is_capped():
    before = "\n".join(f"select {i}" for i in range(100))
    after = "\n".join(f"select {i * 2}" for i in range(100))
    text = render_plan_text(
        doc(change("acme.transformation.t", "update", field("sql", before, after)))
    )
    diff_lines = [line for line in text.splitlines() if line.startswith("          ")]
    assert len(diff_lines) == MAX_DIFF_LINES + 1
    assert re.fullmatch(r" +… \d+ more diff lines", diff_lines[-1])


def test_multi_line_value_replacing_null_is_compact():
    text = render_plan_text(
        doc(change("acme.transformation.t", "update", field("sql", None, "select 1\nfrom t")))
    )
    assert '      + sql: null -> "select 1" … (2 lines)\n' in text


def test_warnings_and_notes_follow_the_changes():
    text = render_plan_text(
        doc(
            change("acme.pipeline.a", "delete", reason="removed from git"),
            warnings=["the plan deletes 1 resource(s): pass --allow-delete"],
            notes=["acme: 1 resource unchanged"],
        )
    )
    lines = text.splitlines()
    summary = lines.index("Plan: 0 to add, 0 to change, 1 to destroy.")
    assert lines.index("  - acme.pipeline.a  # removed from git") < summary
    warning = lines.index("Warning: apply would refuse this plan:")
    assert summary < warning
    assert lines[warning + 1] == "  * the plan deletes 1 resource(s): pass --allow-delete"
    assert lines[lines.index("Note:") + 1] == "  * acme: 1 resource unchanged"


@pytest.mark.parametrize("address", ["acme", "acme.dependency.pipeline.a->transformation.b"])
def test_tenant_and_dependency_addresses(address: str):
    text = render_plan_text(doc(change(address, "create", field("origin", after="sql"))))
    assert f"  + {address}\n" in text


def test_multi_line_update_of_line_endings_only_says_so():
    text = render_plan_text(
        doc(change("acme.transformation.t", "update", field("sql", "a\nb", "a\r\nb\n")))
    )
    assert "      ~ sql: (2 lines -> 2 lines)\n            (only line endings differ)\n" in text
