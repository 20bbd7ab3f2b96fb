"""Four-eyes counts people, not accounts: nobody approves their own work through a
service account they created or hold a token of; distinct approvers are distinct people.
Also the registry writes a read permission must not reach: running gates and removing a
protected alias."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ghaf.client import Client
from ghaf.core.errors import Conflict, NotFound, PermissionDenied
from tests.conftest import Platform, TrainedModel, audited, unique

MemberIn = Callable[[str, str], tuple[str, Client]]
PEOPLE = "four-eyes rule counts people, not accounts"


def _register(client: Client, project: str, trained: TrainedModel, name: str = "churn") -> int:
    return client.models.register(project, name, path=trained.path, sample=trained.X[:5]).version


def _bot(platform: Platform, maker: Client, project: str, role: str) -> tuple[str, Client]:
    """A service account ``maker`` creates and holds a token of."""
    name = unique("sa")
    maker.service_accounts.create(project, name, role=role)
    token = maker.service_accounts.create_token(project, name, token_name="ci").token
    return name, platform.client(token)


def test_registrant_cannot_approve_through_her_service_account(
    platform: Platform,
    project: str,
    trained: TrainedModel,
    member_in: MemberIn,
    reviewer: tuple[str, Client],
) -> None:
    mallory, maintainer = member_in(project, "maintainer")
    _, bot = _bot(platform, maintainer, project, "maintainer")
    version = _register(maintainer, project, trained)
    with pytest.raises(PermissionDenied, match=PEOPLE) as refused:
        bot.models.approve(project, "churn", version, comment="lgtm")
    assert mallory in str(refused.value)
    admin = platform.admin
    denied = audited(admin, project, "model:approve")[-1]
    assert denied.outcome == "denied" and PEOPLE in denied.detail["reason"]
    assert admin.models.version(project, "churn", version).status == "pending"
    assert admin.models.reviews(project, "churn", version) == []
    # Another person approves.
    _, human = reviewer
    approved = human.models.approve(project, "churn", version)
    assert (approved.status, approved.approvals) == ("approved", 1)


def test_creator_and_token_issuers_cannot_approve_what_the_account_registered(
    platform: Platform,
    admin: Client,
    project: str,
    trained: TrainedModel,
    member_in: MemberIn,
    reviewer: tuple[str, Client],
) -> None:
    creator_name, creator = member_in(project, "maintainer")
    bot_name, bot = _bot(platform, creator, project, "member")
    # A second person also takes a token for the account: they stand behind it too.
    issuer_name, issuer = member_in(project, "maintainer")
    issuer.service_accounts.create_token(project, bot_name, token_name="issuer")
    version = _register(bot, project, trained)
    for person, client in ((creator_name, creator), (issuer_name, issuer)):
        with pytest.raises(PermissionDenied, match=PEOPLE) as refused:
            client.models.approve(project, "churn", version)
        assert person in str(refused.value) and bot_name in str(refused.value)
    assert [e.outcome for e in audited(admin, project, "model:approve")] == ["denied", "denied"]
    _, human = reviewer
    assert human.models.approve(project, "churn", version).status == "approved"


def test_distinct_approvers_are_distinct_people(
    platform: Platform,
    admin: Client,
    project: str,
    trained: TrainedModel,
    member_in: MemberIn,
) -> None:
    admin.models.set_policy(project, "approvals:\n  required: 2\n")
    version = _register(admin, project, trained)
    _, first = member_in(project, "maintainer")
    _, first_bot = _bot(platform, first, project, "maintainer")
    assert first.models.approve(project, "churn", version).approvals == 1
    with pytest.raises(PermissionDenied, match="already approved"):
        first_bot.models.approve(project, "churn", version)
    with pytest.raises(Conflict, match="already approved"):
        first.models.approve(project, "churn", version)
    still = admin.models.version(project, "churn", version)
    assert (still.status, still.approvals) == ("pending", 1)
    # A bot someone else made is someone else: it counts as a second person.
    _, second = member_in(project, "maintainer")
    _, second_bot = _bot(platform, second, project, "maintainer")
    done = second_bot.models.approve(project, "churn", version)
    assert (done.status, done.approvals, done.approvals_required) == ("approved", 2, 2)


GATED = "protected_aliases: [champion]\ngates:\n  - safe_format: true\n  - max_size_mb: 5\n"


@pytest.fixture
def champion(
    admin: Client, project: str, trained: TrainedModel, reviewer: tuple[str, Client]
) -> int:
    """Version 1 of ``churn``, approved, gates passed, holding the protected champion."""
    admin.models.set_policy(project, GATED)
    version = _register(admin, project, trained)
    reviewer[1].models.approve(project, "churn", version)
    assert admin.models.check_gates(project, "churn", version).passed
    admin.models.set_alias(project, "churn", "champion", version)
    return version


def test_member_cannot_remove_a_protected_alias(
    admin: Client, project: str, champion: int, member_in: MemberIn, reviewer: tuple[str, Client]
) -> None:
    _, member = member_in(project, "member")
    with pytest.raises(PermissionDenied, match="alias 'champion' is protected") as refused:
        member.models.delete_alias(project, "churn", "champion")
    assert "model:approve" in str(refused.value)
    assert audited(admin, project, "model:alias-delete")[-1].outcome == "denied"
    assert admin.models.version(project, "churn@champion").version == champion
    # Unprotected aliases stay a member's to move and remove.
    member.models.set_alias(project, "churn", "challenger", champion)
    member.models.delete_alias(project, "churn", "challenger")
    # Whoever could approve what holds it may remove it.
    reviewer[1].models.delete_alias(project, "churn", "champion")
    with pytest.raises(NotFound):
        admin.models.version(project, "churn@champion")


def test_running_gates_needs_write_access(
    platform: Platform,
    admin: Client,
    project: str,
    champion: int,
    member_in: MemberIn,
) -> None:
    before = admin.models.version(project, "churn", champion).gates
    assert before is not None and before["passed"]
    _, viewer = member_in(project, "viewer")
    member_name, member = member_in(project, "member")
    read_only = platform.client(member.tokens.create(unique("ro"), read_only=True).token)
    for client, why in ((viewer, "your role is viewer"), (read_only, "your token is read-only")):
        with pytest.raises(PermissionDenied, match=f"model:write is required.*{why}"):
            client.models.check_gates(project, "churn", champion)
    assert [e.outcome for e in audited(admin, project, "model:write")][-2:] == ["denied"] * 2
    assert admin.models.version(project, "churn", champion).gates == before
    # A member (model:write) runs them; the report names who did.
    assert member.models.check_gates(project, "churn", champion).checked_by == member_name
