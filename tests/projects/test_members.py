"""Role grants and the escalation rules, through every membership route."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ghaf.client import Client
from ghaf.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.conftest import Platform, unique

MemberIn = Callable[[str, str], tuple[str, Client]]


def test_roles_are_listed(admin: Client, project: str, member_in: MemberIn) -> None:
    name, _ = member_in(project, "viewer")
    roles = {m.subject: m.role for m in admin.members.list(project)}
    assert roles[name] == "viewer"


def test_viewer_reads_but_cannot_write(
    project: str, member_in: MemberIn, platform: Platform
) -> None:
    _, viewer = member_in(project, "viewer")
    assert viewer.projects.get(project).role == "viewer"
    other, _ = platform.new_user()
    with pytest.raises(PermissionDenied, match="member:write"):
        viewer.members.add(project, principal=other.name, role="viewer")


def test_member_cannot_add_members(project: str, member_in: MemberIn, platform: Platform) -> None:
    _, member = member_in(project, "member")
    other, _ = platform.new_user()
    for role in ("viewer", "member", "owner"):
        with pytest.raises(PermissionDenied):
            member.members.add(project, principal=other.name, role=role)


def test_maintainer_cannot_grant_owner(
    project: str, member_in: MemberIn, platform: Platform
) -> None:
    _, maintainer = member_in(project, "maintainer")
    other, _ = platform.new_user()
    with pytest.raises(PermissionDenied, match="member:grant-owner"):
        maintainer.members.add(project, principal=other.name, role="owner")
    maintainer.members.add(project, principal=other.name, role="maintainer")
    with pytest.raises(PermissionDenied, match="member:grant-owner"):
        maintainer.members.update(project, other.name, role="owner")


def test_maintainer_cannot_promote_self(project: str, member_in: MemberIn) -> None:
    name, maintainer = member_in(project, "maintainer")
    with pytest.raises(PermissionDenied):
        maintainer.members.update(project, name, role="owner")


def test_maintainer_cannot_demote_or_remove_an_owner(
    admin: Client, project: str, member_in: MemberIn
) -> None:
    owner_name, _ = member_in(project, "owner")
    _, maintainer = member_in(project, "maintainer")
    with pytest.raises(PermissionDenied):
        maintainer.members.update(project, owner_name, role="viewer")
    with pytest.raises(PermissionDenied):
        maintainer.members.remove(project, owner_name)
    assert {m.subject: m.role for m in admin.members.list(project)}[owner_name] == "owner"


def test_member_cannot_escalate_through_groups(
    project: str, member_in: MemberIn, admin: Client
) -> None:
    group = admin.groups.create(unique("g")).name
    _, member = member_in(project, "member")
    with pytest.raises(PermissionDenied):
        member.members.add(project, group=group, role="owner")
    with pytest.raises(PermissionDenied, match="group:write"):
        member.groups.members.add(group, "admin")


def test_owner_manages_owners_but_keeps_one(platform: Platform) -> None:
    owner_user, owner = platform.new_user()
    project = owner.projects.create(unique("p")).name
    other, _ = platform.new_user()
    owner.members.add(project, principal=other.name, role="owner")
    owner.members.update(project, other.name, role="viewer")
    with pytest.raises(Conflict, match="at least one owner"):
        owner.members.update(project, owner_user.name, role="maintainer")
    with pytest.raises(Conflict, match="at least one owner"):
        owner.members.remove(project, owner_user.name)


def test_outsider_sees_404_not_403(project: str, platform: Platform) -> None:
    _, outsider = platform.new_user()
    for call in (
        lambda: outsider.projects.get(project),
        lambda: outsider.members.list(project),
        lambda: outsider.members.add(project, principal="admin", role="viewer"),
        lambda: outsider.projects.delete(project),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert str(info.value) == f"project {project!r} not found"
    with pytest.raises(NotFound) as missing:
        outsider.projects.get(unique("nope"))
    assert "not found" in str(missing.value)


def test_group_grants_give_roles(admin: Client, project: str, platform: Platform) -> None:
    user, client = platform.new_user()
    group = admin.groups.create(unique("g"), description="data science").name
    admin.groups.members.add(group, user.name)
    admin.members.add(project, group=group, role="maintainer")
    assert client.projects.get(project).role == "maintainer"
    assert f"group:{group}" in [m.subject for m in admin.members.list(project)]
    # a direct grant and a group grant: the stronger wins
    admin.members.add(project, principal=user.name, role="viewer")
    assert client.projects.get(project).role == "maintainer"
    admin.groups.members.remove(group, user.name)
    assert client.projects.get(project).role == "viewer"
    admin.members.update(project, f"group:{group}", role="viewer")
    admin.members.remove(project, f"group:{group}")


def test_removed_member_loses_access_at_once(
    admin: Client, project: str, member_in: MemberIn
) -> None:
    name, client = member_in(project, "member")
    admin.members.remove(project, name)
    with pytest.raises(NotFound):
        client.projects.get(project)


def test_membership_bad_input(admin: Client, project: str) -> None:
    with pytest.raises(InvalidInput) as info:
        admin.request(
            "POST",
            f"/api/v1/projects/{project}/members",
            json={"principal": "admin", "role": "emperor"},
        )
    assert info.value.field == "role"
    with pytest.raises(InvalidInput, match="exactly one"):
        admin.request("POST", f"/api/v1/projects/{project}/members", json={"role": "viewer"})
    with pytest.raises(NotFound):
        admin.members.add(project, principal=unique("ghost"), role="viewer")
    with pytest.raises(NotFound):
        admin.members.update(project, unique("ghost"), role="viewer")
    with pytest.raises(NotFound):
        admin.members.remove(project, "group:" + unique("ghost"))


def test_duplicate_member_is_a_conflict(admin: Client, project: str, member_in: MemberIn) -> None:
    name, _ = member_in(project, "viewer")
    with pytest.raises(Conflict):
        admin.members.add(project, principal=name, role="member")
