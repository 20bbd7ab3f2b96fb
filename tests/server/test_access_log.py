"""The access log: one line per request, text or JSON, with the route's template, the
principal's name (never a token), and quiet probes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ghaf.core.logging import JsonFormatter
from ghaf.core.settings import load_settings
from ghaf.server.process import ServerProcess
from tests.conftest import Databases, Platform, unique


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[str], logging.LogRecord]]:
    """``access(request_id)``: the one access record of that request."""
    caplog.set_level(logging.DEBUG, logger="ghaf.access")

    def find(request_id: str) -> logging.LogRecord:
        # The line is written when the response has gone out: the client may see the
        # answer a moment before the record exists.
        for _ in range(200):
            found = [
                r
                for r in caplog.records
                if r.name == "ghaf.access" and f"[{request_id}]" in _tagged(r)
            ]
            if found:
                assert len(found) == 1, [r.getMessage() for r in found]
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no access line for request {request_id}")

    yield find


def _tagged(record: logging.LogRecord) -> str:
    return f"[{getattr(record, 'request_id', '-')}] {record.getMessage()}"


@pytest.fixture(autouse=True)
def _request_ids(caplog: pytest.LogCaptureFixture) -> None:
    """Tag captured records with the request id, as the server's handler does."""
    from ghaf.core.logging import _RequestIdFilter

    caplog.handler.addFilter(_RequestIdFilter())


def _get(platform: Platform, path: str, token: str | None, request_id: str) -> httpx.Response:
    headers = {"X-Request-ID": request_id}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{platform.url}{path}", headers=headers)


def test_text_line_names_the_route_template_and_principal(
    platform: Platform, project: str, access: Callable[[str], logging.LogRecord]
) -> None:
    user, client = platform.new_user()
    platform.admin.members.add(project, principal=user.name, role="viewer")
    token = client._http.headers["authorization"].split()[1]
    rid = unique("rid")
    response = _get(platform, f"/api/v1/projects/{project}", token, rid)
    assert response.status_code == 200
    record = access(rid)
    line = record.getMessage()
    assert record.levelno == logging.INFO
    assert line.startswith("GET /api/v1/projects/{project} 200 ")
    assert project not in line  # the template, never the raw path
    assert f"out={len(response.content)}" in line and "in=0" in line
    assert f"principal={user.name}" in line and "client=127.0.0.1" in line
    assert token not in line and token not in repr(record.args)


def test_hot_routes_unmatched_and_refused_requests(
    platform: Platform, project: str, access: Callable[[str], logging.LogRecord]
) -> None:
    hot = unique("rid")
    path = f"/api/v1/projects/{project}/models/nothing/versions/1"
    assert _get(platform, path, platform.admin_token, hot).status_code == 404
    line = access(hot).getMessage()
    assert line.startswith("GET /api/v1/projects/{project}/models/{model}/versions/{version} 404")
    assert "principal=admin" in line
    # Refused before routing (no token): no template is known, and the raw path, which
    # names a project, is not logged either.
    anonymous = unique("rid")
    assert _get(platform, f"/api/v1/projects/{project}", None, anonymous).status_code == 401
    line = access(anonymous).getMessage()
    assert line.startswith("GET unmatched 401 ") and "principal=-" in line
    assert project not in line
    missing = unique("rid")
    assert _get(platform, "/no/such/page", None, missing).status_code == 404
    assert access(missing).getMessage().startswith("GET unmatched 404 ")


def test_bytes_in_are_the_body_read(
    platform: Platform, access: Callable[[str], logging.LogRecord]
) -> None:
    body = json.dumps({"name": unique("p"), "description": "x" * 500}).encode()
    rid = unique("rid")
    response = httpx.post(
        f"{platform.url}/api/v1/projects",
        content=body,
        headers={
            "Authorization": f"Bearer {platform.admin_token}",
            "Content-Type": "application/json",
            "X-Request-ID": rid,
        },
    )
    assert response.status_code == 201
    line = access(rid).getMessage()
    assert line.startswith("POST /api/v1/projects 201 ")
    assert f"in={len(body)} out={len(response.content)} " in line


def test_json_fields(platform: Platform, access: Callable[[str], logging.LogRecord]) -> None:
    rid = unique("rid")
    response = _get(platform, "/api/v1/whoami", platform.admin_token, rid)
    fields = json.loads(JsonFormatter().format(access(rid)))
    assert fields["logger"] == "ghaf.access" and fields["level"] == "info"
    assert fields["request_id"] == rid == response.headers["x-request-id"]
    assert fields["method"] == "GET" and fields["route"] == "/api/v1/whoami"
    assert fields["status"] == 200 and fields["principal"] == "admin"
    assert fields["bytes_in"] == 0 and fields["bytes_out"] == len(response.content)
    assert isinstance(fields["duration_ms"], float) and fields["duration_ms"] > 0
    assert fields["ts"].endswith("Z") and fields["client"] == "127.0.0.1"


def test_probes_are_quiet(
    platform: Platform,
    access: Callable[[str], logging.LogRecord],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # what a server logs by default
    caplog.set_level(logging.DEBUG, logger="ghaf.access")
    for path in ("/readyz", "/healthz", "/metrics"):
        rid = unique("rid")
        assert _get(platform, path, None, rid).status_code == 200
        assert access(rid).levelno == logging.DEBUG  # seen at GHAF_LOG_LEVEL=debug only
    assert not [r for r in caplog.records if r.name.startswith("alembic")]


def test_the_switch_turns_it_off(
    fresh_platform: Callable[..., Platform], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ghaf.access")
    live = fresh_platform(access_log=False)
    assert _get(live, "/api/v1/whoami", live.admin_token, unique("rid")).status_code == 200
    assert not [r for r in caplog.records if r.name == "ghaf.access"]


def test_the_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GHAF_ACCESS_LOG", raising=False)
    assert load_settings().access_log is True  # on by default
    monkeypatch.setenv("GHAF_ACCESS_LOG", "false")
    assert load_settings().access_log is False


def test_a_json_server_writes_one_object_per_line(databases: Databases, tmp_path: Path) -> None:
    """End to end: ``ghaf server`` with GHAF_LOG_FORMAT=json; every line parses, and the
    access lines are ours (uvicorn's own access log is off)."""
    from ghaf.core.settings import Settings
    from ghaf.server.install import initialise

    home = tmp_path / "home"
    url = databases.new_url()
    token = initialise(Settings(home=home, database_url=url, master_key=None)).token
    assert token is not None
    log = tmp_path / "server.log"
    env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": url, "GHAF_LOG_FORMAT": "json"}
    server = ServerProcess(env=env, log_path=log).start()
    try:
        rid = unique("rid")
        headers = {"Authorization": f"Bearer {token.token}", "X-Request-ID": rid}
        assert httpx.get(f"{server.url}/api/v1/whoami", headers=headers).status_code == 200
        for _ in range(3):
            httpx.get(f"{server.url}/readyz")
    finally:
        server.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    ours = [entry for entry in lines if entry.get("request_id") == rid]
    assert [(e["logger"], e["route"], e["principal"]) for e in ours] == [
        ("ghaf.access", "/api/v1/whoami", "admin")
    ]
    assert not [e for e in lines if e["logger"] == "uvicorn.access"]
    assert token.token not in log.read_text()
    # Alembic announces itself once, at start-up, not on each of the probes.
    assert sum(e["message"].startswith("Context impl") for e in lines) <= 1
