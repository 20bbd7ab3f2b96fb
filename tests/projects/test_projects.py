from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from ghaf.client import Client
from ghaf.core.clock import utcnow
from ghaf.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.conftest import Platform, unique


def test_create_get_list_delete(admin: Client) -> None:
    name = unique("p")
    created = admin.projects.create(name, description="credit risk")
    assert created.name == name
    assert created.allowed_regions == ["local"]
    assert admin.projects.get(name).description == "credit risk"
    assert name in [p.name for p in admin.projects.list()]
    deleted = admin.projects.delete(name)
    assert deleted.deleted_at is not None and deleted.purge_after is not None
    with pytest.raises(NotFound):
        admin.projects.get(name)
    assert name not in [p.name for p in admin.projects.list()]
    assert name in [p.name for p in admin.projects.list(deleted=True)]


def test_creator_becomes_owner(platform: Platform) -> None:
    user, client = platform.new_user()
    name = unique("p")
    assert client.projects.create(name).role == "owner"
    assert client.members.list(name)[0].subject == user.name


def test_restore_before_purge(admin: Client) -> None:
    name = unique("p")
    admin.projects.create(name)
    admin.projects.delete(name)
    assert admin.projects.restore(name).deleted_at is None
    assert admin.projects.get(name).name == name
    with pytest.raises(Conflict):
        admin.projects.restore(name)


def test_deleted_name_stays_reserved_until_purge(admin: Client) -> None:
    name = unique("p")
    admin.projects.create(name)
    admin.projects.delete(name)
    with pytest.raises(Conflict, match="reserved"):
        admin.projects.create(name)


def test_purge_removes_only_projects_past_retention(platform: Platform, admin: Client) -> None:
    due, kept = unique("p"), unique("p")
    for name in (due, kept):
        admin.projects.create(name)
        admin.projects.delete(name)
    ctx = platform.runtime.context(write=True, system_actor="test")
    try:
        ctx.caller = None
        from sqlalchemy import update

        from ghaf.security.tenancy import Project

        ctx.session.execute(
            update(Project)
            .where(Project.name == due)
            .values(purge_after=utcnow() - timedelta(seconds=1))
        )
        ctx.session.commit()
    finally:
        ctx.close()
    from ghaf.projects.manifest import purge_due_projects

    purged = purge_due_projects(platform.runtime)  # what the server runs hourly
    assert due in purged and kept not in purged
    assert admin.projects.purge() == []
    assert any(
        e.action == "project:purge" and e.actor == "system:purge" and e.detail["name"] == due
        for e in admin.audit.list()
    )
    assert due not in [p.name for p in admin.projects.list(deleted=True)]
    admin.projects.create(due)  # the name is free again


def test_duplicate_name_is_a_conflict(admin: Client, project: str) -> None:
    with pytest.raises(Conflict, match="already exists") as info:
        admin.projects.create(project)
    assert info.value.field == "name"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a/b", "'/'"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("nul\x00x", "NUL"),
        ("x" * 10_000, "10000 characters"),
        ("", "empty"),
        ("-lead", "not allowed"),
        ("semi;colon", "not allowed"),
        ("Robert'); DROP TABLE projects;--", "not allowed"),
        ("' OR '1'='1", "not allowed"),
    ],
)
def test_bad_project_names_are_refused_and_nothing_is_stored(
    platform: Platform, admin: Client, name: str, reason: str
) -> None:
    before = {p.name for p in admin.projects.list()}
    response = httpx.post(
        f"{platform.url}/api/v1/projects",
        json={"name": name},
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["field"] == "name"
    assert reason in problem["detail"]
    assert {p.name for p in admin.projects.list()} == before


def test_sql_injection_in_path_finds_nothing(admin: Client, project: str) -> None:
    for hostile in ("x' OR '1'='1", "x;DROP TABLE projects"):
        with pytest.raises((NotFound, InvalidInput)):
            admin.projects.get(hostile)
    assert admin.projects.get(project).name == project


def test_list_pagination_walks_every_page(platform: Platform) -> None:
    _, client = platform.new_user()
    names = sorted(unique("pg") for _ in range(7))
    for name in names:
        client.projects.create(name)
    assert [p.name for p in client.projects.list(page_size=3)] == names
    page = client.request("GET", "/api/v1/projects", params={"page_size": 3}).json()
    assert len(page["items"]) == 3 and page["next_cursor"]


def test_bad_cursor_and_page_size_name_the_field(admin: Client) -> None:
    with pytest.raises(InvalidInput) as info:
        admin.request("GET", "/api/v1/projects", params={"cursor": "garbage!!"})
    assert info.value.field == "cursor"
    with pytest.raises(InvalidInput) as info:
        admin.request("GET", "/api/v1/projects", params={"page_size": 0})
    assert info.value.field == "page_size"


def test_regions_default_and_explicit(admin: Client) -> None:
    project = admin.projects.create(unique("p"), allowed_regions=["ae-dubai", "ae-abudhabi"])
    assert project.allowed_regions == ["ae-abudhabi", "ae-dubai"]


def test_unknown_fields_are_refused(admin: Client) -> None:
    with pytest.raises(InvalidInput) as info:
        admin.request("POST", "/api/v1/projects", json={"name": unique("p"), "owner": "x"})
    assert info.value.field == "owner"


def test_only_owner_deletes(member_in, project: str) -> None:  # type: ignore[no-untyped-def]
    _, maintainer = member_in(project, "maintainer")
    with pytest.raises(PermissionDenied, match="project:delete"):
        maintainer.projects.delete(project)


def test_purge_needs_platform_admin(platform: Platform) -> None:
    _, client = platform.new_user()
    with pytest.raises(PermissionDenied):
        client.projects.purge()
