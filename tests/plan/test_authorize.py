"""Who may apply which change: pure rules over changes, stored members and an author."""

from types import MappingProxyType

import pytest

from fabric.addresses import Address
from fabric.plan.authorize import (
    Governance,
    Role,
    author_email,
    authorize,
    authorize_secret,
    governing,
    role_needed,
)
from fabric.plan.diff import Action, Change, Target

ACME = (
    ("olga@acme.example", "owner"),
    ("adam@acme.example", "admin"),
    ("eddie@acme.example", "editor"),
    ("vera@acme.example", "viewer"),
)
PEOPLE = {
    Role.OWNER: "olga@acme.example",
    Role.ADMIN: "adam@acme.example",
    Role.EDITOR: "eddie@acme.example",
    Role.VIEWER: "vera@acme.example",
}
KINDS = {
    "pipeline": "acme.pipeline.orders",
    "transformation": "acme.transformation.totals",
    "schedule": "acme.schedule.nightly",
    "dependency": "acme.dependency.pipeline.orders->transformation.totals",
    "connection": "acme.connection.dwh",
    "tenant": "acme",
}
# The least role for (kind, action): editors edit DAG resources, admins connections and deletes,
# owners the tenant itself; a removed edge is an edit of its pipeline or SQL.
NEEDED = {
    ("pipeline", "create"): Role.EDITOR,
    ("pipeline", "update"): Role.EDITOR,
    ("pipeline", "delete"): Role.ADMIN,
    ("transformation", "create"): Role.EDITOR,
    ("transformation", "update"): Role.EDITOR,
    ("transformation", "delete"): Role.ADMIN,
    ("schedule", "create"): Role.EDITOR,
    ("schedule", "update"): Role.EDITOR,
    ("schedule", "delete"): Role.ADMIN,
    ("dependency", "create"): Role.EDITOR,
    ("dependency", "update"): Role.EDITOR,
    ("dependency", "delete"): Role.EDITOR,
    ("connection", "create"): Role.ADMIN,
    ("connection", "update"): Role.ADMIN,
    ("connection", "delete"): Role.ADMIN,
    ("tenant", "update"): Role.OWNER,
    ("tenant", "delete"): Role.OWNER,
}


def target(spec):
    return Target(
        spec=MappingProxyType(spec),
        secret_refs=MappingProxyType({}),
        secret_fps=MappingProxyType({}),
        protect=False,
        fingerprint="x",
    )


def change(address, action, spec=None):
    act = Action(action)
    return Change(
        address=Address.parse(address),
        action=act,
        target=None if act is Action.DELETE else target(spec or {"display_name": "Acme"}),
    )


def members_spec(*members):
    return {"display_name": "Acme", "members": [{"who": w, "role": r} for w, r in members]}


@pytest.mark.parametrize(("kind", "action"), sorted(NEEDED))
@pytest.mark.parametrize("role", list(Role))
def test_every_role_against_every_change_kind(kind, action, role):
    one = change(KINDS[kind], action, members_spec(*ACME) if kind == "tenant" else None)
    refusals = authorize(
        [one],
        stored_members={"acme": ACME},
        governance=Governance(),
        author=f"Someone <{PEOPLE[role]}>",
    )
    if role >= NEEDED[(kind, action)]:
        assert refusals == ()
    else:
        (refusal,) = refusals
        assert refusal.address == str(one.address)
        assert refusal.role == role.label
        needed = NEEDED[(kind, action)]
        assert refusal.needed == ("owner" if needed is Role.OWNER else f"{needed.label} or above")
        assert f"needs {refusal.needed}" in str(refusal)


def test_role_needed_table_is_the_documented_one():
    for (kind, action), needed in NEEDED.items():
        assert role_needed(change(KINDS[kind], action)) is needed


def test_a_non_member_is_refused_naming_the_role_needed_and_who_may_approve():
    (refusal,) = authorize(
        [change("acme.pipeline.orders", "update")],
        stored_members={"acme": ACME},
        governance=Governance(admins=("root@platform.example",)),
        author="Mallory <mallory@evil.example>",
    )
    assert refusal.role == "not a member"
    assert str(refusal) == (
        "acme.pipeline.orders: Mallory <mallory@evil.example> is not a member; this change "
        "needs editor or above; may approve: olga@acme.example, adam@acme.example, "
        "root@platform.example (project admin)"
    )


