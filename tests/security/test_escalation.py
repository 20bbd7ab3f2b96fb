"""Attacks on the rule that no one acts on a principal stronger than themselves
(ghaf/security/standing.py): through service accounts, their tokens, member grants held
directly or through groups, platform admins, and project-limited admin tokens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from ghaf.client import Client
from ghaf.core.clock import utcnow
from ghaf.core.errors import NotFound, PermissionDenied
from tests.conftest import Platform, audited, unique

MemberIn = Callable[[str, str], tuple[str, Client]]
RULE = "no one may act on a principal that holds more than they do"


def _denied(
    client: Client, project: str | None, action: str, resource_part: str, since: object = None
) -> None:
    if project is not None:
        events = audited(client, project, action)
    else:
        events = [e for e in client.audit.list(since=since) if e.action == action]  # type: ignore[arg-type]
    assert any(e.outcome == "denied" and resource_part in e.resource for e in events), events


def test_maintainer_cannot_take_over_an_owner_service_account(
    platform: Platform, admin: Client, project: str, member_in: MemberIn
) -> None:
    boss = unique("sa")
    admin.service_accounts.create(project, boss, role="owner")
    held = admin.service_accounts.create_token(project, boss, token_name="held")
    _, maintainer = member_in(project, "maintainer")

    with pytest.raises(PermissionDenied, match=RULE) as refused:
        maintainer.service_accounts.create_token(project, boss, token_name="mine")
    assert "who would hold owner" in str(refused.value)
    _denied(admin, project, "token:create", f"service-account/{boss}/token/mine")
    # Nothing was minted, and the attack's goal stays out of reach.
    assert [t.name for t in admin.service_accounts.list_tokens(project, boss)] == ["held"]
    with pytest.raises(PermissionDenied, match="project:delete"):
        maintainer.projects.delete(project)
    assert maintainer.projects.get(project).role == "maintainer"

    # Nor may the maintainer see, revoke or delete what belongs to the stronger account.
    with pytest.raises(PermissionDenied, match=RULE):
        maintainer.service_accounts.list_tokens(project, boss)
    _denied(admin, project, "token:list", f"service-account/{boss}")
    with pytest.raises(PermissionDenied, match=RULE):
        maintainer.service_accounts.revoke_token(project, boss, "held")
    _denied(admin, project, "token:revoke", f"service-account/{boss}/token/held")
    with pytest.raises(PermissionDenied, match=RULE):
        maintainer.service_accounts.delete(project, boss)
    _denied(admin, project, "service-account:delete", f"service-account/{boss}")
    assert boss in [a.name for a in admin.service_accounts.list(project)]
    assert platform.client(held.token).projects.get(project).role == "owner"


def test_legitimate_token_minting_still_works(
    platform: Platform, admin: Client, project: str, member_in: MemberIn
) -> None:
    boss, bot, peer = unique("sa"), unique("sa"), unique("sa")
    admin.service_accounts.create(project, boss, role="owner")
    _, owner = member_in(project, "owner")
    minted = owner.service_accounts.create_token(project, boss, token_name="t")
    assert platform.client(minted.token).projects.get(project).role == "owner"
    assert [t.name for t in owner.service_accounts.list_tokens(project, boss)] == ["t"]

    _, maintainer = member_in(project, "maintainer")
    maintainer.service_accounts.create(project, bot, role="member")
    maintainer.service_accounts.create(project, peer, role="maintainer")  # equal is fine
    for account, role in ((bot, "member"), (peer, "maintainer")):
        token = maintainer.service_accounts.create_token(project, account, token_name="ci")
        assert platform.client(token.token).projects.get(project).role == role
        assert [t.name for t in maintainer.service_accounts.list_tokens(project, account)] == ["ci"]
        maintainer.service_accounts.revoke_token(project, account, "ci")
    maintainer.service_accounts.delete(project, bot)
    assert bot not in [a.name for a in admin.service_accounts.list(project)]


def test_service_account_made_strong_through_a_group_is_protected(
    admin: Client, project: str, member_in: MemberIn
) -> None:
    bot, group = unique("sa"), unique("g")
    admin.service_accounts.create(project, bot, role="member")
    admin.groups.create(group)
    admin.groups.members.add(group, bot)
    admin.members.add(project, group=group, role="owner")
    _, maintainer = member_in(project, "maintainer")
    with pytest.raises(PermissionDenied, match=RULE):
        maintainer.service_accounts.create_token(project, bot, token_name="x")
    with pytest.raises(PermissionDenied, match=RULE):
        maintainer.members.update(project, bot, role="viewer")
    with pytest.raises(PermissionDenied, match=RULE):
        maintainer.members.remove(project, bot)
    assert {m.subject: m.role for m in admin.members.list(project)}[bot] == "member"
    assert admin.service_accounts.list_tokens(project, bot) == []


def test_maintainer_cannot_demote_or_remove_a_stronger_member(
    platform: Platform, admin: Client, project: str, member_in: MemberIn
) -> None:
    # An owner through a group, holding only "member" directly.
    strong, _ = member_in(project, "member")
    group = unique("g")
    admin.groups.create(group)
    admin.groups.members.add(group, strong)
    admin.members.add(project, group=group, role="owner")
    # A platform admin holding only "viewer" in the project.
    operator = admin.users.create(unique("u"), platform_admin=True).name
    admin.members.add(project, principal=operator, role="viewer")
    _, maintainer = member_in(project, "maintainer")

    for subject, holds in ((strong, "owner"), (operator, "platform-admin")):
        with pytest.raises(PermissionDenied, match=RULE) as refused:
            maintainer.members.update(project, subject, role="viewer")
        assert f"who would hold {holds}" in str(refused.value)
        with pytest.raises(PermissionDenied, match=RULE):
            maintainer.members.remove(project, subject)
        _denied(admin, project, "member:write", f"member/{subject}")
    roles = {m.subject: m.role for m in admin.members.list(project)}
    assert (roles[strong], roles[operator]) == ("member", "viewer")

    # Equals and weaker members remain the maintainer's to manage.
    peer, _ = member_in(project, "maintainer")
    weak, _ = member_in(project, "viewer")
    assert maintainer.members.update(project, weak, role="member").role == "member"
    assert maintainer.members.update(project, peer, role="member").role == "member"
    maintainer.members.remove(project, weak)
    # The owner may act on the strong member.
    _, owner = member_in(project, "owner")
    assert owner.members.update(project, strong, role="viewer").role == "viewer"


def test_no_one_grants_or_creates_above_their_role(
    platform: Platform, project: str, member_in: MemberIn
) -> None:
    _, maintainer = member_in(project, "maintainer")
    other, _ = platform.new_user()
    with pytest.raises(PermissionDenied):
        maintainer.service_accounts.create(project, unique("sa"), role="owner")
    with pytest.raises(PermissionDenied):
        maintainer.members.add(project, principal=other.name, role="owner")
    assert maintainer.members.add(project, principal=other.name, role="maintainer").role == (
        "maintainer"
    )


def test_project_limited_admin_token_holds_nothing_outside_its_project(
    platform: Platform, admin: Client, project: str
) -> None:
    since = utcnow() - timedelta(seconds=5)
    limited = platform.client(admin.tokens.create(unique("lim"), project=project).token)
    assert limited.projects.get(project).role == "platform-admin"
    other_admin = admin.users.create(unique("u"), platform_admin=True).name
    with pytest.raises(PermissionDenied):
        limited.users.create_token(other_admin, token_name="steal", project=project)
    with pytest.raises(PermissionDenied):
        limited.users.create(unique("u"), platform_admin=True)
    with pytest.raises(PermissionDenied):
        limited.groups.members.add(admin.groups.create(unique("g")).name, other_admin)
    _denied(admin, None, "user:write", f"user/{other_admin}/token/steal", since)
    # An unrestricted admin token still mints tokens for an equal.
    assert admin.users.create_token(other_admin, token_name="ok").token.startswith("ghaf_")


def test_user_token_route_does_not_mint_service_account_tokens(
    platform: Platform, admin: Client, project: str
) -> None:
    bot = unique("sa")
    admin.service_accounts.create(project, bot, role="viewer")
    with pytest.raises(NotFound, match="no user named"):
        admin.users.create_token(bot, token_name="unscoped")
    assert admin.service_accounts.list_tokens(project, bot) == []


def test_refusals_are_403_problem_documents(
    platform: Platform, admin: Client, project: str, member_in: MemberIn
) -> None:
    boss = unique("sa")
    admin.service_accounts.create(project, boss, role="owner")
    user = admin.users.create(unique("u")).name
    token = admin.users.create_token(user, token_name="t").token
    admin.members.add(project, principal=user, role="maintainer")
    response = httpx.post(
        f"{platform.url}/api/v1/projects/{project}/service-accounts/{boss}/tokens",
        json={"name": "raw"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert RULE in response.json()["detail"]
