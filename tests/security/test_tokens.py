"""Authentication: every way a token can be wrong gets 401 and a clear reason."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from ghaf.client import Client
from ghaf.core.clock import utcnow
from ghaf.core.errors import Conflict, NotFound, PermissionDenied, Unauthenticated
from ghaf.security.models import Token
from ghaf.security.tokens import TOKEN_PATTERN, generate_token, hash_token
from tests.conftest import Platform, unique


def _get(platform: Platform, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{platform.url}/api/v1/whoami", headers=headers)


def test_token_format_and_storage(platform: Platform) -> None:
    token = generate_token()
    assert TOKEN_PATTERN.fullmatch(token)
    assert len(token) == len("ghaf_") + 43
    _, client = platform.new_user()
    created = client.tokens.create("laptop")
    session = platform.runtime.database.session(write=False)
    try:
        row = session.scalar(select(Token).where(Token.id == created.id))
        assert row is not None
        assert row.secret_hash == hash_token(created.token)
        assert created.token not in (row.hint, row.secret_hash)
    finally:
        session.close()
    listed = client.tokens.list()
    assert "laptop" in [t.name for t in listed]
    assert all(not hasattr(t, "token") for t in listed)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "authentication required"),
        ("Bearer", "malformed Authorization"),
        ("Basic dXNlcjpwYXNz", "malformed Authorization"),
        ("Bearer not-a-token", "malformed token"),
        ("Bearer ghaf_" + "A" * 43, "unknown token"),
        ("Bearer ghaf_" + "A" * 42 + "!", "malformed token"),
    ],
)
def test_bad_authorization_headers(platform: Platform, header: str | None, reason: str) -> None:
    response = _get(platform, {"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert reason in response.json()["detail"]


def test_revocation_takes_effect_on_the_next_request(platform: Platform) -> None:
    _, client = platform.new_user()
    second = platform.client(client.tokens.create("second").token)
    assert second.whoami()
    client.tokens.revoke("second")
    with pytest.raises(Unauthenticated, match="revoked"):
        second.whoami()
    with pytest.raises(NotFound):
        client.tokens.revoke("never-existed")


def test_expired_token_is_refused(platform: Platform) -> None:
    _, client = platform.new_user()
    created = client.tokens.create("short", expires_in_days=1)
    session = platform.runtime.database.session(write=True)
    try:
        session.execute(
            update(Token)
            .where(Token.id == created.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    finally:
        session.close()
    with pytest.raises(Unauthenticated, match="expired"):
        platform.client(created.token).whoami()


def test_token_of_deleted_user_is_refused(platform: Platform, admin: Client) -> None:
    user, client = platform.new_user()
    client.whoami()
    admin.users.delete(user.name)
    with pytest.raises(Unauthenticated):
        client.whoami()
    with pytest.raises(NotFound):
        admin.users.get(user.name)


def test_read_only_token_cannot_write(platform: Platform) -> None:
    _, client = platform.new_user()
    project = client.projects.create(unique("p")).name
    reader = platform.client(client.tokens.create("ro", read_only=True).token)
    assert reader.projects.get(project).name == project
    with pytest.raises(PermissionDenied, match="read-only"):
        reader.projects.delete(project)
    with pytest.raises(PermissionDenied):
        reader.projects.create(unique("p"))
    with pytest.raises(PermissionDenied):
        reader.tokens.create("escalate")
    assert reader.whoami().read_only


def test_project_scoped_token(platform: Platform) -> None:
    _, client = platform.new_user()
    a, b = client.projects.create(unique("p")).name, client.projects.create(unique("p")).name
    scoped = platform.client(client.tokens.create("only-a", project=a).token)
    assert scoped.projects.get(a).name == a
    with pytest.raises(NotFound):
        scoped.projects.get(b)
    assert [p.name for p in scoped.projects.list()] == [a]
    assert scoped.whoami().token_project == a
    with pytest.raises(Exception, match="limited to one project"):
        scoped.tokens.create("wider")


def test_token_for_invisible_project_is_refused(platform: Platform, admin: Client) -> None:
    hidden = admin.projects.create(unique("p")).name
    _, client = platform.new_user()
    with pytest.raises(NotFound):
        client.tokens.create("sneaky", project=hidden)


def test_duplicate_token_name(platform: Platform) -> None:
    _, client = platform.new_user()
    client.tokens.create("dup")
    with pytest.raises(Conflict):
        client.tokens.create("dup")


def test_password_login(platform: Platform, admin: Client) -> None:
    name = unique("u")
    admin.users.create(name, password="correct horse battery")
    created = Client.login(platform.url, name, "correct horse battery")
    assert created.expires_at is not None
    assert platform.client(created.token).whoami().name == name
    with pytest.raises(Unauthenticated, match="wrong user name or password"):
        Client.login(platform.url, name, "wrong password!!")
    with pytest.raises(Unauthenticated, match="wrong user name or password"):
        Client.login(platform.url, unique("ghost"), "whatever-password")


def test_short_password_is_refused(admin: Client) -> None:
    with pytest.raises(Exception, match="at least 12"):
        admin.users.create(unique("u"), password="short")


def test_users_need_platform_admin(platform: Platform) -> None:
    _, client = platform.new_user()
    with pytest.raises(PermissionDenied):
        client.users.create(unique("u"))
    with pytest.raises(PermissionDenied):
        client.users.list()
    me = client.whoami().name
    assert client.users.get(me).name == me


def test_whoami_lists_roles(platform: Platform) -> None:
    user, client = platform.new_user()
    project = client.projects.create(unique("p")).name
    me = client.whoami()
    assert me.name == user.name and me.projects == {project: "owner"}
    assert not me.platform_admin


def test_own_tokens_page_oldest_first(platform: Platform) -> None:
    _, client = platform.new_user()
    names = ["test", *(client.tokens.create(unique("t")).name for _ in range(3))]
    first = client.tokens.page(page_size=3)
    assert [t.name for t in first.items] == names[:3] and first.next_cursor
    rest = client.tokens.page(page_size=3, cursor=first.next_cursor)
    assert [t.name for t in rest.items] == names[3:] and rest.next_cursor is None
    assert [t.name for t in client.tokens.list(page_size=1)] == names
    client.tokens.revoke(names[1])
    assert names[1] not in [t.name for t in client.tokens.list()]
    assert names[1] in [t.name for t in client.tokens.list(include_revoked=True)]
    for params, field in (({"page_size": 0}, "page_size"), ({"cursor": "nope"}, "cursor")):
        response = httpx.get(
            f"{platform.url}/api/v1/tokens",
            params=params,
            headers={"Authorization": f"Bearer {platform.admin_token}"},
        )
        assert response.status_code == 422 and response.json()["field"] == field


def test_unlock_is_a_custom_method(platform: Platform, admin: Client) -> None:
    user = admin.users.create(unique("u"))
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    base = f"{platform.url}/api/v1/users/{user.name}"
    assert httpx.post(f"{base}:unlock", headers=headers).json()["name"] == user.name
    assert httpx.post(f"{base}/unlock", headers=headers).status_code in (404, 405)
    missing = httpx.post(f"{platform.url}/api/v1/users/{unique('nobody')}:unlock", headers=headers)
    assert missing.status_code == 404 and missing.json()["field"] == "user"
