from __future__ import annotations

import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from tests.conftest import Platform, unique


def test_service_account_token_is_scoped_to_its_project(
    platform: Platform, admin: Client, project: str
) -> None:
    name = unique("sa")
    account = admin.service_accounts.create(project, name, role="member")
    assert account.kind == "service" and account.project == project
    created = admin.service_accounts.create_token(project, name, token_name="ci")
    assert created.project == project and created.token.startswith("ghaf_")
    bot = platform.client(created.token)
    assert bot.projects.get(project).role == "member"
    other = admin.projects.create(unique("p")).name
    with pytest.raises(NotFound):
        bot.projects.get(other)
    assert [p.name for p in bot.projects.list()] == [project]
    with pytest.raises(PermissionDenied):
        bot.projects.create(unique("p"))
    assert [t.name for t in admin.service_accounts.list_tokens(project, name)] == ["ci"]


def test_deleting_service_account_kills_its_tokens(
    platform: Platform, admin: Client, project: str
) -> None:
    name = unique("sa")
    admin.service_accounts.create(project, name)
    bot = platform.client(admin.service_accounts.create_token(project, name, token_name="t").token)
    bot.whoami()
    admin.service_accounts.delete(project, name)
    with pytest.raises(Unauthenticated):
        bot.whoami()
    assert name not in [a.name for a in admin.service_accounts.list(project)]


def test_service_account_of_another_project_cannot_join(admin: Client, project: str) -> None:
    name = unique("sa")
    admin.service_accounts.create(project, name)
    other = admin.projects.create(unique("p")).name
    with pytest.raises(InvalidInput, match="another project"):
        admin.members.add(other, principal=name, role="viewer")
    with pytest.raises(NotFound):
        admin.service_accounts.create_token(other, name, token_name="x")


def test_maintainer_cannot_mint_owner_service_account(member_in, project: str) -> None:  # type: ignore[no-untyped-def]
    _, maintainer = member_in(project, "maintainer")
    with pytest.raises(PermissionDenied):
        maintainer.service_accounts.create(project, unique("sa"), role="owner")
    _, member = member_in(project, "member")
    with pytest.raises(PermissionDenied):
        member.service_accounts.create(project, unique("sa"), role="viewer")
