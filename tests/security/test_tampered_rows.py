"""A metadata row of the wrong shape (a number where a list belongs, a date that does not
parse) is reported as damaged metadata (502, problem+json, a message saying what to do),
never a 500, and the row is left as it was for the operator to inspect."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text

from ghaf.client import Client
from ghaf.security.cache import SecurityCache
from tests.conftest import Platform, TrainedModel, unique

TAMPERINGS = {
    # SQLite stores JSON as text: '5' parses, but as a number, not a list of regions.
    "regions are a number": "allowed_regions = '5'",
    "a region is not a string": "allowed_regions = '[\"me-central-1\", 7]'",
    "regions are an object": "allowed_regions = '{\"a\": 1}'",
    # Dates are text on SQLite (PostgreSQL's timestamptz refuses garbage on write).
    "the creation date is garbage": "created_at = 'not a date'",
}


@pytest.mark.parametrize("change", sorted(TAMPERINGS))
def test_a_damaged_project_row_is_a_clear_502(
    platform: Platform,
    admin: Client,
    member_in: Callable[[str, str], tuple[str, Client]],
    change: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "date" in change and platform.runtime.database.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL refuses a garbage timestamp on write")
    name = unique("tamper")
    admin.projects.create(name)
    # A member of this project alone: the damaged row is on the first page of their list.
    _, member = member_in(name, "viewer")
    with platform.runtime.database.engine.begin() as connection:
        connection.execute(
            text(f"UPDATE projects SET {TAMPERINGS[change]} WHERE name = :n"), {"n": name}
        )
    monkeypatch.setattr(platform.runtime, "cache", SecurityCache())  # as after a restart
    for url, token in (
        (f"/api/v1/projects/{name}", platform.admin_token),
        ("/api/v1/projects", _token_of(member)),
    ):
        response = httpx.get(platform.url + url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 502, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "urn:ghaf:problem:integrity-failure"
        assert "damaged or tampered with" in problem["detail"]
    # Left as it was: the server reported the damage, it did not "repair" it.
    with platform.runtime.database.engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT CAST(allowed_regions AS TEXT), CAST(created_at AS TEXT) FROM projects "
                "WHERE name = :n"
            ),
            {"n": name},
        ).one()
    assert TAMPERINGS[change].split("= ", 1)[1].strip("'") in {str(stored[0]), str(stored[1])}


def _token_of(client: Client) -> str:
    return str(client._http.headers["authorization"]).removeprefix("Bearer ")


@pytest.mark.parametrize("column", ["card", "tags", "inputs"])
def test_a_damaged_model_version_row_is_a_clear_502(
    platform: Platform,
    admin: Client,
    project: str,
    trained: TrainedModel,
    column: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = unique("m")
    admin.models.register(project, model, path=trained.path, sample=trained.X[:3])
    wrong = "'[1]'" if column != "inputs" else "'{\"a\": 1}'"
    with platform.runtime.database.engine.begin() as connection:
        connection.execute(
            text(
                f"UPDATE model_versions SET {column} = {wrong} WHERE model_id = "
                "(SELECT id FROM registered_models WHERE name = :m)"
            ),
            {"m": model},
        )
    monkeypatch.setattr(platform.runtime, "cache", SecurityCache())
    response = httpx.get(
        f"{platform.url}/api/v1/projects/{project}/models/{model}/versions/1",
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    assert response.status_code == 502, response.text
    assert "damaged or tampered with" in response.json()["detail"]
