"""What `fabric import dbt` prints: the files, the variables to set, the rewrites and
everything that was not translated, with its reason.  [pure]"""

from __future__ import annotations

from collections.abc import Sequence

from fabric.dbt_import.translate import Translation


def report_text(
    translation: Translation, written: Sequence[str], *, dry_run: bool, strict: bool = False
) -> str:
    """The import's report, as plain text."""
    verb = "Would write" if dry_run else "Wrote"
    lines = [
        f"{verb} {len(written)} files for tenant {translation.tenant} from dbt project "
        f"{translation.project}:"
    ]
    lines += [f"  {path}" for path in written]
    if translation.env:
        width = max(len(e.name) for e in translation.env)
        lines += ["", "Set these environment variables for `fabric apply` and runs:"]
        lines += [f"  {e.name:<{width}}  {e.meaning}" for e in translation.env]
    if translation.rewrites:
        lines += ["", "Rewritten:"]
        lines += [f"  {r}" for r in translation.rewrites]
    if translation.untranslated:
        lines += ["", f"Not translated ({len(translation.untranslated)}):"]
        lines += [f"  {u}" for u in translation.untranslated]
    else:
        lines += ["", "Everything was translated."]
    if not dry_run:
        lines += [
            "",
            "Next:",
            "  fabric validate",
            "  fabric plan",
            "  fabric apply --auto-approve",
        ]
        if translation.packages:
            lines += [f"  fabric deps --tenant {translation.tenant}"]
        lines += [f"  fabric run --tenant {translation.tenant}"]
    if strict and translation.untranslated:
        lines += ["", "--strict: something was not translated (exit 1)."]
    return "\n".join(lines)