def test_emails_match_without_regard_to_case():
    refusals = authorize(
        [change("acme.connection.dwh", "update")],
        stored_members={"acme": ACME},
        governance=Governance(),
        author="ADAM@Acme.Example",
    )
    assert refusals == ()


def test_a_group_entry_matches_its_members():
    governance = Governance(groups={"acme-data": ("Eve@acme.example",)})
    stored = {"acme": (("acme-data", "editor"),)}
    ok = authorize(
        [change("acme.pipeline.orders", "create")],
        stored_members=stored,
        governance=governance,
        author="eve@acme.example",
    )
    assert ok == ()
    (refused,) = authorize(
        [change("acme.connection.dwh", "create")],
        stored_members=stored,
        governance=governance,
        author="eve@acme.example",
    )
    assert refused.role == "editor" and refused.needed == "admin or above"


def test_the_highest_of_several_matching_entries_counts():
    governance = Governance(groups={"all": ("eddie@acme.example",)})
    stored = {"acme": (("all", "viewer"), ("eddie@acme.example", "admin"))}
    refusals = authorize(
        [change("acme.pipeline.orders", "delete")],
        stored_members=stored,
        governance=governance,
        author="eddie@acme.example",
    )
    assert refusals == ()


def test_project_admins_may_change_anything_including_fabric_yaml():
    governance = Governance(admins=("platform",), groups={"platform": ("root@p.example",)})
    changes = [change("acme", "delete"), change("globex.connection.dwh", "create")]
    refusals = authorize(
        changes,
        stored_members={"acme": ACME},
        governance=governance,
        author="root@p.example",
        project_changed=True,
    )
    assert refusals == ()


def test_fabric_yaml_changes_need_a_project_admin():
    (refusal,) = authorize(
        [],
        stored_members={},
        governance=Governance(admins=("root@p.example",)),
        author="olga@acme.example",
        project_changed=True,
    )
    assert refusal.address == "fabric.yaml"
    assert refusal.needed == "a project admin"


def test_a_new_tenant_is_judged_by_the_members_its_own_yaml_declares():
    new = [
        change("globex", "create", members_spec(("gina@globex.example", "owner"))),
        change("globex.connection.dwh", "create"),
        change("globex.pipeline.orders", "create"),
    ]
    ok = authorize(new, stored_members={}, governance=Governance(), author="gina@globex.example")
    assert ok == ()
    refused = authorize(new, stored_members={}, governance=Governance(), author="x@y.example")
    assert [r.address for r in refused] == [
        "globex",
        "globex.connection.dwh",
        "globex.pipeline.orders",
    ]


def test_an_existing_tenant_is_judged_by_its_stored_members_not_the_branch():
    """An acme editor lists themselves as globex's owner: globex's current owners decide."""
    grab = [
        change(
            "globex",
            "update",
            members_spec(("gina@globex.example", "owner"), ("eddie@acme.example", "owner")),
        ),
        change("globex.pipeline.orders", "update"),
    ]
    refusals = authorize(
        grab,
        stored_members={"globex": (("gina@globex.example", "owner"),)},
        governance=Governance(),
        author="eddie@acme.example",
    )
    assert [(r.address, r.role, r.needed) for r in refusals] == [
        ("globex", "not a member", "owner"),
        ("globex.pipeline.orders", "not a member", "editor or above"),
    ]


def test_a_tenant_with_no_stored_members_is_changed_by_project_admins_only():
    governance = Governance(admins=("root@p.example",))
    stored = {"acme": ()}
    (refused,) = authorize(
        [change("acme.pipeline.orders", "update")],
        stored_members=stored,
        governance=governance,
        author="olga@acme.example",
    )
    assert refused.approvers == ("root@p.example (project admin)",)
    assert (
        authorize(
            [change("acme.pipeline.orders", "update")],
            stored_members=stored,
            governance=governance,
            author="root@p.example",
        )
        == ()
    )


def test_the_last_owner_cannot_be_removed_even_by_that_owner():
    (refusal,) = authorize(
        [change("acme", "update", {"display_name": "Acme", "members": []})],
        stored_members={"acme": ACME},
        governance=Governance(),
        author="olga@acme.example",
    )
    assert "last owner cannot be removed" in refusal.needed


