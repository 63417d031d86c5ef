"""The plan document rendered as a pull-request comment.

Pure tests: documents are built by hand (`doc`, `change`, `field`) or read from
`golden/plan.json`, a representative saved plan. `golden/plan.md` is the expected rendering of
it; after an intended change to the output, regenerate it (and `golden/plan.txt`) with

    FABRIC_REGENERATE_GOLDEN=1 uv run pytest tests/render

and review the diff before committing it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from plan_docs import (
    SECRET,
    assert_golden,
    change,
    doc,
    field,
    golden_doc,
)

from fabric.render.plan_markdown import render_plan_markdown


def big_doc(tenants: int = 5, per_tenant: int = 200) -> dict[str, Any]:
    changes = [
        change(
            f"t{t}.pipeline.p{i}",
            "create",
            field("dataset", after=f"raw_{i}"),
            field("primary_key", after=["id", "tenant_id"]),
            field("sql", after="select *\nfrom orders\nwhere 1 = 1"),
        )
        for t in range(tenants)
        for i in range(per_tenant)
    ]
    return doc(*changes)


def fences_balance(markdown: str) -> bool:
    """Every opened code fence is closed by a fence at least as long (CommonMark)."""
    open_fence = None
    for line in markdown.splitlines():
        m = re.match(r"(`{3,})(.*)$", line)
        if not m:
            continue
        if open_fence is None:
            open_fence = m.group(1)
        elif len(m.group(1)) >= len(open_fence) and not m.group(2).strip():
            open_fence = None
    return open_fence is None


def test_golden_rendering():
    assert_golden("plan.md", render_plan_markdown(golden_doc()))


def test_title_summary_and_table_per_tenant():
    md = render_plan_markdown(
        doc(
            change("acme.pipeline.a"),
            change("acme.pipeline.b", "update", field("retries", 1, 2)),
            change("globex.pipeline.c", "delete", reason="removed from git"),
            tenants=["acme", "globex", "initech"],
        )
    )
    assert md.startswith("## Fabric plan\n\n**Plan: 1 to add, 1 to change, 1 to destroy.**\n")
    assert (
        "| Tenant | Add | Change | Destroy |\n"
        "| :-- | --: | --: | --: |\n"
        "| acme | 1 | 1 | 0 |\n"
        "| globex | 0 | 0 | 1 |\n"
        "| **Total** | 1 | 1 | 1 |\n"
    ) in md
    assert "initech" not in md


def test_no_changes():
    md = render_plan_markdown(doc(tenants=["acme"], notes=["1 tenant checked"]))
    assert md.startswith("## Fabric plan\n\nNo changes. The control plane matches the repository.")
    assert "<details>" not in md and "| Tenant" not in md
    assert "- 1 tenant checked" in md


def test_deletes_are_called_out_before_the_sections():
    md = render_plan_markdown(
        doc(
            change("acme.pipeline.a"),
            change("acme.pipeline.old", "delete", reason="removed from git"),
            change("acme.schedule.nightly", "delete", reason="removed from git", protected=True),
        )
    )
    caution = md.index("> [!CAUTION]")
    assert caution < md.index("<details>")
    assert (
        "> **This plan destroys 2 resources:**\n"
        "> - `acme.pipeline.old` — removed from git\n"
        "> - `acme.schedule.nightly` — removed from git — **protected**: "
        "apply will refuse to delete it\n"
    ) in md


def test_no_caution_without_deletes():
    md = render_plan_markdown(doc(change("acme.pipeline.a")))
    assert "[!CAUTION]" not in md and "[!WARNING]" not in md


def test_many_deletes_are_listed_up_to_a_limit():
    deletes = [change(f"acme.pipeline.p{i:02}", "delete") for i in range(30)]
    md = render_plan_markdown(doc(*deletes))
    callout = md[md.index("> [!CAUTION]") : md.index("\n\n", md.index("> [!CAUTION]"))]
    assert callout.count("\n> - `acme.pipeline.") == 20
    assert "> - … and 10 more" in callout


def test_warnings_block_after_the_deletes():
    md = render_plan_markdown(
        doc(
            change("acme.pipeline.old", "delete"),
            warnings=["acme.pipeline.old: pass `--allow-delete` <now>"],
        )
    )
    assert md.index("> [!CAUTION]") < md.index("> [!WARNING]") < md.index("<details>")
    assert "> - acme.pipeline.old: pass `--allow-delete` &lt;now&gt;\n" in md


def test_one_collapsed_diff_section_per_tenant():
    md = render_plan_markdown(
        doc(
            change("acme.pipeline.a", "create", field("retries", after=1)),
            change("acme.pipeline.b", "update", field("retries", 1, 2), reason="drift"),
            change("globex.pipeline.c", "delete", reason="removed from git", protected=True),
        )
    )
    assert (
        "<details><summary>acme — 2 changes</summary>\n\n"
        "```diff\n"
        "+ acme.pipeline.a\n"
        "      + retries = 1\n"
        "```\n\n"
        "```diff\n"
        "~ acme.pipeline.b  # drift\n"
        "      ~ retries: 1 -> 2\n"
        "```\n\n"
        "</details>"
    ) in md
    assert (
        "<details><summary>globex — 1 change</summary>\n\n"
        "```diff\n"
        "- globex.pipeline.c  # removed from git\n"
        "      ! protected: apply will refuse to delete it\n"
        "```\n\n"
        "</details>"
    ) in md


def test_sensitive_values_never_appear():
    created = change("acme.connection.dwh", "create", {"name": "password", "sensitive": True})
    created["target"] = {"spec": {"password": SECRET}, "secret_fingerprints": {"p": SECRET}}
    leaky = {"name": "token", "sensitive": True, "before": SECRET, "after": SECRET}
    document = doc(created, change("acme.connection.api", "update", leaky))
    document["read_set"] = {SECRET: SECRET}
    md = render_plan_markdown(document)
    assert SECRET not in md
    assert "      + password = (sensitive value)\n" in md
    assert "      ~ token: (sensitive value changed)\n" in md


def test_backticks_in_values_cannot_close_the_fence():
    sneaky = "x\n```\n</details>\n# pwned\n````"
    md = render_plan_markdown(
        doc(change("acme.transformation.t", "update", field("sql", "x", sneaky)))
    )
    assert "\n`````diff\n" in md
    assert fences_balance(md)
    assert "\n# pwned" not in md  # the SQL lines are indented inside the diff block


def test_user_text_is_escaped_in_summaries_table_and_prose():
    md = render_plan_markdown(
        doc(
            change("a<b>.pipeline.x", "delete", reason="<img src=x> | *bold*"),
            notes=["see <script>alert(1)</script> and `code <kept>`"],
        )
    )
    assert "<summary>a&lt;b&gt; — 1 change</summary>" in md
    assert "| a&lt;b&gt; | 0 | 0 | 1 |" in md
    assert "&lt;img src=x&gt; \\| \\*bold\\*" in md
    outside_code = re.sub(r"```diff\n.*?\n```\n", "", md, flags=re.DOTALL)
    assert "<script>" not in outside_code and "<img" not in outside_code
    assert "`code <kept>`" in md


def test_truncation_keeps_the_comment_under_the_limit():
    document = big_doc()
    full = render_plan_markdown(document, max_chars=10**9)
    assert "truncated" not in full
    md = render_plan_markdown(document, max_chars=20_000)
    assert len(full) > 20_000 >= len(md)
    shown = len(re.findall(r"^\+ t\d+\.pipeline\.p\d+$", md, flags=re.MULTILINE))
    assert 0 < shown < 1000
    assert f"(truncated: {1000 - shown} more changes not shown; see them all with " in md
    assert fences_balance(md)
    assert md.count("<details>") == md.count("</details>")
    assert re.search(r"<summary>t\d — 200 changes \(\d+ of 200 shown\)</summary>", md)
    assert md.rstrip().endswith("</sub>")  # the footer survives


@pytest.mark.parametrize("max_chars", [300, 1_000, 2_500, 7_777, 30_000, 60_000])
def test_never_longer_than_max_chars(max_chars: int):
    md = render_plan_markdown(big_doc(), max_chars=max_chars)
    assert len(md) <= max_chars
    assert fences_balance(md)


def test_default_limit_fits_a_github_comment():
    md = render_plan_markdown(big_doc(tenants=20, per_tenant=500))
    assert len(md) <= 60_000 < 65_536
    assert "(truncated: " in md


def test_many_tenants_are_summarised_in_the_table():
    md = render_plan_markdown(doc(*(change(f"t{i:03}.pipeline.p") for i in range(60))))
    assert "| t049 | 1 | 0 | 0 |" in md and "| t050 |" not in md
    assert "| *10 more tenants* | 10 | 0 | 0 |" in md
    assert "| **Total** | 60 | 0 | 0 |" in md


def test_footer_names_the_plan():
    md = render_plan_markdown(doc(change("acme.pipeline.a")))
    assert md.endswith(
        f"<sub>plan `{'0' * 64}` · source `111111111111` · repo `example-repo` · "
        "created 2024-05-01T12:00:00+00:00</sub>\n"
    )


def diff_blocks(markdown: str) -> list[str]:
    return re.findall(r"^(`{3,})diff\n(.*?)\n\1$", markdown, flags=re.DOTALL | re.MULTILINE)


def test_no_diff_block_mixes_markers():
    md = render_plan_markdown(golden_doc())
    blocks = [body for _, body in diff_blocks(md)]
    assert len(blocks) == 6  # acme: add, change, destroy; globex: add, destroy; initech: add
    for body in blocks:
        column0 = {line[0] for line in body.splitlines() if line and line[0] != " "}
        assert len(column0) == 1, body  # one action per block, field lines indented
    assert "\n          - select customer_id, sum(amount) as total\n" in md


def test_changes_that_lose_warehouse_data_are_listed_with_the_deletes():
    md = render_plan_markdown(
        doc(
            change("acme.pipeline.a", "update", field("write_disposition", "merge", "replace")),
            change("acme.pipeline.b", "update", field("retries", 1, 2)),
            change("acme.transformation.t", "update", field("materialized", "incremental", "view")),
            change("acme.pipeline.old", "delete", reason="removed from git"),
        )
    )
    caution = md[md.index("> [!CAUTION]") : md.index("<details>")]
    assert "**This plan destroys 1 resource and loses warehouse data in 2 changes:**" in caution
    assert "> - `acme.pipeline.a` (changed) — becomes `write_disposition: replace`" in caution
    t = "> - `acme.transformation.t` (changed) — `materialized: incremental` becomes `view`"
    assert t in caution
    assert "acme.pipeline.b" not in caution


def test_a_thousand_tenant_plan_fits_a_comment_and_keeps_its_summary():
    changes = [
        change(f"t{t:04}.pipeline.p{i}", action, field("dataset", after=f"raw_{i}" * 20))
        for t in range(1000)
        for i, action in enumerate(("create", "create", "delete"))
    ]
    document = doc(*changes)
    md = render_plan_markdown(document)
    assert len(md) < 65_536
    assert md.startswith("## Fabric plan\n\n**Plan: 2000 to add, 0 to change, 1000 to destroy.**\n")
    assert "| *950 more tenants* | 1900 | 0 | 950 |" in md
    assert "| **Total** | 2000 | 0 | 1000 |" in md
    assert "> **This plan destroys 1000 resources:**" in md
    shown = len(re.findall(r"^[+-] t\d+\.pipeline\.p\d$", md, flags=re.MULTILINE))
    assert 0 < shown < 3000
    assert f"(truncated: {3000 - shown} more changes not shown; see them all with " in md
    assert fences_balance(md) and md.count("<details>") == md.count("</details>")
