"""Every name field refuses path tricks and SQL, names itself, and stores nothing."""

from __future__ import annotations

import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput
from tests.conftest import Platform, unique

HOSTILE = ["a/b", "..", "x\x00y", "n" * 10_000, "x'; DROP TABLE principals;--", "' OR 1=1 --"]


@pytest.mark.parametrize("value", HOSTILE)
def test_every_name_field(platform: Platform, admin: Client, project: str, value: str) -> None:
    _, user = platform.new_user()
    group = admin.groups.create(unique("g")).name
    attempts = {
        "users": lambda: admin.users.create(value),
        "groups": lambda: admin.groups.create(value),
        "tokens": lambda: user.tokens.create(value),
        "service accounts": lambda: admin.service_accounts.create(project, value),
        "members": lambda: admin.members.add(project, principal=value, role="viewer"),
        "group members": lambda: admin.request(
            "POST", f"/api/v1/groups/{group}/members", json={"member": value}
        ),
        "token project": lambda: user.tokens.create(unique("t"), project=value),
        "projects": lambda: admin.projects.create(value),
    }
    for where, attempt in attempts.items():
        with pytest.raises(InvalidInput) as info:
            attempt()
        assert info.value.field, where
    assert admin.users.list() and admin.groups.get(group).members == []
    names = {u.name for u in admin.users.list()}
    assert value not in names
