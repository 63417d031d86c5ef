"""Who may apply which change: the tenants' members and the project's admins.  [pure]

Invariants:
- Pure: a plan's changes, the members as the control plane holds them *before* the apply,
  the governing project settings and an author in; refusals out. No I/O.
- The current owners decide. A tenant that exists is judged by the members stored in the
  control plane, never by the branch's YAML (which may be the very change that adds the
  author); a new tenant, which has no stored members, by the members its own YAML declares.
- Roles are ordered owner > admin > editor > viewer. Editors change pipelines,
  transformations, schedules and dependencies; admins also connections (and so secrets) and
  any delete; owners also the tenant's own settings (display_name, warehouse, env, labels,
  members, ...) and the tenant's deletion. Project admins may change anything, fabric.yaml too.
- `who` matches an author by email, without regard to case; an entry without `@` names a group
  of fabric.yaml's `groups:`, whose members are emails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from fabric.addresses import Kind
from fabric.plan.diff import Action, Change

PROJECT_FILE = "fabric.yaml"


class Role(IntEnum):
    VIEWER = 1
    EDITOR = 2
    ADMIN = 3
    OWNER = 4

    @property
    def label(self) -> str:
        return self.name.lower()


Members = Sequence[tuple[str, str]]
"""A tenant's members as (who, role) pairs, as `tenant.yaml` lists them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Governance:
    """The project settings that decide who may change what (from fabric.yaml)."""

    enforce: bool | None = None
    """True: every change is judged; False: none is; None (the default): judged where someone
    declared ownership, i.e. everywhere once fabric.yaml names `admins`, else in the tenants
    that list `members` (a project that declares no one has no one to protect)."""
    admins: tuple[str, ...] = ()
    """Emails or group names, as written."""
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Group name -> member emails."""

    @classmethod
    def of_project(cls, project: Mapping[str, Any] | None) -> Governance:
        """From fabric.yaml as JSON (a ProjectSpec dump); defaults when None."""
        project = project or {}
        groups = {
            str(name): tuple(str(e) for e in (group or {}).get("members", ()))
            for name, group in (project.get("groups") or {}).items()
        }
        return cls(
            enforce=(project.get("ownership") or {}).get("enforce"),
            admins=tuple(str(a) for a in project.get("admins") or ()),
            groups=groups,
        )

    def expand(self, who: str) -> frozenset[str]:
        """The lower-cased emails a `who` entry stands for."""
        if "@" in who:
            return frozenset({who.strip().lower()})
        return frozenset(e.strip().lower() for e in self.groups.get(who.strip(), ()))

    def is_admin(self, email: str | None) -> bool:
        return email is not None and any(email in self.expand(a) for a in self.admins)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One change the author may not make: where, their role, and the role it needs."""

    address: str
    author: str | None
    role: str
    """The author's role in the tenant, "not a member", or "unknown author"."""
    needed: str
    """e.g. "admin or above", "owner", "a project admin"."""
    approvers: tuple[str, ...] = ()
    """Who may make it instead (the tenant's owners and admins, or the project admins)."""

    def __str__(self) -> str:
        who = self.author or "no author"
        if self.role == "unknown author":
            head = f"{self.address}: no author is known (no git commit, no --author)"
            return f"{head}; applying needs {self.needed}"
        else:
            head = f"{self.address}: {who} is {_a(self.role)}"
        approve = f"; may approve: {', '.join(self.approvers)}" if self.approvers else ""
        return f"{head}; this change needs {self.needed}{approve}"


def _a(role: str) -> str:
    if role.startswith("not "):
        return role
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"


def author_email(author: str | None) -> str | None:
    """The email of `Name <email>` or of a bare email, lower-cased; None when there is none."""
    if not author:
        return None
    text = author.strip()
    if "<" in text and text.endswith(">"):
        text = text[text.rindex("<") + 1 : -1]
    text = text.strip().lower()
    return text if "@" in text else None


