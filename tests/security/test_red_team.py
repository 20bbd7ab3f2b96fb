"""What a red-team pass over every route found after issue 12, each as the attack that
found it: an empty PATCH by a viewer, cursors and numbers the database cannot hold,
JSON nested past what can be served back, and metadata rows deleted or damaged at rest.
Each must be refused or reported with a clear problem, never a 500."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable

import httpx
import pytest

from ghaf.client import Client
from ghaf.core.jsonvalues import MAX_JSON_DEPTH, bounded_depth
from tests.conftest import Platform, TrainedModel, unique

MemberIn = Callable[[str, str], tuple[str, Client]]


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _token(client: Client) -> str:
    return str(client._http.headers["authorization"]).split()[1]


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    return body


def test_an_empty_patch_is_still_a_write(
    platform: Platform, admin: Client, project: str, member_in: MemberIn
) -> None:
    """PATCH {} on a project answered 200 to a viewer and to a read-only token."""
    url = f"{platform.url}/api/v1/projects/{project}"
    _, viewer = member_in(project, "viewer")
    _, owner = member_in(project, "owner")
    read_only = owner.tokens.create("ro", read_only=True).token
    for token in (_token(viewer), read_only):
        assert "project:write" in str(
            _problem(httpx.patch(url, json={}, headers=_headers(token)), 403)["detail"]
        )
    assert httpx.patch(url, json={}, headers=_headers(_token(owner))).status_code == 200


def test_cursors_the_server_never_issued(
    platform: Platform, admin: Client, project: str, trained: TrainedModel
) -> None:
    """A cursor holding a 100-bit number answered 500 (SQLite overflow); a name where a
    number belongs (or the reverse) is refused too, as PostgreSQL cannot compare them."""
    admin.models.register(project, "m", path=trained.path, sample=trained.X[:3])
    base = f"{platform.url}/api/v1/projects/{project}"
    headers = _headers(platform.admin_token)
    cases = [
        (f"{base}/models/m/versions", [10**30, -(10**30), "zz", True]),
        (f"{base}/artifacts", [10**30, 5, True]),
        (f"{platform.url}/api/v1/audit", [10**30, "zz"]),
        (f"{platform.url}/api/v1/users", [10**30, 7]),
    ]
    for url, values in cases:
        for value in values:
            response = httpx.get(url, params={"cursor": _cursor(value)}, headers=headers)
            assert _problem(response, 422)["field"] == "cursor", (url, value)
    run = admin.runs.create(project, "e")
    assert run.id
    response = httpx.post(f"{base}/runs:search", json={"cursor": _cursor(10**30)}, headers=headers)
    assert _problem(response, 422)["field"] == "cursor"


def test_numbers_past_64_bits_name_their_field(
    platform: Platform, admin: Client, project: str
) -> None:
    """A log batch with seq 10**30 answered 500 (and reset the connection)."""
    run = admin.runs.create(project, "e")
    base = f"{platform.url}/api/v1/projects/{project}/runs/{run.id}"
    headers = _headers(platform.admin_token)
    assert (
        _problem(httpx.post(f"{base}:log", json={"seq": 10**30}, headers=headers), 422)["field"]
        == "seq"
    )
    for column in ("step", "timestamp"):
        metrics = {"key": ["a"], "value": [1.0], "step": [0], "timestamp": [0], column: [2**63]}
        response = httpx.post(f"{base}:log", json={"metrics": metrics}, headers=headers)
        assert column in str(_problem(response, 422)["field"])
    response = httpx.post(
        f"{base}/artifacts", json={"path": "x", "sha256": "a" * 64, "size": 10**30}, headers=headers
    )
    assert _problem(response, 422)["field"] == "size"
    # Whatever a schema bound misses, the database's refusal is a 422, never a 500.
    response = httpx.put(
        f"{platform.url}/api/v1/projects/{project}/models/m/aliases/prod",
        json={"version": 10**30},
        headers=headers,
    )
    assert response.status_code in (404, 422), response.text
    assert admin.runs.get(project, run.id).status == "running"


def test_json_nested_past_what_can_be_served_is_refused(
    platform: Platform, admin: Client, project: str
) -> None:
    """A run created with provenance nested 900 levels deep was stored, then answered
    500 on its creation and on every read (the response cannot be serialised)."""
    deep: object = 1
    for _ in range(900):
        deep = [deep]
    base = f"{platform.url}/api/v1/projects/{project}"
    headers = _headers(platform.admin_token)
    response = httpx.post(
        f"{base}/experiments/e/runs", json={"provenance": {"x": deep}}, headers=headers
    )
    problem = _problem(response, 422)
    assert problem["field"] == "provenance" and "nested deeper" in str(problem["detail"])
    run = admin.runs.create(project, "e")
    response = httpx.post(
        f"{base}/runs/{run.id}:log", json={"params": {"x": deep}}, headers=headers
    )
    # The log route parses its own body, and past the parser's depth limit the body is
    # refused as malformed (400) before any field is looked at.
    assert _problem(response, 400)["type"] == "urn:ghaf:problem:malformed-body"
    forty: object = 1
    for _ in range(40):
        forty = [forty]
    response = httpx.post(
        f"{base}/runs/{run.id}:log", json={"params": {"x": forty}}, headers=headers
    )
    assert str(_problem(response, 422)["field"]).startswith("params")
    response = httpx.post(
        f"{base}/datasets/d/versions",
        json={"files": [], "provenance": {"x": deep}},
        headers=headers,
    )
    assert response.status_code in (404, 422), response.text
    assert admin.runs.get(project, run.id).params == {}
    ok: object = 1
    for _ in range(MAX_JSON_DEPTH - 1):
        ok = [ok]
    assert bounded_depth({"x": ok}) == {"x": ok}
    with pytest.raises(ValueError, match="nested deeper"):
        bounded_depth({"x": [ok]})


@pytest.mark.embedded
def test_damaged_metadata_rows_are_reported_not_crashed_on(
    fresh_platform: Callable[..., Platform], trained: TrainedModel
) -> None:
    """Rows deleted or rewritten in the SQLite file answered 500 on every read: a deleted
    blob row (artifact list, model download, gates) and JSON that no longer parses."""
    live = fresh_platform()
    admin = live.admin
    headers = _headers(live.admin_token)
    blobs, regions = (admin.projects.create(unique("p")).name for _ in range(2))
    admin.artifacts.upload(blobs, "a.txt", b"hello")
    admin.models.register(blobs, "m", path=trained.path, sample=trained.X[:3])
    admin.artifacts.upload(regions, "a.txt", b"hello")
    path = live.settings.database_url.removeprefix("sqlite:///")
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys=OFF")
    ids = {
        n: db.execute("SELECT id FROM projects WHERE name=?", (n,)).fetchone()[0]
        for n in (blobs, regions)
    }
    db.execute("DELETE FROM blobs WHERE project_id=?", (ids[blobs],))
    db.execute("UPDATE projects SET allowed_regions='not json' WHERE id=?", (ids[regions],))
    db.commit()
    db.close()

    base = f"{live.url}/api/v1/projects"
    for method, url in [
        ("GET", f"{base}/{blobs}/artifacts"),
        ("GET", f"{base}/{blobs}/models/m/versions/1/file"),
        ("POST", f"{base}/{blobs}/models/m/versions/1/gates:check"),
        ("GET", f"{base}/{regions}"),
        ("GET", f"{base}/{regions}/artifacts"),
        ("GET", base),
    ]:
        response = httpx.request(method, url, headers=headers, timeout=60)
        problem = _problem(response, 502)
        assert problem["type"] == "urn:ghaf:problem:integrity-failure", (url, problem)
        assert "damaged or tampered" in str(problem["detail"]), (url, problem)


def test_unexpected_errors_that_are_not_bugs() -> None:
    """The one mapping FastAPI routes and hot routes share: out-of-range values are the
    caller's (422), answers built from mis-shaped stored rows are integrity failures."""
    from pydantic import BaseModel, ValidationError

    from ghaf.server.problems import unexpected_problem

    class Out(BaseModel):
        regions: list[str]

    with pytest.raises(ValidationError) as shape:
        Out.model_validate({"regions": 5})
    assert unexpected_problem(shape.value).status == 502
    assert "damaged or tampered" in unexpected_problem(shape.value).detail
    overflow = unexpected_problem(OverflowError("Python int too large"))
    assert overflow.status == 422 and "64-bit" in overflow.detail
    assert unexpected_problem(RuntimeError("bug")).status == 500
