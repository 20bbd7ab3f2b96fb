"""A metadata row of the wrong shape (a number where a list belongs, a date that does not
parse) is reported as damaged metadata (502, problem+json, a message saying what to do),
never a 500, and the row is left as it was for the operator to inspect."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from ghaf.client import Client
from ghaf.security.cache import SecurityCache
from tests.conftest import Platform, unique

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
    platform: Platform, admin: Client, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "date" in change and platform.runtime.database.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL refuses a garbage timestamp on write")
    name = unique("tamper")
    admin.projects.create(name)
    with platform.runtime.database.engine.begin() as connection:
        connection.execute(
            text(f"UPDATE projects SET {TAMPERINGS[change]} WHERE name = :n"), {"n": name}
        )
    monkeypatch.setattr(platform.runtime, "cache", SecurityCache())  # as after a restart
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    for url in (f"/api/v1/projects/{name}", "/api/v1/projects"):
        response = httpx.get(platform.url + url, headers=headers)
        assert response.status_code == 502, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "urn:ghaf:problem:integrity-failure"
        assert "damaged or tampered with" in problem["detail"]
    # Left as it was: the server reported the damage, it did not "repair" it.
    with platform.runtime.database.engine.connect() as connection:
        stored = connection.execute(
            text("SELECT allowed_regions, created_at FROM projects WHERE name = :n"), {"n": name}
        ).one()
    assert TAMPERINGS[change].split("= ", 1)[1].strip("'") in {str(stored[0]), str(stored[1])}
