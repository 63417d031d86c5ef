"""`fabric plan`, `fabric apply`, `fabric history`, `fabric locks`, `fabric unlock`.  [shell]

Each command parses options, calls fabric.api, renders, and picks the exit code; nothing else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fabric.cli.errors import handle_errors
from fabric.cli.repository import repository, resolve_repository


def _render(doc: dict, fmt: str, *, color: bool) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2)
    if fmt == "markdown":
        from fabric.render.plan_markdown import render_plan_markdown

        return render_plan_markdown(doc)
    from fabric.render.plan_text import render_plan_text

    return render_plan_text(doc, color=color)


@click.command()
@click.option(
    "--tenant", "tenants", multiple=True, help="Limit the plan to this tenant (repeatable)."
)
@click.option(
    "--changed-since",
    metavar="REF",
    help="Plan only the tenants whose files changed since this git ref (every tenant when "
    "fabric.yaml or another shared file changed).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the plan for `fabric apply PLANFILE`.",
)
@click.option(
    "--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error."
)
@click.option("--explain", is_flag=True, help="Also list the steps `fabric apply` would take.")
@click.option(
    "--author",
    metavar="EMAIL",
    help="Check the plan against this author's roles: list up front what apply would refuse.",
)
@click.option(
    "--lock-for",
    "lock_pr",
    metavar="PR",
    help="Pull request PR holds the tenants this plan changes until its saved plan is applied "
    "(or `fabric unlock PR`); exits 4 when another pull request holds one of them.",
)
@repository()
def plan(
    repo: Path,
    tenants: tuple[str, ...],
    changed_since: str | None,
    fmt: str,
    out: Path | None,
    detailed_exitcode: bool,
    explain: bool,
    author: str | None,
    lock_pr: str | None,
) -> None:
    """Show what `fabric apply` would change in the control plane."""
    import dataclasses

    from fabric import api
    from fabric.plan.plan import to_document

    if lock_pr is not None:
        try:
            api.check_pull_request(lock_pr)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--lock-for") from None
    result = api.plan(repo, tenants=tenants, changed_since=changed_since, author=author)
    if lock_pr is not None:
        result = dataclasses.replace(
            result, plan=dataclasses.replace(result.plan, lock_for=lock_pr)
        )
    doc = to_document(result.plan)
    others = [lock for lock in result.locks if lock.pr != lock_pr]
    held = []
    if lock_pr is not None:  # claimed before the plan is saved: a refused plan is not saved
        claimed_by = author or api.git_identity(repo)[1]
        held, others = api.lock_for(repo, result.plan, lock_pr, author=claimed_by)
        if others:
            out = None
    if out is not None:
        doc, saved = api.plan_file_text(result.plan, repo)  # signed
        out.write_text(saved)
    if fmt == "json":
        doc = {**doc, "approvers": dict(result.approvers or {})}
        if result.refusals is not None:
            doc["refusals"] = [_refusal_doc(r) for r in result.refusals]
    elif result.refusals:
        click.echo(_refusals_text(result.refusals, author, markdown=fmt == "markdown"))
    click.echo(_render(doc, fmt, color=sys.stdout.isatty()))
    if fmt != "json" and result.approvers:
        click.echo(_approvers_text(result.approvers, markdown=fmt == "markdown"))
    if explain and fmt == "text":
        from fabric.plan.steps import apply_steps, describe_step

        listed = apply_steps(result.plan.changes)
        click.echo("\nApply would, in one transaction:" if listed else "\nApply would do nothing.")
        for number, step in enumerate(listed, 1):
            click.echo(f"  {number}. {describe_step(step)}")
    if out is not None and fmt == "text":
        click.echo(
            f"\nSaved the plan to {out}. Apply exactly this plan with:\n  fabric apply {out}"
        )
    if held and fmt != "json":
        listed = ", ".join(lock.tenant for lock in held)
        click.echo(f"\nPull request {lock_pr} holds {listed} until its plan is applied.")
    if others:
        from fabric.errors import LockedByPullRequestError

        error = LockedByPullRequestError(others, "lock these tenants" if lock_pr else "apply")
        if lock_pr is not None:
            click.echo(f"Error: {error}", err=True)
            raise SystemExit(error.exit_code)
        click.echo("\n" + "\n".join(f"Note: {lock.describe()}." for lock in others))
    if detailed_exitcode and result.plan.has_changes:
        raise SystemExit(2)


def _refusal_doc(refusal) -> dict:
    return {
        "address": refusal.address,
        "author": refusal.author,
        "role": refusal.role,
        "needed": refusal.needed,
        "approvers": list(refusal.approvers),
        "message": str(refusal),
    }


def _refusals_text(refusals, author: str | None, *, markdown: bool = False) -> str:
    head = f"Apply would refuse {len(refusals)} change(s) by {author or 'an unknown author'}:"
    bullet = "- " if markdown else "  - "
    shown = [f"{bullet}{r}" for r in refusals[:50]]
    if len(refusals) > 50:
        shown.append(f"{bullet}... and {len(refusals) - 50} more")
    return "\n".join([f"**{head}**" if markdown else head, *shown, ""])


def _approvers_text(approvers, *, markdown: bool = False) -> str:
    lines = ["", "**Who may approve:**" if markdown else "Who may approve (owners, admins):"]
    bullet = "- " if markdown else "  "
    for slug, people in sorted(approvers.items()):
        lines.append(f"{bullet}{slug}: {', '.join(people) or 'nobody (no owner, no admin)'}")
    return "\n".join(lines)


@click.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path), required=False)
@click.option(
    "--repo",
    "repo_opt",
    type=click.Path(file_okay=False, path_type=Path),
    help="The repository (default: the nearest folder at or above the current directory "
    "holding fabric.yaml; for a saved PLANFILE, the one it was made from).",
)
@click.option("--tenant", "tenants", multiple=True, help="Limit to this tenant (repeatable).")
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option(
    "--allow-delete", is_flag=True, default=None, help="Allow the plan to delete resources."
)
@click.option(
    "--max-deletes",
    type=click.IntRange(min=0),
    help="Refuse plans deleting more (project default 10).",
)
@click.option(
    "--allow-delete-tenant",
    "allow_tenants",
    multiple=True,
    help="Allow deleting this whole tenant (repeatable).",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for another apply's lock.",
)
@click.option(
    "--drop-data",
    is_flag=True,
    help="Drop (with their data) the managed-warehouse schemas the plan takes from a tenant; "
    "by default they are kept, owned by the warehouse's admin.",
)
@click.option("--commit", "git_commit", help="Git commit to record (default: the checkout's HEAD).")
@click.option(
    "--author",
    metavar="EMAIL",
    help="Who applies: checked against the tenants' members and the project admins, and "
    "recorded (default: the HEAD commit's author).",
)
@handle_errors
def apply(
    target: Path | None,
    repo_opt: Path | None,
    tenants: tuple[str, ...],
    auto_approve: bool,
    allow_delete: bool | None,
    max_deletes: int | None,
    allow_tenants: tuple[str, ...],
    lock_timeout: float,
    drop_data: bool,
    git_commit: str | None,
    author: str | None,
) -> None:
    """Apply REPO's changes (planned now) or a saved PLANFILE, in one locked transaction.

    TARGET is REPO (a folder) or PLANFILE (a file saved by `fabric plan --out`).
    """
    from fabric import api
    from fabric.apply import ApplyOptions
    from fabric.errors import UnauthorizedError
    from fabric.plan.plan import to_document
    from fabric.plan.safety import SafetyOptions

    if target is not None and target.is_file():
        the_plan = api.read_plan_file(target, repo_opt)
        given = repo_opt or Path(the_plan.repo)
        repo = resolve_repository(None, given, cwd=Path.cwd())
        api.check_plan_source(the_plan, repo)
        project = api.load_valid(repo).desired.project  # type: ignore[union-attr]
    else:
        repo = resolve_repository(target, repo_opt, cwd=Path.cwd())
        result = api.plan(repo, tenants=tenants)
        the_plan, project = result.plan, result.load.desired.project  # type: ignore[union-attr]
    safety = SafetyOptions(
        allow_delete=project.apply.allow_delete if allow_delete is None else allow_delete,
        max_deletes=project.apply.max_deletes if max_deletes is None else max_deletes,
        allow_delete_tenants=frozenset(allow_tenants),
    )
    click.echo(_render(to_document(the_plan), "text", color=sys.stdout.isatty()))
    if not the_plan.has_changes:
        return
    detected_commit, detected_author = api.git_identity(repo)
    options = ApplyOptions(
        lock_timeout=lock_timeout,
        safety=safety,
        git_commit=git_commit or detected_commit,
        author=author or detected_author,
        project=project.model_dump(mode="json", by_alias=True, exclude_unset=True),
        drop_data=drop_data,
    )
    refused = api.refusals(the_plan, repo=repo, author=options.author, project=options.project)
    if refused:  # before asking; apply checks again inside its transaction
        raise UnauthorizedError(refused, options.author)
    if not auto_approve:
        if not sys.stdin.isatty():
            raise click.UsageError("Refusing to apply without confirmation: pass --auto-approve.")
        click.confirm("\nApply these changes?", abort=True)
    outcome = api.apply(the_plan, repo=repo, options=options)
    c = outcome.counts
    click.secho(
        f"\nApply complete! Resources: {c['create']} added, {c['update']} changed, "
        f"{c['delete']} destroyed. (apply #{outcome.apply_id})",
        fg="green",
        color=sys.stdout.isatty(),
    )
    for warning in outcome.warnings:
        click.secho(f"Warning: {warning}", fg="yellow", err=True, color=sys.stderr.isatty())


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--tenant", help="Only applies that touched this tenant, and its changes.")
@click.option(
    "--resource",
    metavar="ADDRESS",
    help="Only applies that changed this resource (e.g. acme.pipeline.orders), and its changes.",
)
@click.option(
    "--changes/--no-changes",
    "show_changes",
    default=None,
    help="Show each change field by field (default: with --tenant or --resource).",
)
@repository(control_plane_only=True)
def history(
    repo: Path, limit: int, tenant: str | None, resource: str | None, show_changes: bool | None
) -> None:
    """The audit log: who applied what, when, from which commit, field by field."""
    from fabric import api

    entries = api.apply_history(repo, limit=limit, tenant=tenant, resource=resource)
    if not entries:
        click.echo("No applies recorded yet." if not (tenant or resource) else "No applies found.")
        return
    detailed = bool(tenant or resource) if show_changes is None else show_changes
    click.echo(
        f"{'ID':>5}  {'STARTED':20}  {'OUTCOME':8}  {'+/~/-':>11}  {'COMMIT':8}  AUTHOR / TENANTS"
    )
    for entry in entries:
        r = entry.apply
        counts = f"{r.creates}/{r.updates}/{r.deletes}"
        commit = (r.git_commit or "-")[:8]
        click.echo(
            f"{r.id:>5}  {r.started_at:%Y-%m-%d %H:%M:%S}  {r.outcome:8}  {counts:>11}  "
            f"{commit:8}  {r.author or '-'}  [{', '.join(r.tenants)}]"
        )
        if detailed:
            for change in entry.changes:
                click.echo(_audit_lines(change))


def _audit_lines(change) -> str:
    sign = {"create": "+", "update": "~", "delete": "-"}.get(change.action, "?")
    lines = [f"         {sign} {change.address} ({change.action})"]
    for f in change.fields:
        if f.get("sensitive"):
            lines.append(f"             {f['name']}: (sensitive value changed)")
        elif change.action == "create":
            lines.append(f"             {f['name']}: {_short(f.get('after'))}")
        else:
            before, after = _short(f.get("before")), _short(f.get("after"))
            lines.append(f"             {f['name']}: {before} -> {after}")
    return "\n".join(lines)


def _short(value: object, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@click.command()
@repository()
def locks(repo: Path) -> None:
    """List pull-request locks (`plan --lock-for`) and the apply locks held right now."""
    from fabric import api

    held = api.pr_locks(repo)
    if held:
        click.echo(f"{'TENANT':20}  {'PR':10}  {'AUTHOR':30}  SINCE")
        for lock in held:
            since = f"{lock.since:%Y-%m-%d %H:%M:%S %Z}".strip()
            click.echo(f"{lock.tenant:20}  {lock.pr:10}  {lock.author or '-':30}  {since}")
        click.echo("")
    holders = api.apply_locks(repo)
    if not holders:
        click.echo("No apply locks are held.")
        return
    for h in holders:
        since = f"{h.since:%Y-%m-%d %H:%M:%S %Z}" if h.since else "?"
        click.echo(
            f"{h.tenant or '(unknown tenant)'}: {h.application_name} pid {h.pid} "
            f"from {h.client} since {since}"
        )


@click.command()
@click.argument("pr", required=False)
@click.option("--tenant", "tenants", multiple=True, help="Release the lock on this tenant.")
@click.option(
    "--author",
    metavar="EMAIL",
    help="Who unlocks: the locks' author or a project admin (default: the HEAD commit's author).",
)
@repository()
def unlock(repo: Path, pr: str | None, tenants: tuple[str, ...], author: str | None) -> None:
    """Release pull request PR's locks (or the locks on --tenant), by hand."""
    from fabric import api

    if pr is None and not tenants:
        raise click.UsageError("Name the pull request (PR) or --tenant.")
    who = author or api.git_identity(repo)[1]
    released = api.unlock(repo, author=who, pr=pr, tenants=tenants or None)
    if not released:
        click.echo("No such lock is held.")
    for lock in released:
        click.echo(f"Released {lock.tenant} (pull request {lock.pr}).")


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write the repository into.",
)
@click.option("--tenant", "tenants", multiple=True, help="Export only this tenant (repeatable).")
@repository(control_plane_only=True)
def export(repo: Path, out: Path, tenants: tuple[str, ...]) -> None:
    """Write the applied state back as a repository (planning it shows no changes)."""
    from fabric import api

    written = api.export(repo, out, tenants=tenants)
    click.echo(f"Wrote {len(written)} files to {out}.")
