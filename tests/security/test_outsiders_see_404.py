"""Another tenant learns nothing from any project route: whatever the body, the answer is
the same 404 a project that does not exist gets, never a 422 from body validation first."""

from __future__ import annotations

import re

import httpx
import pytest

from ghaf.client import Client
from tests.conftest import Platform, unique


def _project_routes(platform: Platform) -> list[tuple[str, str]]:
    """Every documented project-scoped operation of the app (from the app, not a list)."""
    paths = platform.app.openapi()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/api/v1/projects/{")
        for method in operations
        if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    ]


@pytest.mark.parametrize("body", [{"unexpected": 1}, [], "not an object"], ids=repr)
def test_every_project_route_answers_an_outsider_404(
    platform: Platform, admin: Client, project: str, body: object
) -> None:
    _, outsider = platform.new_user()
    token = outsider._http.headers["Authorization"]
    routes = _project_routes(platform)
    assert len(routes) > 40  # every project-scoped route of every domain
    wrong = []
    with httpx.Client(base_url=platform.url, headers={"Authorization": token}) as http:
        for method, path in routes:
            url = re.sub(r"\{[a-z_]+\}", "x", path)
            url = url.replace("/projects/x", f"/projects/{project}", 1)
            answer = http.request(method, url, json=body)
            if answer.status_code != 404:
                wrong.append((method, path, answer.status_code, answer.text[:120]))
    assert wrong == []


def test_members_still_get_the_validation_problem(admin: Client, platform: Platform) -> None:
    project = admin.projects.create(unique("p")).name
    answer = httpx.post(
        f"{platform.url}/api/v1/projects/{project}/members",
        json={"unexpected": 1},
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
