"""HTTP conventions: problems, request ids, health, metrics, OpenAPI, schema checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from ghaf.core.database import Database
from ghaf.core.errors import SchemaOutdated
from ghaf.core.migrate import check_schema
from ghaf.core.settings import Settings
from ghaf.server.install import initialise, migrate
from ghaf.server.process import ServerProcess
from tests.conftest import Databases, Platform, self_signed_cert


def test_health_and_readiness(platform: Platform) -> None:
    assert httpx.get(f"{platform.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{platform.url}/readyz").json()
    assert ready["status"] == "ready"


def test_every_response_has_a_request_id(platform: Platform) -> None:
    for path in ("/healthz", "/api/v1/whoami", "/nope"):
        response = httpx.get(f"{platform.url}{path}")
        assert response.headers["x-request-id"]
    hostile = httpx.get(f"{platform.url}/healthz", headers={"X-Request-ID": "bad id\t<x>"})
    assert hostile.headers["x-request-id"] != "bad id\t<x>"


def test_errors_are_problem_json(platform: Platform) -> None:
    # Unauthenticated, even a missing route is a 401: the token is checked first.
    assert httpx.get(f"{platform.url}/api/v1/nothing-here").status_code == 401
    response = httpx.get(
        f"{platform.url}/api/v1/nothing-here",
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "request_id"} <= set(body)
    bad = httpx.post(
        f"{platform.url}/api/v1/projects",
        content=b"{not json",
        headers={
            "Authorization": f"Bearer {platform.admin_token}",
            "Content-Type": "application/json",
        },
    )
    # Not JSON at all: the one malformed-body problem (tests/server/test_openapi.py).
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"


def test_metrics_by_route_and_status(platform: Platform) -> None:
    httpx.get(
        f"{platform.url}/api/v1/projects/whatever",
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    body = httpx.get(f"{platform.url}/metrics").text
    assert 'ghaf_http_requests_total{method="GET",route="/api/v1/projects/{project}",' in body
    assert "ghaf_http_request_duration_seconds_bucket" in body


def test_openapi_lists_the_routes(platform: Platform) -> None:
    spec = httpx.get(f"{platform.url}/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/projects",
        "/api/v1/projects/{project}",
        "/api/v1/projects/{project}/members",
        "/api/v1/audit",
        "/api/v1/tokens",
    ):
        assert path in paths


def test_init_and_migrate_are_idempotent(databases: Databases, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h", database_url=databases.new_url(), master_key=None)
    first = initialise(settings)
    assert first.token is not None and first.schema_before is None
    second = initialise(settings)
    assert second.token is None and second.schema_before == second.schema_after
    assert migrate(settings)[0] == migrate(settings)[1]


def test_server_refuses_an_outdated_schema(
    databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ghaf.cli.main import app
    from ghaf.core import migrate as migrate_module
    from ghaf.server.app import create_app

    url = databases.new_url()
    settings = Settings(home=tmp_path / "h", database_url=url, master_key=None)
    initialise(settings)
    # A newer ghaf: the same history plus one pending revision.
    newer = tmp_path / "migrations"
    shutil.copytree(migrate_module.MIGRATIONS_DIR, newer)
    (newer / "versions" / "9999_pending.py").write_text(
        f'revision = "9999"\ndown_revision = "{migrate_module.head_revision()}"\n'
        "branch_labels = None\n"
        "depends_on = None\n\n\ndef upgrade() -> None:\n    pass\n"
    )
    monkeypatch.setattr(migrate_module, "MIGRATIONS_DIR", newer)
    with pytest.raises(SchemaOutdated, match="run `ghaf admin migrate`"):
        create_app(settings)
    monkeypatch.setenv("GHAF_HOME", str(settings.home))
    monkeypatch.setenv("GHAF_DATABASE_URL", url)
    result = CliRunner().invoke(app, ["server", "--port", "0"])
    assert result.exit_code == 1
    assert "run `ghaf admin migrate`" in result.output
    upgraded = CliRunner().invoke(app, ["admin", "migrate", "--json"])
    assert upgraded.exit_code == 0, upgraded.output
    create_app(settings).state.runtime.close()


def test_server_refuses_an_uninitialised_database(databases: Databases, tmp_path: Path) -> None:
    database = Database(databases.new_url())
    try:
        with pytest.raises(SchemaOutdated, match="ghaf admin init"):
            check_schema(database)
    finally:
        database.dispose()


def test_server_process_starts_fast_and_stops_cleanly(databases: Databases, tmp_path: Path) -> None:
    url = databases.new_url()
    home = tmp_path / "h"
    initialise(Settings(home=home, database_url=url, master_key=None))
    server = ServerProcess(
        env={"GHAF_HOME": str(home), "GHAF_DATABASE_URL": url}, log_path=tmp_path / "log"
    )
    server.start()
    assert server.stop() == 0
    assert "audit checkpoint written" in (tmp_path / "log").read_text()


def test_tls_and_json_logs(databases: Databases, tmp_path: Path) -> None:
    import json

    cert_path, key_path = self_signed_cert(tmp_path)
    url, home = databases.new_url(), tmp_path / "h"
    initialise(Settings(home=home, database_url=url, master_key=None))
    log = tmp_path / "server.log"
    env = {
        "GHAF_HOME": str(home),
        "GHAF_DATABASE_URL": url,
        "GHAF_TLS_CERT": str(cert_path),
        "GHAF_TLS_KEY": str(key_path),
        "GHAF_LOG_FORMAT": "json",
    }
    server = ServerProcess(env=env, log_path=log, ca_file=cert_path)
    with server:
        assert server.url.startswith("https://")
        assert httpx.get(f"{server.url}/healthz", verify=server.verify).status_code == 200
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any("serving" in r["message"] for r in records)
    assert all({"ts", "level", "message", "request_id"} <= set(r) for r in records)


def test_several_worker_processes_share_the_port(databases: Databases, tmp_path: Path) -> None:
    url = databases.new_url()
    home = tmp_path / "h"
    token = initialise(Settings(home=home, database_url=url, master_key=None)).token
    assert token is not None
    server = ServerProcess(
        env={"GHAF_HOME": str(home), "GHAF_DATABASE_URL": url, "GHAF_WORKERS": "2"},
        log_path=tmp_path / "log",
    ).start()
    try:
        headers = {"Authorization": f"Bearer {token.token}"}
        with httpx.Client(base_url=server.url, headers=headers) as client:
            client.post("/api/v1/projects", json={"name": "w"}).raise_for_status()
            # A change made through one worker is seen by every request, whichever
            # worker (and whichever cache) answers it.
            for _ in range(20):
                assert client.get("/api/v1/projects/w").status_code == 200
            client.delete("/api/v1/projects/w").raise_for_status()
            for _ in range(20):
                assert client.get("/api/v1/projects/w").status_code == 404
    finally:
        assert server.stop() == 0
    assert (tmp_path / "log").read_text().count("audit checkpoint written") == 2


def test_hot_routes_answer_like_fastapi_routes(platform: Platform) -> None:
    """``GET .../models/{model}/versions/{version}`` is served before FastAPI's routing; its
    errors, request ids and metrics look the same as every other route's."""
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    missing = httpx.get(
        f"{platform.url}/api/v1/projects/nope/models/m/versions/@champion", headers=headers
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "project 'nope' not found"
    assert missing.headers["x-request-id"] == missing.json()["request_id"]
    anonymous = httpx.get(f"{platform.url}/api/v1/projects/nope/models/m/versions/1")
    assert anonymous.status_code == 401
    metrics = httpx.get(f"{platform.url}/metrics").text
    assert 'route="/api/v1/projects/{project}/models/{model}/versions/{version}"' in metrics
