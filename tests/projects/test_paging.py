"""page_size and cursor on every list of projects and storage, in REST, SDK and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.client import Client
from ghaf.core.errors import InvalidInput
from tests.conftest import Platform, unique

API = "/api/v1"


def _walk(client: Client, path: str, page_size: int) -> list[dict[str, object]]:
    """Every item of a list, one REST page at a time."""
    items: list[dict[str, object]] = []
    params: dict[str, object] = {"page_size": page_size}
    while True:
        page = client.request("GET", path, params=params).json()
        assert len(page["items"]) <= page_size
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


def test_members_page(platform: Platform, admin: Client, project: str) -> None:
    for _ in range(4):
        user, _ = platform.new_user()
        admin.members.add(project, principal=user.name, role="viewer")
    group = admin.groups.create(unique("g")).name
    admin.members.add(project, group=group, role="member")
    every = [m.subject for m in admin.members.list(project)]
    assert len(every) == 6 and f"group:{group}" in every  # 4 users, a group, the admin
    walked = _walk(admin, f"{API}/projects/{project}/members", 2)
    assert [m["subject"] for m in walked] == every == sorted(every)
    assert [m.subject for m in admin.members.list(project, page_size=1)] == every
    first = admin.members.page(project, page_size=4)
    assert len(first.items) == 4 and first.next_cursor is not None
    rest = admin.members.page(project, page_size=4, cursor=first.next_cursor)
    assert [m.subject for m in first.items + rest.items] == every and rest.next_cursor is None


def test_service_accounts_and_their_tokens_page(admin: Client, project: str) -> None:
    names = sorted(unique("sa") for _ in range(3))
    for name in names:
        admin.service_accounts.create(project, name)
    walked = _walk(admin, f"{API}/projects/{project}/service-accounts", 2)
    assert [a["name"] for a in walked] == names
    for i in range(3):
        admin.service_accounts.create_token(project, names[0], token_name=f"t{i}")
    tokens = _walk(admin, f"{API}/projects/{project}/service-accounts/{names[0]}/tokens", 2)
    assert sorted(t["name"] for t in tokens) == ["t0", "t1", "t2"]
    listed = admin.service_accounts.list_tokens(project, names[0], page_size=1)
    assert sorted(t.name for t in listed) == ["t0", "t1", "t2"]


def test_artifacts_and_keys_page(admin: Client, project: str) -> None:
    paths = [f"p/{i}.bin" for i in range(5)]
    for path in paths:
        admin.artifacts.upload(project, path, path.encode())
    assert [a["path"] for a in _walk(admin, f"{API}/projects/{project}/artifacts", 2)] == paths
    page = admin.artifacts.page(project, prefix="p/", page_size=3)
    assert [a.path for a in page.items] == paths[:3] and page.next_cursor
    for _ in range(2):
        admin.keys.rotate(project)
    versions = _walk(admin, f"{API}/projects/{project}/keys", 2)
    assert [v["version"] for v in versions] == [1, 2, 3]
    keys = admin.keys.list(project, page_size=1)
    assert [v.version for v in keys.items] == [1, 2, 3] and keys.items[-1].current
    assert keys.pending_rewrap == 0 and keys.next_cursor is None


@pytest.mark.parametrize("path", ["/members", "/service-accounts", "/artifacts", "/keys", ""])
def test_bad_page_size_and_cursor_name_the_field(admin: Client, project: str, path: str) -> None:
    url = f"{API}/projects/{project}{path}" if path else f"{API}/projects"
    for params, field in (({"page_size": 0}, "page_size"), ({"cursor": "garbage!!"}, "cursor")):
        with pytest.raises(InvalidInput) as info:
            admin.request("GET", url, params=params)
        assert info.value.field == field


def test_cli_ls_prints_one_page_and_the_next_cursor(
    platform: Platform, admin: Client, project: str, admin_cli: Path
) -> None:
    for i in range(3):
        admin.artifacts.upload(project, f"c/{i}", b"x")
    runner = CliRunner()
    first = runner.invoke(app, ["artifacts", "ls", "-p", project, "--page-size", "2", "--json"])
    assert first.exit_code == 0, first.output
    page = json.loads(first.stdout)
    assert [a["path"] for a in page["items"]] == ["c/0", "c/1"] and page["next_cursor"]
    table = runner.invoke(app, ["artifacts", "ls", "-p", project, "--page-size", "2"])
    assert page["next_cursor"] in table.stdout.replace("\n", "")
    rest = runner.invoke(
        app, ["artifacts", "ls", "-p", project, "--cursor", page["next_cursor"], "--json"]
    )
    last = json.loads(rest.stdout)
    assert [a["path"] for a in last["items"]] == ["c/2"] and last["next_cursor"] is None
    for group in (["members", "ls", "-p", project], ["service-accounts", "ls", "-p", project]):
        listed = runner.invoke(app, [*group, "--page-size", "1", "--json"])
        assert listed.exit_code == 0, listed.output
        assert set(json.loads(listed.stdout)) == {"items", "next_cursor"}
    projects = runner.invoke(app, ["projects", "ls", "--page-size", "1", "--json"])
    assert len(json.loads(projects.stdout)["items"]) == 1