def test_no_author_refuses_every_change_unless_the_project_opts_out():
    changes = [change("acme.pipeline.orders", "update")]
    (refusal,) = authorize(
        changes, stored_members={"acme": ACME}, governance=Governance(), author=None
    )
    assert refusal.role == "unknown author"
    assert refusal.address == "every change"
    assert "no author is known" in str(refusal) and "enforce: false" in str(refusal)
    off = Governance(enforce=False)
    assert authorize(changes, stored_members={"acme": ACME}, governance=off, author=None) == ()


def test_unset_enforcement_judges_where_ownership_is_declared():
    """No admins and no members: nobody to protect, so nothing is judged (a first repository
    applies without ceremony). A tenant that lists members is judged; once fabric.yaml names
    admins, every change is."""
    open_tenant = [change("bare.pipeline.orders", "update")]
    assert (
        authorize(open_tenant, stored_members={"bare": ()}, governance=Governance(), author=None)
        == ()
    )
    owned = [change("acme.pipeline.orders", "update"), *open_tenant]
    (refusal,) = authorize(
        owned, stored_members={"acme": ACME, "bare": ()}, governance=Governance(), author=None
    )
    assert refusal.role == "unknown author"
    refused = authorize(
        owned,
        stored_members={"acme": ACME, "bare": ()},
        governance=Governance(),
        author="stranger@x.example",
    )
    assert [r.address for r in refused] == ["acme.pipeline.orders"]
    admins = Governance(admins=("root@p.example",))
    refused = authorize(
        open_tenant, stored_members={"bare": ()}, governance=admins, author="stranger@x.example"
    )
    assert [r.address for r in refused] == ["bare.pipeline.orders"]


def test_governance_reads_fabric_yaml_as_json():
    governance = Governance.of_project(
        {
            "admins": ["platform"],
            "groups": {"platform": {"members": ["Root@P.example"], "team": "@p/platform"}},
            "ownership": {"enforce": True},
        }
    )
    assert governance.is_admin("root@p.example")
    assert not Governance.of_project({"ownership": {"enforce": False}}).enforce
    assert Governance.of_project(None).enforce is None  # judged where ownership is declared


@pytest.mark.parametrize(
    ("author", "email"),
    [
        ("Ana Lima <Ana@Acme.Example>", "ana@acme.example"),
        ("ana@acme.example", "ana@acme.example"),
        ("Ana Lima", None),
        ("", None),
        (None, None),
    ],
)
def test_author_email_accepts_git_and_bare_forms(author, email):
    assert author_email(author) == email


def test_the_recorded_fabric_yaml_governs_once_it_declares_admins_or_ownership():
    recorded = {"admins": ["root@p.example"]}
    branch = {"admins": ["root@p.example", "eddie@acme.example"]}
    governance, changed = governing(recorded, branch)
    assert governance.admins == ("root@p.example",) and changed
    off = {"admins": ["root@p.example"], "ownership": {"enforce": False}}
    governance, changed = governing(recorded, off)
    assert governance.enforce is not False and governance.admins and changed


def test_before_any_governing_record_the_repositorys_fabric_yaml_decides():
    governance, changed = governing({"name": "old"}, {"name": "old", "admins": ["a@p.example"]})
    assert governance.admins == ("a@p.example",) and changed
    governance, changed = governing(None, {"ownership": {"enforce": False}})
    assert not governance.enforce and not changed


def test_an_unchanged_fabric_yaml_is_no_change_even_when_written_differently():
    recorded = {"admins": ["a@p.example"], "apply": {"allow_delete": False}}
    _, changed = governing(recorded, {"admins": ["a@p.example"]})
    assert not changed


@pytest.mark.parametrize("role", list(Role))
def test_setting_a_secret_needs_an_admin_of_the_tenant(role):
    refusals = authorize_secret(
        "acme", "dwh_password", stored_members=ACME, governance=Governance(), author=PEOPLE[role]
    )
    assert (refusals == ()) is (role >= Role.ADMIN)
    if refusals:
        assert str(refusals[0]).startswith(f"acme secret dwh_password: {PEOPLE[role]} is a")


def test_a_non_member_cannot_set_another_tenants_secret_but_a_project_admin_can():
    (refused,) = authorize_secret(
        "acme", "pw", stored_members=ACME, governance=Governance(), author="gina@globex.example"
    )
    assert refused.role == "not a member" and refused.needed == "admin or above"
    root = Governance(admins=("root@p.example",))
    assert (
        authorize_secret(
            "acme", "pw", stored_members=ACME, governance=root, author="root@p.example"
        )
        == ()
    )