def members_of_spec(spec: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """(who, role) pairs of a stored or planned tenant spec."""
    return tuple(
        (str(m.get("who", "")), str(m.get("role", "viewer")))
        for m in (spec or {}).get("members") or ()
        if isinstance(m, Mapping)
    )


def role_of(members: Members, email: str | None, governance: Governance) -> Role | None:
    """The highest role any entry matching `email` gives; None when none matches."""
    if email is None:
        return None
    roles = [Role[role.upper()] for who, role in members if email in governance.expand(who)]
    return max(roles) if roles else None


def role_needed(change: Change) -> Role:
    """The least role of a tenant's members that may make this change."""
    kind = change.address.kind
    if kind is Kind.TENANT:
        return Role.OWNER
    if kind is Kind.DEPENDENCY:
        # NOTE: an edge is removed by editing depends_on or a model's SQL, which editors may
        # do; it is derived, not managed (plan/safety.py counts it the same way).
        return Role.EDITOR
    if kind is Kind.CONNECTION or change.action is Action.DELETE:
        return Role.ADMIN
    return Role.EDITOR


def _drops_last_owner(change: Change, stored: Members) -> bool:
    """A tenant update that leaves no owner where the control plane has one."""
    if change.address.kind is not Kind.TENANT or change.action is not Action.UPDATE:
        return False
    if change.target is None or not any(role == "owner" for _, role in stored):
        return False
    return not any(role == "owner" for _, role in members_of_spec(change.target.spec))


_NEEDED_TEXT = {r: "owner" if r is Role.OWNER else f"{r.label} or above" for r in Role}
_LABEL = {r: r.label for r in Role}


def _needed_text(role: Role) -> str:
    return _NEEDED_TEXT[role]


def approvers(members: Members, governance: Governance) -> tuple[str, ...]:
    """Who may approve any change of a tenant: its owners and admins, then project admins."""
    listed = [who for who, role in members if role in ("owner", "admin")]
    listed += [f"{a} (project admin)" for a in governance.admins]
    return tuple(dict.fromkeys(listed))


def tenant_members(
    changes: Iterable[Change], stored: Mapping[str, Members]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """The members that judge each touched tenant: stored ones, or a new tenant's own YAML."""
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for change in changes:
        slug = change.address.tenant
        if slug in stored:
            if slug not in out:
                out[slug] = tuple(stored[slug])
        elif change.address.kind is Kind.TENANT and change.target is not None:
            out[slug] = members_of_spec(change.target.spec)
        else:
            out.setdefault(slug, ())
    return out


def authorize(
    changes: Sequence[Change],
    *,
    stored_members: Mapping[str, Members],
    governance: Governance,
    author: str | None,
    project_changed: bool = False,
) -> tuple[Refusal, ...]:
    """Every change of the plan `author` may not make; empty when the apply may go ahead.

    `stored_members` holds every touched tenant that exists in the control plane (with its
    members as stored, possibly none); a touched tenant missing from it is new.
    `project_changed` says fabric.yaml differs from the one the control plane recorded.
    """
    if governance.enforce is False or (not changes and not project_changed):
        return ()
    if governance.enforce is None and not governance.admins:
        members = tenant_members(changes, stored_members)
        changes = tuple(c for c in changes if members.get(c.address.tenant))
        project_changed = False  # no project admin declared: fabric.yaml is nobody's yet
        if not changes:
            return ()
    email = author_email(author)
    if governance.is_admin(email):
        return ()
    admins = tuple(f"{a} (project admin)" for a in governance.admins)
    if email is None:  # one refusal for the whole plan: no change can be judged
        return (
            Refusal(
                "every change",
                author,
                "unknown author",
                "a known author (a git commit's, or --author EMAIL), or `ownership: {enforce: "
                "false}` in fabric.yaml",
                admins,
            ),
        )
    refusals: list[Refusal] = []
    if project_changed:
        refusals.append(
            Refusal(
                PROJECT_FILE,
                author,
                "not a project admin",
                "a project admin",
                admins,
            )
        )
    members = tenant_members(changes, stored_members)
    # The author's role and the approvers are per tenant: computed once, not per change.
    roles = {slug: role_of(people, email, governance) for slug, people in members.items()}
    approving: dict[str, tuple[str, ...]] = {}

    def who_approves(slug: str) -> tuple[str, ...]:
        if slug not in approving:
            approving[slug] = approvers(members[slug], governance)
        return approving[slug]

    for change in changes:
        slug = change.address.tenant
        if change.address.kind is Kind.TENANT and _drops_last_owner(
            change, stored_members.get(slug, ())
        ):
            refusals.append(
                Refusal(
                    str(change.address),
                    author,
                    "not a project admin",
                    "another owner listed first (the last owner cannot be removed)",
                    who_approves(slug),
                )
            )
            continue
        needed = role_needed(change)
        role = roles[slug]
        if role is not None and role >= needed:
            continue
        refusals.append(
            Refusal(
                str(change.address),
                author,
                "not a member" if role is None else _LABEL[role],
                _NEEDED_TEXT[needed],
                who_approves(slug),
            )
        )
    return tuple(refusals)


def governing(
    recorded: Mapping[str, Any] | None, repository: Mapping[str, Any] | None
) -> tuple[Governance, bool]:
    """(who governs, whether fabric.yaml changed) from the recorded and the repository's project.

    The control plane's recorded fabric.yaml governs once it declares `admins` or `ownership`
    (so a branch cannot make its author an admin or switch enforcement off); until then, the
    repository's own one does, as a new tenant's own YAML names its first owners.
    `recorded` and `repository` are ProjectSpec dumps (only the fields the file set).
    """
    from fabric.config.specs import ProjectSpec

    governs = recorded is not None and ("admins" in recorded or "ownership" in recorded)
    governance = Governance.of_project(recorded if governs else repository)
    changed = False
    if recorded is not None and repository is not None:

        def normal(project: Mapping[str, Any]) -> Any:
            return ProjectSpec.model_validate(dict(project)).model_dump(mode="json")

        try:
            changed = normal(recorded) != normal(repository)
        except ValueError:  # a recorded project this version cannot read: treat as a change
            changed = True
    return governance, changed


def authorize_secret(
    slug: str,
    name: str,
    *,
    stored_members: Members,
    governance: Governance,
    author: str | None,
) -> tuple[Refusal, ...]:
    """`fabric secrets set TENANT NAME` needs an admin of the (applied) tenant, as any change
    of its connections does; project admins may set any secret."""
    if governance.enforce is False:
        return ()
    if governance.enforce is None and not governance.admins and not stored_members:
        return ()
    email = author_email(author)
    if governance.is_admin(email):
        return ()
    role = role_of(stored_members, email, governance)
    if email is not None and role is not None and role >= Role.ADMIN:
        return ()
    shown = "unknown author" if email is None else ("not a member" if role is None else role.label)
    needed = (
        _needed_text(Role.ADMIN)
        if email is not None
        else "a known author (a git commit's, or --author EMAIL), or `ownership: {enforce: "
        "false}` in fabric.yaml"
    )
    address = f"{slug} secret {name}"
    return (Refusal(address, author, shown, needed, approvers(stored_members, governance)),)
